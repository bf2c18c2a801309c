"""The embedded default: one local Prefect server per RLAM_HOME, started on first use and reused.

Prefect's ephemeral mode starts a server inside every process (9-15 s each). Instead the first
command starts ``prefect server start`` under a small supervisor, detached from the client,
with its database in ``$RLAM_HOME/prefect``; later commands find it through
``$RLAM_HOME/prefect/server.json`` and only connect. The supervisor stops the server after a
period without client activity (and no running flow), so nothing lingers. A killed client
cannot leave the database locked: only the server process opens it.
When ``PREFECT_API_URL`` is set, the user's server is used and nothing is started.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlam_prefect.core.errors import RLamError
from rlam_prefect.core.home import HomeLayout

IDLE_ENV = "RLAM_SERVER_IDLE_MINUTES"
DEFAULT_IDLE_MINUTES = 30.0
START_TIMEOUT_S = 120.0


class ServerError(RLamError):
    exit_code = 6


def state_path(home: HomeLayout) -> Path:
    return home.prefect / "server.json"


def activity_path(home: HomeLayout) -> Path:
    return home.prefect / "server.activity"


def log_path(home: HomeLayout) -> Path:
    return home.prefect / "server.log"


def port_path(home: HomeLayout) -> Path:
    """The port of this home's server, kept when it stops: it starts on the same one next time if it can."""
    return home.prefect / "server.port"


def read_state(home: HomeLayout) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(state_path(home).read_text())  # written by the supervisor as a JSON object
        return state
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return bool(response.status == 200)  # urlopen's response is untyped
    except (urllib.error.URLError, OSError, ValueError):
        return False


def touch(home: HomeLayout) -> None:
    """Mark client activity so the idle supervisor keeps the server up."""
    path = activity_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def status(home: HomeLayout) -> dict[str, Any]:
    state = read_state(home)
    if not state:
        return {"running": False, "home": str(home.root)}
    return {**state, "ui_url": state["url"].removesuffix("/api"), "running": healthy(state["url"]), "home": str(home.root)}


def ensure_server(home: HomeLayout) -> str:
    """URL of this home's server, starting it if needed (serialised across processes)."""
    home.prefect.mkdir(parents=True, exist_ok=True)
    state = read_state(home)
    if state and healthy(state["url"]):
        touch(home)
        return str(state["url"])
    with _start_lock(home):
        state = read_state(home)  # another client may have started it while we waited
        if state and healthy(state["url"]):
            touch(home)
            return str(state["url"])
        if state:
            _stop_pid(state.get("supervisor_pid"))
            state_path(home).unlink(missing_ok=True)
        return _start(home)


