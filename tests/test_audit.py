"""The reproducibility audit and the run artifacts, on the session server (the deployed path is in
test_deployments.py): which runs are audited, a missing cached result named by step, artifacts on a
failed run, and the ``dataset`` flow parameter."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from rlam_prefect.core.errors import UsageError
from rlam_prefect.planning.plan import prepare_plan
from rlam_prefect.planning.requests import ForkRequest, PlannerSettings, ReplayRequest, RunRequest, request_from_parameters
from rlam_prefect.record.audit import select_runs
from rlam_prefect.record.store import TraceStore


def _artifacts(url: str, flow_run_id: str) -> dict[str, dict[str, Any]]:
    body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 50}
    return {a["key"]: a for a in httpx.post(f"{url}/artifacts/filter", json=body, timeout=30).json()}


def test_audit_fails_naming_the_step_whose_cached_result_is_missing(workspace, prefect_api_url):
    from rlam_prefect.prefect.audit_flow import audit_flow

    original = workspace.rlam_json("run", "--planner", "fixed")
    fork = workspace.rlam_json("fork", original["run_id"], "--step", "4", "--set", "train_model.C=0.1")
    store = TraceStore(workspace.home)
    assert select_runs(store, limit=5) == [fork["run_id"], original["run_id"]]

    passed = asyncio.run(audit_flow(limit=5, return_state=True))
    assert passed.is_completed(), passed.message
    replays = [r for r in store.runs() if r["mode"] == "replay"]
    assert sorted(r["parent_run_id"] for r in replays) == sorted([fork["run_id"], original["run_id"]])
    assert select_runs(store, limit=5) == [fork["run_id"], original["run_id"]]  # replays are not audited again

    key = fork["steps"][3]["cache_key"]  # the fork's own train_model result
    (workspace.home.result_data / key).unlink()
    failed = asyncio.run(audit_flow(limit=5, return_state=True))
    assert failed.is_failed()
    assert failed.message.startswith(f"1 of 2 run(s) do not reproduce: run {fork['run_id']} (replay ")
    assert "step 4 train_model (failed: StoredResultError:" in failed.message and key[:16] in failed.message
    report = _artifacts(prefect_api_url, str(failed.state_details.flow_run_id))["rlam-audit"]["data"]
    assert f"| `{original['run_id']}` |" in report and "**NOT identical**" in report and "step 4 `train_model`" in report
    assert (workspace.home.result_data / key).exists() is False  # the audit reports damage, it repairs nothing


def test_audit_selection_bounds_and_an_empty_audit(workspace):
    from rlam_prefect.prefect.audit_flow import audit_flow

    store = TraceStore(workspace.home)
    with pytest.raises(UsageError, match="limit 0 is out of range"):
        select_runs(store, limit=0)
    with pytest.raises(UsageError, match="max_age_hours -1"):
        select_runs(store, limit=1, max_age_hours=-1)
    empty = asyncio.run(audit_flow(limit=3, return_state=True))
    assert empty.is_completed() and empty.result()["message"] == "no completed runs or forks to audit"


def test_a_failed_run_still_gets_its_artifacts(workspace, prefect_api_url):
    report = workspace.rlam_json("run", "--planner", "fixed", "--inject-failure", "train_model")
    assert report["status"] == "failed"
    artifacts = _artifacts(prefect_api_url, report["prefect_flow_run_id"])
    assert set(artifacts) == {"rlam-steps", "rlam-lineage", "rlam-metrics"}
    table = json.loads(artifacts["rlam-steps"]["data"])
    assert [(r["step"], r["action"], r["status"]) for r in table] == [(s["step"], s["action"], s["status"]) for s in report["steps"]]
    assert "injected failure in train_model" in table[-1]["error"]
    assert {r["metric"]: r["value"] for r in json.loads(artifacts["rlam-metrics"]["data"])} == {"status": "failed"}
    assert "| status | failed |" in artifacts["rlam-lineage"]["data"]
    assert len(json.dumps(table)) < 10_000  # far below the ~1.5 MB above which the server drops the event


def test_flow_parameters_become_one_typed_request_checked_before_any_work(workspace):
    assert request_from_parameters(planner="fixed") == RunRequest(PlannerSettings("fixed"))
    assert request_from_parameters(replay_of="abc") == ReplayRequest("abc")
    assert request_from_parameters(fork_of="abc", fork_step=2, overrides={"train_model": {"C": 0.5}}) == ForkRequest("abc", 2, {"train_model": {"C": 0.5}})
    for params, message in [
        ({"replay_of": "a", "fork_of": "b"}, "either replay_of or fork_of"),
        ({"fork_step": 2}, "fork_step needs fork_of"),
        ({"fork_of": "a"}, "a fork needs --step K"),
        ({"replay_of": "a", "overrides": {"train_model": {"C": 1}}}, "a replay takes no overrides"),
        ({"pin_decisions": True}, "pin_decisions applies to forks only"),
    ]:
        with pytest.raises(UsageError, match=message):
            request_from_parameters(**params)
    with pytest.raises(UsageError, match="load_dataset: name"):
        prepare_plan(TraceStore(workspace.home), RunRequest(PlannerSettings("fixed"), {"load_dataset": {"name": "mnist"}}))
