"""Guarding Prefect's stored results: Prefect persists them; we prove they are the ones recorded.

Prefect treats a missing or unreadable result file as a cache miss and silently recomputes it.
Before a step may be served from the cache, the engine checks the file against the digest
indexed when it was written; only then does Prefect unpickle it. A per-key file lock keeps two
processes from computing and writing the same key at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlam_prefect.core.errors import StoredResultError
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.record.store import utcnow

_LOCK_STRIPES = 256


class ResultGuard:
    def __init__(self, home: HomeLayout) -> None:
        self.home = home

    def data_path(self, key: str) -> Path:
        return self.home.result_data / key

    def key_path(self, key: str) -> Path:
        return self.home.result_keys / key

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive across processes and threads for this key (striped: bounded lock files)."""
        self.home.locks.mkdir(parents=True, exist_ok=True)
        path = self.home.locks / f"result-{int(key[:8], 16) % _LOCK_STRIPES:03d}.lock"
        with open(path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def file_digest(self, key: str) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        with open(self.data_path(key), "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
        return "sha256:" + digest.hexdigest(), size

    def verify(self, key: str, record: dict[str, Any], what: str) -> None:
        """Raise StoredResultError naming ``what`` unless the stored file is byte-for-byte the recorded one."""
        if not self.data_path(key).exists() or not self.key_path(key).exists():
            raise StoredResultError(
                f"{what}: cached result {self.data_path(key)} is missing (recorded by run {record['run_id']} "
                f"step {record['step']}); refusing to recompute it silently"
            )
        digest, _ = self.file_digest(key)
        if digest != record["result_digest"]:
            raise StoredResultError(
                f"{what}: cached result {self.data_path(key)} does not match the digest recorded by run "
                f"{record['run_id']} step {record['step']} (recorded {record['result_digest'][:19]}, "
                f"found {digest[:19]}); it was left untouched"
            )

    def quarantine_orphan(self, key: str) -> Path | None:
        """Move aside a result that no trace vouches for (a crash between write and index).

        Prefect would otherwise serve it unverified; it is kept, not deleted, for inspection.
        """
        present = [p for p in (self.data_path(key), self.key_path(key)) if p.exists()]
        if not present:
            return None
        target = self.home.quarantine / f"{key}-{utcnow().strftime('%Y%m%dT%H%M%S%f')}"
        target.mkdir(parents=True, exist_ok=True)
        for path in present:
            shutil.move(str(path), target / path.parent.name)
        return target
