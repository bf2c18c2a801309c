"""Sweeps: one fork of a recorded run per grid point, run in parallel on a Dask cluster.

Every grid point becomes an ordinary fork (the same validated ``RunPlan`` as ``rlam fork``), so a
sweep adds no new semantics: each fork is its own ``rlam`` flow run with its own trace rows,
``parent_run_id``, ``fork_step`` and ``overrides``. Parallelism comes from prefect-dask's
``DaskTaskRunner`` (a maintained engine that scales from a local cluster to many machines) rather
than from a process pool of our own. All forks share ``$RLAM_HOME/results``, so the steps before K
are served from the verified cache in every fork.

All grid points are validated here, before Prefect or Dask is imported and before anything is
written, so a bad grid fails with one line and nothing runs.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from typing import Any

from rlam_prefect.errors import RLamError, UnknownRunError, UsageError
from rlam_prefect.home import Home
from rlam_prefect.planning import RunPlan, new_run_id, parse_overrides, parse_value, prepare_plan
from rlam_prefect.trace import TraceStore

MAX_POINTS = 256  # a typo such as 20 values x 20 values should not start 400 forks by accident


@dataclass(frozen=True)
class GridAxis:
    target: str  # ACTION.PARAM
    raw_values: tuple[str, ...]  # as typed; each is read like a --set value (JSON when it parses)


@dataclass
class SweepPlan:
    sweep_id: str
    parent_run_id: str
    fork_step: int
    axes: list[GridAxis]
    points: list[dict[str, str]]  # {ACTION.PARAM: raw value} per fork, in grid order
    plans: list[RunPlan]  # one validated fork plan per point


def parse_grid(specs: list[str]) -> list[GridAxis]:
    """``ACTION.PARAM=v1,v2,...`` options into axes; each axis names a distinct parameter."""
    if not specs:
        raise UsageError("a sweep needs at least one --grid ACTION.PARAM=v1,v2,...")
    axes: list[GridAxis] = []
    for spec in specs:
        target, sep, raw = spec.partition("=")
        target = target.strip()
        action, dot, param = target.partition(".")
        values = tuple(v.strip() for v in raw.split(","))
        if not sep or not dot or not action or not param or not raw.strip():
            raise UsageError(f"bad --grid {spec!r}: expected ACTION.PARAM=v1,v2,..., e.g. train_model.C=0.01,0.1,1")
        if any(not v for v in values):
            raise UsageError(f"bad --grid {spec!r}: an empty value between commas")
        if len(set(values)) != len(values):
            raise UsageError(f"bad --grid {spec!r}: a value is repeated (the same fork would run twice)")
        if any(axis.target == target for axis in axes):
            raise UsageError(f"--grid {target} is given twice; put all its values in one option")
        axes.append(GridAxis(target, values))
    count = 1
    for axis in axes:
        count *= len(axis.raw_values)
    if count > MAX_POINTS:
        raise UsageError(f"the grid has {count} points; a sweep runs at most {MAX_POINTS} forks")
    return axes


def plan_sweep(
    store: TraceStore, run_ref: str, fork_step: int, grid_specs: list[str], *, pin_decisions: bool = False
) -> SweepPlan:
    """Validate every grid point as a fork of ``run_ref`` at ``fork_step`` (the cartesian product of all axes)."""
    axes = parse_grid(grid_specs)
    parent = store.resolve_run_id(run_ref)
    points = [dict(zip((a.target for a in axes), combo)) for combo in itertools.product(*(a.raw_values for a in axes))]
    plans = []
    for point in points:
        overrides = parse_overrides(f"{target}={value}" for target, value in point.items())
        try:
            plans.append(prepare_plan(store, fork_of=parent, fork_step=fork_step, overrides=overrides, pin_decisions=pin_decisions))
        except UsageError as exc:
            raise type(exc)(f"grid point {_point_text(point)}: {exc}") from None
    return SweepPlan(new_run_id(), parent, fork_step, axes, points, plans)


def run_sweep(sweep: SweepPlan, home: Home, *, workers: int | None = None, address: str | None = None) -> dict[str, Any]:
    """Run every fork of ``sweep`` on a Dask cluster (a local one, or the scheduler at ``address``)."""
    if address and workers is not None:
        raise UsageError("--workers sizes the local Dask cluster; a cluster at --address brings its own workers")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: need at least 1")
    n_workers = workers or min(len(sweep.plans), os.cpu_count() or 1)
    from rlam_prefect.backend import configure

    configure(home)  # before Prefect is imported; local workers inherit PREFECT_API_URL from this process
    from flows.sweep_flow import sweep_flow, task_runner
    from rlam_prefect.runner import flow_parameters

    forks = [
        {"label": _point_text(point), "run_id": plan.run_id, "params": flow_parameters(plan)}
        for point, plan in zip(sweep.points, sweep.plans)
    ]
    flow = sweep_flow.with_options(flow_run_name=f"sweep-{sweep.sweep_id}", task_runner=task_runner(address, n_workers))
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
    from rlam_prefect.report import run_report

    row: dict[str, Any] = {"point": {t: parse_value(v) for t, v in point.items()}, "run_id": plan.run_id, "overrides": plan.overrides}
    try:
        report = run_report(store, plan.run_id)
    except UnknownRunError:  # it failed before writing its start row: say why, from Prefect
        return row | {"status": "not recorded", "executed": 0, "cached": 0, "failed": 0, "metrics": {}, "prefect_flow_run_id": None, "error": outcome.get("message")}
    keep = ("status", "executed", "cached", "failed", "rejected", "llm_calls", "metrics", "parent_run_id", "fork_step", "prefect_flow_run_id")
    error = report.get("error_message") or next((f"step {s['step']} {s['action']}: {s['error_message']}" for s in report["steps"] if s.get("error_message")), None)
    return row | {k: report.get(k) for k in keep} | {"error": error or (outcome.get("message") if report["status"] != "completed" else None)}


def render_sweep(report: dict[str, Any]) -> str:
    """The forks as a table: grid point, run id, status, executed/cached and the numeric metrics."""
    forks = report["forks"]
    metric_names = list(dict.fromkeys(k for f in forks for k, v in f["metrics"].items() if isinstance(v, float)))
    point_width = max([len("grid point"), *(len(_point_text(f["point"])) for f in forks)])
    header = f"sweep {report['sweep_id']}  {report['status']}  forks of {report['parent_run_id']} at step {report['fork_step']} on {report['cluster']}"
    lines = [header, f"  {'grid point':<{point_width}}  {'fork run':<12}  {'status':<12} {'exec':>4} {'cache':>5}" + "".join(f"  {m:>{max(8, len(m))}}" for m in metric_names)]
    for f in forks:
        cells = "".join(f"  {_metric(f['metrics'].get(m)):>{max(8, len(m))}}" for m in metric_names)
        lines.append(f"  {_point_text(f['point']):<{point_width}}  {f['run_id']:<12}  {f['status']:<12} {f['executed'] or 0:>4} {f['cached'] or 0:>5}{cells}")
        if f.get("error"):
            lines.append(f"      error: {f['error']}")
    return "\n".join(lines)


def _point_text(point: dict[str, Any]) -> str:
    return " ".join(f"{t}={v if isinstance(v, str) else json.dumps(v)}" for t, v in point.items())




def _metric(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"
