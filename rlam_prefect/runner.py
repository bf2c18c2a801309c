"""Run a validated plan as one Prefect flow run and report it from the trace."""

from __future__ import annotations

from typing import Any

from rlam_prefect.backend import configure
from rlam_prefect.home import Home
from rlam_prefect.planning import RunPlan
from rlam_prefect.report import run_report
from rlam_prefect.trace import TraceStore


def flow_parameters(plan: RunPlan) -> dict[str, Any]:
    return {
        "run_id": plan.run_id,
        "planner": plan.planner,
        "overrides": plan.overrides or None,
        "replay_of": plan.parent_run_id if plan.mode == "replay" else None,
        "fork_of": plan.parent_run_id if plan.mode == "fork" else None,
        "fork_step": plan.fork_step,
    }


def execute(plan: RunPlan, home: Home) -> dict[str, Any]:
    configure(home)
    from flows.rlam_flow import RunFailed, rlam_flow

    flow = rlam_flow.with_options(flow_run_name=f"{plan.mode}-{plan.run_id}")
    state = flow(**flow_parameters(plan), return_state=True)
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        if isinstance(error, BaseException) and not isinstance(error, RunFailed):
            raise error  # a user error (RLamError) or a bug: the CLI tells them apart
    return run_report(TraceStore(home), plan.run_id)
