"""train_model: logistic regression (default), random forest or SVM on the training split."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlam_prefect import action
from tasks.artifacts import Split, TrainedModel


class TrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["logistic_regression", "random_forest", "svm"] = "logistic_regression"
    C: float = Field(1.0, gt=0.0, le=1e6, description="inverse regularisation strength (logistic_regression, svm)")
    max_iter: int = Field(1000, ge=1, le=100_000, description="solver iterations (logistic_regression, svm)")
    n_estimators: int = Field(100, ge=1, le=2000, description="trees (random_forest)")
    max_depth: int | None = Field(None, ge=1, le=1000, description="tree depth limit (random_forest)")
    random_state: int = Field(42, ge=0, le=2**32 - 1, description="seed of every randomised estimator")


@action(requires={"split": "a preprocessed split exists"}, produces="a fitted model exists")
def train_model(split: Split, params: TrainParams) -> TrainedModel:
    """Fit the chosen classifier; every source of randomness is the recorded random_state."""
    if params.model == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        estimator = LogisticRegression(C=params.C, max_iter=params.max_iter, random_state=params.random_state)
    elif params.model == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        estimator = RandomForestClassifier(
            n_estimators=params.n_estimators,
            max_depth=params.max_depth,
            random_state=params.random_state,
            n_jobs=1,
        )
    else:
        from sklearn.svm import SVC

        estimator = SVC(C=params.C, max_iter=params.max_iter, random_state=params.random_state)
    estimator.fit(split.X_train, split.y_train)
    train_accuracy = float(estimator.score(split.X_train, split.y_train))
    return TrainedModel(params.model, estimator, split.feature_names, train_accuracy)
