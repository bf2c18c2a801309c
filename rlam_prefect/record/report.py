"""What ``rlam`` shows about a run, built from the trace alone (the trace is the source of truth)."""

from __future__ import annotations

import json
from typing import Any, cast

from rlam_prefect.record.compare import outcome
from rlam_prefect.record.store import TraceStore

_STEP_FIELDS = ("step", "action", "status", "output_hash", "cache_key", "duration_s", "error_type", "error_message", "prefect_task_run_id")
_APPROVAL_FIELDS = ("approval", "approved_by", "approval_via", "approval_note")


def run_report(store: TraceStore, run_id: str) -> dict[str, Any]:
    run = store.run(run_id)
    steps = store.steps(run_id)
    report: dict[str, Any] = {
        "run_id": run_id,
        "status": run["status"],
        "pipeline": run["pipeline"],
        "mode": run["mode"],
        "planner": run["planner"],
        "goal": goal_of(run.get("planner_options")),
        "steps": [_step_entry(s) for s in steps],
        "executed": sum(s["status"] == "executed" for s in steps),
        "cached": sum(s["status"] == "cached" for s in steps),
        "failed": sum(s["status"] == "failed" for s in steps),
        "rejected": sum(s["status"] == "rejected" for s in steps),
        "llm_calls": run["llm_calls"] or 0,
        "metrics": json.loads(run["metrics"]) if run.get("metrics") else {},
        "prefect_flow_run_id": run["prefect_flow_run_id"],
        "started_at": _iso(run["started_at"]),
        "ended_at": _iso(run["ended_at"]),
        "error_message": run["error_message"],
        "trace_dir": str(store.root),
        "policy_hash": run.get("policy_hash"),
        "policy": json.loads(run["policy"]) if run.get("policy") else None,
    }
    if run["mode"] in ("replay", "fork"):
        parent_hash = store.run(run["parent_run_id"]).get("policy_hash")
        report.update(parent_policy_hash=parent_hash, policy_differs=parent_hash != run.get("policy_hash"))
    if run["mode"] == "replay":
        original = store.steps(run["parent_run_id"])
        report.update(replay_of=run["parent_run_id"], identical=bool(run["identical"]), differences=_differences(steps, original))
    if run["mode"] == "fork":
        report.update(parent_run_id=run["parent_run_id"], fork_step=run["fork_step"], overrides=json.loads(run["overrides"] or "{}"))
    return report


def _step_entry(step: dict[str, Any]) -> dict[str, Any]:
    entry = {k: step.get(k) for k in _STEP_FIELDS} | {"params": json.loads(step["params"] or "{}")}
    if step.get("approval"):
        entry |= {k: step.get(k) for k in _APPROVAL_FIELDS}
        entry["approval_edits"] = json.loads(step["approval_edits"]) if step.get("approval_edits") else {}
    return entry


def _differences(replayed: list[dict[str, Any]], original: list[dict[str, Any]]) -> list[dict[str, Any]]:
    differences = []
    for position in range(max(len(replayed), len(original))):
        a = replayed[position] if position < len(replayed) else None
        b = original[position] if position < len(original) else None
        if a and b and outcome(a) == outcome(b):
            continue
        differences.append(
            {
                "step": position + 1,
                "action": cast(dict[str, Any], a or b)["action"],  # position < the longer list's length: one of them exists
                "replay": {"status": a["status"], "output_hash": a["output_hash"], "error": a["error_message"]} if a else None,
                "original": {"status": b["status"], "output_hash": b["output_hash"]} if b else None,
            }
        )
    return differences


def runs_table(store: TraceStore, limit: int | None = None) -> list[dict[str, Any]]:
    rows = store.runs()[: limit or None]
    return [
        {
            "run_id": r["run_id"],
            "status": r["status"],
            "mode": r["mode"],
            "pipeline": r["pipeline"],
            "parent_run_id": r["parent_run_id"],
            "fork_step": r["fork_step"],
            "n_steps": r["n_steps"],
            "executed": r["executed"],
            "cached": r["cached"],
            "metrics": json.loads(r["metrics"]) if r.get("metrics") else {},
            "goal": goal_of(r.get("planner_options")),
            "started_at": _iso(r["started_at"]),
        }
        for r in rows
    ]


def goal_of(planner_options: str | None) -> str | None:
    """The goal a run's planner worked towards (runs recorded before goals were general: accuracy>=target)."""
    options = json.loads(planner_options) if planner_options else {}
    if options.get("goal"):
        return str(options["goal"])
    target = options.get("target_accuracy")
    return f"accuracy>={target:g}" if isinstance(target, (int, float)) else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
