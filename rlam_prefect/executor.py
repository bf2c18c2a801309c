"""A warm executor per RLAM_HOME: `rlam run|replay|fork` without paying the imports again.

A fresh process pays ``import prefect`` (~1 s), scikit-learn (~1 s) and, with an LLM planner,
``import litellm`` (2-3 s) before doing any work. After a flow command has run in-process, the
client starts ``python -m rlam_prefect.executor`` detached: it connects to this home's Prefect
server, imports those modules once and listens on ``$RLAM_HOME/prefect/executor.sock``.
Later commands are handed over: the thin client sends argv, environment, working directory and
its own stdin/stdout/stderr file descriptors; the executor forks a child (a copy of the
preloaded process, so every command still runs in a fresh process state) that runs the same
``rlam`` code on those descriptors. Output therefore goes straight to the client's terminal or
pipe, and the exit code comes back over the socket.

Rules (the same lifecycle as the managed server): tied to one RLAM_HOME, discoverable
(``executor.json``), stoppable (``rlam server stop``), stops after RLAM_SERVER_IDLE_MINUTES without
requests and when its server stops; a client killed mid-command interrupts its child (SIGTERM:
inside a flow run Prefect's handler raises TerminationSignal, elsewhere KeyboardInterrupt), so the
run is recorded as failed instead of staying "running". Any doubt means in-process execution: no executor
yet, different project sources or installed packages (the executor then exits and a fresh one
is started after the command), different PREFECT_*/LITELLM_*/PYTHON* settings, too many
commands at once, a server that changed. ``RLAM_EXECUTOR=off`` disables it; with PREFECT_API_URL
set it is off unless ``RLAM_EXECUTOR=on`` (the user's server is used and nothing is started).

This module must stay cheap to import: the client side runs before any heavy import.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlam_prefect.home import Home

SWITCH_ENV = "RLAM_EXECUTOR"
PROTOCOL = 1
MAX_CHILDREN = 4
_FINGERPRINT_ENV_PREFIXES = ("PREFECT_", "LITELLM_", "PYTHON", "DO_NOT_TRACK")
_PER_SERVER_ENV = ("PREFECT_API_URL", "PREFECT_HOME")  # set by backend.configure for the managed server
_SOCKET_PATH_MAX = 100  # AF_UNIX paths are limited to 107 bytes
_CHILD_TERM_GRACE_S = 30.0


def socket_path(home: Home) -> Path:
    return home.prefect / "executor.sock"


def state_path(home: Home) -> Path:
    return home.prefect / "executor.json"


def log_path(home: Home) -> Path:
    return home.prefect / "executor.log"


def _lock_path(home: Home) -> Path:
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


def _project_dirs() -> list[Path]:
    import importlib.util

    dirs = [Path(__file__).resolve().parent]
    for name in ("flows", "tasks"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs += [Path(p) for p in spec.submodule_search_locations]
    return dirs


def fingerprint(environ: dict[str, str] | None = None) -> str:
    """Project sources (mtime, size), installed packages (site-packages directory mtimes),
    interpreter and the settings Prefect and litellm read at import time. Cheap: stats only."""
    env = os.environ if environ is None else environ
    parts: list[Any] = [PROTOCOL, sys.executable, sys.version]
    for directory in _project_dirs():
        for path in sorted(directory.rglob("*.py")):
            with contextlib.suppress(OSError):
                st = path.stat()
                parts.append((str(path), st.st_mtime_ns, st.st_size))
    for entry in sys.path:
        if entry.endswith("site-packages"):
            with contextlib.suppress(OSError):
                parts.append((entry, os.stat(entry).st_mtime_ns))
    settings = sorted(
        (k, v) for k, v in env.items() if k.startswith(_FINGERPRINT_ENV_PREFIXES) and k not in _PER_SERVER_ENV
    )
    parts.append(settings)
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


# ---- the client side ---------------------------------------------------------------------


def read_state(home: Home) -> dict[str, Any] | None:
    try:
        return json.loads(state_path(home).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def hand_over(home: Home, argv: Sequence[str]) -> int | None:
    """Run ``rlam argv`` in this home's executor; None means "run it in-process" (no executor, stale, busy)."""
    path = socket_path(home)
    if not enabled() or len(str(path)) > _SOCKET_PATH_MAX or not path.exists():
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


