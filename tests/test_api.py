"""The public Python API as a user meets it: a plain script, a running event loop (Jupyter), a user's own flow."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rlam_prefect as rlam

ROOT = Path(__file__).resolve().parents[1]
IRIS = {"load_dataset": {"name": "iris"}}

SCRIPT = """
import json, rlam_prefect as rlam
run = rlam.run(planner="fixed", overrides={"load_dataset": {"name": "iris"}})
replay = rlam.replay(run.run_id)
fork = rlam.fork(run.run_id, step=4, overrides={"train_model": {"C": 0.5}})
errors = []
for call in (lambda: rlam.fork("nosuch", step=1), lambda: rlam.fork(run.run_id, step=9), lambda: rlam.run(planner="fixed", overrides={"train_model": {"C": -1}})):
    try:
        call()
    except rlam.RLamError as exc:
        errors.append([type(exc).__name__, str(exc), exc.exit_code])
print(json.dumps({
    "run": [run.run_id, run.status, run.executed, [s.status for s in run.steps], run.metrics.get("accuracy")],
    "replay": [replay.mode, replay.parent_run_id, replay.identical, replay.executed, replay.cached, list(replay.differences)],
    "fork": [fork.parent_run_id, fork.fork_step, fork.executed, fork.cached],
    "hashes": [[s.output_hash for s in r.steps] for r in (run, replay, fork)],
    "runs": [r.run_id for r in rlam.open_home().runs()],
    "errors": errors,
}))
"""


def test_a_plain_script_runs_replays_and_forks_with_typed_results_and_errors(workspace, witness):
    env = {**os.environ, "RLAM_HOME": str(workspace.home.root), "RLAM_EXECUTOR": "off"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # seen from outside rlam: the run's five bodies, then the fork's two; the replay and the refused calls ran none
    order = ["load_dataset", "analyze_data", "preprocess_data", "train_model", "evaluate_model"]
    assert witness.calls() == [*order, "train_model", "evaluate_model"]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    run_id, status, executed, statuses, accuracy = out["run"]
    assert (status, executed, statuses) == ("completed", 5, ["executed"] * 5) and accuracy > 0.8
    assert out["replay"] == ["replay", run_id, True, 0, 5, []]
    assert out["fork"] == [run_id, 4, 2, 3]
    assert out["hashes"][0] == out["hashes"][1] and out["hashes"][2][:3] == out["hashes"][0][:3]
    assert run_id in out["runs"] and len(out["runs"]) == 3  # the failed calls recorded nothing
    names = [e[0] for e in out["errors"]]
    assert names == ["UnknownRunError", "UsageError", "InvalidParamsError"], out["errors"]
    assert all(e[2] == 2 and "\n" not in e[1] for e in out["errors"])


def test_the_api_works_inside_a_running_event_loop_as_in_jupyter(workspace):
    async def notebook_cell() -> rlam.RunResult:
        return rlam.run(planner="fixed", overrides=IRIS, home=workspace.home.root)  # a plain call, no await

    result = asyncio.run(notebook_cell())
    assert result.ok and result.executed == 5
    replay = asyncio.run(_in_loop(lambda: rlam.replay(result.run_id, home=workspace.home.root)))
    assert replay.identical and replay.executed == 0 and replay.cached == 5


async def _in_loop(call):
    return call()


def test_inside_a_users_own_prefect_flow_the_run_is_a_subflow(workspace, prefect_api_url):
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="my-analysis")
    def my_analysis(home: str) -> str:
        return rlam.run(planner="fixed", overrides=IRIS, home=home).run_id

    state = my_analysis(str(workspace.home.root), return_state=True)
    run_id = state.result()
    recorded = rlam.open_home(workspace.home.root).run(run_id)
    assert recorded.ok and recorded.executed == 5

    async def parent_of(flow_run_id: str):
        async with get_client() as client:
            child = await client.read_flow_run(flow_run_id)
            if child.parent_task_run_id is None:
                return None
            task_run = await client.read_task_run(child.parent_task_run_id)
            return task_run.flow_run_id

    assert asyncio.run(parent_of(recorded.prefect_flow_run_id)) == state.state_details.flow_run_id


def test_bad_input_raises_typed_errors_before_anything_is_written(workspace):
    home = rlam.open_home(workspace.home.root)
    with pytest.raises(rlam.UnknownRunError):
        rlam.replay("nosuch", home=home)
    with pytest.raises(rlam.UnknownActionError):
        rlam.run(planner="fixed", overrides={"no_such_action": {"x": 1}}, home=home)
    with pytest.raises(rlam.UsageError, match="temperature"):
        rlam.run(planner="rlam/heuristic", temperature=5.0, home=home)
    assert home.runs() == [] and not workspace.home.root.exists()  # no server started, no directory made
