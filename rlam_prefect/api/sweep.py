"""Running a validated sweep: every grid point a fork, in parallel on a Dask cluster through Prefect."""

from __future__ import annotations

import os
from typing import Any

from rlam_prefect.core.errors import RLamError, UnknownRunError, UsageError
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.planning.plan import RunPlan, parse_value
from rlam_prefect.planning.sweep import SweepPlan, point_text
from rlam_prefect.record.store import TraceStore


def run_sweep(sweep: SweepPlan, home: HomeLayout, *, workers: int | None = None, address: str | None = None) -> dict[str, Any]:
    """Run every fork of ``sweep`` on a Dask cluster (a local one, or the scheduler at ``address``)."""
    if address and workers is not None:
        raise UsageError("--workers sizes the local Dask cluster; a cluster at --address brings its own workers")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: need at least 1")
    n_workers = workers or min(len(sweep.plans), os.cpu_count() or 1)
    from rlam_prefect.local.backend import configure

    configure(home)  # before Prefect is imported; local workers inherit PREFECT_API_URL from this process
    from rlam_prefect.prefect.runner import flow_parameters
    from rlam_prefect.prefect.sweep_flow import sweep_flow, task_runner

    forks = [
        {"label": point_text(point), "run_id": plan.run_id, "params": flow_parameters(plan)}
        for point, plan in zip(sweep.points, sweep.plans)
    ]
    flow = sweep_flow.with_options(flow_run_name=f"sweep-{sweep.sweep_id}", task_runner=task_runner(address, n_workers))  # type: ignore[arg-type]  # prefect-dask subclasses the bare TaskRunner (default future type), which the invariant TaskRunner[PrefectFuture[Any]] rejects
    state = flow(home=str(home.root), forks=forks, return_state=True)
    outcomes = state.result(raise_on_failure=False)
    if not isinstance(outcomes, list):  # the sweep flow itself crashed (e.g. no cluster at --address)
        raise RLamError(f"sweep flow run ended {state.name}: {outcomes}") from None
    store = TraceStore(home)
    report_forks = [_fork_row(store, point, plan, outcome) for point, plan, outcome in zip(sweep.points, sweep.plans, outcomes)]
    return {
        "sweep_id": sweep.sweep_id,
        "parent_run_id": sweep.parent_run_id,
        "fork_step": sweep.fork_step,
        "grid": {axis.target: [parse_value(v) for v in axis.raw_values] for axis in sweep.axes},
        "cluster": address or f"local ({n_workers} worker processes)",
        "prefect_flow_run_id": str(state.state_details.flow_run_id) if state.state_details else None,
        "status": "completed" if all(f["status"] == "completed" for f in report_forks) else "failed",
        "forks": report_forks,
    }


def _fork_row(store: TraceStore, point: dict[str, str], plan: RunPlan, outcome: dict[str, Any]) -> dict[str, Any]:
    """One fork as the trace records it (the trace, not the task's return value, is the record)."""
    from rlam_prefect.record.report import run_report

    row: dict[str, Any] = {"point": {t: parse_value(v) for t, v in point.items()}, "run_id": plan.run_id, "overrides": plan.overrides}
    try:
        report = run_report(store, plan.run_id)
    except UnknownRunError:  # it failed before writing its start row: say why, from Prefect
        return row | {"status": "not recorded", "executed": 0, "cached": 0, "failed": 0, "metrics": {}, "prefect_flow_run_id": None, "error": outcome.get("message")}
    keep = ("status", "executed", "cached", "failed", "rejected", "llm_calls", "metrics", "parent_run_id", "fork_step", "prefect_flow_run_id")
    error = report.get("error_message") or next((f"step {s['step']} {s['action']}: {s['error_message']}" for s in report["steps"] if s.get("error_message")), None)
    return row | {k: report.get(k) for k in keep} | {"error": error or (outcome.get("message") if report["status"] != "completed" else None)}
