"""The LLM-driven flow end to end: recorded decisions, rejections, recovery, replay with zero calls."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow.dataset as ds

from rlam_prefect.record.store import TraceStore

FAKE_KEY = "sk-test-FAKEKEY0123456789abcdefXYZ"


def _decisions(workspace, run_id):
    return TraceStore(workspace.home).decisions(run_id)


def test_default_planner_records_every_decision_and_replay_makes_no_call(workspace):
    run = workspace.rlam_json("run")
    assert run["status"] == "completed" and run["planner"] == "rlam/heuristic"
    assert [s["action"] for s in run["steps"]] == ["load_dataset", "analyze_data", "preprocess_data", "train_model", "evaluate_model"]
    assert run["llm_calls"] == 6  # five actions and the stop
    decisions = _decisions(workspace, run["run_id"])
    assert [d["action"] for d in decisions] == [s["action"] for s in run["steps"]] + ["stop"]
    assert all(d["valid"] and d["model"] == "rlam/heuristic" and d["prompt_hash"].startswith("sha256:") for d in decisions)
    assert "<<<STATE" in json.loads(decisions[2]["prompt"])[-1]["content"]
    assert json.loads(decisions[0]["raw_reply"])["action"] == "load_dataset"

    replay = workspace.rlam_json("replay", run["run_id"])
    assert replay["identical"] is True and replay["llm_calls"] == 0 and replay["executed"] == 0
    assert _decisions(workspace, replay["run_id"]) == []


def test_a_mocked_external_model_drives_the_run_and_replays_with_zero_calls(workspace):
    replies = [
        json.dumps({"action": "load_dataset", "params": {"name": "wine"}, "reason": "mock"}),
        json.dumps({"action": "analyze_data", "reason": "mock"}),
        json.dumps({"action": "preprocess_data", "params": {"test_size": 0.25}, "reason": "mock"}),
        json.dumps({"action": "train_model", "params": {"model": "random_forest", "n_estimators": 50}, "reason": "mock"}),
        json.dumps({"action": "evaluate_model", "reason": "mock"}),
        json.dumps({"action": "stop", "reason": "mock"}),
    ]
    env = {"RLAM_PLANNER_MOCK_RESPONSE": json.dumps(replies), "OPENAI_API_KEY": ""}
    result = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", "--json", extra_env=env)
    assert result.code == 0, result.stderr
    run = result.json
    assert run["planner"] == "openai/gpt-4o-mini" and run["llm_calls"] == 6
    assert run["steps"][0]["params"]["name"] == "wine" and run["steps"][3]["params"]["model"] == "random_forest"
    replay = workspace.rlam_json("replay", run["run_id"])  # no mock, no key: any call would fail loudly
    assert replay["identical"] is True and replay["llm_calls"] == 0


def test_invalid_replies_are_rejected_steps_then_the_run_fails(workspace):
    replies = ["not json at all", json.dumps({"action": "delete_everything"}), json.dumps({"action": "train_model", "params": {"C": -1}})]
    result = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", "--json", extra_env={"RLAM_PLANNER_MOCK_RESPONSE": json.dumps(replies)})
    assert result.code == 1
    run = result.json
    assert run["status"] == "failed" and run["rejected"] == 3 and run["executed"] == 0
    assert "rejected" in run["error_message"]
    assert [s["action"] for s in run["steps"]] == ["(invalid)", "delete_everything", "train_model"]
    decisions = _decisions(workspace, run["run_id"])
    assert [d["raw_reply"] for d in decisions] == replies
    assert [d["valid"] for d in decisions] == [False] * 3
    assert "not JSON" in decisions[0]["rejection_reason"] and "unknown action" in decisions[1]["rejection_reason"]
    # the planner was told why its previous reply was rejected
    assert "unknown action" in json.loads(decisions[2]["prompt"])[-1]["content"]


def test_an_unreachable_provider_is_a_recorded_failed_decision(workspace):
    result = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", "--json", extra_env={"RLAM_PLANNER_MOCK_RESPONSE": "litellm.Timeout", "RLAM_PLANNER_TIMEOUT": "0.2"})
    assert result.code == 1
    run = result.json
    assert run["rejected"] == 3 and run["llm_calls"] == 3
    assert "Timeout" in _decisions(workspace, run["run_id"])[0]["rejection_reason"]


def test_an_action_failure_is_followed_by_a_recorded_recovery_and_replays(workspace):
    run = workspace.rlam_json("run", "--inject-failure", "train_model")
    assert run["status"] == "completed"
    statuses = [(s["action"], s["status"]) for s in run["steps"]]
    assert statuses[3] == ("train_model", "failed") and statuses[4] == ("train_model", "executed")
    assert run["steps"][3]["error_type"] == "InjectedFailure"
    steps = TraceStore(workspace.home).steps(run["run_id"])
    assert steps[4]["recovers_step"] == 4
    replay = workspace.rlam_json("replay", run["run_id"])
    assert replay["identical"] is True and replay["executed"] == 0 and replay["llm_calls"] == 0


def test_fork_replans_by_default_and_pins_on_request(workspace):
    run = workspace.rlam_json("run")
    pinned = workspace.rlam_json("fork", run["run_id"], "--step", "4", "--set", "train_model.C=0.3", "--pin-decisions")
    assert pinned["llm_calls"] == 0 and [s["status"] for s in pinned["steps"]] == ["cached"] * 3 + ["executed"] * 2
    replanned = workspace.rlam_json("fork", run["run_id"], "--step", "4", "--set", "train_model.C=0.3")
    assert replanned["llm_calls"] >= 2  # asked again from step 4
    assert replanned["steps"][3]["params"]["C"] == 0.3
    assert [s["status"] for s in replanned["steps"][:3]] == ["cached"] * 3
    # the same decisions and inputs as the pinned fork: served from the cache
    assert replanned["steps"][3]["status"] == "cached"


def test_a_provider_without_its_key_fails_before_anything_runs(workspace):
    before = workspace.snapshot()
    result = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", extra_env={"OPENAI_API_KEY": ""})
    assert result.code == 2 and result.stderr.count("\n") == 1 and "OPENAI_API_KEY" in result.stderr
    assert workspace.snapshot() == before


def test_secrets_never_reach_a_file(workspace):
    reply = json.dumps({"action": "load_dataset", "reason": f"my key is {FAKE_KEY}"})
    env = {"OPENAI_API_KEY": FAKE_KEY, "RLAM_PLANNER_MOCK_RESPONSE": json.dumps([reply, json.dumps({"action": "stop"})])}
    result = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", "--json", extra_env=env)
    assert result.code == 0, result.stderr
    assert FAKE_KEY not in result.stdout
    for path in workspace.home.root.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path
    decisions = ds.dataset(str(workspace.home.traces / "decisions"), format="parquet").to_table().to_pylist()
    assert "[redacted OPENAI_API_KEY]" in decisions[0]["raw_reply"]
    # nor Prefect's own records: the session server's database, its WAL and its log
    prefect_home = Path(os.environ["PREFECT_HOME"])
    stored = [p for p in prefect_home.rglob("*") if p.is_file()]
    assert any(p.name.startswith("prefect.db") for p in stored)
    for path in stored:
        assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_planner_decisions_are_task_runs_with_an_edge_to_the_action(workspace):
    from prefect.client.orchestration import get_client

    from tests.test_prefect_graph import _task_runs

    run = workspace.rlam_json("run")
    with get_client(sync_client=True) as client:
        task_runs = _task_runs(client, uuid.UUID(run["prefect_flow_run_id"]))
    by_id = {tr.id: tr for tr in task_runs}
    plans = sorted((tr for tr in task_runs if tr.name.startswith("plan #")), key=lambda tr: tr.name)
    assert len(plans) == 6
    for plan in plans:  # no spurious edges into a planner call
        assert not any(ref for refs in plan.task_inputs.values() for ref in refs)
    for step in run["steps"]:
        action = by_id[uuid.UUID(step["prefect_task_run_id"])]
        upstream = {by_id[ref.id].name for refs in action.task_inputs.values() for ref in refs if ref.id in by_id}
        assert f"plan #{step['step']}" in upstream


def test_a_user_action_joins_the_allow_list_and_is_cached_traced_and_replayed(workspace):
    listing = workspace.rlam("actions", "--json", extra_env={"RLAM_ACTIONS": "examples.feature_selection"}).json
    assert "select_features" in {a["action"] for a in listing}
    replies = [json.dumps(r) for r in (
        {"action": "load_dataset"}, {"action": "analyze_data"}, {"action": "preprocess_data"},
        {"action": "select_features", "params": {"k": 5}, "reason": "fewer features"},
        {"action": "train_model"}, {"action": "evaluate_model"}, {"action": "stop"},
    )]
    env = {"RLAM_ACTIONS": "examples.feature_selection", "RLAM_PLANNER_MOCK_RESPONSE": json.dumps(replies)}
    result = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", "--json", extra_env=env)
    assert result.code == 0, result.stderr
    run = result.json
    assert run["steps"][3]["action"] == "select_features" and run["steps"][3]["status"] == "executed"
    assert run["steps"][3]["params"] == {"k": 5}
    # replay without RLAM_ACTIONS: the recorded action modules are imported again
    replay = workspace.rlam_json("replay", run["run_id"])
    assert replay["identical"] is True and replay["executed"] == 0
