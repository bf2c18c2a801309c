"""The project's four actions: its own loader, a feature step and a model family the seed lacks, its own metrics."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

import rlam_prefect as rlam
from wine_knn.artifacts import ClassifierMetrics, KnnModel, Table


class LoadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: rlam.DataFile = Field("data/wine.csv", description="the CSV (its bytes are part of the step's key)")
    target: str = "cultivar"


@rlam.action(produces="a table is loaded")
def load_table(params: LoadParams) -> Table:
    """Read the CSV into features and labels; every feature must be numeric."""
    frame = pd.read_csv(params.path)
    if params.target not in frame.columns:
        raise rlam.DataFileError(f"{params.path} has no column {params.target!r}")
    features = frame.drop(columns=[params.target])
    bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise rlam.DataFileError(f"feature {bad[0]!r} of {params.path} is not numeric")
    return Table(features.astype("float64"), frame[params.target].astype(str), params.path)


class LogParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    skew_above: float = Field(1.0, ge=0.0, le=100.0, description="log1p every feature whose skewness is above this")


@rlam.action(requires={"table": "a table is loaded"}, produces="skewed features are log-transformed")
def log_features(table: Table, params: LogParams) -> Table:
    """log1p the right-skewed, non-negative features (a feature step the seed does not have)."""
    skew = table.features.skew()
    chosen = [c for c in table.features.columns if skew[c] > params.skew_above and (table.features[c] >= 0).all()]
    transformed = table.features.copy()
    transformed[chosen] = np.log1p(transformed[chosen])
    return Table(transformed.rename(columns={c: f"log1p_{c}" for c in chosen}), table.labels, table.source)


class KnnParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_neighbors: int = Field(5, ge=1, le=100)
    weights: Literal["uniform", "distance"] = "uniform"
    test_size: float = Field(0.25, ge=0.1, le=0.5)
    random_state: int = Field(0, ge=0, le=2**32 - 1, description="seed of the train/test split")


@rlam.action(requires={"table": "a table is loaded"}, produces="a fitted k-NN model exists")
def fit_knn(table: Table, params: KnnParams) -> KnnModel:
    """Standardise, then k-nearest neighbours (a model family the seed does not have), on a seeded split."""
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, y_train, y_test = train_test_split(
        table.features, table.labels, test_size=params.test_size, random_state=params.random_state, stratify=table.labels
    )
    model = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=params.n_neighbors, weights=params.weights))
    model.fit(X_train.to_numpy(), y_train.to_numpy())
    return KnnModel(model, tuple(table.features.columns), X_test, y_test, params.n_neighbors)


@rlam.action(requires={"model": "a fitted k-NN model exists"}, produces="held-out metrics exist")
def score(model: KnnModel) -> ClassifierMetrics:
    """Matthews correlation and accuracy on the held-out rows."""
    from sklearn.metrics import accuracy_score, matthews_corrcoef

    predicted = model.estimator.predict(model.test_features.to_numpy())
    truth = model.test_labels.to_numpy()
    return ClassifierMetrics(float(matthews_corrcoef(truth, predicted)), float(accuracy_score(truth, predicted)), int(len(truth)))
