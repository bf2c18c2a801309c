"""load_dataset: one of scikit-learn's bundled datasets (no download)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from rlam_prefect.actions import action
from tasks.artifacts import Dataset

DATASETS = ("breast_cancer", "wine", "digits", "iris")


class LoadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["breast_cancer", "wine", "digits", "iris"] = "breast_cancer"


@action(produces="a dataset is loaded")
def load_dataset(params: LoadParams) -> Dataset:
    """Load a bundled scikit-learn classification dataset (Breast Cancer Wisconsin by default)."""
    from sklearn import datasets

    loader = getattr(datasets, f"load_{params.name}")
    bunch = loader()
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    feature_names = tuple(str(n) for n in getattr(bunch, "feature_names", [f"x{i}" for i in range(X.shape[1])]))
    target_names = tuple(str(n) for n in bunch.target_names)
    return Dataset(params.name, X, y, feature_names, target_names)
