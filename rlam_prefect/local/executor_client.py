"""The warm executor's client side: find it, hand it a command, start or stop it.

The executor itself (``executor.py``) is documented there. This side must stay cheap to import: it
runs before any heavy import, in every ``rlam run|replay|fork``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.local.processes import pid_alive

SWITCH_ENV = "RLAM_EXECUTOR"
PROTOCOL = 1
MAX_CHILDREN = 4
# Settings read once, when the executor imports its modules: Prefect's and litellm's, the interpreter's, and the
# BLAS libraries numpy loads (OPENBLAS_CORETYPE picks other kernels, whose floating-point results differ in their
# last bits): a command that sets any of them differently must not run in a child that inherited the old ones
IMPORT_TIME_ENV_PREFIXES = ("PREFECT_", "LITELLM_", "PYTHON", "DO_NOT_TRACK", "OPENBLAS_", "OMP_", "MKL_", "BLIS_", "VECLIB_", "GOTO_")
_PER_SERVER_ENV = ("PREFECT_API_URL", "PREFECT_HOME")  # set by backend.configure for the managed server
_SOCKET_PATH_MAX = 100  # AF_UNIX paths are limited to 107 bytes
_CHILD_TERM_GRACE_S = 30.0


def socket_path(home: HomeLayout) -> Path:
    return home.prefect / "executor.sock"


def state_path(home: HomeLayout) -> Path:
    return home.prefect / "executor.json"


def log_path(home: HomeLayout) -> Path:
    return home.prefect / "executor.log"


def _lock_path(home: HomeLayout) -> Path:
    return home.prefect / "executor.lock"


def enabled(environ: dict[str, str] | None = None) -> bool:
    """Off with RLAM_EXECUTOR=off/0; with PREFECT_API_URL set, only when RLAM_EXECUTOR=on/1."""
    env = os.environ if environ is None else environ
    switch = (env.get(SWITCH_ENV) or "auto").strip().lower()
    if switch in ("0", "off", "false", "no"):
        return False
    if switch in ("1", "on", "true", "yes"):
        return True
    return not env.get("PREFECT_API_URL")


# ---- what makes an executor stale --------------------------------------------------------


def _project_sources() -> list[Path]:
    """The library's sources and the action modules of the project in the working directory."""
    from rlam_prefect.actions.project import find_project

    return [Path(__file__).resolve().parents[1], *find_project().module_paths()]


def fingerprint(environ: dict[str, str] | None = None) -> str:
    """Project sources (mtime, size), installed packages (site-packages directory mtimes),
    interpreter and the settings read at import time (IMPORT_TIME_ENV_PREFIXES). Cheap: stats only."""
    env = os.environ if environ is None else environ
    parts: list[Any] = [PROTOCOL, sys.executable, sys.version]
    for source in _project_sources():
        for path in sorted(source.rglob("*.py")) if source.is_dir() else [source]:
            with contextlib.suppress(OSError):
                st = path.stat()
                parts.append((str(path), st.st_mtime_ns, st.st_size))
    for entry in sys.path:
        if entry.endswith("site-packages"):
            with contextlib.suppress(OSError):
                parts.append((entry, os.stat(entry).st_mtime_ns))
    settings = sorted(
        (k, v) for k, v in env.items() if k.startswith(IMPORT_TIME_ENV_PREFIXES) and k not in _PER_SERVER_ENV
    )
    parts.append(settings)
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


# ---- the client side ---------------------------------------------------------------------


