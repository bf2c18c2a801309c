"""What a run will do: a validated request and the source of its decisions.

Everything a user can get wrong (unknown run, step out of range, a bad ``--set``, a bad planner
option, a provider without its key) is checked here, before Prefect is imported and before
anything is written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rlam_prefect.actions.files import check_files_unchanged
from rlam_prefect.actions.project import fixed_order, load_action_modules
from rlam_prefect.actions.registry import get_action
from rlam_prefect.core.errors import UsageError
from rlam_prefect.planning.llm import check_provider_key
from rlam_prefect.planning.names import FIXED_PLANNER, default_planner
from rlam_prefect.planning.planner import LLMPlanner, PlannerCall, PlannerOptions
from rlam_prefect.planning.policy import Policy, resolve_policy
from rlam_prefect.planning.requests import ForkRequest, ReplayRequest, Request, RunRequest
from rlam_prefect.planning.sources import Chained, DecisionSource, FixedOrder, PlannerDecisions, RecordedDecisions
from rlam_prefect.record.store import TraceStore


@dataclass
class RunPlan:
    run_id: str
    mode: str  # run | replay | fork
    planner: PlannerOptions
    overrides: dict[str, dict[str, Any]]
    action_modules: tuple[str, ...]
    parent_run_id: str | None = None
    fork_step: int | None = None
    pin_decisions: bool = False
    inject_failures: tuple[str, ...] = ()
    parent_steps: list[dict[str, Any]] = field(default_factory=list)
    policy: Policy | None = None  # the execution policy new decisions are checked against
    parent_policy_hash: str | None = None  # the replayed or forked run's policy hash
    pre_approved: tuple[str, ...] = ()  # actions (or "all") approved in advance
    approval_timeout: int = 3600  # seconds a paused approval waits in Prefect

    @property
    def fixed(self) -> bool:
        return self.planner.model == FIXED_PLANNER

    def decisions(self, call: PlannerCall) -> DecisionSource:
        if self.mode == "replay":
            return RecordedDecisions(self.parent_steps, cached_before=None, overrides={})
        if self.mode == "fork" and self.pin_decisions:
            return RecordedDecisions(self.parent_steps, cached_before=self.fork_step, overrides=self.overrides)
        live: DecisionSource
        if self.fixed:
            live = FixedOrder(fixed_order(), self.overrides)
        else:
            live = PlannerDecisions(LLMPlanner(self.planner, self.overrides, call, self.policy))
        if self.mode == "fork":
            # steps before K from the trace, then decided afresh: this also completes a run that crashed
            assert self.fork_step is not None
            prefix = RecordedDecisions(self.parent_steps[: self.fork_step - 1], cached_before=None, overrides={})
            return Chained(prefix, live)
        return live


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def parse_overrides(assignments: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``ACTION.PARAM=VALUE`` (VALUE read as JSON when it parses, else as text) into a nested dict."""
    overrides: dict[str, dict[str, Any]] = {}
    for text in assignments:
        target, sep, raw = text.partition("=")
        action, dot, param = target.strip().partition(".")
        if not sep or not dot or not action or not param:
            raise UsageError(f"bad --set {text!r}: expected ACTION.PARAM=VALUE, e.g. train_model.C=0.5")
        overrides.setdefault(action, {})[param] = parse_value(raw)
    return overrides


def parse_value(raw: str) -> Any:
    """A command-line value: JSON when it parses (0.5, true, null), else the text itself (random_forest)."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def prepare_plan(store: TraceStore, request: Request) -> RunPlan:
    """Validate ``request`` against the trace and the action space: the plan the engine will execute."""
    if isinstance(request, ReplayRequest):
        plan = _prepare_replay(store, request)
    elif isinstance(request, ForkRequest):
        plan = _prepare_fork(store, request)
    else:
        plan = _prepare_run(request)
    governance = request.governance
    return _with_policy(store, plan, governance.policy, tuple(dict.fromkeys(governance.approve)), governance.approval_timeout)


def _with_policy(
    store: TraceStore, plan: RunPlan, given: str | Mapping[str, Any] | None, approve: tuple[str, ...], timeout: int | None
) -> RunPlan:
    """The policy a run is checked against: given (path, mapping or $RLAM_POLICY), else a parent's recorded one."""
    parent = store.run(plan.parent_run_id) if plan.parent_run_id else {}
    parent_json = parent.get("policy")
    policy = resolve_policy(given)
    if policy is None and parent_json:
        policy = Policy.from_json(parent_json)
    if plan.mode == "replay" and approve:
        raise UsageError("a replay never asks for approval (recorded approvals are reused); it takes no approve")
    for action in approve:
        if action != "all":
            get_action(action)
    if timeout is not None and not 1 <= timeout <= 7 * 24 * 3600:
        raise UsageError(f"approval timeout {timeout} s is out of range 1..604800")
    plan.policy = policy
    plan.parent_policy_hash = parent.get("policy_hash")
    plan.pre_approved = approve
    if timeout is not None:
        plan.approval_timeout = timeout
    return plan


def _prepare_run(request: RunRequest) -> RunPlan:
    modules = load_action_modules()
    settings = request.planner
    options = _planner_options(settings.model or default_planner(), settings.tuning(), base=PlannerOptions())
    overrides = _plain_overrides(request.overrides)
    plan = RunPlan(request.run_id or new_run_id(), "run", options, overrides, modules, inject_failures=request.inject_failures)
    _validate_overrides(overrides, list(fixed_order()) if plan.fixed else None, [])
    _validate_injections(request.inject_failures)
    return plan


