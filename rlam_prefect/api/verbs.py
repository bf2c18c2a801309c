"""The public verbs: run, replay, fork, sweep, verify, diff, explain, export.

Each validates its request before Prefect is imported and before anything is written, raises a
typed ``RLamError`` instead of exiting, and returns a typed result read back from the trace. A
verb called from a script runs the flow on a fresh event loop; under a running loop (Jupyter) or
inside a user's own Prefect flow it runs as a subflow (``prefect/runner.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlam_prefect.api.home import Home, PathLike, open_home
from rlam_prefect.api.results import DiffResult, Explanation, RunResult, SweepResult, VerifyResult
from rlam_prefect.planning.requests import ForkRequest, Governance, PlannerSettings, ReplayRequest, Request, RunRequest

StepCallback = Callable[[dict[str, Any]], None]
Policy = str | Mapping[str, Any] | None


def run(
    *,
    planner: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    max_steps: int | None = None,
    target_accuracy: float | None = None,
    policy: Policy = None,
    approve: Iterable[str] = (),
    approval_timeout: int | None = None,
    inject_failures: Iterable[str] = (),
    run_id: str | None = None,
    goal: str | None = None,
    home: PathLike | Home | None = None,
    on_step: StepCallback | None = None,
) -> RunResult:
    """Plan and execute a new run: each decided action a Prefect task, keyed by content, recorded.

    goal: what the planner works towards, "METRIC>=NUMBER" or "METRIC<=NUMBER" over the evaluation's
    metrics (default "accuracy>=0.97"); target_accuracy=X is the older spelling of goal="accuracy>=X".
    """
    request = RunRequest(
        PlannerSettings(planner, temperature, seed, max_steps, target_accuracy, goal), overrides or {},
        tuple(dict.fromkeys(inject_failures)), Governance(policy, tuple(approve), approval_timeout), run_id,
    )
    return execute(request, home=home, on_step=on_step)


def replay(
    run_id: str, *, policy: Policy = None, new_run_id: str | None = None, home: PathLike | Home | None = None,
    on_step: StepCallback | None = None,
) -> RunResult:
    """Re-run a recorded run entirely from the verified cache: nothing executes, no planner is asked."""
    flow_run = _tracked_flow_run(run_id, home)
    if flow_run is not None:  # a user's own @rlam.track flow: called again with its recorded parameters
        return _rerun_flow(flow_run, home, new_run_id, replay=True)
    return execute(ReplayRequest(run_id, Governance(policy), new_run_id), home=home, on_step=on_step)


def fork(
    run_id: str,
    *,
    step: int,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    pin_decisions: bool = False,
    planner: str | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    max_steps: int | None = None,
    target_accuracy: float | None = None,
    policy: Policy = None,
    approve: Iterable[str] = (),
    approval_timeout: int | None = None,
    inject_failures: Iterable[str] = (),
    new_run_id: str | None = None,
    home: PathLike | Home | None = None,
    on_step: StepCallback | None = None,
    goal: str | None = None,
) -> RunResult:
    """Reuse the steps before ``step`` from the cache and re-execute from ``step`` with ``overrides`` (and a new ``goal``)."""
    flow_run = _tracked_flow_run(run_id, home)
    if flow_run is not None:  # a user's own @rlam.track flow: overrides are {task: {param: value}}
        return _rerun_flow(flow_run, home, new_run_id, replay=False, fork_step=step, overrides=overrides or {})
    request = ForkRequest(
        run_id, step, overrides or {}, pin_decisions, PlannerSettings(planner, temperature, seed, max_steps, target_accuracy, goal),
        tuple(dict.fromkeys(inject_failures)), Governance(policy, tuple(approve), approval_timeout), new_run_id,
    )
    return execute(request, home=home, on_step=on_step)


def _tracked_flow_run(run_id: str, home: PathLike | Home | None) -> dict[str, Any] | None:
    handle = open_home(home)
    run = handle.store.run(handle.resolve(run_id))
    return run if run.get("pipeline") == "flow" else None


def _rerun_flow(run: dict[str, Any], home: PathLike | Home | None, new_run_id: str | None, *, replay: bool, fork_step: int | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None) -> RunResult:
    from rlam_prefect.local.backend import use_home
    from rlam_prefect.planning.plan import new_run_id as fresh_id
    from rlam_prefect.prefect.track_flow import rerun
    from rlam_prefect.record.report import run_report

    handle = open_home(home)
    run_id = new_run_id or fresh_id()
    with use_home(handle.layout):
        rerun(run, run_id, replay=replay, fork_step=fork_step, overrides=overrides)
    return RunResult.from_report(run_report(handle.store, run_id))


def execute(request: Request, *, home: PathLike | Home | None = None, on_step: StepCallback | None = None) -> RunResult:
    """One engine path for all three requests: validate, point Prefect at its API, run the flow, read the trace."""
    import contextlib

    from rlam_prefect.execution.session import step_listener
    from rlam_prefect.local.backend import use_home
    from rlam_prefect.planning.plan import prepare_plan
    from rlam_prefect.prefect.runner import call_flow, flow_parameters, report_of

    handle = open_home(home)
    plan = prepare_plan(handle.store, request)  # bad input fails here: no server started, nothing written
    with use_home(handle.layout), step_listener(on_step) if on_step else contextlib.nullcontext():
        state = call_flow(flow_parameters(plan))
        return RunResult.from_report(report_of(plan, handle.layout, state))


def sweep(
    run_id: str,
    *,
    step: int,
    grid: Mapping[str, Sequence[Any]],
    pin_decisions: bool = False,
    workers: int | None = None,
    address: str | None = None,
    home: PathLike | Home | None = None,
) -> SweepResult:
    """One fork of ``run_id`` from ``step`` per point of ``grid`` ({"ACTION.PARAM": [values]}), in parallel on Dask."""
    import json

    specs = [f"{target}=" + ",".join(v if isinstance(v, str) else json.dumps(v) for v in values) for target, values in grid.items()]
    return sweep_specs(run_id, step=step, grid_specs=specs, pin_decisions=pin_decisions, workers=workers, address=address, home=home)


def sweep_specs(
    run_id: str, *, step: int, grid_specs: list[str], pin_decisions: bool = False, workers: int | None = None,
    address: str | None = None, home: PathLike | Home | None = None,
) -> SweepResult:
    """``sweep`` with the grid as ``ACTION.PARAM=v1,v2`` strings (as ``rlam sweep --grid`` takes them)."""
    from rlam_prefect.api.sweep import run_sweep
    from rlam_prefect.local.backend import use_home
    from rlam_prefect.planning.sweep import plan_sweep

    handle = open_home(home)
    plan = plan_sweep(handle.store, run_id, step, grid_specs, pin_decisions=pin_decisions)  # every point checked first
    with use_home(handle.layout):
        return SweepResult.from_report(run_sweep(plan, handle.layout, workers=workers, address=address))


def verify(run_id: str, *, home: PathLike | Home | None = None) -> VerifyResult:
    """Re-hash every stored result of a run against its trace; nothing is written or repaired."""
    from rlam_prefect.actions.project import add_project_to_path
    from rlam_prefect.record.verify import verify_run

    handle = open_home(home)
    add_project_to_path()  # a result of the project's own types unpickles by importing its module
    return VerifyResult.from_report(verify_run(handle.layout, handle.resolve(run_id)))


def diff(run_a: str, run_b: str, *, home: PathLike | Home | None = None) -> DiffResult:
    """Where two runs first diverge, why, and their metric deltas."""
    from rlam_prefect.record.compare import diff_runs

    handle = open_home(home)
    return DiffResult.from_report(diff_runs(handle.store, handle.resolve(run_a), handle.resolve(run_b)))


def explain(run_id: str, step: int, *, home: PathLike | Home | None = None) -> Explanation:
    """Why step ``step`` of a run was served from the cache or executed."""
    from rlam_prefect.record.compare import explain_step

    handle = open_home(home)
    return Explanation.from_report(explain_step(handle.store, handle.resolve(run_id), step))


def export(run_id: str, format: str, out: PathLike | None = None, *, home: PathLike | Home | None = None) -> Path:
    """Write a run as W3C PROV (``prov``), a Workflow Run RO-Crate (``ro-crate``) or OpenLineage events."""
    from rlam_prefect.record.exports import export_run

    handle = open_home(home)
    return export_run(handle.store, handle.resolve(run_id), format, Path(out) if out is not None else None)
