"""A user-defined action: one decorated function. Use it with RLAM_ACTIONS=examples.feature_selection.

It gets the content-addressed cache, the trace, replay and fork, and appears in the planner's
allow-list with its parameter schema.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rlam_prefect import action
from tasks.artifacts import Split


class SelectParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(10, ge=1, le=10_000, description="number of features to keep")


@action
def select_features(split: Split, params: SelectParams) -> Split:
    """Keep the k features most associated with the label (ANOVA F-test, fitted on the training split only)."""
    from sklearn.feature_selection import SelectKBest, f_classif

    k = min(params.k, split.X_train.shape[1])
    keep = SelectKBest(f_classif, k=k).fit(split.X_train, split.y_train).get_support()
    dropped = tuple(name for name, kept in zip(split.feature_names, keep) if not kept)
    return Split(
        X_train=np.ascontiguousarray(split.X_train[:, keep]),
        X_test=np.ascontiguousarray(split.X_test[:, keep]),
        y_train=split.y_train,
        y_test=split.y_test,
        feature_names=tuple(name for name, kept in zip(split.feature_names, keep) if kept),
        dropped_features=split.dropped_features + dropped,
        scaler=split.scaler,
    )
