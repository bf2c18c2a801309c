"""Run a validated plan as one Prefect flow run and report it from the trace."""

from __future__ import annotations

import asyncio
from typing import Any

from rlam_prefect.backend import configure
from rlam_prefect.errors import RLamError, UnknownRunError
from rlam_prefect.home import Home
from rlam_prefect.planning import RunPlan
from rlam_prefect.report import run_report
from rlam_prefect.trace import TraceStore


def flow_parameters(plan: RunPlan) -> dict[str, Any]:
    """The flow's parameters for a validated plan (a replay takes its planner from the trace)."""
    params: dict[str, Any] = {
        "run_id": plan.run_id,
        "overrides": plan.overrides or None,
        "replay_of": plan.parent_run_id if plan.mode == "replay" else None,
        "fork_of": plan.parent_run_id if plan.mode == "fork" else None,
        "fork_step": plan.fork_step,
        "pin_decisions": plan.pin_decisions,
        "inject_failures": list(plan.inject_failures) or None,
        "policy": plan.policy.to_dict() if plan.policy else None,
        "approve": list(plan.pre_approved) or None,
        "approval_timeout": plan.approval_timeout,
    }
    if plan.mode != "replay":
        options = plan.planner
        params.update(
            planner=options.model,
            temperature=options.temperature,
            seed=options.seed,
            max_steps=options.max_steps,
            target_accuracy=options.target_accuracy,
        )
    return params


def call_flow(params: dict[str, Any]) -> Any:
    """The rlam flow run for ``params``, as its final state; one sync API client serves the whole call.

    Prefect builds a new sync client (about 20 ms) for each storage lookup it makes outside a
    client context, two of them before the flow body starts (see ``prefect_client.py``).
    """
    from flows.rlam_flow import rlam_flow
    from rlam_prefect.prefect_client import shared_sync_client

    with shared_sync_client():
        return asyncio.run(rlam_flow(**params, return_state=True))  # an async flow: see flows/rlam_flow.py


def execute(plan: RunPlan, home: Home) -> dict[str, Any]:
    configure(home)
    state = call_flow(flow_parameters(plan))
    store = TraceStore(home)
    try:
        return run_report(store, plan.run_id)  # the trace, not the flow's return value, is the record
    except UnknownRunError:
        error = state.result(raise_on_failure=False)
        if isinstance(error, BaseException):
            raise error from None  # it failed before recording anything: a user error or a bug
        raise RLamError(f"flow run ended {state.name} before run {plan.run_id} was recorded") from None
