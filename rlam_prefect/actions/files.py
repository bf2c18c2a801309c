"""Declaring that a parameter names a data file: its bytes, not its name, are what a step depends on.

An action's params model marks a field with ``DataFile`` (a path or an fsspec URL)::

    class LoadParams(BaseModel):
        path: rlam.DataFile | None = None

The engine then digests the file (``core/files.py``) before the step runs: the digest enters the
step's cache key and the step's ``files_read`` column (path, size, digest). A planner may not choose
or change such a parameter unless the execution policy names the directories or buckets it may
choose from (``file_roots``).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel

from rlam_prefect.core.errors import ReplayMismatchError
from rlam_prefect.core.files import FileDigest


@dataclass(frozen=True)
class FileInput:
    """The marker ``DataFile`` carries; any ``Annotated[str, FileInput()]`` field is a file input."""


DataFile = Annotated[str, FileInput()]


def file_params(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` declared as file inputs (``DataFile``, optional or not), in field order."""
    found = []
    for name, info in model.model_fields.items():
        if any(isinstance(m, FileInput) for m in info.metadata) or _marked(info.annotation):
            found.append(name)
    return tuple(found)


def is_file_annotation(annotation: Any) -> bool:
    """True for ``rlam.DataFile`` and ``rlam.DataFile | None`` (a task argument or a params field)."""
    return _marked(annotation)


def _marked(annotation: Any) -> bool:
    if annotation is None:
        return False
    if typing.get_origin(annotation) is Annotated:
        return any(isinstance(m, FileInput) for m in annotation.__metadata__) or _marked(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_marked(arg) for arg in typing.get_args(annotation))
    return False


def declared_files(model: type[BaseModel], params: Mapping[str, Any]) -> dict[str, str]:
    """{param: path} of the file inputs set in validated ``params`` (an unset optional file is absent)."""
    return {name: str(params[name]) for name in file_params(model) if params.get(name)}


def check_files_unchanged(files: dict[str, FileDigest], original: dict[str, Any] | None, what: str) -> None:
    """A replayed step whose data file changed since it was recorded fails naming the file and both digests.

    It is never served the old result as if nothing changed, and never silently re-executed.
    """
    recorded = json.loads(original["files_read"]) if original and original.get("files_read") else {}
    for name, found in files.items():
        before = recorded.get(name)
        if before is None:
            raise ReplayMismatchError(f"{what}: {name}={found.path} was not a data file of run {original and original['run_id']}; fork from this step to re-execute")
        if before["digest"] != found.digest or before["path"] != found.path:
            raise ReplayMismatchError(
                f"{what}: data file {found.path} changed since run {original and original['run_id']} recorded it "
                f"(recorded {before['digest']}, now {found.digest}); fork from this step to re-execute"
            )
