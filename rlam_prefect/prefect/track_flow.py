"""``@rlam.track``: a user's own sync Prefect flow as a recorded R-LAM run, and its replay and fork.

The tracked flow keeps its name and parameters and gains five optional ones (``rlam_run_id``,
``rlam_replay_of``, ``rlam_fork_of``, ``rlam_fork_step``, ``rlam_overrides``), so a deployment's
custom-run form in the Prefect UI replays or forks it too. The run records the flow's entrypoint
(file and function) and its parameters; ``rlam replay`` / ``rlam fork`` load the flow from there and
call it again. Parameters must be JSON values, so a run can be called again exactly.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import Flow

from rlam_prefect.core.code_version import code_version
from rlam_prefect.core.errors import UsageError
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.prefect.tracked import _CURRENT, PIPELINE, RLAM_PARAMETERS, StepTask, TrackedRun
from rlam_prefect.record.store import TraceStore


def track(flow_obj: Flow) -> Flow:  # type: ignore[type-arg]
    """``@rlam.track`` over a ``@flow``: each run is recorded; its ``@rlam.step`` task calls are its steps."""
    if not isinstance(flow_obj, Flow):
        raise TypeError("@rlam.track goes on a Prefect flow: put it above @flow")
    fn = flow_obj.fn
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"@rlam.track: flow {flow_obj.name} is async; only sync flows are supported")
    signature = inspect.signature(fn)
    clash = set(signature.parameters) & set(RLAM_PARAMETERS)
    if clash:
        raise TypeError(f"@rlam.track: flow {flow_obj.name} already has a parameter {sorted(clash)[0]!r}")
    entrypoint = f"{Path(inspect.getfile(fn)).resolve()}:{fn.__name__}"

    @functools.wraps(fn)
    def tracked(*args: Any, rlam_run_id: str | None = None, rlam_replay_of: str | None = None, rlam_fork_of: str | None = None,
                rlam_fork_step: int | None = None, rlam_overrides: dict[str, dict[str, Any]] | None = None, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        parameters = dict(bound.arguments)
        try:
            json.dumps(parameters, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"flow {flow_obj.name}: its parameters must be JSON values to be replayed ({exc})") from None
        run = _start(flow_obj.name, entrypoint, parameters, rlam_run_id, rlam_replay_of, rlam_fork_of, rlam_fork_step, rlam_overrides or {})
        token = _CURRENT.set(run)
        run.event("start", "running")
        try:
            _version_steps(fn)
            result = fn(*bound.args, **bound.kwargs)
            for future in run.futures:
                future.wait()
        except BaseException as exc:
            _CURRENT.reset(token)
            run.record_steps()
            run.event("end", "failed", f"{type(exc).__name__}: {exc}")
            raise
        _CURRENT.reset(token)
        error = run.record_steps()
        failed = error is not None or (run.mode == "replay" and not run.identical([run.rows[k] for k in sorted(run.rows)]))
        if failed and error is None:
            error = f"replay of {run.parent_run_id} is not identical"
        run.event("end", "failed" if failed else "completed", error)
        if failed:
            raise FlowStepsFailed(f"run {run.run_id}: {error}")
        return result

    parameters = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    extra = [
        inspect.Parameter("rlam_run_id", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None),
        inspect.Parameter("rlam_replay_of", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None),
        inspect.Parameter("rlam_fork_of", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None),
        inspect.Parameter("rlam_fork_step", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=int | None),
        inspect.Parameter("rlam_overrides", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=dict[str, dict[str, Any]] | None),
    ]
    tracked.__signature__ = signature.replace(parameters=[*parameters, *extra])  # type: ignore[attr-defined]
    tracked.__annotations__ = {**getattr(fn, "__annotations__", {}), **{p.name: p.annotation for p in extra}}
    new: Flow = Flow(  # type: ignore[type-arg]
        fn=tracked, name=flow_obj.name, description=flow_obj.description, task_runner=flow_obj.task_runner,
        log_prints=flow_obj.log_prints, validate_parameters=flow_obj.should_validate_parameters, timeout_seconds=flow_obj.timeout_seconds,
    )  # its parameter schema (the custom-run form) now has the rlam_* fields too
    new._rlam_entrypoint = entrypoint  # type: ignore[attr-defined]
    return new


def _version_steps(fn: Any) -> None:
    """Code versions of the steps the flow's module holds, computed now, before any task thread runs.

    Each is memoised, so a step's cache key (computed in a task thread) parses nothing: CPython 3.11's
    AST constructor can fail when threads parse at once (python/cpython#106905), and the lock in
    core/code_version.py serialises only rlam's own parsing.
    """
    module = sys.modules.get(fn.__module__)
    for value in list(vars(module).values()) if module else []:
        if isinstance(value, StepTask):
            code_version(value._rlam_fn, module_names=False)


class FlowStepsFailed(RuntimeError):
    """A tracked flow run whose recorded steps include a failure (or a replay that is not identical)."""


def _start(name: str, entrypoint: str, parameters: dict[str, Any], run_id: str | None, replay_of: str | None, fork_of: str | None,
           fork_step: int | None, overrides: Mapping[str, Mapping[str, Any]]) -> TrackedRun:
    home = HomeLayout.from_env()
    store = TraceStore(home)
    if replay_of and fork_of:
        raise UsageError("choose either rlam_replay_of or rlam_fork_of, not both")
    parent = replay_of or fork_of
    mode = "replay" if replay_of else "fork" if fork_of else "run"
    steps: dict[int, dict[str, Any]] = {}
    if parent:
        parent = store.resolve_run_id(parent)
        steps = {s["step"]: s for s in store.steps(parent)}
        if store.run(parent).get("pipeline") != PIPELINE:
            raise UsageError(f"run {parent} is not a tracked flow run; replay it with rlam replay")
    if mode == "fork":
        if fork_step is None or not 1 <= fork_step <= len(steps) + 1:
            raise UsageError(f"fork step {fork_step} is out of range: run {parent} has steps 1..{len(steps)}")
        later = {s["action"] for k, s in steps.items() if k >= fork_step}
        for task in overrides:
            if task not in later:
                raise UsageError(f"--set {task}.*: task {task} is not called at or after step {fork_step} of run {parent}, so the override would change nothing")
    elif overrides or fork_step is not None:
        raise UsageError("overrides and a fork step need rlam_fork_of (the run to fork)")
    return TrackedRun(home, run_id or uuid.uuid4().hex[:12], mode, name, entrypoint, parameters, parent, fork_step if mode == "fork" else None,
                      {k: dict(v) for k, v in overrides.items()}, steps)


def rerun(run: Mapping[str, Any], new_run_id: str, *, replay: bool, fork_step: int | None = None,
          overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Call a recorded tracked flow again (``rlam replay`` / ``rlam fork`` of such a run); the trace holds the outcome."""
    from prefect.flows import load_flow_from_entrypoint

    options = json.loads(run.get("planner_options") or "{}")
    entrypoint = options.get("entrypoint")
    if not entrypoint or not Path(entrypoint.rsplit(":", 1)[0]).is_file():
        raise UsageError(f"run {run['run_id']}: its flow's file {entrypoint!r} is not there any more; it cannot be called again")
    flow_obj: Flow = load_flow_from_entrypoint(entrypoint)  # type: ignore[type-arg]
    extra: dict[str, Any] = {"rlam_run_id": new_run_id}
    if replay:
        extra["rlam_replay_of"] = run["run_id"]
    else:
        extra.update(rlam_fork_of=run["run_id"], rlam_fork_step=fork_step, rlam_overrides={k: dict(v) for k, v in (overrides or {}).items()})
    try:
        flow_obj(**options.get("parameters", {}), **extra)
    except Exception:
        if not TraceStore(HomeLayout.from_env()).run_events(new_run_id):
            raise  # refused before the run started (a bad fork step or override): nothing was recorded
        # a failed step raised through the flow body as Prefect does; the run's rows record it and the result reports it
