"""`rlam experiments --repeats 1` end to end: real CLI runs, real trace, real Prefect task runs.

One experiment is shared by the module (it is the expensive part); each test checks that a table
value is computed from what happened, by recomputing it from the recorded details or the trace.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.record.store import TraceStore


@pytest.fixture(scope="module")
def experiment(prefect_api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import os
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("experiments") / "out"
    # The harness runs each pipeline run as its own `rlam` command in the experiment's home. It starts the home's
    # warm executor first (`rlam server start`), so every pipeline's runs are served by it, timed alike; with
    # PREFECT_API_URL set that takes RLAM_EXECUTOR=on, so the commands here run as a user's would.
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "RLAM_EXECUTOR": "on"}
    # seed 1 then 2: two draws of the sampling planner that choose different plans (checked below from the runs themselves)
    proc = subprocess.run(
        [sys.executable, "-m", "rlam_prefect.cli", "experiments", "--repeats", "1", "--seed", "1", "--out", str(out), "--json"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    try:
        assert proc.returncode == 0, proc.stderr[-2000:]
        results = json.loads(proc.stdout)
        # every pipeline run, replay and fork was served by the executor (its log, one line per forked child)
        commands = [i["args"] for i in results["invocations"] if i["args"][0] in ("run", "replay", "fork")]
        served = (out / "home" / "prefect" / "executor.log").read_text().count(" runs rlam ")
        assert served == len(commands) >= 10, (served, commands)
        yield {"out": out, "results": results}
    finally:  # the experiment home's executor
        subprocess.run([sys.executable, "-m", "rlam_prefect.cli", "server", "stop"], env={**env, "RLAM_HOME": str(out / "home")}, capture_output=True, timeout=120)


def _row(results: dict[str, Any], metric: str) -> dict[str, Any]:
    return next(r for r in results["table"] if r["metric"] == metric)


def test_reproducibility_is_measured_per_pipeline(experiment: dict[str, Any]) -> None:
    results = experiment["results"]
    row = _row(results, "reproducibility success")
    script, lam = results["pipelines"]["script"], results["pipelines"]["lam"]
    # Script is deterministic: its re-run's hashes equal the original's
    assert row["script"]["value"] == 1.0 and script["reproduction"]["details"][0]["first_difference_step"] is None
    # Naive LAM at temperature 1.0 with a fresh draw chose a different plan, so its outputs differ
    assert row["lam"]["value"] == 0.0 and len(lam["runs"]) == 2
    assert lam["reproduction"]["details"][0]["first_difference_step"] is not None
    # R-LAM replays are identical; the value is the share the replays themselves reported and we re-checked
    assert row["rlam"]["value"] == 1.0
    detail = results["pipelines"]["rlam"]["reproduction"]["details"][0]
    assert detail["replay_says_identical"] is True and detail["first_difference_step"] is None


def test_rlam_replay_matches_the_trace(experiment: dict[str, Any]) -> None:
    results = experiment["results"]
    store = TraceStore(HomeLayout(Path(results["rlam_home"])))
    original = results["pipelines"]["rlam"]["runs"][0]["run_id"]
    replay = results["pipelines"]["rlam"]["reproduction"]["details"][0]["replay_run_id"]
    hashes = lambda run: [(s["action"], s["output_hash"]) for s in store.steps(run)]  # noqa: E731
    assert hashes(original) == hashes(replay)
    assert all(s["status"] == "cached" for s in store.steps(replay))
    assert _row(results, "LLM calls during replay")["rlam"]["value"] == 0 == store.run(replay)["llm_calls"]


def test_trace_completeness_counts_prefect_task_runs(experiment: dict[str, Any]) -> None:
    results = experiment["results"]
    row = _row(results, "trace completeness")
    rlam = results["pipelines"]["rlam"]["trace_completeness"]
    store = TraceStore(HomeLayout(Path(results["rlam_home"])))
    # independently of Prefect: every executed or failed step row of every R-LAM run
    rows = [s for run in store.runs() for s in store.steps(run["run_id"]) if s["status"] in ("executed", "failed") and s.get("prefect_task_run_id")]
    assert rlam["actions_ran"] == len(rows) > 0 and rlam["incomplete"] == []
    assert row["rlam"]["value"] == 1.0
    for untraced in ("script", "lam"):
        assert row[untraced]["value"] == 0.0 and results["pipelines"][untraced]["trace_completeness"]["actions_ran"] >= 5


def test_failure_visibility_is_higher_with_a_trace(experiment: dict[str, Any]) -> None:
    results = experiment["results"]
    row = _row(results, "failure visibility")
    assert row["rlam"]["value"] == 1.0
    assert row["script"]["value"] < 1.0 and row["lam"]["value"] < 1.0
    for pipeline in ("script", "lam", "rlam"):
        (detail,) = results["pipelines"][pipeline]["failure_visibility"]["details"]
        assert detail["printed_by_the_process"] is True  # the failure happened in all three
    rlam_detail = results["pipelines"]["rlam"]["failure_visibility"]["details"][0]
    store = TraceStore(HomeLayout(Path(results["rlam_home"])))
    failed = [s for s in store.steps(rlam_detail["run_id"]) if s["status"] == "failed"]
    assert failed and failed[0]["action"] == rlam_detail["action"] and "injected failure" in failed[0]["error_message"]


def test_replay_and_fork_are_tried(experiment: dict[str, Any]) -> None:
    results = experiment["results"]
    for metric in ("replay", "fork"):
        row = _row(results, metric)
        assert row["rlam"]["value"] == 1.0
        for untraced in ("script", "lam"):
            assert row[untraced]["value"] == 0.0 and "run_id null" in row[untraced]["text"]
    fork = results["pipelines"]["rlam"]["fork"]["details"][0]
    assert fork["cached"] >= fork["fork_step"] - 1 and fork["executed"] >= 1


def test_files_are_written_and_readable(experiment: dict[str, Any]) -> None:
    out, results = experiment["out"], experiment["results"]
    with open(out / "experiments.csv") as handle:
        rows = list(csv.DictReader(handle))
    by_key = {(r["metric"], r["pipeline"]): r for r in rows}
    assert float(by_key[("trace completeness", "rlam")]["value"]) == _row(results, "trace completeness")["rlam"]["value"]
    markdown = (out / "experiments.md").read_text()
    assert "| failure visibility |" in markdown and "R-LAM" in markdown
    assert (out / "experiments.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "experiments.json").read_text())["table"] == results["table"]


def test_bad_input_is_one_line(workspace: Any, tmp_path: Path) -> None:
    result = workspace.rlam("experiments", "--repeats", "0", "--out", str(tmp_path / "x"))
    assert result.code == 2 and result.stderr.strip().count("\n") == 0 and "--repeats" in result.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    result = workspace.rlam("experiments", "--out", str(tmp_path / "full"))
    assert result.code == 2 and "not empty" in result.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
