"""The one per-key lock: held from the index check through execution to the index write.

Two engines, one path. Without RLAM_LOCK_URL it is today's flock on striped files in RLAM_HOME's
``locks/`` (exclusive across processes and threads of one machine). With
``RLAM_LOCK_URL=redis://...`` it is Prefect's own distributed lock manager, prefect-redis's
``RedisLockManager`` (the lock Prefect's SERIALIZABLE transactions take), so two machines never
compute one content key at once. Prefect's transaction isolation is not also set on the task's
cache policy: rlam's lock must also cover the result index read before the task and written after
it, and a second lock on the same key inside would wait on this one (each Prefect transaction
holds as its own random holder).

A Redis lock expires after RLAM_LOCK_HOLD_SECONDS so that a worker killed while holding one does
not block the key for ever; a step that outlives it is refused at the end, never indexed silently.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from typing import Any

from rlam_prefect.core.errors import StoredResultError
from rlam_prefect.core.filelock import exclusive
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.core.storage import LOCK_ENV, LOCK_HOLD_ENV, lock_hold_seconds, lock_url, unshared_lock_warning

_LOCK_STRIPES = 256


@contextlib.contextmanager
def key_lock(home: HomeLayout, key: str) -> Iterator[None]:
    """Exclusive for ``key`` across processes (and across machines with RLAM_LOCK_URL)."""
    url = lock_url()
    if url is None:
        with _file_lock(home, key):
            yield
        return
    manager = _redis_manager(url)
    name = f"rlam-result:{key}"
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    hold = lock_hold_seconds()
    if not manager.acquire_lock(name, holder, acquire_timeout=None, hold_timeout=hold):
        raise StoredResultError(f"could not take the lock on {key[:16]} at {LOCK_ENV}")
    try:
        yield
        if not manager.is_lock_holder(name, holder):
            raise StoredResultError(f"the lock on {key[:16]} expired while the step ran ({LOCK_HOLD_ENV}={hold:g}); another worker may have computed it too")
    finally:
        if manager.is_lock_holder(name, holder):
            manager.release_lock(name, holder)


def warn_if_unshared(home: HomeLayout) -> None:
    """Once per process: shared results without a shared lock is said on stderr, in one line."""
    line = unshared_lock_warning(home.shared)
    if line is not None:
        _warn_once(line)


@functools.cache
def _warn_once(line: str) -> None:
    print(line, file=sys.stderr)


@contextlib.contextmanager
def _file_lock(home: HomeLayout, key: str) -> Iterator[None]:
    home.locks.mkdir(parents=True, exist_ok=True)
    path = home.locks / f"result-{int(key[:8], 16) % _LOCK_STRIPES:03d}.lock"
    with exclusive(path):
        yield


@functools.cache
def _redis_manager(url: str) -> Any:
    try:
        from prefect_redis.locking import RedisLockManager
    except ImportError as exc:
        raise StoredResultError(f"{LOCK_ENV}={url}: {exc} (install rlam-prefect[redis])") from None
    return RedisLockManager(connection_url=url)
