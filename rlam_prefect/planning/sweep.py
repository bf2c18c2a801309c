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
from dataclasses import dataclass
from typing import Any

from rlam_prefect.core.errors import UsageError
from rlam_prefect.planning.plan import RunPlan, new_run_id, parse_overrides, prepare_plan
from rlam_prefect.planning.requests import ForkRequest
from rlam_prefect.record.store import TraceStore

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
            plans.append(prepare_plan(store, ForkRequest(parent, fork_step, overrides, pin_decisions)))
        except UsageError as exc:
            raise type(exc)(f"grid point {point_text(point)}: {exc}") from None
    return SweepPlan(new_run_id(), parent, fork_step, axes, points, plans)


def point_text(point: dict[str, Any]) -> str:
    return " ".join(f"{t}={v if isinstance(v, str) else json.dumps(v)}" for t, v in point.items())
