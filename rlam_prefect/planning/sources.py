"""Where a run's decisions come from: the fixed order, a recorded run, a planner, or a chain of them.

Every source answers one question, ``next_decision(history)``, so the engine serves a new run, a
replay and a fork along the same path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from rlam_prefect.planning.planner import LLMPlanner


@dataclass
class Decision:
    action: str
    params: dict[str, Any]
    reason: str = ""
    expect_cached: bool = False  # reused from a recorded run: must be served from the verified cache
    original: dict[str, Any] | None = None  # the recorded step this decision reproduces
    recovers_step: int | None = None
    rejection: str | None = None  # the planner's reply could not be acted on, and why
    record: dict[str, Any] | None = None  # the decisions-table row of the planner call behind it
    upstream: list[Any] = field(default_factory=list)  # Prefect states the action task waits for


class DecisionSource(Protocol):
    def next_decision(self, history: list[dict[str, Any]]) -> Decision | None: ...

    @property
    def failure(self) -> str | None:
        """Why the source gave up, when it ended the run as a failure."""

    @property
    def stop_record(self) -> dict[str, Any] | None:
        """The planner's recorded stop decision, once it has made one."""


class FixedOrder:
    """The seed's hard-coded order; stops at the first failure."""

    failure: str | None = None
    stop_record: dict[str, Any] | None = None

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

    failure: str | None = None
    stop_record: dict[str, Any] | None = None

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
            if self.steps[position - 1]["status"] not in ("failed", "rejected"):
                return None  # a re-executed step failed where the original did not: stop as a fresh run would
        row = self.steps[position]
        params = json.loads(row["params"]) if row.get("params") else {}
        reused = self._reused(position + 1)
        if not reused:
            params = {**params, **self.overrides.get(row["action"], {})}
        return Decision(
            row["action"], params, reason=row.get("reason") or "", expect_cached=reused, original=row, recovers_step=row.get("recovers_step")
        )

    def _reused(self, step: int) -> bool:
        return self.cached_before is None or step < self.cached_before


class PlannerDecisions:
    """Decisions from an LLM planner, each a recorded planner call."""

    def __init__(self, planner: LLMPlanner) -> None:
        self.planner = planner

    @property
    def failure(self) -> str | None:
        return self.planner.failure

    @property
    def stop_record(self) -> dict[str, Any] | None:
        return self.planner.stop_record

    def next_decision(self, history: list[dict[str, Any]]) -> Decision | None:
        planned = self.planner.plan(history)
        if planned is None:
            return None
        return Decision(
            planned.action or "",
            planned.params,
            reason=planned.reason,
            recovers_step=planned.recovers_step,
            rejection=planned.rejection,
            record=planned.record,
            upstream=planned.upstream,
        )


class Chained:
    """Recorded decisions first (a fork's reused prefix), then a live planner."""

    def __init__(self, first: RecordedDecisions, then: DecisionSource) -> None:
        self.first = first
        self.then = then

    @property
    def failure(self) -> str | None:
        return self.then.failure

    @property
    def stop_record(self) -> dict[str, Any] | None:
        return self.then.stop_record

    def next_decision(self, history: list[dict[str, Any]]) -> Decision | None:
        if len(history) < len(self.first.steps):
            return self.first.next_decision(history)
        return self.then.next_decision(history)
