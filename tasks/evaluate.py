"""evaluate_model: metrics on the held-out split the model never saw."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from rlam_prefect import Effect, Precondition, action
from tasks.artifacts import Metrics, Split, TrainedModel


class EvaluateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    f1_average: Literal["macro", "weighted", "micro"] = "macro"


@action(
    requires={"model": "a fitted model exists", "split": "a preprocessed split exists"},
    preconditions=[
        Precondition(
            "the model was fitted on this split's features",
            check=lambda model, split: tuple(model.feature_names) == tuple(split.feature_names),
        )
    ],
    produces="held-out metrics exist",
    effects=[Effect("accuracy is between 0 and 1", check=lambda metrics: 0.0 <= metrics.accuracy <= 1.0)],
)
def evaluate_model(model: TrainedModel, split: Split, params: EvaluateParams) -> Metrics:
    """Held-out accuracy, balanced accuracy, F1 (macro by default) and the confusion matrix."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

    if model.feature_names != split.feature_names:
        raise ValueError("the model was trained on different features than this split holds")
    predicted = model.estimator.predict(split.X_test)
    matrix = confusion_matrix(split.y_test, predicted)
    return Metrics(
        accuracy=float(accuracy_score(split.y_test, predicted)),
        balanced_accuracy=float(balanced_accuracy_score(split.y_test, predicted)),
        f1=float(f1_score(split.y_test, predicted, average=params.f1_average)),
        f1_average=params.f1_average,
        n_test=int(len(split.y_test)),
        confusion_matrix=tuple(tuple(int(v) for v in row) for row in matrix),
    )
