"""Everything an export needs about one run, read once from the trace.

The three exporters describe the same facts in three vocabularies; gathering them here keeps
the exporters to the mapping alone and guarantees they agree on what happened.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, cast

from rlam_prefect.record.lineage import ancestors, producers
from rlam_prefect.record.store import TraceStore


@dataclass(frozen=True)
class StepRecord:
    row: dict[str, Any]
    inputs: dict[str, str]  # argument -> content hash of the artifact it consumed
    producer_steps: dict[str, int]  # argument -> the step of this run that produced it
    decision: dict[str, Any] | None  # the planner call that chose this step
    origin: dict[str, Any] | None  # results-index row of the execution that computed a cached output

    @property
    def number(self) -> int:
        return int(self.row["step"])

    @property
    def action(self) -> str:
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
        return cast(dt.datetime, self.row["started_at"]) + dt.timedelta(seconds=float(self.row.get("duration_s") or 0.0))

    @property
    def error(self) -> str | None:
        if not self.row.get("error_type"):
            return None
        return f"{self.row['error_type']}: {self.row.get('error_message') or ''}".strip()

    @property
    def computed_elsewhere(self) -> bool:
        """Served from the cache: the output was computed by an earlier execution (this run's or another's)."""
        return self.status == "cached" and self.origin is not None


@dataclass(frozen=True)
class RunRecord:
    run: dict[str, Any]
    steps: list[StepRecord]
    ancestry: list[dict[str, Any]]  # parent, grandparent, ... (replays and forks)
    trace_root: str
    run_events: list[dict[str, Any]]  # the run's rows in the runs table, as recorded
    decisions: list[dict[str, Any]]  # every planner call of the run, stop and rejected replies included

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])

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

    def runtime_version(self, package: str) -> str:
        """A package that ran the workflow (e.g. prefect); 'unknown' in traces written before they were recorded."""
        return str((self.environment.get("runtime") or {}).get(package) or "unknown")

    def trace_files(self, table: str) -> str:
        return f"{self.trace_root}/{table}/{self.run_id}/"


def load_run_record(store: TraceStore, run_id: str) -> RunRecord:
    run = store.run(run_id)
    rows = store.steps(run_id)
    all_decisions = store.decisions(run_id)
    decisions = {d["step"]: d for d in all_decisions if d.get("valid") and d.get("action") != "stop"}
    steps = []
    for row in rows:
        origin = None
        if row["status"] == "cached" and row.get("cache_key"):
            origin = store.result_record(row["cache_key"])
        steps.append(
            StepRecord(
                row=row,
                inputs=json.loads(row.get("input_hashes") or "{}"),
                producer_steps=producers(rows, row),
                decision=decisions.get(row["step"]),
                origin=origin,
            )
        )
    return RunRecord(
        run=run,
        steps=steps,
        ancestry=ancestors(store, run),
        trace_root=str(store.root),
        run_events=store.run_events(run_id),
        decisions=all_decisions,
    )


def iso(moment: dt.datetime) -> str:
    """ISO 8601 with a time zone, as PROV, RO-Crate and OpenLineage all expect (trace times are UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.isoformat()
