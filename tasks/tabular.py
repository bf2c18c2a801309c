"""Reading a user's table (CSV or Parquet, local or fsspec URL) into features and labels, with one-line errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from rlam_prefect import DataFileError


@dataclass(frozen=True)
class Table:
    name: str
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]


def read_table(path: str, target: str, columns: list[str] | None, fmt: str, dtype: str) -> Table:
    import pandas as pd

    suffix = PurePosixPath(path.split("?", 1)[0]).suffix.lower()
    kind = fmt if fmt != "auto" else ("parquet" if suffix in (".parquet", ".pq") else "csv")
    try:
        frame = pd.read_parquet(path) if kind == "parquet" else pd.read_csv(path)
    except FileNotFoundError:
        raise DataFileError(f"data file {path} does not exist") from None
    except PermissionError as exc:
        raise DataFileError(f"data file {path} cannot be read ({exc.strerror})") from None
    except pd.errors.EmptyDataError:
        raise DataFileError(f"data file {path} has no columns (empty or blank)") from None
    except Exception as exc:  # the parsers' own error types (ParserError, ArrowInvalid, UnicodeDecodeError...)
        detail = " ".join(str(exc).split())[:200]
        raise DataFileError(f"data file {path} is not a readable {kind} file ({type(exc).__name__}: {detail})") from None
    if frame.shape[0] == 0:
        raise DataFileError(f"data file {path} has a header but no rows")
    known = [str(c) for c in frame.columns]
    frame.columns = known
    if target not in known:
        raise DataFileError(f"data file {path} has no target column {target!r} (columns: {', '.join(known[:20])})")
    features = list(columns) if columns else [c for c in known if c != target]
    unknown = [c for c in features if c not in known]
    if unknown:
        raise DataFileError(f"data file {path} has no column {unknown[0]!r} (columns: {', '.join(known[:20])})")
    if target in features:
        raise DataFileError(f"column {target!r} is the target; it cannot also be a feature")
    if not features:
        raise DataFileError(f"data file {path} has no feature column besides the target {target!r}")
    for column in features:
        if not (pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column])):
            raise DataFileError(
                f"feature {column!r} of {path} is not numeric ({frame[column].dtype}); drop it with load_dataset.columns or encode it first"
            )
    labels = frame[target]
    if labels.isna().any():
        raise DataFileError(f"target column {target!r} of {path} has {int(labels.isna().sum())} missing values")
    classes, y = np.unique(labels.astype(str).to_numpy(), return_inverse=True)
    X = frame[features].to_numpy(dtype=np.dtype(dtype), na_value=np.nan)
    name = PurePosixPath(path.split("?", 1)[0]).name or path
    return Table(name, np.ascontiguousarray(X), y.astype(np.int64), tuple(features), tuple(str(c) for c in classes))