def read_state(home: HomeLayout) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(state_path(home).read_text())  # written by the executor as a JSON object
        return state
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def hand_over(home: HomeLayout, argv: Sequence[str], server_launched: bool = False, loading: subprocess.Popen[bytes] | None = None,
              planner: bool = False) -> int | None:
    """Run ``rlam argv`` in this home's executor; None means "run it in-process" (no executor, stale, busy).

    ``server_launched``: this home's managed server runs or starts, so an executor still loading for it
    will be ready soon and is waited for. ``loading``: the executor this client just spawned (it may not
    hold its lock yet), waited for while it lives. ``planner``: the command may ask a litellm planner, so
    the executor imports litellm once it is idle, for the next such command."""
    path = socket_path(home)
    if not enabled() or len(str(path)) > _SOCKET_PATH_MAX or not _wait_for_starting(home, server_launched, loading):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        try:
            sock.connect(str(path))
        except OSError:
            return None  # stale socket file: nobody listens
        request = {
            "protocol": PROTOCOL,
            "fingerprint": fingerprint(),
            "argv": list(argv),
            "env": {**os.environ, "RLAM_HOME": str(home.root)},
            "cwd": os.getcwd(),
            "planner": planner,
        }
        try:
            socket.send_fds(sock, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        except OSError:
            return None  # e.g. a closed stdin: nothing was sent, run it here
        sock.settimeout(30.0)
        reader = sock.makefile("rb")
        reply = _read_line(reader)
        if not reply or not reply.get("accepted"):
            return None  # nothing was started: the executor forks only after the "go" below
        try:
            sock.sendall(b"go\n")  # the commit point: from here on the command is the executor's
        except OSError:
            done = None
        else:
            sock.settimeout(None)  # the command runs as long as it runs
            done = _read_line(reader)
    finally:
        sock.close()
    if done is None or "exit" not in done:
        print("rlam: error: the rlam executor stopped before the command finished; see "
              f"{log_path(home)} and `rlam runs`", file=sys.stderr)
        return 1
    return int(done["exit"])


STARTING_WAIT_S = 30.0


def wait_ready(home: HomeLayout, loading: subprocess.Popen[bytes] | None) -> bool:
    """Wait (at most STARTING_WAIT_S) until this home's executor listens; False if it did not come up.

    ``rlam server start`` waits, so that the first command after it is served warm like the later ones."""
    return _wait_for_starting(home, True, loading)


def _wait_for_starting(home: HomeLayout, server_launched: bool, loading: subprocess.Popen[bytes] | None = None) -> bool:
    """The executor listens, or it is loading for a server that is up or starting: wait for it then.

    Right after a home's first command its executor is still importing; running the next command
    in-process would pay the same imports again, on the same cores, so waiting is never slower."""
    deadline = time.monotonic() + STARTING_WAIT_S
    while not socket_path(home).exists():
        spawned_and_alive = loading is not None and loading.poll() is None
        if not server_launched or not (spawned_and_alive or _starting(home)) or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _starting(home: HomeLayout) -> bool:
    """An executor holds its lock from its start to its exit; before it listens, it is loading."""
    try:
        with open(_lock_path(home), "rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


def _read_line(reader: Any) -> dict[str, Any] | None:
    try:
        line = reader.readline()
    except OSError:
        return None
    if not line:
        return None
    try:
        message: dict[str, Any] = json.loads(line)  # the protocol's messages are JSON objects
        return message
    except json.JSONDecodeError:
        return None


def spawn(home: HomeLayout, environ: dict[str, str], planner: bool = False) -> subprocess.Popen[bytes] | None:
    """Start this home's executor in the background unless one runs (or is starting); the process started, if any.

    ``planner``: a command of this home asks a litellm planner, so litellm is imported with the rest (while
    the server starts); without it, only once a command handed over asks one (litellm is 2-3 s of CPU and
    about 170 MB that a home running only ``--planner fixed`` never needs).

    ``environ`` is the client's environment as it was before ``backend.configure`` pointed it
    at the managed server, so the executor decides the same way the client did."""
    if not enabled(environ) or len(str(socket_path(home))) > _SOCKET_PATH_MAX:
        return None
    home.prefect.mkdir(parents=True, exist_ok=True)
    with open(_lock_path(home), "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # a live executor holds the lock for its whole life
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    with open(log_path(home), "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "rlam_prefect.cli.executor_entry", "--home", str(home.root), *(["--planner"] if planner else [])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=dict(environ), cwd=os.getcwd(),  # the project whose actions it preloads
        )


def status(home: HomeLayout) -> dict[str, Any]:
    state = read_state(home)
    if not state:
        return {"running": False}
    return {**state, "running": pid_alive(state.get("pid")) and socket_path(home).exists()}


def stop(home: HomeLayout, wait: float = 10.0) -> bool:
    pid = request_stop(home)
    if pid is None and read_state(home) is None:
        return False
    wait_stopped(home, pid, wait)
    return True


def request_stop(home: HomeLayout) -> int | None:
    """SIGTERM to this home's executor (it interrupts its running commands and exits); its pid, or None."""
    pid: int | None = (read_state(home) or {}).get("pid")
    if pid is None or not pid_alive(pid):
        _forget(home, pid)
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return pid


def wait_stopped(home: HomeLayout, pid: int | None, wait: float = 10.0) -> None:
    """Wait for the executor to exit after ``request_stop``; SIGKILL after ``wait`` seconds."""
    if pid is not None:
        deadline = time.monotonic() + wait
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    _forget(home, pid)


def _forget(home: HomeLayout, pid: int | None) -> None:
    with contextlib.suppress(FileNotFoundError):
        if (read_state(home) or {}).get("pid") == pid:
            state_path(home).unlink()
            socket_path(home).unlink(missing_ok=True)


