"""Where traces and results live, and which lock serialises a content key: read from the environment.

``RLAM_STORE_URL`` moves the two shared parts of a home, ``traces/`` and ``results/``, to one
fsspec URL: ``s3://bucket/prefix`` (needs the ``[s3]`` extra; credentials and ``AWS_ENDPOINT_URL``
as boto reads them) or ``file:///path`` (a local or network directory, today's code path).
Everything per machine (the embedded Prefect server, executor sockets, lock files) stays in
``RLAM_HOME``. ``RLAM_LOCK_URL=redis://host:port/db`` makes the per-key lock hold across machines
(needs the ``[redis]`` extra). fsspec and s3fs are imported only when a URL names them.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rlam_prefect.core.errors import UsageError

STORE_ENV = "RLAM_STORE_URL"
LOCK_ENV = "RLAM_LOCK_URL"
LOCK_HOLD_ENV = "RLAM_LOCK_HOLD_SECONDS"
OBJECT_PROTOCOLS = ("s3",)  # stores whose writes can be a conditional create (S3 If-None-Match: *)


@dataclass(frozen=True)
class SharedStore:
    """An object store location: ``protocol://path``; every file written under it is created, never replaced."""

    protocol: str
    path: PurePosixPath  # bucket/prefix, as fsspec names it (no protocol)

    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.path}"

    def filesystem(self) -> Any:
        """The fsspec filesystem (s3fs for s3://), listing cache off: other machines write here too."""
        return _filesystem(self.protocol)


@functools.cache
def _filesystem(protocol: str) -> Any:
    import fsspec

    try:
        return fsspec.filesystem(protocol, use_listings_cache=False)
    except ImportError as exc:
        raise UsageError(f"{STORE_ENV}={protocol}://...: {exc} (install rlam-prefect[s3])") from None


def parse_store(url: str) -> Path | SharedStore:
    """A ``file://`` URL or plain path as a local directory; an ``s3://`` URL as a SharedStore; anything else is refused."""
    protocol, sep, rest = url.partition("://")
    if not sep:
        return Path(url).expanduser().resolve()
    if protocol == "file":
        return Path(rest).expanduser().resolve()
    if protocol in OBJECT_PROTOCOLS:
        path = PurePosixPath(rest.strip("/"))
        if not rest.strip("/"):
            raise UsageError(f"{STORE_ENV}={url}: name a bucket (s3://bucket/prefix)")
        return SharedStore(protocol, path)
    raise UsageError(f"{STORE_ENV}={url}: only file:// and s3:// are supported (trace files need a create that refuses to overwrite)")


def lock_url() -> str | None:
    return os.environ.get(LOCK_ENV) or None


def lock_hold_seconds() -> float:
    """How long a lock outlives a worker killed while holding it (a running step renews nothing: keep it above the longest step)."""
    raw = os.environ.get(LOCK_HOLD_ENV) or "900"
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{LOCK_HOLD_ENV}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise UsageError(f"{LOCK_HOLD_ENV}={raw!r} must be positive")
    return value


def unshared_lock_warning(store: SharedStore | None) -> str | None:
    """The one start-up line when results are shared but keys are locked per machine only."""
    if store is None or lock_url():
        return None
    return (f"warning: results are on shared storage ({store.url}) but {LOCK_ENV} is not set: two machines may compute "
            "the same key at once (an identical duplicate is accepted, a different one is refused)")
