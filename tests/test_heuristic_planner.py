"""The offline default planner, through litellm's real completion path."""

from __future__ import annotations

import json
from collections import Counter

import tasks  # noqa: F401
from rlam_prefect.actions.registry import registered_actions
from rlam_prefect.planning.goal import Goal
from rlam_prefect.planning.llm import complete
from rlam_prefect.planning.names import HEURISTIC_MODEL
from rlam_prefect.planning.prompt import PlannerState, build_messages
from rlam_prefect.planning.replies import parse_reply


def _row(step, action, status="executed", output_kind=None, summary=None, params=None, error=None):
    return {"step": step, "action": action, "status": status, "output_kind": output_kind,
            "summary": json.dumps(summary) if summary else None, "params": json.dumps(params or {}),
            "error_type": "ValueError" if error else None, "error_message": error}


PREPARED = [
    _row(1, "load_dataset", output_kind="Dataset"),
    _row(2, "analyze_data", output_kind="Analysis"),
]


def _ask(history, temperature=0.0, seed=0, **state):
    messages = build_messages(PlannerState(registered_actions(), history, **state))
    reply = complete(HEURISTIC_MODEL, messages, temperature=temperature, seed=seed)
    assert reply.error_type is None, reply.error_message
    return parse_reply(reply.text, registered_actions())


def test_it_follows_the_workflow_and_stops_at_the_target():
    assert _ask([]).action == "load_dataset"
    assert _ask(PREPARED).action == "preprocess_data"
    history = [*PREPARED, _row(3, "preprocess_data", output_kind="Split"), _row(4, "train_model", output_kind="TrainedModel")]
    assert _ask(history).action == "evaluate_model"
    history.append(_row(5, "evaluate_model", output_kind="Metrics", summary={"accuracy": 0.99}))
    assert _ask(history, goal=Goal.parse("accuracy>=0.97")).action == "stop"
    retry = _ask(history, goal=Goal.parse("accuracy>=0.995"))
    assert retry.action == "train_model" and (retry.params["model"], retry.params["C"]) != ("logistic_regression", 1.0)


def test_the_goal_is_any_metric_in_either_direction():
    history = [*PREPARED, _row(3, "preprocess_data", output_kind="Split"), _row(4, "train_model", output_kind="TrainedModel"),
               _row(5, "evaluate_model", output_kind="Metrics", summary={"accuracy": 0.99, "f1": 0.8, "log_loss": 0.3})]
    assert _ask(history, goal=Goal.parse("f1>=0.9")).action == "train_model"
    assert _ask(history, goal=Goal.parse("f1>=0.75")).action == "stop"
    assert _ask(history, goal=Goal.parse("log_loss<=0.2")).action == "train_model"
    assert _ask(history, goal=Goal.parse("log_loss<=0.5")).action == "stop"


def test_it_recovers_from_a_failure_and_says_which_step_it_answers():
    history = [*PREPARED, _row(3, "preprocess_data", output_kind="Split"), _row(4, "train_model", status="failed", error="boom")]
    decision = _ask(history)
    assert decision.action == "train_model" and decision.recovers_step == 4


def test_it_respects_pins_and_the_step_budget():
    history = [*PREPARED, _row(3, "preprocess_data", output_kind="Split")]
    assert _ask(history, pinned={"train_model": {"C": 0.25}}).params["C"] == 0.25
    assert _ask(history, max_steps=3).action == "stop"


def test_temperature_zero_is_deterministic_and_above_zero_samples():
    assert len({json.dumps(_ask(PREPARED, temperature=0.0, seed=None).params) for _ in range(10)}) == 1
    sampled = Counter(json.dumps(_ask(PREPARED, temperature=1.0, seed=None).params, sort_keys=True) for _ in range(60))
    assert len(sampled) >= 2
    seeded = {json.dumps(_ask(PREPARED, temperature=1.0, seed=123).params) for _ in range(10)}
    assert len(seeded) == 1
