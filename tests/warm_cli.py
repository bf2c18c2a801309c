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
    def start(cls, directory: Path) -> WarmCli:
        path = directory / "warm-cli.sock"
        env = dict(os.environ)
        process = subprocess.Popen([sys.executable, "-m", "tests.warm_cli", str(path)], cwd=ROOT, env=env, stdin=subprocess.PIPE)
        return cls(process, path, env)

    def takes(self, env: dict[str, str]) -> bool:
        """Whether a command with this environment runs the same in a child of this server as in a fresh process."""
        if (env.get("RLAM_EXECUTOR") or "").strip().lower() == "on":
            return False
        keys = {k for k in (*env, *self.env) if k.startswith(SETTING_PREFIXES)}
        return all(env.get(k) == self.env.get(k) for k in keys)

    def run(self, argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, str, str]:
        """``rlam argv`` in a forked child: (exit code, stdout, stderr)."""
        with tempfile.TemporaryDirectory(prefix="rlam-cmd-") as scratch:
            out, err = Path(scratch, "stdout"), Path(scratch, "stderr")
            request = {"argv": argv, "env": env, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}
            with self._connect() as conn:
                conn.sendall(json.dumps(request).encode() + b"\n")
                reader = conn.makefile("rb")
                started = json.loads(reader.readline() or b"{}")
                if "pid" not in started:
                    raise RuntimeError(f"the warm CLI server refused the command: {started}")
                conn.settimeout(timeout)
                try:
                    line = reader.readline()
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(started["pid"], signal.SIGKILL)
                    raise TimeoutError(f"rlam {' '.join(argv)} did not finish in {timeout} s") from None
            code = json.loads(line)["exit"]
            return code, out.read_text(encoding="utf-8", errors="replace"), err.read_text(encoding="utf-8", errors="replace")

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


# ---- the server ----------------------------------------------------------------------------


def _preload() -> None:
    """What a warm executor imports, and litellm (the planner tests' LLM planner)."""
    from rlam_prefect.local.backend import import_flow_engine

    import_flow_engine()
    import litellm  # noqa: F401
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
