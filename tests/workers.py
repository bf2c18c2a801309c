"""Prefect process workers started by tests (deployments, the PostgreSQL cluster, the UI) and the flow runs they pull."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def wait_for_flow_runs(api: Callable[[str, str], Any], flow_run_ids: list[str], timeout: float, logs: Callable[[], str]) -> dict[str, dict[str, Any]]:
    """Poll ``api("GET", "/flow_runs/ID")`` until every flow run is terminal; fail naming their states and the workers' logs."""
    deadline = time.monotonic() + timeout
    runs: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        runs = {i: api("GET", f"/flow_runs/{i}") for i in flow_run_ids}
        if all(r["state"]["type"] in TERMINAL for r in runs.values()):
            return runs
        time.sleep(0.5)  # a run's end is seen within half a second (one GET per run per poll)
    states = {i: r["state"]["type"] for i, r in runs.items()}
    pytest.fail(f"flow runs did not finish in {timeout:.0f} s: {states}\nworker logs:\n{logs()}")


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """A background ``prefect worker`` needs TERM, then INT, to stop."""
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGINT, 15.0)):
        if worker.poll() is not None:
            return
        worker.send_signal(sig)
        try:
            worker.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    if worker.poll() is None:
        worker.kill()
        worker.wait()
