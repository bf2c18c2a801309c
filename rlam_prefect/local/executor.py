"""A warm executor per RLAM_HOME: `rlam run|replay|fork` without paying the imports again.

A fresh process pays ``import prefect`` (~1 s), scikit-learn (~1 s) and, with an LLM planner,
``import litellm`` (2-3 s) before doing any work. A home's first flow command starts
``python -m rlam_prefect.cli.executor_entry`` detached, beside the server it launches: the executor
imports those modules while the server starts, connects to it and listens on
``$RLAM_HOME/prefect/executor.sock``; a first ``rlam run`` is then handed to it (``cli/main.py``).
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

import contextlib
import fcntl
import functools
import io
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

from rlam_prefect.core.files import write_json
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.local.executor_client import (
    _CHILD_TERM_GRACE_S,
    MAX_CHILDREN,
    PROTOCOL,
    _lock_path,
    fingerprint,
    read_state,
    socket_path,
    state_path,
)
from rlam_prefect.local.processes import pid_alive

Command = Callable[[list[str]], int]  # runs `rlam argv` in a child and returns its exit code
_WARM_AFTER_IDLE_S = 2.0  # litellm is imported once nothing has run for this long (warm_planner), if a command wants it


# ---- the executor process ----------------------------------------------------------------


@functools.cache  # once per process: the executor calls it while the server starts, or after
def _import_for_commands() -> None:
    """Prefect's engines, the flow and the project's actions (after ``configure``: Prefect reads its API at import)."""
    from rlam_prefect.actions.project import find_project, load_action_modules
    from rlam_prefect.local.backend import import_flow_engine

    import_flow_engine()
    if find_project().actions:  # the project it was started from; a child of another project is refused as stale
        load_action_modules()


class _Executor:
    def __init__(self, home: HomeLayout, idle_minutes: float, command: Command) -> None:
        self.home = home
        self.command = command
        self.idle_s = idle_minutes * 60.0
        self.stopping = False
        self.server_gone = False  # its commands are left to fail on their own (one line, run recorded failed)
        self.children: dict[int, socket.socket] = {}  # child pid -> its client's connection
        self.terminated_at: dict[int, float] = {}
        self.last_activity = time.monotonic()
        self.server_checked = time.monotonic()
        self.planner_warm = False
        self.wants_planner = False  # a command of this home asked (or may ask) a litellm planner: warm it when idle
        self.wake_fds: tuple[int, int]  # a pipe that SIGCHLD writes to (serve)

    def _server_alive(self) -> bool:
        """The managed server this executor serves still runs (state file and supervisor process)."""
        from rlam_prefect.local import server

        state = server.read_state(self.home)
        return bool(state and state.get("url") == self.api_url and pid_alive(state.get("supervisor_pid")))

    def preload(self, planner: bool = False) -> bool:
        """Import what every command needs, while the server starts; False when no client launched it (nothing to serve)."""
        from rlam_prefect.actions.project import ACTION_MODULES_ENV
        from rlam_prefect.local.backend import configure

        os.environ.pop(ACTION_MODULES_ENV, None)  # a user's own action modules are imported fresh in each child
        self.fingerprint = fingerprint()
        self.managed = not os.environ.get("PREFECT_API_URL")  # else the user's server, given to the client too
        # Neither imports Prefect, so they load before the server's address is known (the client launches the
        # server just after spawning this process): scikit-learn (cached results unpickle estimators) and, for a
        # first command that asks a litellm planner, litellm
        import sklearn.linear_model  # noqa: F401

        if planner:
            self.wants_planner = True
            self.warm_planner()
        if self.managed and not server_launched(self.home):
            return False
        self.api_url = configure(self.home, preload=_import_for_commands)  # while the server starts
        _import_for_commands()  # nothing left to do unless the server was already up
        return True

    def warm_planner(self) -> None:
        """Import litellm (2-3 s) once, when no command runs: measured, importing it beside a home's first run (the
        server, the run and this on two cores) made that run 1.4 s slower; a command that arrives meanwhile waits for it."""
        if not self.planner_warm:
            self.planner_warm = True
            from rlam_prefect.planning.llm import warm_up

            warm_up()  # litellm, and the lazy imports of its first call: the default planner is a litellm model

    def serve(self, listener: socket.socket) -> None:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        # a child's exit wakes the loop at once (its client waits for the exit code), not at the next 0.2 s tick
        self.wake_fds = os.pipe()
        for fd in self.wake_fds:
            os.set_blocking(fd, False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # a Python handler, so the wakeup fd hears of it
        signal.set_wakeup_fd(self.wake_fds[1], warn_on_full_buffer=False)
        while not self.stopping or self.children:
            if self.stopping and listener.fileno() >= 0:
                listener.close()
                socket_path(self.home).unlink(missing_ok=True)
                for pid in list(self.children) if not self.server_gone else []:  # those end themselves, in one line
                    self._terminate(pid)
            # a child being interrupted is only reaped: its client's closed socket stays readable and would spin this loop
            watched: list[socket.socket | int] = [conn for pid, conn in self.children.items() if pid not in self.terminated_at]
            watched.append(self.wake_fds[0])
            if listener.fileno() >= 0:
                watched.append(listener)
            try:
                readable, _, _ = select.select(watched, [], [], 0.2)
            except InterruptedError:
                readable = []
            for item in readable:
                if item == self.wake_fds[0]:
                    with contextlib.suppress(BlockingIOError):
                        os.read(item, 512)  # the signal numbers: _reap below does the rest
                elif item is listener:
                    self._accept(listener)
                elif isinstance(item, socket.socket):
                    self._client_gone(item)
            self._reap()
            if self.managed and not self.stopping and time.monotonic() - self.server_checked > 2.0:
                self.server_checked = time.monotonic()
                if not self._server_alive():
                    print("rlam executor: the local Prefect server stopped, stopping once running commands end", flush=True)
                    self.stopping = self.server_gone = True
            idle = not self.stopping and not self.children and time.monotonic() - self.last_activity > _WARM_AFTER_IDLE_S
            if idle and self.wants_planner:
                self.warm_planner()
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
            self.wants_planner |= bool(request.get("planner"))
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
        from rlam_prefect.local import server

        if request.get("protocol") != PROTOCOL or len(fds) != 3:
            return "protocol"
        if request.get("fingerprint") != self.fingerprint:
            return "stale: project sources, installed packages or settings changed"
        env = request.get("env") or {}
        if HomeLayout(Path(env.get("RLAM_HOME") or "")).root.resolve() != self.home.root:
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

    def _child(self, request: dict[str, Any], fds: list[int], conn: socket.socket) -> NoReturn:
        with contextlib.suppress(OSError):  # an exception here would return the child into the parent's loop
            signal.set_wakeup_fd(-1)  # the command's own subprocesses are its business, as in any process
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in self.wake_fds:
                os.close(fd)
            conn.close()
            for other in self.children.values():
                other.close()
        env = dict(request["env"])
        if self.managed:
            env["PREFECT_API_URL"] = self.api_url
            env["PREFECT_HOME"] = str(self.home.prefect)
        run_in_child(self.command, list(request["argv"]), env, request["cwd"], fds)

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


def run_in_child(command: Command, argv: list[str], env: dict[str, str], cwd: str, fds: Sequence[int]) -> NoReturn:
    """Run ``rlam argv`` as a freshly forked child of a preloaded process, and exit with its code.

    ``fds`` become the child's stdin, stdout and stderr; ``env`` and ``cwd`` replace the ones it was forked
    with. Exit handlers run before ``os._exit`` (Prefect's API log and event workers drain there), and any
    exception still leaves one line and an exit code: the process that waits for it reads nothing else."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupted)  # the client went away: stop like Ctrl-C
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        # the interpreter's own streams (the fork's fds 0-2 were just replaced below them): TextIOWrappers
        cast(io.TextIOWrapper, sys.stdout).reconfigure(line_buffering=os.isatty(1))
        cast(io.TextIOWrapper, sys.stderr).reconfigure(line_buffering=True)
        sys.argv = ["rlam", *argv]
        code = command(list(argv))
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


def server_launched(home: HomeLayout, timeout: float = 60.0) -> bool:
    """Wait for the client that spawned this executor to launch (or find) the home's server.

    The first command of a home spawns its executor before its own work, so both load at once;
    a command that then fails before it needs Prefect launches nothing, and the executor leaves."""
    from rlam_prefect.local import server

    deadline = time.monotonic() + timeout
    while server.read_state(home) is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt("the rlam client went away")


def run_executor(home: HomeLayout, idle_minutes: float, command: Command, planner: bool = False) -> int:
    """Serve this home until idle or stopped; each accepted request runs ``command`` in a forked child."""
    home.prefect.mkdir(parents=True, exist_ok=True)
    lock = open(_lock_path(home), "a+b")  # held until exit: one executor per home
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0
    executor = _Executor(home, idle_minutes, command)
    started = time.monotonic()
    if not executor.preload(planner):
        print("rlam executor: no local Prefect server was launched for this home, stopping", flush=True)
        return 0
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
    write_json(state_path(home), state)
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
