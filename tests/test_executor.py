"""The warm executor (rlam_prefect/executor.py): reused, restarted when stale, stopped, a killed
client interrupts its run, and any doubt means the command runs in-process.

One executor serves this module's home against the session server (RLAM_EXECUTOR=on, since
PREFECT_API_URL is set). Whether a command went through it is read from the executor's log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.local import executor_client as executor
from rlam_prefect.local.processes import pid_alive
from rlam_prefect.record.store import TraceStore
from tests.conftest import ROOT, Workspace
from tests.llm_server import HANG, LLMServer
from tests.witness.plugin import Witness

ON = {"RLAM_EXECUTOR": "on", "RLAM_PLANNER": "fixed"}


def _served(home: HomeLayout) -> list[str]:
    """The commands the executor ran, in order (one log line each)."""
    try:
        lines = executor.log_path(home).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [line.split(" runs rlam ", 1)[1] for line in lines if " runs rlam " in line]


def _wait_ready(home: HomeLayout, not_pid: int | None = None, timeout: float = 180.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = executor.status(home)
        if info["running"] and info["pid"] != not_pid:
            return int(info["pid"])
        time.sleep(0.2)
    raise AssertionError(f"no executor became ready; log:\n{executor.log_path(home).read_text()}")


def _alive(pid: int) -> bool:
    return pid_alive(pid)


def _maps_litellm(pid: int) -> bool:
    """Seen by the kernel, not by rlam: importing litellm maps tiktoken's extension into the process."""
    return "_tiktoken" in Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture(scope="module")
