"""The one blocking file lock (flock) behind every local critical section.

Per-key result locks, the embedded server's start-up and the database template's build all need
the same thing: one process at a time on this machine, released by the kernel if the holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing) for the ``with`` block."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
