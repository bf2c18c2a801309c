"""The failure paths a user meets: what they see (one stderr line, an exit code) and what is kept.

Each test snapshots what was recorded before the failure and proves it byte-identical after.
Disk-full and read-only homes are real file systems (a small tmpfs, a read-only bind mount:
``chmod`` does not stop root, which these tests run as); they skip, saying why, where mounting
is not permitted. The server-kill test uses a Prefect server of its own (its own RLAM_HOME with the
embedded server), never the session's shared one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.record.records import RunEvent
from rlam_prefect.record.store import TraceStore
from tests.conftest import ROOT, CliResult

PROJECT = '[tool.rlam]\nactions = ["tests.barrier_actions"]\norder = ["begin", "hold", "finish"]\n'


def _mount(args: list[str]) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount is not permitted here ({done.stderr.strip()}): this failure path needs a real file system")


@contextlib.contextmanager
def full_disk(directory: Path, size: str = "1m") -> Iterator[Path]:
    """``directory`` on a small tmpfs of its own; yields a filler path whose removal frees the space."""
    directory.mkdir(parents=True, exist_ok=True)
    _mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)])
    try:
        yield directory / "filler"
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def fill(filler: Path) -> None:
    with contextlib.suppress(OSError), open(filler, "ab", buffering=0) as handle:
        while True:
            handle.write(b"\0" * 4096)


def snapshot(base: Path) -> dict[str, bytes]:
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file() and p.name != "filler"}


def rlam(home: Path, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> CliResult:
    base = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    full = {**base, "RLAM_HOME": str(home), "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "rlam_prefect.cli", *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=600)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def one_error_line(result: CliResult) -> str:
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert lines and lines[-1].startswith("rlam: error: "), result.stderr
    return lines[-1]


def recorded_runs(home: HomeLayout, n: int) -> list[str]:
    """``n`` finished runs written straight through the trace writer (no server needed)."""
    store = TraceStore(home)
    ids = [f"{i:012x}" for i in range(1, n + 1)]
    for run_id in ids:
        store.append_run_event(RunEvent(run_id=run_id, event="start", status="running", mode="run", pipeline="rlam"))
        store.append_run_event(RunEvent(run_id=run_id, event="end", status="completed", mode="run", pipeline="rlam"))
    return ids


# ---- disk full -------------------------------------------------------------------------------


def test_a_trace_write_on_a_full_disk_fails_whole_and_keeps_every_recorded_file(tmp_path: Path) -> None:
    home = HomeLayout(tmp_path / "home")
    with full_disk(home.traces) as filler:
        recorded_runs(home, 3)
        before = snapshot(home.traces)
        fill(filler)
        with pytest.raises(OSError) as full:
            recorded_runs(home, 4)  # the 4th run's start event is the first new file
        assert full.value.errno == 28
        result = rlam(home.root, "compact")  # a command that writes a trace file (a segment)
        line = one_error_line(result)
        assert result.code == 7
        assert line.startswith("rlam: error: cannot write to RLAM_HOME (No space left on device)"), line
        assert snapshot(home.traces) == before  # nothing recorded lost, nothing torn or half-written left
        assert not [p for p in home.traces.rglob(".*")], "a temporary file was left behind"
        filler.unlink()
        result = rlam(home.root, "compact")
        assert result.code == 0, result.stderr
        assert "compacted 3 finished runs" in result.stdout
        assert {k: v for k, v in snapshot(home.traces).items() if k in before} == before


def test_a_result_write_on_a_full_disk_fails_the_step_and_indexes_nothing(prefect_api_url: str, tmp_path: Path) -> None:
    home = HomeLayout(tmp_path / "home")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(PROJECT)
    env = {"PREFECT_API_URL": prefect_api_url, "RLAM_EXECUTOR": "off"}
    first = rlam(home.root, "run", "--planner", "fixed", "--set", "begin.start=1", cwd=project, env=env)
    assert first.code == 0, first.stderr
    traces, results = snapshot(home.traces), snapshot(home.results)
    with full_disk(home.result_data, size="64k") as filler:
        fill(filler)
        result = rlam(home.root, "run", "--planner", "fixed", "--set", "begin.start=2", cwd=project, env=env)
        torn = {p.name for p in home.result_data.iterdir()} - {"filler"}
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "begin: its result was not stored in" in result.stdout, result.stdout  # the failed step, in the run's report
    assert snapshot(home.traces).items() >= traces.items()  # every trace file recorded before, byte-identical
    assert snapshot(home.results) == results  # the results before too (what the tmpfs held went with it)
    assert torn and not torn & {row["cache_key"] for row in _result_rows(home)}, "a result Prefect failed to write was indexed"
    again = rlam(home.root, "run", "--planner", "fixed", "--set", "begin.start=2", cwd=project, env=env)
    assert again.code == 0, again.stderr  # space is back: the same run works


def _result_rows(home: HomeLayout) -> list[dict[str, object]]:
    import pyarrow.parquet as pq

    return [row for p in sorted((home.traces / "results").rglob("*.parquet")) if not p.name.startswith("_") for row in pq.read_table(p).to_pylist()]


# ---- read-only home ---------------------------------------------------------------------------


def test_a_read_only_home_is_refused_in_one_line_and_left_as_it_is(tmp_path: Path) -> None:
    home = HomeLayout(tmp_path / "home")
    recorded_runs(home, 2)
    before = snapshot(home.root)
    view = tmp_path / "read-only-home"
    view.mkdir()
    _mount(["--bind", str(home.root), str(view)])
    try:
        _mount(["-o", "remount,bind,ro", str(view)])
        listing = rlam(view, "runs", "--json")  # reading works
        assert listing.code == 0, listing.stderr
        assert {r["run_id"] for r in json.loads(listing.stdout)} == {f"{i:012x}" for i in (1, 2)}
        for command in (["compact"], ["run", "--planner", "fixed"]):
            result = rlam(view, *command, env={"RLAM_EXECUTOR": "off"})
            line = one_error_line(result)
            assert result.code == 7, result.stderr
            assert line.startswith("rlam: error: cannot write to RLAM_HOME (Read-only file system"), line
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    finally:
        subprocess.run(["umount", str(view)], check=True)
    assert snapshot(home.root) == before


# ---- damaged Prefect database -----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_prefect_database_is_named_with_what_to_do_and_traces_are_untouched(tmp_path: Path, damage: str) -> None:
    import sqlite3

    home = HomeLayout(tmp_path / "home")
    recorded_runs(home, 2)
    home.prefect.mkdir(parents=True)
    db = home.prefect / "prefect.db"
    if damage == "garbage":
        db.write_bytes(os.urandom(64 * 1024))
    else:
        with contextlib.closing(sqlite3.connect(db)) as conn:  # a real database, then cut short
            conn.execute("create table t (x text)")
            conn.executemany("insert into t values (?)", [("x" * 200,)] * 2000)
            conn.commit()
        with open(db, "r+b") as handle:
            handle.truncate(db.stat().st_size // 2)
    traces, damaged = snapshot(home.traces), db.read_bytes()
    result = rlam(home.root, "run", "--planner", "fixed", env={"RLAM_EXECUTOR": "off"})
    line = one_error_line(result)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.code == 6
    assert line.startswith(f"rlam: error: the Prefect database {db} is damaged ("), line
    assert "move it aside and run the command again" in line
    assert snapshot(home.traces) == traces
    assert db.read_bytes() == damaged  # left for the user to inspect or move
    assert not (home.prefect / "server.json").exists()  # no server was started on it


# ---- the Prefect server killed mid-run ---------------------------------------------------------


@pytest.mark.server
def test_the_server_killed_mid_run_fails_the_run_in_one_line_and_a_fork_resumes(tmp_path: Path) -> None:
    """SIGKILL to the embedded server while step 2 of 3 runs (a barrier file holds it)."""
    home = HomeLayout(tmp_path / "home")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(PROJECT)
    executions, gate = tmp_path / "executions", tmp_path / "gate"
    # Prefect's client retries a lost connection (PREFECT_CLIENT_MAX_RETRIES, default 5, with backoff): 1 keeps this test short
    env = {"RLAM_TEST_EXECUTIONS": str(executions), "PREFECT_CLIENT_MAX_RETRIES": "1", "PREFECT_LOGGING_LEVEL": "WARNING"}
    try:
        warm = rlam(home.root, "run", "--planner", "fixed", "--set", "begin.start=1", cwd=project, env=env)  # starts this home's server
        assert warm.code == 0, warm.stderr
        before = snapshot(home.traces)
        executions.unlink()
        full = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
        full.update(RLAM_HOME=str(home.root), PYTHONPATH=str(ROOT), RLAM_TEST_BARRIER=str(gate), **env)
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlam_prefect.cli", "run", "--planner", "fixed", "--set", "begin.start=2", "--json"],
            cwd=project, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 300
        while not Path(f"{gate}.reached").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        state = json.loads((home.prefect / "server.json").read_text())
        os.kill(state["server_pid"], signal.SIGKILL)
        gate.touch()  # step 2 finishes after the server died
        out, err = proc.communicate(timeout=600)
        killed = CliResult(proc.returncode, out, err)
        line = one_error_line(killed)
        assert killed.code == 6, err
        assert line.startswith("rlam: error: the Prefect API failed during the run (") and "fork from the first missing step" in line, line
        assert len(err.strip().splitlines()) == 1, err
        assert executions.read_text().split() == ["begin", "hold"]  # step 3 never started
        runs = rlam(home.root, "runs", "--json", cwd=project, env=env)  # the next command works
        assert runs.code == 0, runs.stderr
        run = next(r for r in json.loads(runs.stdout) if r["run_id"] not in {p.split("/")[1] for p in before if p.startswith("runs/")})
        assert run["status"] == "failed"
        assert snapshot(home.traces).items() >= before.items()  # the earlier run: byte-identical
        shown = rlam(home.root, "show", run["run_id"], "--json", cwd=project, env=env).json
        assert [(s["step"], s["action"], s["status"]) for s in shown["steps"]] == [(1, "begin", "executed"), (2, "hold", "executed")]
        assert f"rlam fork {run['run_id']} --step 3" in shown["error_message"]
        executions.unlink()
        fork = rlam(home.root, "fork", run["run_id"], "--step", "3", "--json", cwd=project, env=env)  # restarts the embedded server
        assert fork.code == 0, fork.stderr
        assert executions.read_text().split() == ["finish"]  # only step 3 executed
        report = json.loads(fork.stdout)
        assert report["status"] == "completed"
        assert [s["status"] for s in report["steps"]] == ["cached", "cached", "executed"]
    finally:
        gate.touch()
        rlam(home.root, "server", "stop", cwd=project)
