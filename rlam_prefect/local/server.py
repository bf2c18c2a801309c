"""The embedded default: one local Prefect server per RLAM_HOME, started on first use and reused.

Prefect's ephemeral mode starts a server inside every process (9-15 s each). Instead the first
command starts Prefect's server (``prefect server start``, through ``prefect_server.py``) under a
small supervisor, detached from the client, with its database in ``$RLAM_HOME/prefect``; later
commands find it through ``$RLAM_HOME/prefect/server.json`` and only connect. The supervisor stops
the server after a period without client activity (and no running flow), so nothing lingers. A
killed client cannot leave the database locked: only the server process opens it.
When ``PREFECT_API_URL`` is set, the user's server is used and nothing is started.

Start-up is kept short: a new home's database is a copy of a migrated template (``template.py``);
the address is known before the server answers, so a client can import Prefect while it starts
(``launch`` then ``wait_ready``). Once it answers, the supervisor (``supervisor.py``) sends it a few
read-only requests while the first command is still importing. An idle server is kept cheap: services
the embedded default does not use are off (``EMBEDDED_SERVICES_OFF``), and the rest wake less often (``EMBEDDED_SERVICE_LOOPS``,
``prefect_server.py``). Stopping sends SIGTERM to the supervisor's whole process group and SIGKILL
after a short grace, so no process is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rlam_prefect.core.errors import RLamError
from rlam_prefect.core.filelock import exclusive
from rlam_prefect.core.files import write_json
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.local.processes import pid_alive

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
    """URL of this home's server, starting it if needed (serialised across processes); it answers when this returns."""
    url = launch(home)
    wait_ready(home, url)
    return url


def launch(home: HomeLayout) -> str:
    """URL of this home's server, running or starting; it may not answer yet (see ``wait_ready``)."""
    home.prefect.mkdir(parents=True, exist_ok=True)
    state = read_state(home)
    if state and (_starting(state) or healthy(state["url"])):
        touch(home)
        return str(state["url"])
    with _start_lock(home):
        state = read_state(home)  # another client may have started it while we waited
        if state and (_starting(state) or healthy(state["url"])):
            touch(home)
            return str(state["url"])
        if state:
            _stop_group(state.get("supervisor_pid"))
            state_path(home).unlink(missing_ok=True)
        return _start(home)


def wait_ready(home: HomeLayout, url: str, timeout: float = START_TIMEOUT_S) -> None:
    """Block until the server at ``url`` was announced by its supervisor and answers; ServerError if it died."""
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(home)
        if not state or state.get("url") != url or not pid_alive(state.get("supervisor_pid")):
            raise ServerError(f"the local Prefect server exited during start-up; see {log_path(home)}")
        if not state.get("starting") and healthy(url):
            return
        if time.monotonic() > deadline:
            _stop_group(state.get("supervisor_pid"))
            raise ServerError(f"the local Prefect server did not become healthy in {timeout:.0f} s; see {log_path(home)}")
        time.sleep(0.05)


def stop(home: HomeLayout) -> bool:
    """Stop this home's executor and server together: TERM to both process groups, KILL after a short grace."""
    from rlam_prefect.local import executor_client as executor

    state = read_state(home)
    executor_pid = executor.request_stop(home)  # it serves this server (executor.py)
    _stop_group(state.get("supervisor_pid") if state else None)
    executor.wait_stopped(home, executor_pid)
    if not state:
        return False
    state_path(home).unlink(missing_ok=True)
    return True


def _starting(state: dict[str, Any]) -> bool:
    """A supervisor launched by a client and still starting its server (it rewrites the state when ready)."""
    return bool(state.get("starting")) and pid_alive(state.get("supervisor_pid")) and time.time() - float(state.get("started_at", 0)) < START_TIMEOUT_S




def _start_lock(home: HomeLayout) -> contextlib.AbstractContextManager[None]:
    return exclusive(home.prefect / "server.lock")


def _start(home: HomeLayout) -> str:
    from rlam_prefect.local.template import block_settings, seed_home

    check_database(home)  # before seeding: a damaged database is the user's to move aside, never replaced
    port = _port(home)
    url = f"http://127.0.0.1:{port}/api"
    env = _server_env(home, port)
    seed_home(home.prefect, env)  # a migrated copy instead of migrating a new database (template.py)
    for name, value in block_settings(home.prefect, env).items():
        env.setdefault(name, value)  # its block types are in that copy already; a user's own setting wins
    idle = float(os.environ.get(IDLE_ENV) or DEFAULT_IDLE_MINUTES)
    touch(home)
    with open(log_path(home), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "rlam_prefect.local.supervisor", "--home", str(home.root), "--port", str(port), "--idle-minutes", str(idle)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the server outlives the client and its Ctrl-C; its process group is stopped as one
            env=env,
        )
    write_state(home, {"url": url, "port": port, "supervisor_pid": process.pid, "started_at": time.time(), "starting": True})
    return url


def write_state(home: HomeLayout, state: dict[str, Any]) -> None:
    write_json(state_path(home), state)


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
    for name in EMBEDDED_SERVICES_OFF:
        env.setdefault(f"PREFECT_SERVER_SERVICES_{name}_ENABLED", "false")  # a user's own setting wins
    for name, seconds in EMBEDDED_SERVICE_LOOPS.items():
        env.setdefault(f"PREFECT_SERVER_SERVICES_{name}", seconds)
    return env


# Prefect server services the embedded default never needs (docs/benchmarks.md, idle CPU). Kept on: the task
# run recorder and event persister (task runs and events in the UI), the scheduler (deployments with
# schedules), pause expirations (approval gates' timeouts) and the hourly database vacuum.
EMBEDDED_SERVICES_OFF = (
    "CANCELLATION_CLEANUP",  # cancelling a parent flow run's subflows: rlam never cancels through the API
    "FOREMAN",  # marks silent workers and work pools offline: the embedded default has no workers
    "LATE_RUNS",  # labels overdue scheduled runs "Late", a display state only
    "TRIGGERS",  # automations: none are created by rlam
    "REPOSSESSOR",  # reclaims expired concurrency-slot leases: rlam sets no concurrency limits
)


# Services kept on that wake less often than Prefect's 5 s on an idle laptop (idle CPU, docs/benchmarks.md)
EMBEDDED_SERVICE_LOOPS = {
    # fails paused runs whose pause timed out with no client left to do it; rlam's approval gate times out in its client
    "PAUSE_EXPIRATIONS_LOOP_SECONDS": "30",
    # schedules a newly deployed schedule's runs at once; the scheduler's own 60 s loop does it anyway
    "SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "30",
}


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


STOP_GRACE_S = 1.5  # SIGTERM, then SIGKILL: SQLite's transactions survive a kill, the server holds nothing else


def _stop_group(pid: int | None, grace: float = STOP_GRACE_S) -> None:
    """Stop the process group led by ``pid`` (the supervisor and its server) and wait until none of it is left."""
    if not pid:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    while _group_alive(pid) and time.monotonic() < deadline + 5.0:
        time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    """Some process of the group is still running (zombies do not count: their parent reaps them)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(") ", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return not Path("/proc/self").exists()  # without /proc, trust killpg
