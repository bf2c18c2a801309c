"""The tests' ``rlam`` commands, run the way rlam's warm executor runs a user's commands.

Why: a fresh ``python -m rlam_prefect.cli`` spends 3-4.5 s of CPU importing Prefect's engines, the flow,
scikit-learn and litellm before its command starts (measured here with coverage on, which the README's
test command turns on), and the suite runs a few hundred of them on two cores. So each test process
starts one server, ``python -m tests.warm_cli SOCKET``, that imports those modules once and forks a child
per command. The child runs rlam's own ``main(argv)`` through ``rlam_prefect.local.executor.run_in_child``,
the function a warm executor's child runs for a user: the command's environment, working directory, output
files and exit code, Prefect's exit handlers, a fresh copy of the process for every command.

What does not go through it (``Workspace.rlam`` starts a real subprocess instead):
- a command whose settings read at import differ from the server's: those a warm executor compares
  (Prefect's, litellm's, the interpreter's, the BLAS libraries') and coverage's;
- ``RLAM_EXECUTOR=on``: the command would hand itself to rlam's own executor;
- tests that are about the process itself (start-up, the executor, the server, kills, a fresh venv) start
  their own subprocesses and never call this.

The witness (tests/witness) still counts action bodies: a child whose command names a witness file
installs the profile hook before rlam runs, as a fresh interpreter would at start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlam_prefect.local.backend import QUIET_DEFAULTS
from rlam_prefect.local.executor_client import IMPORT_TIME_ENV_PREFIXES

ROOT = Path(__file__).resolve().parents[1]
SETTING_PREFIXES = (*IMPORT_TIME_ENV_PREFIXES, "COVERAGE_")  # what rlam's executor compares, and coverage's
_READY_TIMEOUT_S = 180.0


# ---- the client, in the test process -------------------------------------------------------


@dataclass
class WarmCli:
    """One fork server of this test process, and the environment it imported its modules under."""

    process: subprocess.Popen[bytes]
    socket_path: Path
    env: dict[str, str]

    @classmethod
    def launch(cls, directory: Path) -> WarmCli:
        path = directory / "warm-cli.sock"
        env = dict(os.environ)
        process = subprocess.Popen([sys.executable, "-m", "tests.warm_cli", str(path)], cwd=ROOT, env=env, stdin=subprocess.PIPE)
        return cls(process, path, {**QUIET_DEFAULTS, **env})  # what the server imported under (configure() in _preload)

    def takes(self, env: dict[str, str]) -> bool:
        """Whether a command with this environment runs the same in a child of this server as in a fresh process."""
        if (env.get("RLAM_EXECUTOR") or "").strip().lower() == "on":
            return False
        effective = {**QUIET_DEFAULTS, **env}  # a fresh `rlam` sets these before it imports Prefect, so does the server
        keys = {k for k in (*effective, *self.env) if k.startswith(SETTING_PREFIXES)}
        return all(effective.get(k) == self.env.get(k) for k in keys)

    def start(self, argv: list[str], env: dict[str, str], cwd: Path) -> WarmProcess:
        """``rlam argv`` in a forked child, not waited for (like ``subprocess.Popen``, in a session of its own)."""
        scratch = tempfile.TemporaryDirectory(prefix="rlam-cmd-")
        out, err = Path(scratch.name, "stdout"), Path(scratch.name, "stderr")
        request = {"argv": argv, "env": env, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}
        conn = self._connect()
        conn.sendall(json.dumps(request).encode() + b"\n")
        reader = conn.makefile("rb")
        started = json.loads(reader.readline() or b"{}")
        if "pid" not in started:
            conn.close()
            scratch.cleanup()
            raise RuntimeError(f"the warm CLI server refused rlam {' '.join(argv)}: {started}")
        return WarmProcess(argv, int(started["pid"]), conn, reader, scratch)

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the warm CLI server exited with {self.process.returncode}")
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.connect(str(self.socket_path))
                return conn
            except (FileNotFoundError, ConnectionRefusedError):
                conn.close()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the warm CLI server did not listen within {_READY_TIMEOUT_S} s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Close its stdin (it exits on EOF, after its children) and wait for it."""
        with contextlib.suppress(OSError):
            if self.process.stdin:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class WarmProcess:
    """A command running in a child of the warm CLI server, waited for like a ``subprocess.Popen``."""

    def __init__(self, argv: list[str], pid: int, conn: socket.socket, reader: Any, scratch: tempfile.TemporaryDirectory[str]) -> None:
        self.argv, self.pid, self._conn, self._reader, self._scratch = argv, pid, conn, reader, scratch
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._conn], [], [], 0)[0]:
            self._read_exit()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._conn], [], [], timeout)[0]:
                self.kill()
                raise TimeoutError(f"rlam {' '.join(self.argv)} did not finish in {timeout} s (killed)")
            self._read_exit()
        return self.returncode  # type: ignore[return-value]

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait, then (stdout, stderr); the output files are removed."""
        self.wait(timeout)
        base = Path(self._scratch.name)
        out, err = (base / name for name in ("stdout", "stderr"))
        found = out.read_text(encoding="utf-8", errors="replace"), err.read_text(encoding="utf-8", errors="replace")
        self._scratch.cleanup()
        return found

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def _read_exit(self) -> None:
        line = self._reader.readline()
        self._conn.close()
        if not line:
            raise RuntimeError(f"the warm CLI server went away while rlam {' '.join(self.argv)} ran")
        self.returncode = int(json.loads(line)["exit"])


# ---- the server ----------------------------------------------------------------------------


def _preload() -> None:
    """What a warm executor imports, and litellm (the planner tests' LLM planner), after the settings a fresh
    ``rlam`` sets before it imports Prefect (PREFECT_API_URL is the session server's, so nothing is started)."""
    from rlam_prefect.core.home import HomeLayout
    from rlam_prefect.local.backend import configure, import_flow_engine

    configure(HomeLayout.from_env())
    import_flow_engine()
    from rlam_prefect.planning.llm import warm_up

    warm_up()  # litellm and its first call's lazy imports, as the executor warms its planner
    import sklearn.linear_model  # noqa: F401

    import rlam_prefect.cli.main  # noqa: F401
    import tests.witness.sitecustomize  # noqa: F401


def _command(argv: list[str]) -> int:
    from rlam_prefect.cli.main import main
    from tests.witness.sitecustomize import install

    install()  # profiles action bodies when this command names a witness file, as site would at start-up
    return main(argv)


def _fork(request: dict[str, Any], closing: list[socket.socket]) -> int:
    from rlam_prefect.local.executor import run_in_child

    fds = [
        os.open(os.devnull, os.O_RDONLY),
        os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
    ]
    pid = os.fork()
    if pid == 0:
        os.setsid()  # its own session: a test may kill it with everything it started (os.killpg)
        for sock in closing:
            with contextlib.suppress(OSError):
                sock.close()
        run_in_child(_command, list(request["argv"]), dict(request["env"]), request["cwd"], fds)
    for fd in fds:
        os.close(fd)
    return pid


def serve(path: Path) -> None:
    """Fork a child per request until stdin closes; each connection gets ``{"pid"}`` then ``{"exit"}``."""
    _preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    children: dict[int, socket.socket] = {}
    stdin = sys.stdin.buffer
    while True:
        readable, _, _ = select.select([listener, stdin], [], [], 0.05)
        if stdin in readable and not os.read(stdin.fileno(), 1024):
            break
        if listener in readable:
            conn, _ = listener.accept()
            try:
                request = json.loads(conn.makefile("rb").readline())
                pid = _fork(request, [listener, conn, *children.values()])
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                children[pid] = conn
            except (OSError, ValueError, KeyError) as exc:
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode() + b"\n")
                conn.close()
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                conn = children.pop(pid)
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"exit": code}).encode() + b"\n")  # -N: killed by signal N, as subprocess says
                conn.close()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    listener.close()
    path.unlink(missing_ok=True)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
