"""Artifact types that flow between actions. Plain frozen dataclasses: hashable by content."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Dataset:
    name: str
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "n_samples": int(self.X.shape[0]), "n_features": int(self.X.shape[1])}


@dataclass(frozen=True)
class Analysis:
    dataset: str
    n_samples: int
    n_features: int
    class_counts: dict[str, int]
    feature_names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    missing_values: int
    variance_threshold: float
    low_variance_features: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        return {
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "class_counts": self.class_counts,
            "missing_values": self.missing_values,
            "low_variance_features": len(self.low_variance_features),
        }


@dataclass(frozen=True)
class Split:
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    dropped_features: tuple[str, ...]
    scaler: str

    def summary(self) -> dict[str, Any]:
        return {
            "n_train": int(self.X_train.shape[0]),
            "n_test": int(self.X_test.shape[0]),
            "n_features": int(self.X_train.shape[1]),
            "dropped_features": len(self.dropped_features),
            "scaler": self.scaler,
        }


@dataclass(frozen=True)
class TrainedModel:
    model: str
    estimator: Any
    feature_names: tuple[str, ...]
    train_accuracy: float

    def summary(self) -> dict[str, Any]:
        return {"model": self.model, "train_accuracy": round(self.train_accuracy, 4)}


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    balanced_accuracy: float
    f1: float
    f1_average: str
    n_test: int
    confusion_matrix: tuple[tuple[int, ...], ...]

    def summary(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.accuracy, 4),
            "balanced_accuracy": round(self.balanced_accuracy, 4),
            "f1": round(self.f1, 4),
            "f1_average": self.f1_average,
            "n_test": self.n_test,
        }
