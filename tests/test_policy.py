"""Declared preconditions and effects, and execution policies: rules, bad files, recorded rejections."""

from __future__ import annotations

import json

import pytest

from rlam_prefect.actions.project import load_action_modules
from rlam_prefect.actions.registry import get_action
from rlam_prefect.core.errors import UsageError
from rlam_prefect.planning.policy import Policy, load_policy
from rlam_prefect.record.store import TraceStore

load_action_modules()

POLICY = """\
allowed_actions: [load_dataset, analyze_data, preprocess_data, train_model]
params:
  train_model:
    C: {max: 1.0}
max_retrains: 0
require_approval: [preprocess_data]
"""


def _artifacts(name: str = "breast_cancer"):
    """Real artifacts from the real actions, for checking declared conditions."""
    load, analyze, preprocess, train = (get_action(n) for n in ("load_dataset", "analyze_data", "preprocess_data", "train_model"))
    dataset = load.run({}, {"name": name})
    analysis = analyze.run({"dataset": dataset}, {})
    split = preprocess.run({"dataset": dataset, "analysis": analysis}, {})
    return dataset, analysis, split, train.run({"split": split}, {})


def test_preconditions_and_effects_are_declared_named_and_checked():
    evaluate = get_action("evaluate_model")
    assert [c.name for c in get_action("train_model").preconditions] == ["a preprocessed split exists"]
    assert "the model was fitted on this split's features" in [c.name for c in evaluate.preconditions]
    assert [e.name for e in evaluate.effects] == ["held-out metrics exist", "accuracy is between 0 and 1"]
    dataset, analysis, split, model = _artifacts()
    assert "'a preprocessed split exists'" in get_action("train_model").unmet_inputs({"Dataset": dataset})
    assert evaluate.unmet_inputs({"TrainedModel": model, "Split": split}) is None
    # a split of another dataset does not match the model's features
    other = _artifacts("wine")[2]
    assert "the model was fitted on this split's features" in evaluate.unmet_inputs({"TrainedModel": model, "Split": other})
    metrics = evaluate.run({"model": model, "split": split}, {})
    assert evaluate.unmet_effect("Metrics", metrics) is None
    assert "'held-out metrics exist'" in evaluate.unmet_effect("Split", split)
    broken = type(metrics)(**{**metrics.__dict__, "accuracy": 1.5})
    assert "'accuracy is between 0 and 1'" in evaluate.unmet_effect("Metrics", broken)