def _read_line(reader: Any) -> dict[str, Any] | None:
    try:
        line = reader.readline()
    except OSError:
        return None
    if not line:
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def spawn(home: Home, environ: dict[str, str]) -> bool:
    """Start this home's executor in the background unless one runs (or is starting).

    ``environ`` is the client's environment as it was before ``backend.configure`` pointed it
    at the managed server, so the executor decides the same way the client did."""
    if not enabled(environ) or len(str(socket_path(home))) > _SOCKET_PATH_MAX:
        return False
    home.prefect.mkdir(parents=True, exist_ok=True)
    with open(_lock_path(home), "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live executor holds the lock for its whole life
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    with open(log_path(home), "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "rlam_prefect.executor", "--home", str(home.root)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=dict(environ), cwd=str(home.root),
        )
    return True


def status(home: Home) -> dict[str, Any]:
    state = read_state(home)
    if not state:
        return {"running": False}
    return {**state, "running": _alive(state.get("pid")) and socket_path(home).exists()}


def stop(home: Home, wait: float = 10.0) -> bool:
    state = read_state(home)
    if not state:
        return False
    pid = state.get("pid")
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        if (read_state(home) or {}).get("pid") == pid:
            state_path(home).unlink()
            socket_path(home).unlink(missing_ok=True)
    return True


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is not alive
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return False
    return True


# ---- the executor process ----------------------------------------------------------------


class _Executor:
    def __init__(self, home: Home, idle_minutes: float) -> None:
        self.home = home
        self.idle_s = idle_minutes * 60.0
        self.stopping = False
        self.children: dict[int, socket.socket] = {}  # child pid -> its client's connection
        self.terminated_at: dict[int, float] = {}
        self.last_activity = time.monotonic()
        self.server_checked = time.monotonic()

    def _server_alive(self) -> bool:
        """The managed server this executor serves still runs (state file and supervisor process)."""
        from rlam_prefect import server

        state = server.read_state(self.home)
        return bool(state) and state.get("url") == self.api_url and _alive(state.get("supervisor_pid"))

    def preload(self) -> None:
        from rlam_prefect.backend import configure
        from rlam_prefect.actions import ACTION_MODULES_ENV

        os.environ.pop(ACTION_MODULES_ENV, None)  # a user's own action modules are imported fresh in each child
        self.fingerprint = fingerprint()
        self.managed = not os.environ.get("PREFECT_API_URL")  # else the user's server, given to the client too
        self.api_url = configure(self.home)  # the server exists already: the client just used it
        import prefect  # noqa: F401
        import prefect.flow_engine  # noqa: F401
        import prefect.task_engine  # noqa: F401

        import flows.rlam_flow  # noqa: F401
        from rlam_prefect.actions import load_action_modules
        from rlam_prefect.llm import litellm_module

        load_action_modules()
        import sklearn.linear_model  # noqa: F401  (cached results unpickle estimators)

        litellm_module()  # the default planner is a litellm model
        import rlam_prefect.cli  # noqa: F401

    def serve(self, listener: socket.socket) -> None:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        while not self.stopping or self.children:
            if self.stopping and listener.fileno() >= 0:
                listener.close()
                socket_path(self.home).unlink(missing_ok=True)
                for pid in list(self.children):
                    self._terminate(pid)
            watched = [conn for conn in self.children.values()]
            if listener.fileno() >= 0:
                watched.append(listener)
            try:
                readable, _, _ = select.select(watched, [], [], 0.2)
            except InterruptedError:
                readable = []
            for item in readable:
                if item is listener:
                    self._accept(listener)
                else:
                    self._client_gone(item)
            self._reap()
            if self.managed and not self.stopping and time.monotonic() - self.server_checked > 2.0:
                self.server_checked = time.monotonic()
                if not self._server_alive():
                    print("rlam executor: the local Prefect server stopped, stopping", flush=True)
                    self.stopping = True
            if not self.children and time.monotonic() - self.last_activity > self.idle_s and not self.stopping:
                print(f"rlam executor: idle for {self.idle_s / 60:g} min, stopping", flush=True)
                self.stopping = True

    def _request_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        self.last_activity = time.monotonic()
        conn.settimeout(5.0)
        fds: list[int] = []
        try:
            data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            while not data.endswith(b"\n"):
                more = conn.recv(1 << 20)
                if not more:
                    raise ConnectionError("request cut short")
                data += more
            request = json.loads(data)
            refusal = self._refusal(request, fds)
            if refusal:
                print(f"rlam executor: refused ({refusal})", flush=True)
                conn.sendall(json.dumps({"accepted": False, "reason": refusal}).encode() + b"\n")
                conn.close()
                if refusal.startswith("stale"):
                    self.stopping = True  # a fresh executor is started after the client's command
                return
            conn.sendall(json.dumps({"accepted": True}).encode() + b"\n")
            if conn.recv(3) != b"go\n":  # the client gave up waiting and runs the command itself
                raise ConnectionError("the client did not confirm")
            pid = os.fork()
            if pid == 0:
                self._child(request, fds, conn)  # never returns
            conn.settimeout(None)
            self.children[pid] = conn
            print(f"rlam executor: child {pid} runs rlam {' '.join(request['argv'][:2])}", flush=True)
        except (OSError, ValueError, ConnectionError) as exc:
            print(f"rlam executor: bad request: {exc}", flush=True)
            conn.close()
        finally:
            for fd in fds:
                os.close(fd)

    def _refusal(self, request: dict[str, Any], fds: list[int]) -> str | None:
        from rlam_prefect import server

        if request.get("protocol") != PROTOCOL or len(fds) != 3:
            return "protocol"
        if request.get("fingerprint") != self.fingerprint:
            return "stale: project sources, installed packages or settings changed"
        env = request.get("env") or {}
        if Home(Path(env.get("RLAM_HOME") or "")).root.resolve() != self.home.root:
            return "another RLAM_HOME"
        if len(self.children) >= MAX_CHILDREN:
            return "busy"
        if self.managed:
            if env.get("PREFECT_API_URL"):
                return "PREFECT_API_URL given"
            state = server.read_state(self.home)
            if not state or state.get("url") != self.api_url or not server.healthy(self.api_url):
                self.stopping = True
                return "stale: the local Prefect server changed"
            server.touch(self.home)  # client activity keeps the managed server up
        elif env.get("PREFECT_API_URL") != self.api_url:
            return "another PREFECT_API_URL"
        return None

    def _child(self, request: dict[str, Any], fds: list[int], conn: socket.socket) -> None:
        code = 1
        try:
            conn.close()
            for other in self.children.values():
                other.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, _interrupted)  # the client went away: stop like Ctrl-C
            os.chdir(request["cwd"])
            env = dict(request["env"])
            if self.managed:
                env["PREFECT_API_URL"] = self.api_url
                env["PREFECT_HOME"] = str(self.home.prefect)
            os.environ.clear()
            os.environ.update(env)
            sys.stdout.reconfigure(line_buffering=os.isatty(1))
            sys.stderr.reconfigure(line_buffering=True)
            sys.argv = ["rlam", *request["argv"]]
            from rlam_prefect.cli import main

            code = main(request["argv"], executor_child=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # the client still gets one line and an exit code
            with contextlib.suppress(Exception):
                print(f"rlam: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 1
        finally:
            with contextlib.suppress(BaseException):
                import atexit

                atexit._run_exitfuncs()  # Prefect's API log and event workers drain here
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _client_gone(self, conn: socket.socket) -> None:
        for pid, owner in list(self.children.items()):
            if owner is conn:
                try:
                    if conn.recv(1):
                        return  # unexpected bytes: ignore; EOF below means the client is gone
                except OSError:
                    pass
                print(f"rlam executor: client of child {pid} went away, interrupting it", flush=True)
                self._terminate(pid)

    def _terminate(self, pid: int) -> None:
        if pid in self.terminated_at:
            return
        self.terminated_at[pid] = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def _reap(self) -> None:
        for pid in list(self.children):
            done, status_ = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                started = self.terminated_at.get(pid)
                if started is not None and time.monotonic() - started > _CHILD_TERM_GRACE_S:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                continue
            code = os.waitstatus_to_exitcode(status_)
            conn = self.children.pop(pid)
            self.terminated_at.pop(pid, None)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"exit": code if code >= 0 else 128 - code}).encode() + b"\n")
            conn.close()
            self.last_activity = time.monotonic()


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt("the rlam client went away")


