"""Where trace and result files live: a local directory, or an object store named by RLAM_STORE_URL.

Both give the same guarantee to the one trace writer: a new file is complete or absent and never
replaces an existing one. Locally that is a temporary file, fsynced and hard-linked into place
(``os.link`` fails on an existing name). On S3 it is one PutObject with ``If-None-Match: *``: the
object appears whole or not at all, and a second create of the same name is refused by the
store (412), so no rename is involved. Readers list the store directly (no listing cache: other
machines write too) and pyarrow reads through the same filesystem.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePath, PurePosixPath
from typing import IO, Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.core.storage import SharedStore


def _parquet_bytes_options(data: pa.Table) -> dict[str, Any]:
    # page checksums: damage is detected on read, not decoded; a dictionary only pays off beyond one row
    return {"write_page_checksum": True, "use_dictionary": data.num_rows > 1}


class LocalFiles:
    """Today's code path: plain files, hard links, os.walk."""

    filesystem: pafs.FileSystem | None = None

    def __init__(self, root: Path) -> None:
        self.root: PurePath = root

    def url(self, path: PurePath) -> str:
        return str(path)

    def exists(self, path: PurePath) -> bool:
        return Path(path).exists()

    def is_dir(self, path: PurePath) -> bool:
        return Path(path).is_dir()

    def subdirs(self, directory: PurePath) -> list[str]:
        if not Path(directory).is_dir():
            return []
        return [e.name for e in os.scandir(directory) if e.is_dir()]

    def parquet_files(self, directory: PurePath) -> list[PurePath]:
        """Trace files under ``directory``, none if it does not exist (os.walk: a tenth of rglob's cost, for 10^5 partitions)."""
        found: list[PurePath] = [
            Path(parent, name) for parent, _, names in os.walk(directory) for name in names if name.endswith(".parquet") and not name.startswith((".", "_"))
        ]
        return sorted(found)

    def write_new(self, directory: PurePath, name: str, data: pa.Table) -> PurePath:
        """One new complete file: written beside its final name, fsynced, hard-linked into place (never replaces)."""
        local = Path(directory)
        local.mkdir(parents=True, exist_ok=True)
        final = local / f"{name}.parquet"
        tmp = local / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(data, tmp, **_parquet_bytes_options(data))
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.link(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(local)
        return final

    def open_read(self, path: PurePath) -> IO[bytes]:
        return open(path, "rb")

    def move(self, source: PurePath, target: PurePath) -> None:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)


class ObjectFiles:
    """An fsspec object store (s3fs): conditional creates, direct listings, pyarrow through the same filesystem."""

    def __init__(self, store: SharedStore, *parts: str) -> None:
        self.store = store
        self.fs = store.filesystem()
        self.root: PurePath = PurePosixPath(store.path, *parts)
        self.filesystem: pafs.FileSystem | None = pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    def url(self, path: PurePath) -> str:
        return f"{self.store.protocol}://{path}"

    def exists(self, path: PurePath) -> bool:
        return bool(self.fs.exists(str(path)))

    def is_dir(self, path: PurePath) -> bool:
        return bool(self.fs.isdir(str(path)))

    def subdirs(self, directory: PurePath) -> list[str]:
        try:
            entries = self.fs.ls(str(directory), detail=True, refresh=True)
        except FileNotFoundError:
            return []
        return [PurePosixPath(e["name"]).name for e in entries if e["type"] == "directory"]

    def parquet_files(self, directory: PurePath) -> list[PurePath]:
        try:
            names = self.fs.find(str(directory), withdirs=False)
        except FileNotFoundError:
            return []
        found: list[PurePath] = [PurePosixPath(n) for n in names if n.endswith(".parquet") and not PurePosixPath(n).name.startswith((".", "_"))]
        return sorted(found)

    def write_new(self, directory: PurePath, name: str, data: pa.Table) -> PurePath:
        """One PutObject with If-None-Match: * — the object is whole or absent; FileExistsError if the name is taken."""
        sink = pa.BufferOutputStream()
        pq.write_table(data, sink, **_parquet_bytes_options(data))
        final = PurePosixPath(directory, f"{name}.parquet")
        self.fs.pipe_file(str(final), sink.getvalue().to_pybytes(), mode="create")  # s3fs: 412 -> FileExistsError
        return final

    def open_read(self, path: PurePath) -> IO[bytes]:
        handle: IO[bytes] = self.fs.open(str(path), "rb")
        return handle

    def move(self, source: PurePath, target: PurePath) -> None:
        self.fs.mv(str(source), str(target))


Files = LocalFiles | ObjectFiles


def trace_files(home: HomeLayout) -> Files:
    shared = home.shared
    return ObjectFiles(shared, "traces") if shared else LocalFiles(home.traces)


def result_files(home: HomeLayout) -> Files:
    shared = home.shared
    return ObjectFiles(shared, "results") if shared else LocalFiles(home.results)


def iter_chunks(handle: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    return iter(lambda: handle.read(size), b"")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
