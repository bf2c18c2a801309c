"""``rlam sweep``: one recorded fork per grid point, run in parallel on a real local Dask cluster.

One parent run and one 3-point sweep on 2 worker processes are shared by the module (a sweep
starts a Dask cluster, ~20-50 s here); the bad-grid cases run before it against the same home.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.record.store import TraceStore
from tests.conftest import Workspace
from tests.witness.plugin import Witness

GRID = [0.01, 0.1, 10]


@pytest.fixture(scope="module")
def sweep_witness(tmp_path_factory: pytest.TempPathFactory) -> Witness:
    """Action-body calls in the sweep's Dask worker processes (they inherit the rlam process's environment)."""
    return Witness(tmp_path_factory.mktemp("sweep-witness") / "witness.log")


@pytest.fixture(scope="module")
def recorded(prefect_api_url: str, tmp_path_factory: pytest.TempPathFactory, sweep_witness: Witness) -> tuple[Workspace, dict[str, Any]]:
    workspace = Workspace(HomeLayout(tmp_path_factory.mktemp("sweep") / "rlam-home"))
    result = workspace.rlam("run", "--planner", "fixed", "--json", extra_env=sweep_witness.env)
    parent = result.json
    assert parent["status"] == "completed"
    assert len(sweep_witness.calls()) == 5
    return workspace, parent


@pytest.fixture(scope="module")
def swept(recorded: tuple[Workspace, dict[str, Any]], sweep_witness: Witness) -> tuple[Workspace, dict[str, Any], dict[str, Any]]:
    workspace, parent = recorded
    grid = "train_model.C=" + ",".join(str(c) for c in GRID)
    seen = sweep_witness.mark()
    result = workspace.rlam("sweep", parent["run_id"], "--step", "4", "--grid", grid, "--workers", "2", "--json", extra_env=sweep_witness.env)
    assert result.code == 0, result.stderr
    records = sweep_witness.records()[seen:]
    # each fork trained and evaluated once (in the Dask worker processes) and reused steps 1-3
    assert sorted(name for _, name in records) == ["evaluate_model"] * 3 + ["train_model"] * 3
    assert 1 <= len({pid for pid, _ in records}) <= 2  # --workers 2
    return workspace, parent, result.json


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "train_model.C=0.1,-1"], "grid point train_model.C=-1: train_model: C: Input should be greater than 0"),
        (["--grid", "train_model.C"], "bad --grid 'train_model.C': expected ACTION.PARAM=v1,v2"),
        (["--grid", "train_model.C=0.1,,1"], "an empty value between commas"),
        (["--grid", "train_model.C=0.1,0.1"], "a value is repeated"),
        (["--grid", "train_model.C=0.1", "--grid", "train_model.C=1"], "--grid train_model.C is given twice"),
        (["--grid", "load_dataset.name=iris,wine"], "load_dataset does not run at or after the chosen step"),
        (["--grid", "train_model.kernel=1,2"], "train_model"),
        (["--grid", "nope.C=1"], "nope"),
        ([], "a sweep needs at least one --grid"),
        (["--grid", "train_model.C=1,2", "--workers", "0"], "--workers 0: need at least 1"),
        (["--grid", "train_model.C=1,2", "--workers", "2", "--address", "tcp://127.0.0.1:1"], "a cluster at --address brings its own workers"),
    ],
)
def test_bad_grid_is_one_line_exit_2_and_writes_nothing(recorded: tuple[Workspace, dict[str, Any]], args: list[str], message: str) -> None:
    workspace, parent = recorded
    before = workspace.snapshot()
    result = workspace.rlam("sweep", parent["run_id"], "--step", "4", *args)
    assert result.code == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("rlam: error: "), result.stderr
    assert message in result.stderr
    assert workspace.snapshot() == before


def test_step_out_of_range_fails_before_anything_runs(recorded: tuple[Workspace, dict[str, Any]]) -> None:
    workspace, parent = recorded
    before = workspace.snapshot()
    result = workspace.rlam("sweep", parent["run_id"], "--step", "9", "--grid", "train_model.C=1,2")
    assert result.code == 2
    assert "step 9 is out of range" in result.stderr and result.stderr.count("\n") == 1
    assert workspace.snapshot() == before


def test_each_grid_point_is_a_recorded_fork_reusing_steps_before_k(swept: tuple[Workspace, dict[str, Any], dict[str, Any]]) -> None:
    workspace, parent, report = swept
    store = TraceStore(workspace.home)
    assert report["status"] == "completed" and report["parent_run_id"] == parent["run_id"] and report["fork_step"] == 4
    assert report["grid"] == {"train_model.C": GRID}
    assert [f["point"] for f in report["forks"]] == [{"train_model.C": c} for c in GRID]
    assert len({f["run_id"] for f in report["forks"]}) == 3
    train_hashes = set()
    for fork, c in zip(report["forks"], GRID):
        run = store.run(fork["run_id"])
        assert (run["mode"], run["status"], run["parent_run_id"], run["fork_step"]) == ("fork", "completed", parent["run_id"], 4)
        assert json.loads(run["overrides"]) == {"train_model": {"C": c}}
        steps = store.steps(fork["run_id"])
        assert [(s["action"], s["status"]) for s in steps] == [
            ("load_dataset", "cached"), ("analyze_data", "cached"), ("preprocess_data", "cached"),
            ("train_model", "executed"), ("evaluate_model", "executed"),
        ]
        assert [s["output_hash"] for s in steps[:3]] == [s["output_hash"] for s in parent["steps"][:3]]
        assert json.loads(steps[3]["params"])["C"] == c
        assert (fork["executed"], fork["cached"]) == (2, 3)
        assert fork["metrics"] == json.loads(run["metrics"]) and 0.5 < fork["metrics"]["accuracy"] <= 1.0
        train_hashes.add(steps[3]["output_hash"])
    assert len(train_hashes) == 3 and parent["steps"][3]["output_hash"] not in train_hashes


def test_forks_are_subflow_runs_of_the_sweep_flow_run_in_prefect(swept: tuple[Workspace, dict[str, Any], dict[str, Any]]) -> None:
    from prefect.client.orchestration import get_client

    _, _, report = swept
    sweep_run_id = uuid.UUID(report["prefect_flow_run_id"])
    with get_client(sync_client=True) as client:
        sweep_run = client.read_flow_run(sweep_run_id)
        assert sweep_run.name == f"sweep-{report['sweep_id']}" and sweep_run.state.is_completed()
        for fork in report["forks"]:
            fork_run = client.read_flow_run(uuid.UUID(fork["prefect_flow_run_id"]))
            assert fork_run.name == f"fork-{fork['run_id']}" and fork_run.state.is_completed()
            # Prefect links a subflow through a placeholder task run in the calling flow run, whose
            # __parents__ input names the task run that called it: here the sweep's Dask task
            placeholder = client.read_task_run(fork_run.parent_task_run_id)
            assert placeholder.flow_run_id == sweep_run_id
            (caller,) = placeholder.task_inputs["__parents__"]
            dask_task = client.read_task_run(caller.id)
            assert dask_task.flow_run_id == sweep_run_id and dask_task.state.is_completed()
            assert dask_task.name == f"fork train_model.C={fork['point']['train_model.C']}"


def test_table_shows_each_fork_with_its_metrics(swept: tuple[Workspace, dict[str, Any], dict[str, Any]]) -> None:
    from rlam_prefect.cli.render import render_sweep

    _, parent, report = swept
    lines = render_sweep(report).splitlines()
    assert lines[0].startswith(f"sweep {report['sweep_id']}  completed  forks of {parent['run_id']} at step 4")
    assert lines[1].split() == ["grid", "point", "fork", "run", "status", "exec", "cache", "accuracy", "balanced_accuracy", "f1"]
    for line, fork in zip(lines[2:], report["forks"]):
        assert line.split()[:5] == [f"train_model.C={fork['point']['train_model.C']}", fork["run_id"], "completed", "2", "3"]
        assert f"{fork['metrics']['accuracy']:.4f}" in line


def test_sweeping_again_executes_nothing_and_a_damaged_result_fails_only_its_fork(swept: tuple[Workspace, dict[str, Any], dict[str, Any]], sweep_witness: Witness) -> None:
    workspace, parent, first = swept
    seen = sweep_witness.mark()
    by_c = {f["point"]["train_model.C"]: f for f in first["forks"]}
    damaged_key = TraceStore(workspace.home).steps(by_c[10]["run_id"])[3]["cache_key"]
    with open(workspace.home.result_data / damaged_key, "ab") as handle:  # C=10's trained model
        handle.write(b"x")
    result = workspace.rlam("sweep", parent["run_id"], "--step", "4", "--grid", "train_model.C=0.1,10", "--workers", "1", extra_env=sweep_witness.env)
    assert result.code == 1, result.stderr
    assert sweep_witness.calls(since=seen) == []  # C=0.1 all from the cache; C=10's damaged model fails its fork, never recomputed
    lines = result.stdout.splitlines()
    assert lines[0].split()[2] == "failed"
    assert lines[2].split()[:5] == ["train_model.C=0.1", lines[2].split()[1], "completed", "0", "5"]  # all from cache
    assert lines[2].split()[5] == f"{by_c[0.1]['metrics']['accuracy']:.4f}"
    assert lines[3].split()[0] == "train_model.C=10" and lines[3].split()[2:5] == ["failed", "0", "3"]
    assert lines[4].startswith("      error: step 4 train_model:") and damaged_key in lines[4] and "does not match the digest" in lines[4]


def test_sweep_code_is_imported_only_by_the_sweep_command() -> None:
    import subprocess
    import sys

    code = "import sys, rlam_prefect.cli.main; assert not any(m.split('.')[0] in ('dask', 'distributed', 'prefect_dask') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
