"""preprocess_data: held-out split and scaling, fitted on the training part only."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rlam_prefect import action
from tasks.artifacts import Analysis, Dataset, Split


class PreprocessParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    test_size: float = Field(0.2, ge=0.05, le=0.5, description="share of samples held out for evaluation")
    random_state: int = Field(42, ge=0, le=2**32 - 1, description="seed of the train/test split")
    scaler: Literal["standard", "minmax", "none"] = "standard"
    drop_low_variance: bool = Field(True, description="drop the features the analysis flagged as low-variance")
    stratify: bool = True


@action(
    requires={"dataset": "a dataset is loaded", "analysis": "the dataset is analyzed"},
    produces="a preprocessed split exists",
)
def preprocess_data(dataset: Dataset, analysis: Analysis, params: PreprocessParams) -> Split:
    """Drop flagged features, split train/test with a recorded seed, scale with training statistics."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    if analysis.feature_names != dataset.feature_names or analysis.n_samples != dataset.X.shape[0]:
        raise ValueError(f"the analysis describes {analysis.dataset!r}, not the loaded dataset {dataset.name!r}")
    dropped = analysis.low_variance_features if params.drop_low_variance else ()
    keep = [i for i, name in enumerate(dataset.feature_names) if name not in set(dropped)]
    if not keep:
        raise ValueError("every feature is flagged low-variance; lower analyze_data.variance_threshold")
    X = dataset.X[:, keep]
    X_train, X_test, y_train, y_test = train_test_split(
        X,
        dataset.y,
        test_size=params.test_size,
        random_state=params.random_state,
        stratify=dataset.y if params.stratify else None,
    )
    if params.scaler != "none":
        scaler = StandardScaler() if params.scaler == "standard" else MinMaxScaler()
        X_train = scaler.fit_transform(X_train)
        X_test = scaler.transform(X_test)
    return Split(
        X_train=np.ascontiguousarray(X_train),
        X_test=np.ascontiguousarray(X_test),
        y_train=y_train,
        y_test=y_test,
        feature_names=tuple(dataset.feature_names[i] for i in keep),
        dropped_features=tuple(dropped),
        scaler=params.scaler,
    )
