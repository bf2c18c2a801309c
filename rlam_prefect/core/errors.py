"""Errors a user can act on. The CLI prints ``str(error)`` as one line and exits non-zero."""

from __future__ import annotations

import errno
import os


def one_line(exc: BaseException, limit: int = 500) -> str:
    """An exception as one line of at most ``limit`` characters (its type when it says nothing)."""
    text = " ".join(str(exc).split())
    return text[:limit] if text else type(exc).__name__


class RLamError(Exception):
    """Base class: a clear, one-line, user-facing failure."""

    exit_code = 2


class UsageError(RLamError):
    """Bad command-line or flow input: nothing was run and nothing was written."""


class UnknownRunError(UsageError):
    pass


class UnknownActionError(UsageError):
    pass


class InvalidParamsError(UsageError):
    pass


class DataFileError(UsageError):
    """A data file a step declares is missing, unreadable, empty or not what it should be; one line naming it."""


class TraceCorruptError(RLamError):
    """A trace file cannot be read; it is named and left untouched."""

    exit_code = 3


class StoredResultError(RLamError):
    """A cached result is missing or does not match the hash recorded when it was written."""

    exit_code = 4


class ReplayMismatchError(RLamError):
    """A replay could not serve a step from the cache, or served one with a different hash."""

    exit_code = 4


class StorageError(RLamError):
    """RLAM_HOME could not be written (full, read-only, not ours): nothing half-written was indexed."""

    exit_code = 7


STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def storage_error(exc: OSError) -> StorageError | None:
    """A write refused by the file system as one line, or None for any other OSError (a bug: let it raise)."""
    if exc.errno not in STORAGE_ERRNOS:
        return None
    where = f": {exc.filename}" if exc.filename else ""
    return StorageError(f"cannot write to RLAM_HOME ({os.strerror(exc.errno)}{where}); what was recorded before is kept, free space or fix the permissions and run the command again")


class ActionContractError(RLamError):
    """An action returned something other than what it declares."""

    exit_code = 5


class PrefectAPIError(RLamError):
    """The Prefect API (its server or database) failed while a run was in progress."""

    exit_code = 6
