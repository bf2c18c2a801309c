"""Canonical hashing: equal content -> equal hash across layouts and round trips; different -> different."""

from __future__ import annotations

import dataclasses
import pickle
import threading

import cloudpickle
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rlam_prefect.core.hashing import UnhashableValueError, content_hash

finite_floats = st.floats(allow_nan=False)
scalars = st.none() | st.booleans() | st.integers() | finite_floats | st.text(max_size=20) | st.binary(max_size=20)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
arrays = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.int64, np.int32, np.uint8, np.bool_]),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
    elements={"allow_nan": False},
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_round_trip_keeps_the_hash(value):
    assert content_hash(pickle.loads(pickle.dumps(value))) == content_hash(value)


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_different_values_hash_differently(a, b):
    if _same(a, b):
        assert content_hash(a) == content_hash(b)
    else:
        assert content_hash(a) != content_hash(b)


def _same(a, b) -> bool:
    """Equality that also tells types apart (1 vs 1.0 vs True) and keeps -0.0 apart from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=200, deadline=None)
@given(arrays)
def test_array_hash_ignores_memory_layout(array):
    fortran = np.asfortranarray(array)
    swapped = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    strided = np.repeat(array, 2, axis=0)[::2]
    expected = content_hash(array)
    assert content_hash(fortran) == expected
    assert content_hash(swapped) == expected
    assert content_hash(strided) == expected
    assert content_hash(pickle.loads(pickle.dumps(array))) == expected


@settings(max_examples=150, deadline=None)
@given(arrays)
def test_array_content_dtype_and_shape_all_count(array):
    if array.ndim > 1:
        assert content_hash(array.reshape(-1)) != content_hash(array)
    if array.dtype != np.float64:
        assert content_hash(array.astype(np.float64)) != content_hash(array)
    if array.size and array.dtype.kind in "iuf":
        changed = array.copy()
        with np.errstate(over="ignore"):  # uint8 255 + 1 wraps to 0: still a different value
            changed.flat[0] = changed.flat[0] + 1 if changed.flat[0] + 1 != changed.flat[0] else 0
        if changed.flat[0] != array.flat[0]:
            assert content_hash(changed) != content_hash(array)


def test_scalars_are_typed():
    hashes = {content_hash(v) for v in (1, 1.0, "1", True, b"1", np.int64(1), None, [1], (1,))}
    assert len(hashes) == 9


@dataclasses.dataclass(frozen=True)
class Box:
    values: np.ndarray
    label: str


def test_dataclass_round_trip_and_difference():
    box = Box(np.arange(6.0).reshape(2, 3), "a")
    assert content_hash(cloudpickle.loads(cloudpickle.dumps(box))) == content_hash(box)
    assert content_hash(Box(box.values, "b")) != content_hash(box)


@pytest.mark.parametrize("model", ["logistic_regression", "random_forest", "svm"])
def test_fitted_estimators_hash_the_same_after_save_and_load(model):
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    X, y = load_breast_cancer(return_X_y=True)
    make = {
        "logistic_regression": lambda seed: LogisticRegression(max_iter=5000, random_state=seed),
        "random_forest": lambda seed: RandomForestClassifier(n_estimators=5, random_state=seed),
        "svm": lambda seed: SVC(random_state=seed),
    }[model]
    fitted = make(0).fit(X, y)
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        assert content_hash(loads(dumps(fitted))) == content_hash(fitted)
    assert content_hash(make(0).fit(X, y)) == content_hash(fitted)  # refit, same seed: same content
    assert content_hash(make(0).fit(X[:300], y[:300])) != content_hash(fitted)


def test_unhashable_values_are_refused_even_when_nested():
    with pytest.raises(UnhashableValueError):
        content_hash(threading.Lock())
    with pytest.raises(UnhashableValueError):
        content_hash({"ok": 1, "bad": [threading.Lock()]})
    with pytest.raises(UnhashableValueError):
        content_hash(object())
    with pytest.raises(UnhashableValueError):
        content_hash(x for x in range(3))