def stop(home: HomeLayout) -> bool:
    from rlam_prefect.local import executor_client as executor

    executor.stop(home)  # it serves this server (executor.py)
    state = read_state(home)
    if not state:
        return False
    # the supervisor needs up to 20 s to stop the server it owns (INT, then TERM); never orphan it
    _stop_pid(state.get("supervisor_pid"), wait=_SERVER_STOP_S + 5.0)
    _stop_pid(state.get("server_pid"), wait=5.0)
    state_path(home).unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def _start_lock(home: HomeLayout) -> Iterator[None]:
    with open(home.prefect / "server.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _start(home: HomeLayout) -> str:
    check_database(home)
    port = _port(home)
    idle = float(os.environ.get(IDLE_ENV) or DEFAULT_IDLE_MINUTES)
    touch(home)
    with open(log_path(home), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "rlam_prefect.local.server", "--home", str(home.root), "--port", str(port), "--idle-minutes", str(idle)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the server outlives the client and its Ctrl-C
            env=_server_env(home, port),
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = read_state(home)
        if state and state.get("supervisor_pid") == process.pid and healthy(state["url"]):
            return str(state["url"])
        if process.poll() is not None:
            raise ServerError(f"the local Prefect server exited during start-up; see {log_path(home)}")
        time.sleep(0.2)
    _stop_pid(process.pid, wait=_SERVER_STOP_S + 5.0)
    raise ServerError(f"the local Prefect server did not become healthy in {START_TIMEOUT_S:.0f} s; see {log_path(home)}")


def check_database(home: HomeLayout) -> None:
    """Refuse to start on a damaged SQLite file, naming it: Prefect would only die in its log during start-up."""
    import sqlite3

    path = home.prefect / "prefect.db"
    if not path.exists() or path.stat().st_size == 0:
        return  # a new database is created
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        verdict = str(exc)
    if verdict != "ok":
        raise ServerError(
            f"the Prefect database {path} is damaged ({verdict[:80]}); move it aside and run the command again "
            f"(a new one is created: Prefect's run history is lost, rlam's traces in {home.traces} are not)"
        )


def _server_env(home: HomeLayout, port: int) -> dict[str, str]:
    # the client's PREFECT_API_* are not the server's, except PREFECT_API_DATABASE_* (older name of PREFECT_SERVER_DATABASE_*)
    env = {k: v for k, v in os.environ.items() if not _client_setting(k) and k not in _UI_API_SETTINGS}
    env.update(
        PREFECT_HOME=str(home.prefect),
        # the UI asks /ui-settings where its API is; unset, the answer is port 4200 whatever the real one
        PREFECT_SERVER_UI_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_UI_ENABLED=os.environ.get("PREFECT_UI_ENABLED", "true"),
        PREFECT_LOGGING_LEVEL=os.environ.get("PREFECT_SERVER_LOGGING_LEVEL", "WARNING"),
    )
    return env


_UI_API_SETTINGS = ("PREFECT_SERVER_UI_API_URL", "PREFECT_UI_API_URL")


def _client_setting(name: str) -> bool:
    return name.startswith("PREFECT_API_") and not name.startswith("PREFECT_API_DATABASE_")


def _port(home: HomeLayout) -> int:
    """The port this home's server used last time, when it is free, so UI links printed before stay valid."""
    last = last_port(home)
    if last is not None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a TIME_WAIT port is free
            try:
                sock.bind(("127.0.0.1", last))
                return last
            except OSError:
                pass
    port = _free_port()
    port_path(home).write_text(f"{port}\n")
    return port


def last_port(home: HomeLayout) -> int | None:
    try:
        return int(port_path(home).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop_pid(pid: int | None, wait: float = 5.0) -> None:
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# ---- the supervisor process (python -m rlam_prefect.local.server) ---------------------------------


def _supervise(home: HomeLayout, port: int, idle_minutes: float) -> int:
    url = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdin=subprocess.DEVNULL,
    )
    stopping = False

    def request_stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    announced = False
    try:
        while not stopping and server.poll() is None:
            if not announced and healthy(url):
                state = {"url": url, "port": port, "supervisor_pid": os.getpid(), "server_pid": server.pid, "started_at": time.time()}
                tmp = state_path(home).with_suffix(".tmp")
                tmp.write_text(json.dumps(state))
                os.replace(tmp, state_path(home))
                touch(home)  # the idle clock starts when the server is ready, not when start-up began
                announced = True
            if announced and _idle_for(home) > idle_minutes * 60 and not _flows_running(url):
                print(f"rlam: idle for {idle_minutes} min, stopping the local Prefect server", flush=True)
                break
            time.sleep(1.0)
    finally:
        _terminate(server)
        recorded = read_state(home)
        if recorded and recorded.get("supervisor_pid") == os.getpid():
            state_path(home).unlink(missing_ok=True)
    return 0


def _idle_for(home: HomeLayout) -> float:
    try:
        return time.time() - activity_path(home).stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _flows_running(url: str) -> bool:
    body = json.dumps({"flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING"]}}}}).encode()
    request = urllib.request.Request(f"{url}/flow_runs/count", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(json.loads(response.read())) > 0
    except (urllib.error.URLError, OSError, ValueError):
        return False


_SERVER_STOP_S = 20.0  # SIGINT grace + SIGTERM grace in _terminate


def _terminate(server: subprocess.Popen[bytes]) -> None:
    # prefect server start shuts down cleanly on SIGINT; TERM alone can leave its services up
    for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGTERM, _SERVER_STOP_S - 15.0)):
        if server.poll() is not None:
            return
        server.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=wait)
    if server.poll() is None:
        server.kill()
        server.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m rlam_prefect.local.server")
    parser.add_argument("--home", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle-minutes", type=float, default=DEFAULT_IDLE_MINUTES)
    options = parser.parse_args()
    sys.exit(_supervise(HomeLayout(Path(options.home)), options.port, options.idle_minutes))
