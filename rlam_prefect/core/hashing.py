"""Canonical content hashing: the one routine every key, artifact and trace hash goes through.

Two values with the same content hash equal each other regardless of memory layout or of
having been pickled and loaded again; values that differ in content or type hash apart.
Pickle bytes are never hashed: they move when an object makes a round trip.

Your own types: ``register_hasher(MyType, fn)`` (or ``@hasher(MyType)``) says what a value's content
is: ``fn(value)`` returns something this module already hashes (arrays, mappings, tuples, scalars...),
and the digest is taken over that, tagged with the type's name. pandas DataFrame and Series are
registered by name, so hashing them never imports pandas and pandas is not needed otherwise.
Dataclasses and pydantic models need no registration (their fields are their content).
"""

from __future__ import annotations

import copyreg
import dataclasses
import enum
import functools
import hashlib
import json
import math
import types
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

PREFIX = "sha256:"
# Bump when the encoding below changes: every key and artifact hash moves with it.
SCHEME_VERSION = "1"


class UnhashableValueError(TypeError):
    """A value has no canonical content (a lock, a generator, an open file...)."""


F = TypeVar("F", bound=Callable[[Any], Any])
_BY_NAME: dict[str, Callable[[Any], Any]] = {}  # "module.QualName" -> content function, for types not imported yet


def register_hasher(cls: type | str, fn: Callable[[Any], Any]) -> None:
    """Hash values of ``cls`` (a type, or its "module.QualName" to avoid importing it) by ``fn(value)``'s content.

    ``fn`` returns the value's canonical content in types this module hashes; the digest is tagged
    with the type's name, so two types with equal content still hash apart. Registering again replaces.
    """
    if not callable(fn):
        raise TypeError(f"register_hasher: {fn!r} is not callable")
    if isinstance(cls, str):
        _BY_NAME[cls] = fn
        return
    if not isinstance(cls, type):
        raise TypeError(f"register_hasher: {cls!r} is not a type")
    name = _qualname(cls)

    def by_content(value: Any) -> str:
        return _tagged("custom", name.encode(), _fingerprint(fn(value)).encode())

    _fingerprint.register(cls)(by_content)


def hasher(cls: type | str) -> Callable[[F], F]:
    """Decorator form of ``register_hasher``: ``@rlam.hasher(MyType)`` over ``def content(value): ...``."""

    def register(fn: F) -> F:
        register_hasher(cls, fn)
        return fn

    return register


