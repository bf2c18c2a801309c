"""What a caller asks for: a new run, a replay or a fork, as three typed requests.

The CLI, the Python API and the deployment flow all build one of these; ``prepare_plan`` turns it
into a validated ``RunPlan`` and one engine path serves all three. ``None`` in a setting means
"the default" for a run and "the parent's" for a fork.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rlam_prefect.core.errors import UsageError
from rlam_prefect.planning.goal import goal_of_options

Overrides = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class PlannerSettings:
    """Planner choices; each None falls back to the default (a run) or the parent's value (a fork)."""

    model: str | None = None  # fixed, rlam/heuristic or a litellm model string
    temperature: float | None = None
    seed: int | None = None
    max_steps: int | None = None
    target_accuracy: float | None = None  # older spelling of goal=f"accuracy>={value}"
    goal: str | None = None  # METRIC>=NUMBER or METRIC<=NUMBER, e.g. "accuracy>=0.97", "rmse<=0.5"

    def tuning(self) -> dict[str, Any]:
        goal = goal_of_options(self.goal, self.target_accuracy) if (self.goal, self.target_accuracy) != (None, None) else None
        return {"temperature": self.temperature, "seed": self.seed, "max_steps": self.max_steps, "goal": goal}

    def is_default(self) -> bool:
        return self.model is None and all(v is None for v in self.tuning().values())


@dataclass(frozen=True)
class Governance:
    """The execution policy (a path, its rules, or None for $RLAM_POLICY / the parent's) and approvals."""

    policy: str | Mapping[str, Any] | None = None
    approve: tuple[str, ...] = ()  # actions (or "all") approved in advance
    approval_timeout: int | None = None  # seconds a step paused for approval waits in Prefect


@dataclass(frozen=True)
class RunRequest:
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    overrides: Overrides = field(default_factory=dict)
    inject_failures: tuple[str, ...] = ()
    governance: Governance = field(default_factory=Governance)
    run_id: str | None = None  # the new run's id (default: a fresh one)


@dataclass(frozen=True)
class ReplayRequest:
    of: str  # the recorded run (an id or a unique prefix)
    governance: Governance = field(default_factory=Governance)  # only to report a differing policy
    run_id: str | None = None


@dataclass(frozen=True)
class ForkRequest:
    of: str  # the recorded run to fork
    step: int  # the first step to re-execute
    overrides: Overrides = field(default_factory=dict)
    pin_decisions: bool = False  # keep the parent's plan instead of asking the planner
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    inject_failures: tuple[str, ...] = ()
    governance: Governance = field(default_factory=Governance)
    run_id: str | None = None


Request = RunRequest | ReplayRequest | ForkRequest


def request_from_parameters(
    *,
    run_id: str | None = None,
    planner: str | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    max_steps: int | None = None,
    target_accuracy: float | None = None,
    goal: str | None = None,
    overrides: Overrides | None = None,
    replay_of: str | None = None,
    fork_of: str | None = None,
    fork_step: int | None = None,
    pin_decisions: bool = False,
    inject_failures: Iterable[str] | None = None,
    policy: str | Mapping[str, Any] | None = None,
    approve: Iterable[str] | None = None,
    approval_timeout: int | None = None,
) -> Request:
    """The deployment flow's flat parameters (what the Prefect UI's form fills) as a typed request."""
    settings = PlannerSettings(planner, temperature, seed, max_steps, target_accuracy, goal)
    governance = Governance(policy, tuple(dict.fromkeys(approve or ())), approval_timeout)
    inject = tuple(dict.fromkeys(inject_failures or ()))
    if replay_of and fork_of:
        raise UsageError("choose either replay_of or fork_of, not both")
    if fork_step is not None and not fork_of:
        raise UsageError("fork_step needs fork_of (the run to fork)")
    if pin_decisions and not fork_of:
        raise UsageError("pin_decisions applies to forks only")
    if replay_of:
        if overrides or inject or not settings.is_default():
            raise UsageError("a replay takes no overrides, planner options or injected failures; fork the run to change something")
        return ReplayRequest(replay_of, governance, run_id)
    if fork_of:
        if fork_step is None:
            raise UsageError("a fork needs --step K (the first step to re-execute)")
        return ForkRequest(fork_of, fork_step, overrides or {}, pin_decisions, settings, inject, governance, run_id)
    return RunRequest(settings, overrides or {}, inject, governance, run_id)
