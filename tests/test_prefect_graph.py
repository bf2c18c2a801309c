"""What users see in Prefect: one flow run per R-LAM run, task runs named by action, data edges."""

from __future__ import annotations

import uuid


def _task_runs(client, flow_run_id):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    # the sync client sends null limit/sort unless given (rejected by the server with 422)
    return client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=100, sort=TaskRunSort.EXPECTED_START_TIME_ASC
    )


def test_flow_run_has_named_task_runs_with_data_dependency_edges(workspace):
    from prefect.client.orchestration import get_client

    report = workspace.rlam_json("run", "--planner", "fixed")
    flow_run_id = uuid.UUID(report["prefect_flow_run_id"])
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        task_runs = _task_runs(client, flow_run_id)
    assert flow_run.state.is_completed()
    assert flow_run.name == f"run-{report['run_id']}"
    by_id = {tr.id: tr for tr in task_runs}
    recorded = {s["action"]: uuid.UUID(s["prefect_task_run_id"]) for s in report["steps"]}
    assert set(recorded.values()) == set(by_id)
    assert {by_id[i].name for i in recorded.values()} == {f"{a} #{n}" for n, a in enumerate(recorded, start=1)}

    def upstream(action: str) -> set[str]:
        inputs = by_id[recorded[action]].task_inputs
        ids = {ref.id for refs in inputs.values() for ref in refs if getattr(ref, "input_type", "") == "task_run"}
        return {by_id[i].name.split(" #")[0] for i in ids}

    assert upstream("load_dataset") == set()
    assert upstream("analyze_data") == {"load_dataset"}
    assert upstream("preprocess_data") == {"load_dataset", "analyze_data"}
    assert upstream("train_model") == {"preprocess_data"}
    assert upstream("evaluate_model") == {"train_model", "preprocess_data"}


def test_replay_task_runs_are_cached_in_prefect(workspace):
    from prefect.client.orchestration import get_client

    original = workspace.rlam_json("run", "--planner", "fixed")
    replay = workspace.rlam_json("replay", original["run_id"])
    flow_run_id = uuid.UUID(replay["prefect_flow_run_id"])
    with get_client(sync_client=True) as client:
        task_runs = _task_runs(client, flow_run_id)
    assert sorted(tr.state.name for tr in task_runs) == ["Cached"] * 5
