"""The LLM-driven flow end to end: recorded decisions, rejections, recovery, replay with zero calls.

An external model is the scripted OpenAI-compatible server of tests/llm_server.py, reached over real
HTTP through litellm's ``openai/`` client and OPENAI_API_BASE, as a user points rlam at any endpoint.
Calls are counted by that server and executions by the witness (tests/witness), not by rlam.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow.dataset as ds

from rlam_prefect.record.store import TraceStore
from tests.llm_server import GARBAGE, HANG, HTTP

SEED_ORDER = ["load_dataset", "analyze_data", "preprocess_data", "train_model", "evaluate_model"]

FAKE_KEY = "sk-test-FAKEKEY0123456789abcdefXYZ"


def _decisions(workspace, run_id):
    return TraceStore(workspace.home).decisions(run_id)


def test_default_planner_records_every_decision_and_replay_makes_no_call(workspace, witness):
    run = workspace.rlam_json("run")
    assert run["status"] == "completed" and run["planner"] == "rlam/heuristic"
    assert [s["action"] for s in run["steps"]] == SEED_ORDER
    assert witness.calls() == SEED_ORDER  # each action body ran once, seen from outside rlam
    assert run["llm_calls"] == 6  # five actions and the stop
    decisions = _decisions(workspace, run["run_id"])
    assert [d["action"] for d in decisions] == [s["action"] for s in run["steps"]] + ["stop"]
    assert all(d["valid"] and d["model"] == "rlam/heuristic" and d["prompt_hash"].startswith("sha256:") for d in decisions)
    assert "<<<STATE" in json.loads(decisions[2]["prompt"])[-1]["content"]
    assert json.loads(decisions[0]["raw_reply"])["action"] == "load_dataset"

    seen = witness.mark()
    replay = workspace.rlam_json("replay", run["run_id"])
    assert replay["identical"] is True and replay["llm_calls"] == 0 and replay["executed"] == 0
    assert witness.calls(since=seen) == []
    assert _decisions(workspace, replay["run_id"]) == []


def test_an_external_model_over_http_drives_the_run_and_replays_with_zero_requests(workspace, llm_server, witness):
    llm_server.script(
        {"action": "load_dataset", "params": {"name": "wine"}, "reason": "scripted"},
        {"action": "analyze_data", "reason": "scripted"},
        {"action": "preprocess_data", "params": {"test_size": 0.25}, "reason": "scripted"},
        {"action": "train_model", "params": {"model": "random_forest", "n_estimators": 50}, "reason": "scripted"},
        {"action": "evaluate_model", "reason": "scripted"},
        {"action": "stop", "reason": "scripted"},
    )
    env = llm_server.env()
    result = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", "--temperature", "0.4", "--seed", "7", "--json", extra_env=env)
    assert result.code == 0, result.stderr
    run = result.json
    assert llm_server.count == 6 and run["llm_calls"] == 6 and llm_server.remaining == 0
    assert witness.calls() == SEED_ORDER
    assert run["planner"] == "openai/gpt-4o-mini"
    assert run["steps"][0]["params"]["name"] == "wine" and run["steps"][3]["params"]["model"] == "random_forest"
    for body in llm_server.requests:  # what went over the wire, as the provider sees it
        assert (body["model"], body["temperature"], body["seed"], body["response_format"]) == ("gpt-4o-mini", 0.4, 7, {"type": "json_object"})
        assert body["messages"][0]["role"] == "system" and "<<<STATE" in body["messages"][-1]["content"]
    assert {d["endpoint"] for d in _decisions(workspace, run["run_id"])} == {llm_server.url}

    seen = witness.mark()
    replayed = workspace.rlam("replay", run["run_id"], "--json", extra_env=env)  # the endpoint is up: any call would be counted
    assert replayed.code == 0, replayed.stderr
    replay = replayed.json
    assert replay["identical"] is True and replay["llm_calls"] == 0 and replay["executed"] == 0
    assert llm_server.count == 6 and witness.calls(since=seen) == []


def test_invalid_replies_are_rejected_steps_then_the_run_fails(workspace, llm_server, witness):
    replies = ["not json at all", json.dumps({"action": "delete_everything"}), json.dumps({"action": "train_model", "params": {"C": -1}})]
    llm_server.script(*replies)
    result = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", "--json", extra_env=llm_server.env())
    assert result.code == 1
    run = result.json
    assert run["status"] == "failed" and run["rejected"] == 3 and run["executed"] == 0
    assert llm_server.count == 3 and run["llm_calls"] == 3 and witness.calls() == []
    assert "rejected" in run["error_message"]
    assert [s["action"] for s in run["steps"]] == ["(invalid)", "delete_everything", "train_model"]
    decisions = _decisions(workspace, run["run_id"])
    assert [d["raw_reply"] for d in decisions] == replies
    assert [d["valid"] for d in decisions] == [False] * 3
    assert "not JSON" in decisions[0]["rejection_reason"] and "unknown action" in decisions[1]["rejection_reason"]
    # the planner was told why its previous reply was rejected
    assert "unknown action" in json.loads(decisions[2]["prompt"])[-1]["content"]


def test_provider_failures_are_recorded_rejections_each_one_request_no_retry(workspace, llm_server, witness):
    """rlam calls litellm with num_retries=0: a 500, a 429 and a timeout each cost exactly one request."""
    llm_server.script(HTTP(500), HTTP(429), HANG)
    env = {**llm_server.env(), "RLAM_PLANNER_TIMEOUT": "2"}
    result = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", "--json", extra_env=env)
    assert result.code == 1, result.stderr
    run = result.json
    assert run["status"] == "failed" and run["rejected"] == 3 and run["executed"] == 0
    assert llm_server.count == 3 and run["llm_calls"] == 3 and witness.calls() == []
    reasons = [d["rejection_reason"] for d in _decisions(workspace, run["run_id"])]
    assert "InternalServerError" in reasons[0] and "RateLimitError" in reasons[1] and "Timeout" in reasons[2], reasons


def test_a_garbage_reply_is_rejected_and_the_planner_recovers(workspace, llm_server, witness):
    llm_server.script(GARBAGE, {"action": "load_dataset", "params": {"name": "iris"}}, {"action": "stop"})
    result = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", "--json", extra_env=llm_server.env())
    assert result.code == 0, result.stderr
    run = result.json
    assert [(s["action"], s["status"]) for s in run["steps"]] == [("(invalid)", "rejected"), ("load_dataset", "executed")]
    assert llm_server.count == 3 and run["llm_calls"] == 3 and witness.calls() == ["load_dataset"]
    assert "InternalServerError" in _decisions(workspace, run["run_id"])[0]["rejection_reason"]


def test_an_action_failure_is_followed_by_a_recorded_recovery_and_replays(workspace, witness):
    run = workspace.rlam_json("run", "--inject-failure", "train_model")
    assert run["status"] == "completed"
    assert witness.calls() == SEED_ORDER  # the injected failure fails before train_model's body; the retry runs it
    statuses = [(s["action"], s["status"]) for s in run["steps"]]
    assert statuses[3] == ("train_model", "failed") and statuses[4] == ("train_model", "executed")
    assert run["steps"][3]["error_type"] == "InjectedFailure"
    steps = TraceStore(workspace.home).steps(run["run_id"])
    assert steps[4]["recovers_step"] == 4
    seen = witness.mark()
    replay = workspace.rlam_json("replay", run["run_id"])
    assert replay["identical"] is True and replay["executed"] == 0 and replay["llm_calls"] == 0
    assert witness.calls(since=seen) == []


def test_fork_replans_by_default_and_pins_on_request(workspace, witness):
    run = workspace.rlam_json("run")
    seen = witness.mark()
    pinned = workspace.rlam_json("fork", run["run_id"], "--step", "4", "--set", "train_model.C=0.3", "--pin-decisions")
    assert pinned["llm_calls"] == 0 and [s["status"] for s in pinned["steps"]] == ["cached"] * 3 + ["executed"] * 2
    assert witness.calls(since=seen) == ["train_model", "evaluate_model"]
    seen = witness.mark()
    replanned = workspace.rlam_json("fork", run["run_id"], "--step", "4", "--set", "train_model.C=0.3")
    assert witness.calls(since=seen) == [s["action"] for s in replanned["steps"] if s["status"] == "executed"]
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


def test_secrets_never_reach_a_file(workspace, llm_server):
    llm_server.script({"action": "load_dataset", "reason": f"my key is {FAKE_KEY}"}, {"action": "stop"})
    llm_server.key = FAKE_KEY  # the key really is sent (and checked) as the bearer token
    result = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", "--json", extra_env=llm_server.env(key=FAKE_KEY))
    assert result.code == 0, result.stderr
    assert llm_server.count == 2 and result.json["steps"][0]["status"] == "executed"
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


def test_a_user_action_joins_the_allow_list_and_is_cached_traced_and_replayed(workspace, llm_server, witness):
    listing = workspace.rlam("actions", "--json", extra_env={"RLAM_ACTIONS": "examples.feature_selection"}).json
    assert "select_features" in {a["action"] for a in listing}
    llm_server.script(
        {"action": "load_dataset"}, {"action": "analyze_data"}, {"action": "preprocess_data"},
        {"action": "select_features", "params": {"k": 5}, "reason": "fewer features"},
        {"action": "train_model"}, {"action": "evaluate_model"}, {"action": "stop"},
    )
    env = {"RLAM_ACTIONS": "examples.feature_selection", **llm_server.env()}
    result = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", "--json", extra_env=env)
    assert result.code == 0, result.stderr
    run = result.json
    assert run["steps"][3]["action"] == "select_features" and run["steps"][3]["status"] == "executed"
    assert run["steps"][3]["params"] == {"k": 5}
    assert llm_server.count == 7 and witness.calls() == [*SEED_ORDER[:3], "select_features", *SEED_ORDER[3:]]
    # replay without RLAM_ACTIONS: the recorded action modules are imported again
    seen = witness.mark()
    replay = workspace.rlam_json("replay", run["run_id"])
    assert replay["identical"] is True and replay["executed"] == 0
    assert llm_server.count == 7 and witness.calls(since=seen) == []
