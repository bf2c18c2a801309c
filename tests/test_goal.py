"""The planner's goal is a run parameter (metric, direction, threshold), shown with the run's own metrics."""

from __future__ import annotations

import json

import pytest

from rlam_prefect.cli.render import render_runs
from rlam_prefect.core.errors import UsageError
from rlam_prefect.planning.goal import Goal, goal_of_options
from rlam_prefect.planning.planner import PlannerOptions
from rlam_prefect.record.compare import run_metrics


def test_a_goal_is_a_metric_a_direction_and_a_threshold():
    assert Goal.parse("accuracy>=0.97") == Goal("accuracy", ">=", 0.97)
    assert Goal.parse(" rmse <= 1e-2 ").text == "rmse<=0.01"
    assert Goal.parse("f1>=0.9").met(0.95) and not Goal.parse("f1>=0.9").met(0.85)
    assert Goal.parse("log_loss<=0.3").met(0.2) and not Goal.parse("log_loss<=0.3").met(0.4)
    assert not Goal.parse("f1>=0.9").met(None) and not Goal.parse("f1>=0.9").met("0.95")
    for bad in ("accuracy", "accuracy=0.9", ">=0.9", "accuracy>=high", "accuracy>=0.9; rm -rf"):
        with pytest.raises(UsageError, match="is not METRIC>=NUMBER"):
            Goal.parse(bad)


def test_target_accuracy_is_the_older_spelling_and_old_records_read_as_a_goal():
    assert goal_of_options(None, 0.9) == "accuracy>=0.9" and goal_of_options(None, None) == "accuracy>=0.97"
    with pytest.raises(UsageError, match="not both"):
        goal_of_options("f1>=0.9", 0.9)
    assert PlannerOptions.from_json('{"target_accuracy": 0.8, "max_steps": 5}', "rlam/heuristic").goal == "accuracy>=0.8"
    assert PlannerOptions.from_json('{"goal": "mcc>=0.5"}', "rlam/heuristic").goal == "mcc>=0.5"


def test_a_users_own_metrics_artifact_is_the_runs_metrics_and_rlam_runs_shows_the_goal_metric():
    history = [
        {"step": 1, "output_kind": "Dataset", "summary": json.dumps({"n": 3}), "status": "executed"},
        {"step": 2, "output_kind": "ClassifierMetrics", "summary": json.dumps({"mcc": 0.81, "accuracy": 0.9}), "status": "executed"},
    ]
    assert run_metrics(history) == {"mcc": 0.81, "accuracy": 0.9}
    row = {"run_id": "a" * 12, "status": "completed", "mode": "run", "n_steps": 2, "executed": 2, "cached": 0,
           "parent_run_id": None, "fork_step": None, "started_at": "t", "metrics": {"mcc": 0.81, "accuracy": 0.9}, "goal": "accuracy>=0.97"}
    text = render_runs([row, {**row, "goal": "mcc>=0.5"}, {**row, "goal": None, "metrics": {"rmse": 0.4}}, {**row, "metrics": {}}])
    lines = text.splitlines()
    assert "metric" in lines[0].split() and "accuracy" not in lines[0]
    assert "accuracy=0.9" in lines[1] and "mcc=0.81" in lines[2] and "rmse=0.4" in lines[3] and " - " in lines[4]


def test_the_goal_reaches_the_prompt_and_the_heuristic_works_towards_it():
    import tasks  # noqa: F401
    from rlam_prefect.actions.registry import registered_actions
    from rlam_prefect.planning.prompt import PlannerState

    state = PlannerState(registered_actions(), [], goal=Goal.parse("balanced_accuracy>=0.99")).as_dict()
    assert state["goal"]["metric"] == "balanced_accuracy" and state["goal"]["direction"] == "maximize" and state["goal"]["threshold"] == 0.99


def test_the_goal_is_a_cli_option_and_a_run_records_it(workspace):
    bad = workspace.rlam("run", "--goal", "accuracy=high")
    assert bad.code == 2 and "is not METRIC>=NUMBER" in bad.stderr and not workspace.home.root.joinpath("traces").exists()
    easy = workspace.rlam_json("run", "--goal", "f1>=0.5", "--set", "load_dataset.name=iris")
    assert easy["status"] == "completed" and [s["action"] for s in easy["steps"]][-1] == "evaluate_model" and len(easy["steps"]) == 5
    hard = workspace.rlam_json("run", "--goal", "f1>=0.9999", "--set", "load_dataset.name=breast_cancer", "--max-steps", "9")
    assert len(hard["steps"]) > 5  # below the goal: the heuristic tries other models within the budget
    shown = workspace.rlam("show", hard["run_id"])
    assert "goal: f1>=0.9999" in shown.stdout and "f1=" in shown.stdout
    runs = workspace.rlam("runs")
    assert f"f1={hard['metrics']['f1']}" in runs.stdout and f"f1={easy['metrics']['f1']}" in runs.stdout
