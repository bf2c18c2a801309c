"""load_dataset name=synthetic: a make_classification workload of chosen size, deterministic for its random_state."""

from __future__ import annotations

import pytest

import tasks  # noqa: F401 - registers the actions
from rlam_prefect.actions.registry import get_action
from rlam_prefect.core.errors import InvalidParamsError
from rlam_prefect.core.hashing import content_hash


def _load(**params: object) -> object:
    spec = get_action("load_dataset")
    return spec.run({}, spec.validate_params(params))


def test_synthetic_size_and_determinism() -> None:
    data = _load(name="synthetic", n_samples=300, n_features=8)
    assert data.X.shape == (300, 8) and set(data.y.tolist()) == {0, 1} and len(data.feature_names) == 8
    assert content_hash(data) == content_hash(_load(name="synthetic", n_samples=300, n_features=8, random_state=0))
    assert content_hash(data) != content_hash(_load(name="synthetic", n_samples=300, n_features=8, random_state=1))


def test_sizes_are_refused_for_bundled_datasets() -> None:
    with pytest.raises(InvalidParamsError, match="n_samples apply to name=synthetic only"):
        _load(name="wine", n_samples=500)
    with pytest.raises(InvalidParamsError, match="n_samples"):
        _load(name="synthetic", n_samples=5)  # below the lower bound
