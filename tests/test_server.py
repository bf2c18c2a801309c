"""The embedded default: one local Prefect server per RLAM_HOME, found again, stopped, never locked.

These tests start their own servers (no PREFECT_API_URL), as a user's first command does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.local import server
from rlam_prefect.local.processes import pid_alive
from rlam_prefect.record.store import TraceStore

pytestmark = pytest.mark.server  # starts Prefect servers of its own

ROOT = Path(__file__).resolve().parents[1]


def _env(home: HomeLayout, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "RLAM_HOME": str(home.root), "RLAM_EXECUTOR": "off", **extra}  # the executor: test_executor.py


def _rlam(home: HomeLayout, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rlam_prefect.cli", *args], env=_env(home, **extra), cwd=ROOT, capture_output=True, text=True, timeout=300)


def _alive(pid: int) -> bool:
    """Running: an exited process its parent has not reaped yet (a zombie) is not."""
    return pid_alive(pid)


def _exits(pid: int, within: float = 5.0) -> bool:
    """The process ends within ``within`` seconds (a supervisor removes its state file, then exits)."""
    deadline = time.monotonic() + within
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.fixture
def own_home(tmp_path: Path):
    home = HomeLayout(tmp_path / "home")
    yield home
    server.stop(home)


def test_a_killed_client_leaves_the_server_usable_and_the_run_incomplete(own_home: HomeLayout):
    first = _rlam(own_home, "run", "--planner", "fixed", "--json")
    assert first.returncode == 0, first.stderr
    state = server.read_state(own_home)
    assert state and server.healthy(state["url"])
    # kill -9 a client in the middle of its run (after its first step is recorded)
    client = subprocess.Popen(
        [sys.executable, "-m", "rlam_prefect.cli", "run", "--planner", "fixed", "--set", "train_model.C=0.7"],
        env=_env(own_home), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    steps_dir = own_home.traces / "steps"
    deadline = time.monotonic() + 120
    known = {p.name for p in steps_dir.iterdir()}
    # a step is recorded once its file is linked into place (the hidden temporary does not count)
    while time.monotonic() < deadline and not any(p.name not in known and any(p.glob("*.parquet")) for p in steps_dir.iterdir()):
        time.sleep(0.05)
    client.send_signal(signal.SIGKILL)
    client.wait()
    first_id = json.loads(first.stdout)["run_id"]
    killed = [r for r in TraceStore(own_home).runs() if r["run_id"] != first_id]
    assert [r["status"] for r in killed] == ["incomplete"]
    assert TraceStore(own_home).steps(killed[0]["run_id"])  # its completed steps are there
    # the same server is still healthy and the database is not locked: the next command works at once
    assert server.read_state(own_home) == state and server.healthy(state["url"])
    again = _rlam(own_home, "run", "--planner", "fixed", "--json")
    assert again.returncode == 0, again.stderr


def test_each_home_has_its_own_server_which_stops_itself_when_idle(tmp_path: Path):
    a, b = HomeLayout(tmp_path / "a"), HomeLayout(tmp_path / "b")
    try:
        started = subprocess.run(
            [sys.executable, "-m", "rlam_prefect.cli", "server", "start", "--json"],
            env=_env(a, RLAM_SERVER_IDLE_MINUTES="0.05"), cwd=ROOT, capture_output=True, text=True, timeout=200,
        )
        assert started.returncode == 0, started.stderr
        state_a = server.read_state(a)
        assert _rlam(b, "server", "start").returncode == 0
        state_b = server.read_state(b)
        assert state_a["url"] != state_b["url"]  # never shared between two homes
        status = _rlam(b, "server", "status")
        assert status.stdout.startswith("running: " + state_b["url"])
        # a stops by itself after 3 s without a command; b (default 30 min) keeps running
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and server.read_state(a) is not None:
            time.sleep(0.5)
        assert server.read_state(a) is None
        assert _exits(state_a["supervisor_pid"]) and not _alive(state_a["server_pid"])
        assert server.healthy(state_b["url"])
        assert _rlam(b, "server", "stop").stdout.strip() == "stopped"
        assert not _alive(state_b["server_pid"]) and server.read_state(b) is None
        assert "warming the server up" not in server.log_path(b).read_text()  # Prefect's server answered every supervisor.WARM_UP request
        assert _rlam(b, "server", "status").stdout.startswith("not running")
    finally:
        server.stop(a)
        server.stop(b)
