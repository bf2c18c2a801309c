"""Whether a process the embedded default started (server supervisor, executor) is still alive."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def pid_alive(pid: int | None) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return False
    return True
