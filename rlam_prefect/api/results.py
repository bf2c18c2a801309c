"""Typed results of the public verbs, built from the trace (the record), never from a flow's return value.

Each result keeps the full report it was built from (``as_dict()``): that is what ``rlam ... --json``
prints, so the CLI and the API cannot drift apart.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class _Report:
    data: Mapping[str, Any] = field(repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return copy.deepcopy(dict(self.data))


@dataclass(frozen=True)
class StepResult:
    step: int
    action: str
    status: str  # executed | cached | failed | rejected
    output_hash: str | None
    cache_key: str | None
    params: Mapping[str, Any]
    duration_s: float | None
    error_type: str | None
    error_message: str | None
    prefect_task_run_id: str | None

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> StepResult:
        values: dict[str, Any] = {name: entry.get(name) for name in cls.__dataclass_fields__}
        return cls(**values | {"params": dict(entry.get("params") or {})})


@dataclass(frozen=True, kw_only=True)
class RunResult(_Report):
    run_id: str
    mode: str  # run | replay | fork
    status: str  # completed | failed | running
    steps: tuple[StepResult, ...]
    executed: int
    cached: int
    failed: int
    rejected: int
    llm_calls: int
    metrics: Mapping[str, Any] = field(default_factory=dict)
    parent_run_id: str | None = None  # the replayed or forked run
    fork_step: int | None = None
    identical: bool | None = None  # a replay: every step's outcome equals the original's
    differences: tuple[Mapping[str, Any], ...] = ()  # a replay: the steps that differ, and how
    prefect_flow_run_id: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> RunResult:
        return cls(
            data=report,
            run_id=report["run_id"],
            mode=report["mode"],
            status=report["status"],
            steps=tuple(StepResult.from_entry(s) for s in report["steps"]),
            executed=report["executed"],
            cached=report["cached"],
            failed=report["failed"],
            rejected=report["rejected"],
            llm_calls=report["llm_calls"],
            metrics=dict(report["metrics"]),
            parent_run_id=report.get("parent_run_id") or report.get("replay_of"),
            fork_step=report.get("fork_step"),
            identical=report.get("identical"),
            differences=tuple(report.get("differences") or ()),
            prefect_flow_run_id=report.get("prefect_flow_run_id"),
            error_message=report.get("error_message"),
        )


@dataclass(frozen=True)
class RunSummary:
    """One line of ``rlam runs``: a run's current state."""

    run_id: str
    status: str
    mode: str
    pipeline: str
    parent_run_id: str | None
    fork_step: int | None
    n_steps: int | None
    executed: int | None
    cached: int | None
    metrics: Mapping[str, Any]
    started_at: str | None
    goal: str | None = None  # what the run's planner worked towards, e.g. accuracy>=0.97 or rmse<=0.5

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RunSummary:
        values: dict[str, Any] = {name: row.get(name) for name in cls.__dataclass_fields__}
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class VerifyResult(_Report):
    run_id: str
    intact: bool
    checked: int
    problems: int

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> VerifyResult:
        return cls(data=report, run_id=report["run_id"], intact=report["intact"], checked=report["checked"], problems=report["problems"])


@dataclass(frozen=True, kw_only=True)
class DiffResult(_Report):
    run_a: str
    run_b: str
    identical: bool
    first_divergence: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> DiffResult:
        return cls(data=report, run_a=report["run_a"], run_b=report["run_b"], identical=report["identical"],
                   first_divergence=report["first_divergence"], metrics=report["metrics"])


@dataclass(frozen=True, kw_only=True)
class Explanation(_Report):
    run_id: str
    step: int
    action: str
    status: str
    verdict: str  # hit | miss | failed | rejected
    explanation: str

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> Explanation:
        return cls(data=report, **{k: report[k] for k in ("run_id", "step", "action", "status", "verdict", "explanation")})


@dataclass(frozen=True, kw_only=True)
class SweepResult(_Report):
    sweep_id: str
    parent_run_id: str
    fork_step: int
    status: str
    forks: tuple[Mapping[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> SweepResult:
        return cls(data=report, sweep_id=report["sweep_id"], parent_run_id=report["parent_run_id"], fork_step=report["fork_step"],
                   status=report["status"], forks=tuple(report["forks"]))
