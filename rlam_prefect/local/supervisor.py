"""The supervisor of a home's embedded Prefect server: ``python -m rlam_prefect.local.supervisor``.

Started detached by ``server.py`` (its own process group, so ``rlam server stop`` ends both at once), it
starts Prefect's server (through ``prefect_server.py``), announces it in the home's state file once it
answers, warms it up (``WARM_UP``) and stops it after ``--idle-minutes`` without client activity and no
running flow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.local.server import DEFAULT_IDLE_MINUTES, STOP_GRACE_S, activity_path, healthy, read_state, state_path, touch, write_state


def _supervise(home: HomeLayout, port: int, idle_minutes: float) -> int:
    url = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [sys.executable, "-m", "rlam_prefect.local.prefect_server", "--host", "127.0.0.1", "--port", str(port)],
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
                write_state(home, {"url": url, "port": port, "supervisor_pid": os.getpid(), "server_pid": server.pid, "started_at": time.time()})
                touch(home)  # the idle clock starts when the server is ready, not when start-up began
                announced = True
                _warm_up(url, lambda: stopping)
            if announced and _idle_for(home) > idle_minutes * 60 and not _flows_running(url):
                print(f"rlam: idle for {idle_minutes} min, stopping the local Prefect server", flush=True)
                break
            time.sleep(1.0 if announced else 0.05)  # clients wait for the announcement: look often until then
    finally:
        _terminate(server)
        recorded = read_state(home)
        if recorded and recorded.get("supervisor_pid") == os.getpid():
            state_path(home).unlink(missing_ok=True)
    return 0


# Read-only requests along the paths a run takes (flows, flow runs, task runs, logs, artifacts, events). A fresh
# server sets up its ORM queries and response models on the first request of each kind: measured here, a home's
# first run spent 1.32 s in its flow against a server that had answered nothing yet, 0.84 s after these (0.7 s
# of the server's time, spent while the first command still imports litellm, scikit-learn and Prefect).
WARM_UP = (
    *(("POST", f"/{kind}/filter") for kind in ("flows", "flow_runs", "task_runs", "deployments", "artifacts", "variables", "logs", "events")),
    ("GET", "/flow_runs/00000000-0000-0000-0000-000000000000"),
    ("GET", "/task_runs/00000000-0000-0000-0000-000000000000"),
    ("GET", "/admin/version"),
)


def _warm_up(url: str, stopping: Callable[[], bool]) -> None:
    """Send ``WARM_UP`` to a server that just answered. A failure is one line in the server's log, not an error: the
    requests only save time, and the clients' own requests still work (or fail in their own words)."""
    for method, path in WARM_UP:
        if stopping():
            return
        try:
            _request(url, method, path, {"limit": 1} if method == "POST" else None, timeout=10)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # the made-up ids above are not found, on purpose
                print(f"rlam: warming the server up: {method} {path} answered {exc.code}", flush=True)
        except (urllib.error.URLError, OSError) as exc:
            if not stopping():
                print(f"rlam: warming the server up: {method} {path} failed ({exc}); the rest is skipped", flush=True)
            return


def _idle_for(home: HomeLayout) -> float:
    try:
        return time.time() - activity_path(home).stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _flows_running(url: str) -> bool:
    body = {"flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING"]}}}}
    try:
        return int(json.loads(_request(url, "POST", "/flow_runs/count", body, timeout=5))) > 0
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _request(url: str, method: str, path: str, body: object | None, timeout: float) -> bytes:
    """One call to the server's API (the supervisor stays light: the standard library, no Prefect client)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload: bytes = response.read()
        return payload


def _terminate(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after a short grace: the server runs its services in its own process, nothing outlives it."""
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=STOP_GRACE_S)
    if server.poll() is None:
        server.kill()
        server.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m rlam_prefect.local.supervisor")
    parser.add_argument("--home", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle-minutes", type=float, default=DEFAULT_IDLE_MINUTES)
    options = parser.parse_args()
    sys.exit(_supervise(HomeLayout(Path(options.home)), options.port, options.idle_minutes))
