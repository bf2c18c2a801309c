"""Data files as content: the one routine that digests the bytes of a file a step reads.

A file's digest is SHA-256 over its bytes, streamed in 1 MiB blocks (memory stays flat whatever
the size), as ``sha256:<hex>`` — the same value ``sha256sum`` prints. Local paths are read with
``open``; anything with a scheme (``s3://``, ``gs://``, ``memory://``, ``file://`` ...) through fsspec.

The stat cache: within one process a local file is hashed once, and hashed again only when its
stat changes. It trusts that a file whose device, inode, size, modification time and change time
(nanoseconds) are all unchanged has unchanged bytes — what git's index and DVC trust. Writing to a
file moves its ``st_ctime_ns``, which no user-level call can set back, so an in-place edit (even of
the same size, with the mtime restored by ``touch -d``) is seen. Remote files are keyed by the
fsspec ``info()`` fields that identify a version (size plus ETag / mtime / version id) when the
filesystem reports them, and are hashed every time when it reports none.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlam_prefect.core.errors import DataFileError

BLOCK = 1 << 20  # 1 MiB: measured flat memory and full speed (bench/bench_files.py)


@dataclass(frozen=True)
class FileDigest:
    path: str  # as given by the user (a local path or an fsspec URL)
    size: int
    digest: str  # sha256:<hex> of the bytes

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "digest": self.digest}


_LOCK = threading.Lock()
_STAT_CACHE: dict[tuple[Any, ...], FileDigest] = {}
hash_count = 0  # files actually read and hashed in this process (the benchmark and tests count it)


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def file_digest(path: str | os.PathLike[str]) -> FileDigest:
    """The digest of the file at ``path`` (local or fsspec URL), from the stat cache when it is unchanged."""
    text = os.fspath(path)
    if not text:
        raise DataFileError("a data file path is empty")
    if is_url(text):
        return _remote_digest(text)
    local = Path(text.removeprefix("file://")).expanduser()
    try:
        st = local.stat()
    except FileNotFoundError:
        raise DataFileError(f"data file {text} does not exist") from None
    except OSError as exc:
        raise DataFileError(f"data file {text} cannot be read ({exc.strerror or exc})") from None
    if not local.is_file():
        raise DataFileError(f"data file {text} is not a regular file")
    if st.st_size == 0:
        raise DataFileError(f"data file {text} is empty")
    identity = ("local", str(local.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _LOCK:
        known = _STAT_CACHE.get(identity)
    if known is not None:
        return FileDigest(text, known.size, known.digest)
    try:
        with open(local, "rb") as handle:
            digest, size = _stream(handle)
    except OSError as exc:
        raise DataFileError(f"data file {text} cannot be read ({exc.strerror or exc})") from None
    found = FileDigest(text, size, digest)
    if size == st.st_size:  # a file that grew while it was read is hashed again next time
        with _LOCK:
            _STAT_CACHE[identity] = found
    return found


def _remote_digest(url: str) -> FileDigest:
    import fsspec

    try:
        fs, remote = fsspec.core.url_to_fs(url)
        info = fs.info(remote)
    except FileNotFoundError:
        raise DataFileError(f"data file {url} does not exist") from None
    except Exception as exc:  # fsspec backends raise their own types
        raise DataFileError(f"data file {url} cannot be read ({type(exc).__name__}: {exc})") from None
    size = int(info.get("size") or 0)
    if info.get("type") == "directory":
        raise DataFileError(f"data file {url} is not a regular file")
    if size == 0:
        raise DataFileError(f"data file {url} is empty")
    version = tuple(str(info[k]) for k in ("ETag", "etag", "mtime", "LastModified", "VersionId", "generation", "created") if info.get(k) is not None)
    identity = ("remote", url, size, *version)
    if version:
        with _LOCK:
            known = _STAT_CACHE.get(identity)
        if known is not None:
            return FileDigest(url, known.size, known.digest)
    try:
        with fs.open(remote, "rb") as handle:
            digest, read = _stream(handle)
    except Exception as exc:
        raise DataFileError(f"data file {url} cannot be read ({type(exc).__name__}: {exc})") from None
    found = FileDigest(url, read, digest)
    if version:
        with _LOCK:
            _STAT_CACHE[identity] = found
    return found


def _stream(handle: Any) -> tuple[str, int]:
    global hash_count
    h = hashlib.sha256()
    size = 0
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    readinto = getattr(handle, "readinto", None)
    while True:
        if readinto is not None:
            n = readinto(buffer)
            if not n:
                break
            h.update(view[:n])
        else:
            block = handle.read(BLOCK)
            if not block:
                break
            n = len(block)
            h.update(block)
        size += n
    with _LOCK:
        hash_count += 1
    return "sha256:" + h.hexdigest(), size


def clear_stat_cache() -> None:
    with _LOCK:
        _STAT_CACHE.clear()


def write_json(path: Path, value: object) -> None:
    """Write a small JSON record complete or not at all (a temporary file, then a rename): a reader never sees half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)
