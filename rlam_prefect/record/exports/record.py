"""Everything an export needs about one run, read once from the trace.

The three exporters describe the same facts in three vocabularies; gathering them here keeps
the exporters to the mapping alone and guarantees they agree on what happened.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, cast

from rlam_prefect.core.errors import UnknownRunError
from rlam_prefect.record.lineage import ancestors, producers
from rlam_prefect.record.store import TraceStore

STOP = "stop"  # the decision that ends a run (planning/replies.py; record cannot import planning)


@dataclass(frozen=True)
class Origin:
    """The execution that computed a cached step's output: its run and its step row, as recorded."""

    run: dict[str, Any]
    step: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])

    @property
    def number(self) -> int:
        return int(self.step["step"])

    @property
    def started(self) -> dt.datetime:
        return cast(dt.datetime, self.step["started_at"])  # a timestamp column: pyarrow reads it as a datetime

    @property
    def ended(self) -> dt.datetime:
        return self.started + dt.timedelta(seconds=float(self.step.get("duration_s") or 0.0))


@dataclass(frozen=True)
class StepRecord:
    row: dict[str, Any]
    inputs: dict[str, str]  # argument -> content hash of the artifact it consumed
    producer_steps: dict[str, int]  # argument -> the step of this run that produced it
    decision: dict[str, Any] | None  # the planner call that chose (or was rejected at) this step
    origin: Origin | None  # the earlier execution that computed a cached output

    @property
    def number(self) -> int:
        return int(self.row["step"])

    @property
    def action(self) -> str:
        """The action's name as recorded: a value to show, never an identifier (see ``ids``)."""
        return str(self.row["action"])

    @property
    def status(self) -> str:
        return str(self.row["status"])

    @property
    def params(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.row.get("params") or "{}"))  # the engine writes params as a JSON object

    @property
    def started(self) -> dt.datetime:
        return cast(dt.datetime, self.row["started_at"])  # a timestamp column: pyarrow reads it as a datetime

    @property
    def ended(self) -> dt.datetime:
        return self.started + dt.timedelta(seconds=float(self.row.get("duration_s") or 0.0))

    @property
    def error(self) -> str | None:
        if not self.row.get("error_type"):
            return None
        return f"{self.row['error_type']}: {self.row.get('error_message') or ''}".strip()

    @property
    def rejected_decision(self) -> bool:
        """The planner's reply could not be acted on: no action ran, and what it named is only text."""
        return self.status == "rejected" and self.row.get("error_type") == "InvalidDecision"

    @property
    def computed_elsewhere(self) -> bool:
        """Served from the cache: the output was computed by an earlier execution (another run's, or an earlier step's)."""
        return self.status == "cached" and self.origin is not None


