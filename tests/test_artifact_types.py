"""Your own artifact types: the public hasher registry, pandas built in, dataclasses/pydantic as they are, refusals named."""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel

import rlam_prefect as rlam


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", None, "z"], "c": pd.Categorical(["u", "v", "u"])}, index=[10, 20, 30])


def test_a_dataframe_hashes_by_content_not_by_pickle_bytes_or_memory_layout():
    frame = _frame()
    h = rlam.content_hash(frame)
    assert rlam.content_hash(pickle.loads(pickle.dumps(frame))) == h
    assert rlam.content_hash(frame.copy(deep=True)) == h
    fortran = pd.DataFrame(np.asfortranarray(np.arange(6.0).reshape(3, 2)), columns=["p", "q"])
    c_order = pd.DataFrame(np.ascontiguousarray(np.arange(6.0).reshape(3, 2)), columns=["p", "q"])
    assert rlam.content_hash(fortran) == rlam.content_hash(c_order)


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.assign(a=[1.0, 2.0, 3.5]),  # a value
        lambda f: f[["b", "a", "c"]],  # column order
        lambda f: f.rename(columns={"a": "A"}),  # a column name
        lambda f: f.astype({"a": "float32"}),  # a dtype
        lambda f: f.set_axis([10, 20, 31]),  # the index
        lambda f: f.assign(b=["x", "y", "z"]),  # a missing value filled
    ],
)
def test_any_change_of_content_labels_or_dtypes_moves_a_dataframes_hash(change):
    assert rlam.content_hash(change(_frame())) != rlam.content_hash(_frame())


def test_a_series_hashes_by_content_and_differs_from_a_frame_and_an_array():
    s = pd.Series([1, 2, 3], name="n")
    assert rlam.content_hash(pickle.loads(pickle.dumps(s))) == rlam.content_hash(s)
    assert rlam.content_hash(s.rename("m")) != rlam.content_hash(s)
    assert len({rlam.content_hash(s), rlam.content_hash(s.to_frame()), rlam.content_hash(s.to_numpy())}) == 3


class Spectrum:
    """A user's type with a cache it should not be hashed by."""

    def __init__(self, wavelengths: np.ndarray, counts: np.ndarray) -> None:
        self.wavelengths, self.counts = wavelengths, counts
        self._lock = threading.Lock()  # no canonical content: unhashable without a hasher


def test_a_registered_hasher_gives_a_users_type_its_content():
    spectrum = Spectrum(np.arange(3.0), np.array([5, 6, 7]))
    with pytest.raises(rlam.UnhashableValueError) as info:
        rlam.content_hash(spectrum)
    assert "_thread.lock" in str(info.value) or "Spectrum" in str(info.value)
    assert "register_hasher" in str(info.value)
    rlam.register_hasher(Spectrum, lambda s: (s.wavelengths, s.counts))
    h = rlam.content_hash(spectrum)
    assert h == rlam.content_hash(Spectrum(np.arange(3.0), np.array([5, 6, 7])))
    assert h != rlam.content_hash(Spectrum(np.arange(3.0), np.array([5, 6, 8])))
    assert h != rlam.content_hash((np.arange(3.0), np.array([5, 6, 7])))  # tagged with the type's name


def test_the_decorator_form_and_registration_by_name():
    class Peak:
        def __init__(self, at: float) -> None:
            self.at = at
            self.handle = threading.Lock()

    @rlam.hasher(Peak)
    def _peak(p: Peak) -> float:
        return p.at

    assert rlam.content_hash(Peak(1.5)) == rlam.content_hash(Peak(1.5)) != rlam.content_hash(Peak(2.5))

    class Named:
        def __init__(self) -> None:
            self.gen = (i for i in range(3))

    rlam.register_hasher(f"{Named.__module__}.{Named.__qualname__}", lambda n: "named")
    assert rlam.content_hash(Named()) == rlam.content_hash(Named())


@dataclass(frozen=True)
class Cohort:
    name: str
    table: pd.DataFrame


class Settings(BaseModel):
    alpha: float
    tags: list[str]


def test_dataclasses_and_pydantic_models_need_no_registration_even_holding_dataframes():
    assert rlam.content_hash(Cohort("a", _frame())) == rlam.content_hash(Cohort("a", _frame().copy()))
    assert rlam.content_hash(Cohort("a", _frame())) != rlam.content_hash(Cohort("b", _frame()))
    assert rlam.content_hash(Settings(alpha=0.1, tags=["x"])) == rlam.content_hash(Settings(alpha=0.1, tags=["x"]))
    assert rlam.content_hash(Settings(alpha=0.1, tags=["x"])) != rlam.content_hash(Settings(alpha=0.2, tags=["x"]))


def test_an_artifact_with_no_canonical_content_is_refused_with_its_type_named_even_inside_a_container():
    @dataclass
    class Holder:
        stream: object

    with pytest.raises(rlam.UnhashableValueError, match="generator"):
        rlam.content_hash(Holder(i for i in range(2)))
    with pytest.raises(rlam.UnhashableValueError, match="module"):
        rlam.content_hash({"m": np})
    with pytest.raises(TypeError, match="not a type"):
        rlam.register_hasher(3, lambda v: v)  # type: ignore[arg-type]
