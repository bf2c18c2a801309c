"""load_dataset: one of scikit-learn's bundled datasets (no download), a synthetic one of chosen size,
or your own CSV or Parquet file (a local path or an fsspec URL) whose bytes are part of the step's key."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlam_prefect import DataFile, action
from tasks.artifacts import Dataset
from tasks.tabular import read_table

DATASETS = ("breast_cancer", "wine", "digits", "iris", "synthetic")
SYNTHETIC_DEFAULTS = {"n_samples": 20000, "n_features": 20, "random_state": 0}
FILE_ONLY = {"target": None, "columns": None, "format": "auto", "dtype": "float64"}  # with their defaults


class LoadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["breast_cancer", "wine", "digits", "iris", "synthetic"] = "breast_cancer"
    # synthetic only (scikit-learn's make_classification): sizes a workload, e.g. one where training takes seconds
    n_samples: int | None = Field(None, ge=100, le=5_000_000, description="synthetic only (default 20000)")
    n_features: int | None = Field(None, ge=4, le=2000, description="synthetic only (default 20)")
    random_state: int | None = Field(None, ge=0, le=2**32 - 1, description="synthetic only (default 0)")
    # your own data: a CSV or Parquet file; its bytes (SHA-256) are part of the step's cache key
    path: DataFile | None = Field(None, description="a CSV or Parquet file: local path or fsspec URL (s3://, gs://, ...)")
    target: str | None = Field(None, description="with path: the label column")
    columns: list[str] | None = Field(None, description="with path: the feature columns (default: every other column)")
    format: Literal["auto", "csv", "parquet"] = Field("auto", description="with path: file format (auto: from the suffix)")
    dtype: Literal["float64", "float32"] = Field("float64", description="with path: dtype of the feature matrix")

    @model_validator(mode="after")
    def _sizes_only_for_synthetic(self) -> LoadParams:
        given = [k for k in SYNTHETIC_DEFAULTS if getattr(self, k) is not None]
        if given and self.name != "synthetic":
            raise ValueError(f"{', '.join(given)} apply to name=synthetic only, not {self.name}")
        if self.path is None:
            file_only = [k for k, default in FILE_ONLY.items() if getattr(self, k) != default]
            if file_only:
                raise ValueError(f"{', '.join(file_only)} apply to a file only: set path too")
        else:
            if self.name != "breast_cancer":
                raise ValueError(f"path loads your own file: name={self.name} does not apply")
            if not self.target:
                raise ValueError("path needs target: the label column")
        return self


@action(produces="a dataset is loaded")
def load_dataset(params: LoadParams) -> Dataset:
    """Load a bundled scikit-learn classification dataset (Breast Cancer Wisconsin by default), a synthetic one, or a CSV/Parquet file."""
    from sklearn import datasets

    if params.path is not None:
        assert params.target is not None  # the validator requires it with a path
        table = read_table(params.path, params.target, params.columns, params.format, params.dtype)
        return Dataset(table.name, table.X, table.y, table.feature_names, table.target_names)
    if params.name == "synthetic":
        return _synthetic(params)
    loader = getattr(datasets, f"load_{params.name}")
    bunch = loader()
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    feature_names = tuple(str(n) for n in getattr(bunch, "feature_names", [f"x{i}" for i in range(X.shape[1])]))
    target_names = tuple(str(n) for n in bunch.target_names)
    return Dataset(params.name, X, y, feature_names, target_names)


def _synthetic(params: LoadParams) -> Dataset:
    """make_classification: two classes, half the features informative, deterministic for its random_state."""
    from sklearn.datasets import make_classification

    sizes = {k: getattr(params, k) if getattr(params, k) is not None else v for k, v in SYNTHETIC_DEFAULTS.items()}
    n_features = sizes["n_features"]
    X, y = make_classification(
        n_samples=sizes["n_samples"], n_features=n_features, n_informative=max(2, n_features // 2),
        n_redundant=min(2, n_features // 4), random_state=sizes["random_state"],
    )
    names = tuple(f"x{i}" for i in range(n_features))
    return Dataset("synthetic", np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64), names, ("class_0", "class_1"))