def run_executor(home: Home, idle_minutes: float) -> int:
    home.prefect.mkdir(parents=True, exist_ok=True)
    lock = open(_lock_path(home), "a+b")  # held until exit: one executor per home
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0
    executor = _Executor(home, idle_minutes)
    started = time.monotonic()
    executor.preload()
    path = socket_path(home)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(16)
    state = {
        "pid": os.getpid(), "socket": str(path), "fingerprint": executor.fingerprint,
        "api_url": executor.api_url, "started_at": time.time(), "preload_s": round(time.monotonic() - started, 3),
    }
    tmp = state_path(home).with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, state_path(home))
    print(f"rlam executor: ready in {state['preload_s']} s, pid {os.getpid()}", flush=True)
    try:
        executor.serve(listener)
    finally:
        with contextlib.suppress(OSError):
            listener.close()
        if (read_state(home) or {}).get("pid") == os.getpid():
            state_path(home).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
        print("rlam executor: stopped", flush=True)
    return 0


if __name__ == "__main__":
    from rlam_prefect.server import DEFAULT_IDLE_MINUTES, IDLE_ENV

    parser = argparse.ArgumentParser(prog="python -m rlam_prefect.executor")
    parser.add_argument("--home", required=True)
    options = parser.parse_args()
    sys.exit(run_executor(Home(Path(options.home)), float(os.environ.get(IDLE_ENV) or DEFAULT_IDLE_MINUTES)))
