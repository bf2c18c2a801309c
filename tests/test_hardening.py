"""A reproducibility record must survive crashes and concurrency, and say when it was tampered with."""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq
import pytest

from rlam_prefect.record.store import TraceStore
from tests.conftest import ROOT, start_rlam
from tests.warm_cli import WarmProcess


def test_verify_names_every_damaged_result_and_writes_nothing(workspace):
    run = workspace.rlam_json("run", "--planner", "fixed")
    ok = workspace.rlam("verify", run["run_id"], "--json")
    assert ok.code == 0 and ok.json["intact"] is True and ok.json["checked"] == 5
    keys = [s["cache_key"] for s in run["steps"]]
    tampered = workspace.home.result_data / keys[3]
    tampered.write_bytes(tampered.read_bytes() + b"x")
    (workspace.home.result_data / keys[1]).unlink()
    index = workspace.home.traces / "results" / keys[4][:2] / f"{keys[4]}.parquet"
    index.unlink()
    before = workspace.snapshot()
    bad = workspace.rlam("verify", run["run_id"], "--json")
    assert bad.code == 4
    results = {c["step"]: c["result"] for c in bad.json["steps"]}
    assert results == {1: "ok", 2: "missing", 3: "ok", 4: "tampered", 5: "missing"}
    assert workspace.snapshot() == before
    human = workspace.rlam("verify", run["run_id"])
    assert "NOT intact: 3 problem(s)" in human.stdout


def _spawn(workspace, *args: str) -> WarmProcess | subprocess.Popen[str]:
    """``rlam args`` started, in a child of the warm CLI server when it can take it (tests/warm_cli.py)."""
    return start_rlam(list(args), {**os.environ, "RLAM_HOME": str(workspace.home.root)}, ROOT)


@pytest.mark.parametrize("after_steps", [1, 2, 3, 4])
def test_kill_minus_nine_mid_run_leaves_a_readable_trace_and_a_resumable_run(workspace, after_steps):
    """Killed after k recorded steps plus a random moment: inside an action, between steps, or mid-write."""
    # a slow training step (1500+ trees) widens the window inside an action
    args = ("run", "--planner", "fixed", "--set", "train_model.model=random_forest", "--set", f"train_model.n_estimators={1500 + after_steps}")
    proc = _spawn(workspace, *args)
    steps_dir = workspace.home.traces / "steps"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(steps_dir.glob("*/*.parquet"))) < after_steps:
        time.sleep(0.01)
    time.sleep(random.Random(after_steps).uniform(0.0, 0.05))  # short: after step 4 only a fast step is left
    proc.kill()  # SIGKILL, to the process running rlam
    proc.wait()

    store = TraceStore(workspace.home)
    for path in store.files():  # every trace file that exists is complete
        pq.read_table(path)
    [run] = store.runs()
    steps = store.steps(run["run_id"])
    assert run["status"] == "incomplete", (after_steps, run["status"])
    assert len(steps) >= after_steps and [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    assert all(s["status"] == "executed" for s in steps)
    # resume: fork from the step after the last completed one; earlier steps are reused, the run completes
    fork = workspace.rlam_json("fork", run["run_id"], "--step", str(len(steps) + 1))
    assert fork["status"] == "completed" and len(fork["steps"]) == 5
    assert [s["status"] for s in fork["steps"][: len(steps)]] == ["cached"] * len(steps)
    assert workspace.rlam("verify", fork["run_id"]).code == 0


def test_eight_concurrent_writers_lose_and_duplicate_nothing(workspace):
    parent = workspace.rlam_json("run", "--planner", "fixed")
    commands = [("run", "--planner", "fixed", "--set", f"train_model.C={c}", "--json") for c in (0.2, 0.3, 0.2, 0.3)]
    commands += [("fork", parent["run_id"], "--step", "4", "--set", f"train_model.C={c}", "--json") for c in (0.2, 0.4, 0.4, 0.5)]
    with ThreadPoolExecutor(len(commands)) as pool:  # eight rlam processes at once, each its own child
        results = list(pool.map(lambda c: workspace.rlam(*c), commands))
    reports = []
    for result in results:
        assert result.code == 0, result.stderr[-2000:]
        reports.append(result.json)
    store = TraceStore(workspace.home)
    runs = {r["run_id"]: r for r in store.runs()}
    assert len(runs) == 9 and all(r["status"] == "completed" for r in runs.values())
    for report in reports:
        steps = store.steps(report["run_id"])
        assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]
        assert [s["output_hash"] for s in steps] == [s["output_hash"] for s in report["steps"]]
    # identical work done concurrently was computed once and then served: one index entry per key
    keys = Counter(r["cache_key"] for r in _all_rows(store, "results"))
    assert keys and max(keys.values()) == 1
    # runs with the same parameters agree on every output hash, whoever computed it
    by_c: dict[float, set[tuple[str, ...]]] = {}
    for report in reports:
        by_c.setdefault(report["steps"][3]["params"]["C"], set()).add(tuple(s["output_hash"] for s in report["steps"]))
    assert all(len(variants) == 1 for variants in by_c.values())
    assert workspace.rlam("verify", reports[0]["run_id"]).code == 0


def _all_rows(store: TraceStore, table: str) -> list[dict]:
    return [row for path in (store.root / table).rglob("*.parquet") for row in pq.read_table(path).to_pylist()]