@dataclass(frozen=True)
class RunRecord:
    run: dict[str, Any]
    steps: list[StepRecord]
    ancestry: list[dict[str, Any]]  # parent, grandparent, ... (replays and forks)
    run_events: list[dict[str, Any]]  # the run's rows in the runs table, as recorded
    decisions: list[dict[str, Any]]  # every planner call of the run, stop and rejected replies included
    parent_outputs: list[str] = field(default_factory=list)  # output hashes of the parent run's last steps per kind

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])

    @property
    def parent(self) -> dict[str, Any] | None:
        return self.ancestry[0] if self.ancestry else None

    @property
    def root(self) -> dict[str, Any]:
        """The first run of the replay/fork chain (the run itself when it has no parent)."""
        return self.ancestry[-1] if self.ancestry else self.run

    @property
    def environment(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.run.get("environment") or "{}"))  # the engine writes it as a JSON object

    @property
    def overrides(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.run.get("overrides") or "{}"))  # the engine writes it as a JSON object

    @property
    def metrics(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.run.get("metrics") or "{}"))  # the engine writes it as a JSON object

    @property
    def ended(self) -> dt.datetime | None:
        return self.run.get("ended_at")

    @property
    def uses_planner(self) -> bool:
        return bool(self.run.get("planner")) and self.run["planner"] != "fixed"

    @property
    def planner_endpoint(self) -> str | None:
        """The server the planner's calls went to (recorded per decision; the last one recorded)."""
        endpoints = [d["endpoint"] for d in self.decisions if d.get("endpoint")]
        return endpoints[-1] if endpoints else None

    @property
    def error(self) -> str | None:
        """Why the run failed: its own message, else the first failed or rejected step's error."""
        if self.run.get("error_message"):
            return str(self.run["error_message"])
        if self.run.get("status") not in ("failed", "incomplete"):
            return None
        for step in self.steps:
            if step.status in ("failed", "rejected") and step.error:
                return f"step {step.number} ({step.status}): {step.error}"
        return f"the run ended {self.run.get('status')}"

    def runtime_version(self, package: str) -> str:
        """A package that ran the workflow (e.g. prefect); 'unknown' in traces written before they were recorded."""
        return str((self.environment.get("runtime") or {}).get(package) or "unknown")

    def trace_files(self, table: str) -> str:
        """Where the run's rows of ``table`` are, relative to RLAM_HOME (no local absolute path is exported)."""
        return f"traces/{table}/{self.run_id}/"


def load_run_record(store: TraceStore, run_id: str) -> RunRecord:
    run = store.run(run_id)
    rows = store.steps(run_id)
    all_decisions = store.decisions(run_id)
    by_step = {d["step"]: d for d in all_decisions if d.get("action") != STOP or not d.get("valid")}
    runs: dict[str, dict[str, Any]] = {}
    steps_of: dict[str, list[dict[str, Any]]] = {}
    steps = []
    for row in rows:
        origin = None
        if row["status"] == "cached" and row.get("cache_key"):
            origin = _origin(store, store.result_record(row["cache_key"]), (run_id, row["step"]), runs, steps_of)
        steps.append(
            StepRecord(
                row=row,
                inputs=json.loads(row.get("input_hashes") or "{}"),
                producer_steps=producers(rows, row),
                decision=by_step.get(row["step"]),
                origin=origin,
            )
        )
    ancestry = ancestors(store, run)
    parent_outputs = _final_outputs(store.steps(ancestry[0]["run_id"])) if ancestry else []
    return RunRecord(run=run, steps=steps, ancestry=ancestry, run_events=store.run_events(run_id), decisions=all_decisions, parent_outputs=parent_outputs)


def _origin(store: TraceStore, index: dict[str, Any] | None, this: tuple[str, int], runs: dict[str, Any], steps_of: dict[str, Any]) -> Origin | None:
    """The recorded execution behind a results-index row, or None (the step itself, or no longer in the trace)."""
    if index is None or index.get("run_id") is None or (index["run_id"], index.get("step")) == this:
        return None
    origin_run = str(index["run_id"])
    try:
        if origin_run not in runs:
            runs[origin_run] = store.run(origin_run)
            steps_of[origin_run] = store.steps(origin_run)
    except UnknownRunError:
        return None
    step = next((s for s in steps_of[origin_run] if s["step"] == index["step"] and s.get("output_hash") == index.get("output_hash")), None)
    return Origin(runs[origin_run], step) if step is not None else None


def _final_outputs(rows: list[dict[str, Any]]) -> list[str]:
    """The last output of each kind: what a run handed on (the dataset, split, model, metrics...)."""
    latest: dict[str, str] = {}
    for row in rows:
        if row.get("output_hash"):
            latest[str(row.get("output_kind"))] = row["output_hash"]
    return list(latest.values())


def final_outputs(record: RunRecord) -> list[str]:
    return _final_outputs([s.row for s in record.steps])


def iso(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and an explicit offset (``2026-01-02T03:04:05.678+00:00``).

    The precision the Workflow Run Crate profiles check for, and what PROV and OpenLineage accept.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")
