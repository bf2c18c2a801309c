"""The baselines, executed directly: the same actions and decisions, no Prefect, cache or trace.

``rlam run --pipeline script`` runs the project's fixed order as plain Python; ``--pipeline lam``
lets the planner choose each action and runs it at once (Naive LAM: no cache, no trace, so no replay).

Script and Naive LAM differ only in where decisions come from; both run here so that the
comparison with R-LAM measures the reproducibility layer and nothing else. Output hashes are
computed (not stored) so that experiments can tell whether re-runs reproduce.
"""

from __future__ import annotations

import time
from typing import Any

from rlam_prefect.actions.project import fixed_order, load_action_modules
from rlam_prefect.actions.registry import get_action
from rlam_prefect.core.errors import one_line
from rlam_prefect.core.hashing import canonical_json, content_hash
from rlam_prefect.planning.llm import LLMReply, calls_so_far, complete
from rlam_prefect.planning.plan import RunPlan
from rlam_prefect.planning.planner import LLMPlanner
from rlam_prefect.planning.sources import Decision, DecisionSource, FixedOrder, PlannerDecisions
from rlam_prefect.record.compare import run_metrics


def run_script(overrides: dict[str, dict[str, Any]] | None = None, inject_failures: tuple[str, ...] = ()) -> dict[str, Any]:
    """The Script baseline: the project's fixed order, plain Python. No LLM, Prefect, cache or trace."""
    load_action_modules()
    return run_directly(FixedOrder(fixed_order(), overrides or {}), "script", inject_failures)


def run_naive_lam(plan: RunPlan) -> dict[str, Any]:
    """The Naive LAM baseline: the same planner, prompt and validation as R-LAM, each action run at once."""
    options = plan.planner

    def call(messages: list[dict[str, str]], step: int) -> tuple[LLMReply, list[Any]]:
        return complete(options.model, messages, temperature=options.temperature, seed=options.seed), []

    return run_directly(PlannerDecisions(LLMPlanner(options, plan.overrides, call)), "lam", plan.inject_failures)


def run_directly(source: DecisionSource, pipeline: str, inject_failures: tuple[str, ...] = ()) -> dict[str, Any]:
    artifacts: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    injected: set[str] = set()
    while (decision := source.next_decision(history)) is not None:
        history.append(_execute(decision, len(history) + 1, artifacts, inject_failures, injected))
    failed = source.failure is not None or (history and history[-1]["status"] in ("failed", "rejected"))
    metrics = run_metrics(history)
    return {
        "run_id": None,
        "pipeline": pipeline,
        "status": "failed" if failed else "completed",
        "steps": history,
        "executed": sum(r["status"] == "executed" for r in history),
        "failed": sum(r["status"] == "failed" for r in history),
        "rejected": sum(r["status"] == "rejected" for r in history),
        "cached": 0,
        "llm_calls": calls_so_far(),
        "metrics": metrics,
        "error_message": source.failure,
    }


def _execute(decision: Decision, step: int, artifacts: dict[str, Any], inject: tuple[str, ...], injected: set[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step, "action": decision.action, "params": canonical_json(decision.params), "output_hash": None, "recovers_step": decision.recovers_step}
    started = time.perf_counter()
    if decision.rejection is not None:
        row.update(status="rejected", error_type="InvalidDecision", error_message=decision.rejection)
        return row
    try:
        spec = get_action(decision.action)
        params = spec.validate_params(decision.params)
        unmet = spec.unmet_inputs(artifacts)
        if unmet:
            row.update(status="rejected", error_type="PreconditionFailed", error_message=unmet)
            return row
        if spec.name in inject and spec.name not in injected:
            injected.add(spec.name)
            raise RuntimeError(f"injected failure in {spec.name} (step {step})")
        value = spec.run({arg: artifacts[kind] for arg, kind in spec.input_kinds.items()}, params)
    except Exception as exc:
        row.update(status="failed", error_type=type(exc).__name__, error_message=one_line(exc), duration_s=time.perf_counter() - started)
        return row
    artifacts[spec.output_kind] = value
    summary = value.summary() if callable(getattr(value, "summary", None)) else {}
    row.update(
        status="executed",
        params=canonical_json(params),
        output_hash=content_hash(value),
        output_kind=spec.output_kind,
        summary=canonical_json(summary),
        duration_s=time.perf_counter() - started,
    )
    return row
