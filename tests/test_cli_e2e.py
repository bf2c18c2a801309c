"""End to end through the real CLI, a real Prefect server, real Parquet and real scikit-learn."""

from __future__ import annotations

import copy
import json

import pytest

# An override per fork step that changes that step's output, so everything from K on is new work.
FORK_OVERRIDES = {
    1: "load_dataset.name=wine",
    2: "analyze_data.variance_threshold=0.001",
    3: "preprocess_data.test_size=0.3",
    4: "train_model.C=0.1",
    5: "evaluate_model.f1_average=weighted",
}


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@pytest.fixture
def original(recorded_workspace, recorded_run):
    # the seed's fixed order: forks follow the parent's plan, so "exactly the steps from K" is well defined.
    # `rlam run --planner fixed`, recorded once per worker; this test's home is a copy (tests/conftest.py)
    report = copy.deepcopy(recorded_run.report)
    assert report["status"] == "completed", report
    return report


def test_run_records_every_step(workspace, original):
    assert [s["action"] for s in original["steps"]] == [
        "load_dataset", "analyze_data", "preprocess_data", "train_model", "evaluate_model",
    ]
    assert original["executed"] == 5 and original["cached"] == 0 and original["llm_calls"] == 0
    assert original["planner"] == "fixed"
    assert 0.9 < original["metrics"]["accuracy"] <= 1.0
    assert all(s["output_hash"].startswith("sha256:") for s in original["steps"])
    script = workspace.rlam_json("run", "--pipeline", "script")
    assert [s["output_hash"] for s in script["steps"]] == [s["output_hash"] for s in original["steps"]]


def test_replay_is_served_entirely_from_cache_and_identical(workspace, witness, original):
    results_before = workspace.snapshot("results")
    seen = witness.mark()
    replay = workspace.rlam_json("replay", original["run_id"])
    assert witness.calls(since=seen) == []  # no action body ran (the witness saw the original's: test_witness.py)
    assert replay["status"] == "completed"
    assert replay["identical"] is True and replay["differences"] == []
    assert replay["replay_of"] == original["run_id"]
    assert replay["executed"] == 0 and replay["cached"] == 5 and replay["llm_calls"] == 0
    assert [s["output_hash"] for s in replay["steps"]] == [s["output_hash"] for s in original["steps"]]
    assert workspace.snapshot("results") == results_before  # no new result written


def test_fork_at_every_step_executes_exactly_the_steps_from_k(workspace, witness, original):
    parent_traces = {k: v for k, v in workspace.snapshot("traces").items() if original["run_id"] in k}
    order = [s["action"] for s in original["steps"]]  # recorded once per worker (conftest), before this witness
    for k, assignment in FORK_OVERRIDES.items():
        seen = witness.mark()
        fork = workspace.rlam_json("fork", original["run_id"], "--step", str(k), "--set", assignment)
        assert witness.calls(since=seen) == order[k - 1 :], k
        assert fork["status"] == "completed", fork
        assert fork["parent_run_id"] == original["run_id"] and fork["fork_step"] == k
        statuses = [s["status"] for s in fork["steps"]]
        assert statuses == ["cached"] * (k - 1) + ["executed"] * (6 - k), (k, statuses)
        assert fork["executed"] == 6 - k
        target, _, value = assignment.partition("=")
        assert fork["overrides"] == {target.split(".")[0]: {target.split(".")[1]: _value(value)}}
        assert fork["steps"][k - 1]["params"][target.split(".")[1]] == _value(value)
        seen = witness.mark()
        again = workspace.rlam_json("fork", original["run_id"], "--step", str(k), "--set", assignment)
        assert again["executed"] == 0 and again["cached"] == 5, again
        assert witness.calls(since=seen) == [], k
        assert [s["output_hash"] for s in again["steps"]] == [s["output_hash"] for s in fork["steps"]]
    after = {k: v for k, v in workspace.snapshot("traces").items() if original["run_id"] in k}
    assert after == parent_traces  # the parent's trace files are unchanged byte for byte


def test_fork_without_a_change_reuses_everything(workspace, original):
    fork = workspace.rlam_json("fork", original["run_id"], "--step", "3")
    assert fork["executed"] == 0 and fork["cached"] == 5


def test_runs_and_show(workspace, original):
    runs = workspace.rlam_json("runs")
    assert runs[0]["run_id"] == original["run_id"] and runs[0]["status"] == "completed"
    shown = workspace.rlam_json("show", original["run_id"][:6])
    assert shown["steps"] == original["steps"]
    human = workspace.rlam("show", original["run_id"])
    assert human.code == 0 and "evaluate_model" in human.stdout and "accuracy=" in human.stdout


def test_the_rlam_script_verifies_a_project_whose_modules_are_not_installed(workspace, tmp_path):
    """The ``rlam`` console script has its own directory on sys.path, not the project's (``python -m`` has the
    working directory): unpickling a result of the project's own types must still find their module."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(Path(__file__).parent / "witness_storage" / "storage_actions.py", project)
    (project / "pyproject.toml").write_text('[tool.rlam]\nactions = ["storage_actions"]\norder = ["make_numbers", "scale", "total"]\n')
    script = Path(sys.executable).with_name("rlam")
    env = {**os.environ, "RLAM_HOME": str(workspace.home.root)}
    run = subprocess.run([str(script), "run", "--planner", "fixed", "--json"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    run_id = json.loads(run.stdout)["run_id"]
    verified = subprocess.run([str(script), "verify", run_id, "--json"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    report = json.loads(verified.stdout)
    assert verified.returncode == 0 and report["intact"] is True and report["checked"] == 3, report["steps"]
