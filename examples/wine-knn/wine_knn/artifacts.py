"""The project's artifact types: dataclasses holding pandas objects (hashed by content, no registration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Table:
    features: pd.DataFrame
    labels: pd.Series
    source: str

    def summary(self) -> dict[str, Any]:
        return {"rows": int(len(self.features)), "features": int(self.features.shape[1]), "source": self.source}


@dataclass(frozen=True)
class KnnModel:
    estimator: Any
    columns: tuple[str, ...]
    test_features: pd.DataFrame
    test_labels: pd.Series
    n_neighbors: int

    def summary(self) -> dict[str, Any]:
        return {"n_neighbors": self.n_neighbors, "n_test": int(len(self.test_labels))}


@dataclass(frozen=True)
class ClassifierMetrics:
    """Named ``...Metrics``: rlam reports its summary as the run's metrics."""

    mcc: float
    accuracy: float
    n_test: int

    def summary(self) -> dict[str, Any]:
        return {"mcc": round(self.mcc, 4), "accuracy": round(self.accuracy, 4), "n_test": self.n_test}
