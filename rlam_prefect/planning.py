"""What a run will do: a validated request and the source of its decisions.

Everything a user can get wrong (unknown run, step out of range, a bad ``--set``) is checked
here, before Prefect is imported and before anything is written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from rlam_prefect.actions import get_action, load_action_modules, registered_actions
from rlam_prefect.errors import UsageError
from rlam_prefect.trace import TraceStore

PIPELINES = ("rlam", "script")
FIXED_PLANNER = "fixed"


@dataclass
class Decision:
    action: str
    params: dict[str, Any]
    reason: str = ""
    expect_cached: bool = False  # reused from a recorded run: must be served from the verified cache
    original: dict[str, Any] | None = None  # the recorded step this decision reproduces


class DecisionSource(Protocol):
    def next_decision(self, history: list[dict[str, Any]]) -> Decision | None: ...


@dataclass
class RunPlan:
    run_id: str
    mode: str  # run | replay | fork
    planner: str
    overrides: dict[str, dict[str, Any]]
    action_modules: tuple[str, ...]
    parent_run_id: str | None = None
    fork_step: int | None = None
    parent_steps: list[dict[str, Any]] = field(default_factory=list)

    def decisions(self) -> DecisionSource:
        if self.mode == "replay":
            return RecordedDecisions(self.parent_steps, cached_before=None, overrides={})
        if self.mode == "fork":
            return RecordedDecisions(self.parent_steps, cached_before=self.fork_step, overrides=self.overrides)
        return FixedOrder(_seed_order(), self.overrides)


class FixedOrder:
    """The seed's hard-coded order; stops at the first failure."""

    def __init__(self, order: Iterable[str], overrides: Mapping[str, Mapping[str, Any]]) -> None:
        self.order = list(order)
        self.overrides = overrides

    def next_decision(self, history: list[dict[str, Any]]) -> Decision | None:
        if history and history[-1]["status"] in ("failed", "rejected"):
            return None
        if len(history) >= len(self.order):
            return None
        action = self.order[len(history)]
        return Decision(action, dict(self.overrides.get(action, {})), reason="fixed order")


class RecordedDecisions:
    """A recorded run's steps again: served from cache before ``cached_before`` (all, if None)."""

    def __init__(
        self, steps: list[dict[str, Any]], cached_before: int | None, overrides: Mapping[str, Mapping[str, Any]]
    ) -> None:
        self.steps = steps
        self.cached_before = cached_before
        self.overrides = overrides

    def next_decision(self, history: list[dict[str, Any]]) -> Decision | None:
        position = len(history)
        if position >= len(self.steps):
            return None
        if history and history[-1]["status"] in ("failed", "rejected") and not self._reused(position):
            return None  # a re-executed step failed: stop as a fresh run would
        row = self.steps[position]
        params = json.loads(row["params"])
        reused = self._reused(position + 1)
        if not reused:
            params = {**params, **self.overrides.get(row["action"], {})}
        return Decision(row["action"], params, reason=row.get("reason") or "", expect_cached=reused, original=row)

    def _reused(self, step: int) -> bool:
        return self.cached_before is None or step < self.cached_before


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
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        overrides.setdefault(action, {})[param] = value
    return overrides


def prepare_plan(
    store: TraceStore,
    *,
    run_id: str | None = None,
    planner: str = FIXED_PLANNER,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    replay_of: str | None = None,
    fork_of: str | None = None,
    fork_step: int | None = None,
) -> RunPlan:
    overrides = {str(a): dict(p) for a, p in (overrides or {}).items()}
    if replay_of and fork_of:
        raise UsageError("choose either replay_of or fork_of, not both")
    if fork_step is not None and not fork_of:
        raise UsageError("fork_step needs fork_of (the run to fork)")
    if planner != FIXED_PLANNER:
        raise UsageError(f"unknown planner {planner!r} (available: {FIXED_PLANNER})")
    run_id = run_id or new_run_id()
    if replay_of:
        if overrides:
            raise UsageError("a replay takes no overrides; fork the run to change parameters")
        parent = store.resolve_run_id(replay_of)
        modules = _load_recorded_modules(store, parent)
        steps = _recorded_steps(store, parent)
        return RunPlan(run_id, "replay", planner, {}, modules, parent, None, steps)
    if fork_of:
        parent = store.resolve_run_id(fork_of)
        modules = _load_recorded_modules(store, parent)
        steps = _recorded_steps(store, parent)
        if fork_step is None:
            raise UsageError("a fork needs --step K (the first step to re-execute)")
        if not 1 <= fork_step <= len(steps):
            raise UsageError(f"step {fork_step} is out of range: run {parent} has steps 1..{len(steps)}")
        _validate_overrides(overrides, [json.loads(s["params"]) | {"__action": s["action"]} for s in steps[fork_step - 1 :]])
        return RunPlan(run_id, "fork", planner, overrides, modules, parent, fork_step, steps)
    modules = load_action_modules()
    _validate_overrides(overrides, [{"__action": a} for a in _seed_order()])
    return RunPlan(run_id, "run", planner, overrides, modules)


def _seed_order() -> tuple[str, ...]:
    from tasks import SEED_ORDER

    return SEED_ORDER


def _recorded_steps(store: TraceStore, run_id: str) -> list[dict[str, Any]]:
    steps = store.steps(run_id)
    if not steps:
        raise UsageError(f"run {run_id} recorded no steps; there is nothing to replay or fork")
    return steps


def _load_recorded_modules(store: TraceStore, run_id: str) -> tuple[str, ...]:
    recorded = store.run(run_id).get("action_modules")
    return load_action_modules(json.loads(recorded) if recorded else ())


def _validate_overrides(overrides: Mapping[str, Mapping[str, Any]], upcoming: list[dict[str, Any]]) -> None:
    """Every override names a known action and parameter, holds a valid value, and will apply."""
    upcoming_actions = {s["__action"] for s in upcoming}
    for action, params in overrides.items():
        if action not in registered_actions():
            get_action(action)  # raises the one-line unknown-action error
        spec = get_action(action)
        if action not in upcoming_actions:
            raise UsageError(f"--set {action}.*: {action} does not run at or after the chosen step, so the override would change nothing")
        base = next((s for s in upcoming if s["__action"] == action), {})
        spec.validate_params({k: v for k, v in base.items() if k != "__action"} | dict(params))
