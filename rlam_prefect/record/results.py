"""Guarding Prefect's stored results: Prefect persists them; we prove they are the ones recorded.

Prefect treats a missing or unreadable result file as a cache miss and silently recomputes it.
Before a step may be served from the cache, the engine checks the file against the digest
indexed when it was written; only then does Prefect unpickle it. The files are read where
Prefect wrote them: RLAM_HOME's ``results/`` or the object store of RLAM_STORE_URL
(record/backends.py). The per-key lock that keeps two workers from computing one key at once
is execution/locks.py.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePath
from typing import Any

from rlam_prefect.core.errors import StoredResultError, one_line
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.record.backends import Files, iter_chunks, result_files
from rlam_prefect.record.store import utcnow


class ResultGuard:
    def __init__(self, home: HomeLayout) -> None:
        self.home = home
        self.io: Files = result_files(home)

    def data_path(self, key: str) -> PurePath:
        return self.io.root / "data" / key

    def key_path(self, key: str) -> PurePath:
        return self.io.root / "keys" / key

    def location(self, key: str) -> str:
        return self.io.url(self.data_path(key))

    def has_data(self, key: str) -> bool:
        return self.io.exists(self.data_path(key))

    def read(self, path: PurePath) -> bytes:
        with self.io.open_read(path) as handle:
            return handle.read()

    def file_digest(self, key: str, what: str) -> tuple[str, int]:
        """The stored result's digest and size; a read that fails is the step's StoredResultError.

        Without a shared lock two workers may write one key at once: an object store then refuses
        the read of an object replaced under it (s3fs's FileExpired), and the step fails on that,
        named, as a trace row, instead of ending the run with no row for the step.
        """
        digest = hashlib.sha256()
        size = 0
        try:
            with self.io.open_read(self.data_path(key)) as handle:
                for chunk in iter_chunks(handle):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise StoredResultError(
                f"{what}: its stored result {self.location(key)} could not be read ({type(exc).__name__}: {one_line(exc, 200)}); "
                "another worker may have written the same key at once (set RLAM_LOCK_URL); nothing was indexed from it"
            ) from None
        return "sha256:" + digest.hexdigest(), size

    def verify(self, key: str, record: dict[str, Any], what: str) -> None:
        """Raise StoredResultError naming ``what`` unless the stored file is byte-for-byte the recorded one."""
        if not self.io.exists(self.data_path(key)) or not self.io.exists(self.key_path(key)):
            raise StoredResultError(
                f"{what}: cached result {self.location(key)} is missing (recorded by run {record['run_id']} "
                f"step {record['step']}); refusing to recompute it silently"
            )
        digest, _ = self.file_digest(key, what)
        if digest != record["result_digest"]:
            raise StoredResultError(
                f"{what}: cached result {self.location(key)} does not match the digest recorded by run "
                f"{record['run_id']} step {record['step']} (recorded {record['result_digest'][:19]}, "
                f"found {digest[:19]}); it was left untouched"
            )

    def quarantine_orphan(self, key: str) -> str | None:
        """Move aside a result that no trace vouches for (a crash between write and index).

        Prefect would otherwise serve it unverified; it is kept, not deleted, for inspection.
        """
        present = [p for p in (self.data_path(key), self.key_path(key)) if self.io.exists(p)]
        if not present:
            return None
        target = self.io.root / "quarantine" / f"{key}-{utcnow().strftime('%Y%m%dT%H%M%S%f')}"
        for path in present:
            self.io.move(path, target / path.parent.name)
        return self.io.url(target)
