"""analyze_data: descriptive statistics that later steps (and the planner) rely on."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rlam_prefect import action
from tasks.artifacts import Analysis, Dataset


class AnalyzeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variance_threshold: float = Field(0.0, ge=0.0, le=1e12, description="features with variance at or below this are flagged")


@action(requires={"dataset": "a dataset is loaded"}, produces="the dataset is analyzed")
def analyze_data(dataset: Dataset, params: AnalyzeParams) -> Analysis:
    """Per-feature statistics, class balance, missing values and low-variance features."""
    X = dataset.X
    variance = np.nanvar(X, axis=0)
    classes, counts = np.unique(dataset.y, return_counts=True)
    class_counts = {dataset.target_names[int(c)]: int(n) for c, n in zip(classes, counts)}
    low = tuple(name for name, v in zip(dataset.feature_names, variance) if v <= params.variance_threshold)
    return Analysis(
        dataset=dataset.name,
        n_samples=int(X.shape[0]),
        n_features=int(X.shape[1]),
        class_counts=class_counts,
        feature_names=dataset.feature_names,
        mean=np.nanmean(X, axis=0),
        std=np.nanstd(X, axis=0),
        minimum=np.nanmin(X, axis=0),
        maximum=np.nanmax(X, axis=0),
        missing_values=int(np.isnan(X).sum()),
        variance_threshold=params.variance_threshold,
        low_variance_features=low,
    )