def test_policy_rules_name_what_they_break(tmp_path):
    path = tmp_path / "rlam-policy.yaml"
    path.write_text(POLICY)
    policy = load_policy(path)
    assert policy.needs_approval("preprocess_data") and not policy.needs_approval("train_model")
    assert policy.hash.startswith("sha256:") and Policy.from_json(policy.to_json()) == policy
    train = get_action("train_model").validate_params({})
    assert policy.violation("evaluate_model", {}, []).startswith("allowed_actions: evaluate_model is not allowed")
    assert policy.violation("train_model", train, []) is None  # the default C=1.0 is within max 1.0
    assert policy.violation("train_model", {**train, "C": 2.0}, []) == "params.train_model.C: 2.0 is above the policy's maximum 1.0"
    trained = [{"action": "train_model", "status": "executed"}]
    assert policy.violation("train_model", train, trained).startswith("max_retrains: train_model already ran 1 times")
    assert Policy.from_mapping({"max_steps": 2}).violation("load_dataset", {}, [{}, {}]).startswith("max_steps: step 3")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_steps: 0\n", "max_steps must be an integer >= 1"),
        ("allowed_actions: [rm_rf]\n", "allowed_actions: unknown action 'rm_rf'"),
        ("params: {train_model: {gamma: {max: 1}}}\n", "train_model has no parameter 'gamma'"),
        ("params: {train_model: {C: {min: 2, max: 1}}}\n", "min 2 is above max 1"),
        ("require_aproval: [train_model]\n", "unknown rule 'require_aproval'"),
        ("- just\n- a list\n", "a policy must be a mapping of rules"),
        ("allowed_actions: [\n", "is not valid YAML at line 2"),
    ],
)
def test_a_bad_policy_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("(", r"\(")) as err:
        load_policy(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_bad_policy_on_the_command_line_writes_nothing(workspace, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("max_retrains: -1\n")
    before = workspace.snapshot()
    for args in (["run", "--policy", str(path)], ["run", "--policy", str(tmp_path / "missing.yaml")]):
        result = workspace.rlam(*args)
        assert result.code == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("rlam: error: policy file")
    result = workspace.rlam("run", extra_env={"RLAM_POLICY": str(path)})
    assert result.code == 2 and "max_retrains must be an integer >= 0" in result.stderr
    assert workspace.snapshot() == before


def test_policy_violations_and_unmet_preconditions_are_recorded_rejections(workspace, tmp_path, llm_server, witness):
    path = tmp_path / "rlam-policy.yaml"
    path.write_text(POLICY)
    replies = [
        {"action": "load_dataset"},
        {"action": "evaluate_model"},  # not allowed by the policy
        {"action": "train_model"},  # allowed, but no split exists yet
        {"action": "analyze_data"},
        {"action": "preprocess_data"},  # gated: pre-approved on the command line
        {"action": "train_model", "params": {"C": 5.0}},  # above the policy's bound
        {"action": "train_model", "params": {"C": 0.5}},
        {"action": "stop"},
    ]
    llm_server.script(*({**r, "reason": "scripted"} for r in replies))
    env = llm_server.env()
    result = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", "--policy", str(path), "--approve", "preprocess_data", "--json", extra_env=env)
    assert result.code == 0, result.stderr
    run = result.json
    assert llm_server.count == len(replies) == run["llm_calls"]
    # a rejected decision never reaches an action body: only the four executed steps ran
    assert witness.calls() == ["load_dataset", "analyze_data", "preprocess_data", "train_model"]
    assert [(s["action"], s["status"], s["error_type"]) for s in run["steps"]] == [
        ("load_dataset", "executed", None),
        ("evaluate_model", "rejected", "PolicyViolation"),
        ("train_model", "rejected", "PreconditionFailed"),
        ("analyze_data", "executed", None),
        ("preprocess_data", "executed", None),
        ("train_model", "rejected", "PolicyViolation"),
        ("train_model", "executed", None),
    ]
    steps = run["steps"]
    assert steps[1]["error_message"].startswith("policy rule allowed_actions: evaluate_model is not allowed")
    assert "'a preprocessed split exists'" in steps[2]["error_message"]
    assert steps[5]["error_message"] == "policy rule params.train_model.C: 5.0 is above the policy's maximum 1.0"
    assert steps[4]["approval"] == "approved" and steps[4]["approval_via"] == "flag"
    store = TraceStore(workspace.home)
    decisions = store.decisions(run["run_id"])
    assert decisions[1]["valid"] is False and decisions[1]["rejection_reason"] == steps[1]["error_message"]
    # the planner saw the broken rule in its next prompt, and the policy itself
    state = json.loads(decisions[2]["prompt"])[-1]["content"]
    assert "policy rule allowed_actions: evaluate_model is not allowed" in state and '"max_retrains": 0' in state
    recorded = store.run(run["run_id"])
    assert recorded["policy_hash"] == load_policy(path).hash == run["policy_hash"]
    assert json.loads(recorded["policy"])["allowed_actions"] == sorted(["load_dataset", "analyze_data", "preprocess_data", "train_model"])

    # a fork under a stricter policy says so, and its re-decided step breaks the new bound
    strict = tmp_path / "strict.yaml"
    strict.write_text(POLICY.replace("max: 1.0", "max: 0.1"))
    seen = witness.mark()
    fork = workspace.rlam("fork", run["run_id"], "--step", "7", "--pin-decisions", "--policy", str(strict), extra_env=env)
    assert fork.code == 1, fork.stderr
    assert llm_server.count == len(replies) and witness.calls(since=seen) == []  # pinned: no call; refused: no execution
    assert f"policy differs from run {run['run_id']}'s" in fork.stdout
    assert "PolicyViolation: policy rule params.train_model.C: 0.5 is above the policy's maximum 0.1" in fork.stdout


def test_the_heuristic_planner_keeps_inside_the_policy_it_is_shown():
    from rlam_prefect.actions.registry import registered_actions
    from rlam_prefect.planning.heuristic import propose, within_policy
    from rlam_prefect.planning.prompt import PlannerState

    policy = Policy.from_mapping({"params": {"train_model": {"C": {"max": 0.2}, "model": {"choices": ["logistic_regression", "svm"]}}}, "max_retrains": 0})
    made = [("load_dataset", "Dataset"), ("analyze_data", "Analysis"), ("preprocess_data", "Split")]
    history = [{"step": i + 1, "action": a, "status": "executed", "output_kind": k} for i, (a, k) in enumerate(made)]

    def replies(rows):
        state = json.loads(json.dumps(PlannerState(registered_actions(), rows, policy=policy.to_dict()).as_dict(), default=str))
        return [reply for _, reply in within_policy(propose(state), state)]

    first = replies(history)
    assert first and all(r["action"] == "train_model" and policy.violation("train_model", get_action("train_model").validate_params(r["params"]), history) is None for r in first)
    history += [
        {"step": 4, "action": "train_model", "status": "executed", "params": json.dumps(first[0]["params"]), "output_kind": "TrainedModel"},
        {"step": 5, "action": "evaluate_model", "status": "executed", "output_kind": "Metrics", "summary": json.dumps({"accuracy": 0.5})},
    ]
    assert [r["action"] for r in replies(history)] == ["stop"]  # below target, but no retrain is allowed