def warm_home(prefect_api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A home with one recorded run, run by the executor that run started (built once per module).

    The executor is started without a witness file named: each later command names its own
    (RLAM_TEST_WITNESS is read per call), so what a handed-over command executes is still seen.
    """
    space = Workspace(HomeLayout(tmp_path_factory.mktemp("executor") / "home"))
    seen = Witness(tmp_path_factory.mktemp("executor-witness") / "witness.log")
    first = space.rlam("run", "--json", extra_env={**ON, **seen.env})
    assert first.code == 0, first.stderr
    assert _served(space.home) == ["run --json"]  # a home's first run is handed to the executor it started, once loaded
    assert len(seen.calls()) == 5  # five bodies executed, in the executor's child
    state = {"space": space, "run_id": first.json["run_id"], "pid": _wait_ready(space.home)}
    yield state
    executor.stop(space.home)


@pytest.fixture
def warm(warm_home: dict[str, Any]) -> tuple[Workspace, str, int]:
    """The module's home with an executor started under the ON settings, whatever ran before (tests run in
    random order: the stale-settings test leaves one started under other settings, the stop test none)."""
    space = warm_home["space"]
    info = executor.status(space.home)
    if not (info["running"] and info["pid"] == warm_home["pid"]):
        executor.stop(space.home)
        again = space.rlam("replay", warm_home["run_id"], "--json", extra_env=ON)  # in-process, then starts one
        assert again.code == 0, again.stderr
        warm_home["pid"] = _wait_ready(space.home)
    return space, warm_home["run_id"], warm_home["pid"]


def test_reuse_one_executor_serves_later_commands_with_the_same_outcome(warm, witness):
    space, run_id, pid = warm
    replay = space.rlam("replay", run_id, "--json", extra_env=ON)
    assert replay.code == 0, replay.stderr
    assert (replay.json["status"], replay.json["executed"], replay.json["cached"]) == ("completed", 0, 5)
    assert witness.calls() == []
    fork = space.rlam("fork", run_id, "--step", "4", "--set", "train_model.C=0.33", "--json", extra_env=ON)
    assert fork.code == 0, fork.stderr
    assert (fork.json["executed"], fork.json["cached"]) == (2, 3)
    records = witness.records()  # the executor's forked child ran both bodies (not the client, not the executor)
    assert [name for _, name in records] == ["train_model", "evaluate_model"]
    assert {p for p, _ in records} <= {int(line.split("child ", 1)[1].split()[0]) for line in executor.log_path(space.home).read_text().splitlines() if " runs rlam fork" in line}
    bad = space.rlam("replay", "no-such-run", extra_env=ON)  # user errors: the same one line and exit code
    assert bad.code == 2 and bad.stderr.strip().startswith("rlam: error: unknown run"), bad.stderr
    assert _served(space.home)[-3:] == [f"replay {run_id}", f"fork {run_id}", "replay no-such-run"]
    assert executor.status(space.home)["pid"] == pid  # the same process served all three
    runs = TraceStore(space.home)
    assert runs.resolve_run_id(fork.json["run_id"]) == fork.json["run_id"]


def test_disabled_or_other_settings_run_in_process(warm):
    space, run_id, pid = warm
    before = len(_served(space.home))
    off = space.rlam("replay", run_id, "--json", extra_env={**ON, "RLAM_EXECUTOR": "off"})
    assert off.code == 0 and off.json["cached"] == 5, off.stderr
    auto = space.rlam("replay", run_id, "--json", extra_env={"RLAM_EXECUTOR": "auto"})  # PREFECT_API_URL set: off
    assert auto.code == 0 and auto.json["cached"] == 5, auto.stderr
    assert len(_served(space.home)) == before
    assert executor.status(space.home)["pid"] == pid


def test_a_killed_client_interrupts_its_run_and_the_trace_records_it(warm, llm_server: LLMServer):
    space, run_id, _ = warm
    pid = _wait_ready(space.home)
    before = len(_served(space.home))
    llm_server.script(HANG)  # the endpoint never answers (120 s timeout): the run is surely in flight when the client dies
    env = {**os.environ, **ON, "RLAM_HOME": str(space.home.root), **llm_server.env(), "RLAM_PLANNER_TIMEOUT": "120"}
    client = subprocess.Popen(
        [sys.executable, "-m", "rlam_prefect.cli", "run", "--planner", "openai/gpt-4o-mini", "--json"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    store = TraceStore(space.home)
    known = {r["run_id"] for r in store.runs()}
    deadline = time.monotonic() + 120
    new: set[str] = set()
    while not new and time.monotonic() < deadline:
        time.sleep(0.2)
        new = {r["run_id"] for r in store.runs()} - known
    assert new, "the handed-over run was never recorded"
    assert len(_served(space.home)) == before + 1
    llm_server.wait_for(1)  # the planner call is in flight, over HTTP, from the executor's child
    client.kill()
    client.wait()
    (new_id,) = new
    deadline = time.monotonic() + 90
    current = store.run(new_id)
    while current["event"] != "end" and time.monotonic() < deadline:
        time.sleep(0.2)
        current = store.run(new_id)
    assert current["event"] == "end", "the interrupted run was never closed in the trace"
    # SIGTERM to the child: Prefect's own handler inside a flow run (TerminationSignal), else KeyboardInterrupt
    assert current["status"] == "failed", current
    assert (current["error_message"] or "").startswith(("TerminationSignal", "KeyboardInterrupt")), current
    assert "went away, interrupting" in executor.log_path(space.home).read_text()
    assert executor.status(space.home)["pid"] == pid  # the executor itself carries on
    assert llm_server.count == 1  # one request, no retry


def test_fingerprint_follows_project_sources():
    source = Path(executor.__file__).with_name("__init__.py")
    st = source.stat()
    before = executor.fingerprint()
    try:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert executor.fingerprint() != before
    finally:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert executor.fingerprint() == before
    assert executor.fingerprint({**os.environ, "PREFECT_LOGGING_COLORS": "x"}) != before
    assert executor.fingerprint({**os.environ, "OPENBLAS_CORETYPE": "Haswell"}) != before  # numpy's kernels, chosen at import
    assert executor.fingerprint({**os.environ, "RLAM_PLANNER": "x"}) == before  # read per command, not at import


def test_stale_settings_restart_it_and_a_dead_executor_falls_back(warm):
    space, run_id, pid = warm
    before = len(_served(space.home))
    # a setting Prefect reads at import time differs: refused, run in-process, the old executor exits
    stale = space.rlam("replay", run_id, "--json", extra_env={**ON, "PREFECT_LOGGING_COLORS": "false"})
    assert stale.code == 0 and stale.json["cached"] == 5, stale.stderr
    assert len(_served(space.home)) == before
    assert "refused (stale" in executor.log_path(space.home).read_text()
    new_pid = _wait_ready(space.home, not_pid=pid)  # ...and the command started a fresh one
    assert not _alive(pid)
    # kill -9 the executor: its socket file stays behind, nobody listens; the client runs in-process
    os.kill(new_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(new_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert executor.socket_path(space.home).exists()
    fallback = space.rlam("replay", run_id, "--json", extra_env={**ON, "PREFECT_LOGGING_COLORS": "false"})
    assert fallback.code == 0 and fallback.json["cached"] == 5, fallback.stderr
    assert len(_served(space.home)) == before
    third = _wait_ready(space.home, not_pid=new_pid)
    again = space.rlam("replay", run_id, "--json", extra_env={**ON, "PREFECT_LOGGING_COLORS": "false"})
    assert again.code == 0 and again.json["cached"] == 5, again.stderr
    assert _served(space.home)[-1] == f"replay {run_id}"
    assert executor.status(space.home)["pid"] == third
    # replays ask no planner: idle for longer than its 2 s, this executor still has not imported litellm...
    time.sleep(3.0)
    assert not _maps_litellm(third)
    # ...until a command that asks a litellm planner was handed over: then it imports it once idle, for the next one
    heuristic = space.rlam("run", "--planner", "rlam/heuristic", "--json", extra_env={**ON, "PREFECT_LOGGING_COLORS": "false"})
    assert heuristic.code == 0, heuristic.stderr
    assert _served(space.home)[-1] == "run --planner"  # the log names the first two arguments
    deadline = time.monotonic() + 60
    while not _maps_litellm(third) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _maps_litellm(third)


def test_stop_ends_it_and_removes_its_files(warm):
    space, _, _ = warm
    pid = _wait_ready(space.home)
    stopped = space.rlam("server", "stop", extra_env=ON)
    assert stopped.code == 0, stopped.stderr
    assert not _alive(pid)
    assert not executor.state_path(space.home).exists() and not executor.socket_path(space.home).exists()
    assert executor.status(space.home) == {"running": False}


def test_a_run_where_no_actions_are_declared_fails_in_one_line_and_starts_no_executor(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RLAM_"))}
    proc = subprocess.run([sys.executable, "-m", "rlam_prefect.cli", "run"], cwd=tmp_path, env={**env, "RLAM_HOME": str(home)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("rlam: error: no actions") and proc.stderr.count("\n") == 1, proc.stderr
    assert not (home / "prefect" / "executor.log").exists()  # nothing left waiting for a server that never comes
    assert not (home / "prefect" / "server.json").exists()