def _prepare_replay(store: TraceStore, request: ReplayRequest) -> RunPlan:
    parent = store.resolve_run_id(request.of)
    parent_run = store.run(parent)
    modules = _load_recorded_modules(parent_run)
    options = PlannerOptions.from_json(parent_run.get("planner_options"), parent_run.get("planner") or FIXED_PLANNER)
    steps = _recorded_steps(store, parent)
    _check_recorded_files(steps)
    return RunPlan(request.run_id or new_run_id(), "replay", options, {}, modules, parent, None, False, (), steps)


def _check_recorded_files(steps: list[dict[str, Any]]) -> None:
    """A replay of a run whose data file changed fails now, naming the file and both digests; nothing is written."""
    for row in steps:
        if row.get("files_read") and row["status"] in ("executed", "cached"):
            spec = get_action(row["action"])
            check_files_unchanged(spec.file_digests(json.loads(row["params"])), row, f"step {row['step']} {row['action']}")


def _prepare_fork(store: TraceStore, request: ForkRequest) -> RunPlan:
    parent = store.resolve_run_id(request.of)
    parent_run = store.run(parent)
    modules = _load_recorded_modules(parent_run)
    steps = _recorded_steps(store, parent)
    fork_step = request.step
    # a run that did not complete (crashed, failed) may also be resumed right after its last step
    last = len(steps) + (1 if parent_run["status"] != "completed" else 0)
    if not 1 <= fork_step <= last:
        raise UsageError(f"step {fork_step} is out of range: run {parent} has steps 1..{len(steps)}" + (f" (and {last} to resume it)" if last > len(steps) else ""))
    recorded = PlannerOptions.from_json(parent_run.get("planner_options"), parent_run.get("planner") or FIXED_PLANNER)
    options = _planner_options(request.planner.model or recorded.model, request.planner.tuning(), base=recorded)
    overrides = _plain_overrides(request.overrides)
    plan = RunPlan(request.run_id or new_run_id(), "fork", options, overrides, modules, parent, fork_step, request.pin_decisions, request.inject_failures, steps)
    if plan.pin_decisions:
        upcoming: list[str] | None = [s["action"] for s in steps[fork_step - 1 :]]
    elif plan.fixed:
        upcoming = list(fixed_order()[fork_step - 1 :])
    else:
        upcoming = None  # a planner may choose any action: overrides are pins
    _validate_overrides(overrides, upcoming, steps[fork_step - 1 :])
    _validate_injections(request.inject_failures)
    return plan


def _plain_overrides(overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(a): dict(p) for a, p in overrides.items()}


def _planner_options(model: str, tuning: Mapping[str, Any], base: PlannerOptions) -> PlannerOptions:
    model = model.strip()
    if not model:
        raise UsageError("the planner name is empty (use fixed, rlam/heuristic or a litellm model such as openai/gpt-4o-mini)")
    if model.startswith("rlam/") and model != "rlam/heuristic":
        raise UsageError(f"unknown in-process planner {model!r} (available: rlam/heuristic)")
    if "/" not in model and model != FIXED_PLANNER:
        raise UsageError(f"planner {model!r} is not a litellm model string PROVIDER/MODEL (or fixed, rlam/heuristic)")
    values = {k: v for k, v in tuning.items() if v is not None}
    options = PlannerOptions(**{**base.__dict__, "model": model, **values})
    if not 0.0 <= options.temperature <= 2.0:
        raise UsageError(f"temperature {options.temperature} is out of range 0..2")
    if options.seed is not None and not 0 <= options.seed < 2**63:
        raise UsageError(f"seed {options.seed} must be a non-negative integer")
    if not 1 <= options.max_steps <= 200:
        raise UsageError(f"max_steps {options.max_steps} is out of range 1..200")
    if model != FIXED_PLANNER:
        check_provider_key(model)
    return options


def _recorded_steps(store: TraceStore, run_id: str) -> list[dict[str, Any]]:
    steps = store.steps(run_id)
    if not steps:
        raise UsageError(f"run {run_id} recorded no steps; there is nothing to replay or fork")
    return steps


def _load_recorded_modules(run: Mapping[str, Any]) -> tuple[str, ...]:
    recorded = run.get("action_modules")
    return load_action_modules(json.loads(recorded) if recorded else ())


def _validate_overrides(
    overrides: Mapping[str, Mapping[str, Any]], upcoming: list[str] | None, recorded: list[dict[str, Any]]
) -> None:
    """Every override names a known action and parameter with a valid value, and (for a fixed plan) will apply."""
    for action, params in overrides.items():
        spec = get_action(action)
        if upcoming is not None and action not in upcoming:
            raise UsageError(f"--set {action}.*: {action} does not run at or after the chosen step, so the override would change nothing")
        base: dict[str, Any] = next((json.loads(s["params"]) for s in recorded if s["action"] == action and s.get("params")), {})
        spec.file_digests(spec.validate_params({**base, **params}))  # a missing, unreadable or empty data file: one line, nothing written


def _validate_injections(actions: Iterable[str]) -> None:
    for action in actions:
        get_action(action)