def sha256_hex(*parts: bytes | memoryview) -> str:
    """The single digest helper: swap the algorithm here and everything follows."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def content_hash(value: Any) -> str:
    """Canonical hash of any supported value, as ``sha256:<hex>``."""
    return PREFIX + _fingerprint(value)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, used for params and keys in the trace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def _tagged(tag: str, *parts: bytes | memoryview) -> str:
    return sha256_hex(tag.encode(), *parts)


def _qualname(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


@functools.singledispatch
def _fingerprint(value: Any) -> str:
    return _fingerprint_object(value)


@_fingerprint.register(type(None))
def _(value: None) -> str:
    return _tagged("none")


@_fingerprint.register(bool)
def _(value: bool) -> str:
    return _tagged("bool", b"1" if value else b"0")


@_fingerprint.register(int)
def _(value: int) -> str:
    return _tagged("int", str(value).encode())


@_fingerprint.register(float)
def _(value: float) -> str:
    # repr round-trips exactly; every NaN is the same value for our purposes
    return _tagged("float", b"nan" if math.isnan(value) else repr(value).encode())


@_fingerprint.register(str)
def _(value: str) -> str:
    return _tagged("str", value.encode("utf-8", "surrogatepass"))


@_fingerprint.register(bytes)
@_fingerprint.register(bytearray)
def _(value: bytes | bytearray) -> str:
    return _tagged("bytes", bytes(value))


@_fingerprint.register(list)
@_fingerprint.register(tuple)
def _(value: list[Any] | tuple[Any, ...]) -> str:
    tag = "list" if isinstance(value, list) else "tuple"
    return _tagged(tag, *(_fingerprint(item).encode() for item in value))


@_fingerprint.register(set)
@_fingerprint.register(frozenset)
def _(value: set[Any] | frozenset[Any]) -> str:
    return _tagged("set", *sorted(_fingerprint(item).encode() for item in value))


@_fingerprint.register(Mapping)
def _(value: Mapping[Any, Any]) -> str:
    items = sorted((_fingerprint(k) + _fingerprint(v)).encode() for k, v in value.items())
    return _tagged("mapping", *items)


@_fingerprint.register(np.ndarray)
def _(value: np.ndarray) -> str:
    header = f"{value.dtype.kind}{value.dtype.itemsize}|{value.shape}".encode()
    if value.dtype.hasobject:
        return _tagged("ndarray-object", header, *(_fingerprint(item).encode() for item in value.ravel(order="C")))
    array = value
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not np.little_endian):
        array = array.astype(array.dtype.newbyteorder("<"))
    if array.dtype.names is not None:
        # structured arrays (e.g. sklearn tree nodes): field names and layout belong to the content
        header += repr(array.dtype.descr).encode()
    array = np.ascontiguousarray(array)
    # ndarray.data is memoryview(array); numpy types the buffer protocol (__buffer__) for Python >= 3.12 only
    return _tagged("ndarray", header, array.data.cast("B") if array.size else b"")


@_fingerprint.register(np.generic)
def _(value: np.generic) -> str:
    return _fingerprint(np.asarray(value))


@_fingerprint.register(enum.Enum)
def _(value: enum.Enum) -> str:
    return _tagged("enum", _qualname(value).encode(), _fingerprint(value.value).encode())


@_fingerprint.register(types.FunctionType)
@_fingerprint.register(types.BuiltinFunctionType)
@_fingerprint.register(type)
def _(value: Any) -> str:
    # code identity by name: what code does is tracked by code versions, not here
    return _tagged("ref", f"{value.__module__}.{value.__qualname__}".encode())


def _fingerprint_object(value: Any) -> str:
    for cls in type(value).__mro__:
        by_name = _BY_NAME.get(_qualname(cls))
        if by_name is not None:
            return _tagged("custom", _qualname(cls).encode(), _fingerprint(by_name(value)).encode())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _tagged("dataclass", _qualname(value).encode(), _fingerprint(fields).encode())
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump) and hasattr(type(value), "model_fields"):
        return _tagged("pydantic", _qualname(value).encode(), _fingerprint(model_dump()).encode())
    return _fingerprint_reduced(value)


_COPYREG_NEWOBJ = copyreg.__newobj__  # type: ignore[attr-defined]  # typeshed does not declare copyreg.__newobj__
_OBJECT_REDUCE_EX: object = object.__reduce_ex__  # typed as object: mypy's bound-method types make the identity check look impossible
_UNHASHABLE_TYPES: tuple[type, ...] = (types.GeneratorType, types.CoroutineType, types.ModuleType)
_HINT = " (give it canonical content with rlam.register_hasher(type, fn), or return a dataclass of arrays)"


def _fingerprint_reduced(value: Any) -> str:
    """Objects such as fitted estimators: hash what pickle would rebuild them from, not its bytes.

    ``__reduce_ex__`` names the constructor, its arguments and the state; hashing those
    recursively gives the same digest before and after a save/load round trip.
    """
    if isinstance(value, _UNHASHABLE_TYPES):
        raise UnhashableValueError(f"cannot hash a value of type {_qualname(value)}: it has no canonical content{_HINT}")
    try:
        reduced = value.__reduce_ex__(4)
    except Exception as exc:
        raise UnhashableValueError(f"cannot hash a value of type {_qualname(value)}: {exc}{_HINT}") from exc
    if isinstance(reduced, str) or not isinstance(reduced, tuple) or len(reduced) < 2:
        raise UnhashableValueError(f"cannot hash a value of type {_qualname(value)}: it has no canonical content{_HINT}")
    constructor, args = reduced[0], reduced[1]
    state = reduced[2] if len(reduced) > 2 else None
    if constructor is _COPYREG_NEWOBJ and args and args[0] is type(value):
        args = args[1:]
    if state is None and not args and type(value).__reduce_ex__ is _OBJECT_REDUCE_EX:
        raise UnhashableValueError(f"cannot hash a value of type {_qualname(value)}: it has no state{_HINT}")
    return _tagged(
        "object",
        _qualname(value).encode(),
        _fingerprint(args).encode(),
        _fingerprint(_drop_volatile(state)).encode(),
    )


def _drop_volatile(state: Any) -> Any:
    # scikit-learn stamps its version into pickled state; the environment hash already covers it
    if isinstance(state, dict) and "_sklearn_version" in state:
        return {k: v for k, v in state.items() if k != "_sklearn_version"}
    return state



# ---- pandas, by name: content (labels, dtypes, values), never pickle bytes ---------------------------


def _pandas_values(values: Any) -> Any:
    array = values.to_numpy()
    if array.dtype == object:  # missing markers (pd.NA, NaT, None, NaN) as one canonical None
        array = np.where(values.isna().to_numpy(), None, array)
    return array


def _pandas_index(index: Any) -> Any:
    return ("index", str(index.dtype), tuple(str(n) for n in index.names), _pandas_values(index))


def _pandas_series(series: Any) -> Any:
    return (str(series.name), str(series.dtype), _pandas_index(series.index), _pandas_values(series))


def _pandas_frame(frame: Any) -> Any:
    columns = tuple(frame.columns)
    return (
        _pandas_index(frame.columns),
        _pandas_index(frame.index),
        tuple((str(frame.dtypes.iloc[i]), _pandas_values(frame.iloc[:, i])) for i in range(len(columns))),
    )


register_hasher("pandas.core.frame.DataFrame", _pandas_frame)
register_hasher("pandas.core.series.Series", _pandas_series)
