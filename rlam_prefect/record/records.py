"""The trace's records as types: the engine builds them, the one trace writer takes them.

Each table's Parquet schema and its reference page (docs/trace-schema.md) are derived from these
classes, so a column exists in exactly one place. A field's metadata holds its Arrow type and its
meaning. ``update`` refuses a name the record does not have: a typo fails loudly instead of being
dropped on the way into Parquet.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")


def column(arrow: pa.DataType, doc: str) -> Any:
    """A nullable column: its Arrow type and what it means (both read by schema.py)."""
    return dataclasses.field(default=None, metadata={"arrow": arrow, "doc": doc})


@dataclass
class Record:
    TABLE: ClassVar[str]

    def update(self, **values: Any) -> None:
        unknown = set(values) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise AttributeError(f"{type(self).__name__} has no column {', '.join(sorted(unknown))}")
        for name, value in values.items():
            setattr(self, name, value)

    def to_row(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def columns(cls) -> list[dataclasses.Field[Any]]:
        return list(dataclasses.fields(cls))


@dataclass
class RunEvent(Record):
    """One row per run event: a run's start and its end (its current row is its latest event)."""

    TABLE: ClassVar[str] = "runs"

    run_id: str | None = column(pa.string(), "the run's id (12 hex digits)")
    event: str | None = column(pa.string(), "start | end: a run's current row is its latest event")
    recorded_at: dt.datetime | None = column(TS, "when this row was written")
    prefect_flow_run_id: str | None = column(pa.string(), "the Prefect flow run that executed it (links the UI)")
    pipeline: str | None = column(pa.string(), "rlam (script and lam runs are not traced)")
    mode: str | None = column(pa.string(), "run | replay | fork")
    parent_run_id: str | None = column(pa.string(), "replayed or forked run")
    fork_step: int | None = column(pa.int32(), "fork only: the first re-executed step")
    overrides: str | None = column(pa.string(), "JSON {action: {param: value}}")
    planner: str | None = column(pa.string(), "fixed, or the litellm model that chose the steps")
    planner_options: str | None = column(pa.string(), "JSON: temperature, seed, max_steps, target...")
    injected_failures: str | None = column(pa.string(), "JSON list of actions made to fail on purpose (experiments)")
    status: str | None = column(pa.string(), "running | completed | failed (readers show a dead 'running' as incomplete)")
    started_at: dt.datetime | None = column(TS, "when the run started")
    ended_at: dt.datetime | None = column(TS, "end event only")
    env_hash: str | None = column(pa.string(), "hash of the environment fingerprint (part of every step's key)")
    environment: str | None = column(pa.string(), "JSON: Python, platform, package versions; its 'runtime' entry (prefect, litellm, ...) is recorded for reviewers, never part of a key")
    action_modules: str | None = column(pa.string(), "JSON list of modules that define the action space")
    rlam_version: str | None = column(pa.string(), "the rlam-prefect version that recorded the run")
    hostname: str | None = column(pa.string(), "machine of the process that ran it")
    pid: int | None = column(pa.int64(), "that process (a dead owner turns 'running' into 'incomplete' for readers)")
    n_steps: int | None = column(pa.int32(), "end event only: steps recorded")
    executed: int | None = column(pa.int32(), "end event only: steps executed")
    cached: int | None = column(pa.int32(), "end event only: steps served from the verified cache")
    llm_calls: int | None = column(pa.int32(), "end event only: planner calls litellm saw (success or failure)")
    identical: bool | None = column(pa.bool_(), "replay only: every step's output hash equals the original's")
    metrics: str | None = column(pa.string(), "JSON: the last Metrics artifact's summary")
    error_message: str | None = column(pa.string(), "why the run failed, when it did")
    policy_hash: str | None = column(pa.string(), "content hash of the execution policy (null: none; older files read it as null)")
    policy: str | None = column(pa.string(), "JSON: the policy's rules, canonical form")


@dataclass
class StepRecord(Record):
    """One row per step, whatever its outcome: executed, cached, failed or rejected."""

    TABLE: ClassVar[str] = "steps"

    run_id: str | None = column(pa.string(), "the run this step belongs to")
    step: int | None = column(pa.int32(), "1-based, execution order")
    action: str | None = column(pa.string(), "the action's name (a rejected reply's claim is recorded in decisions, not here)")
    params: str | None = column(pa.string(), "JSON, validated, defaults filled")
    input_hashes: str | None = column(pa.string(), "JSON {argument: sha256:...}")
    output_hash: str | None = column(pa.string(), "canonical content hash of the output artifact")
    output_kind: str | None = column(pa.string(), "the output artifact's type name")
    result_digest: str | None = column(pa.string(), "sha256 of the stored result file's bytes")
    cache_key: str | None = column(pa.string(), "SHA-256 of action, code version, params, input hashes, environment")
    code_version: str | None = column(pa.string(), "hash of the action's normalised source closure")
    env_hash: str | None = column(pa.string(), "hash of the environment fingerprint")
    status: str | None = column(pa.string(), "executed | cached | failed | rejected")
    error_type: str | None = column(pa.string(), "failed/rejected: the error's type")
    error_message: str | None = column(pa.string(), "failed/rejected: one line")
    started_at: dt.datetime | None = column(TS, "when the step started")
    duration_s: float | None = column(pa.float64(), "wall time of the step, cache check included")
    prefect_task_run_id: str | None = column(pa.string(), "the Prefect task run (null for a step that never reached Prefect)")
    recovers_step: int | None = column(pa.int32(), "the failed step this one retries, when the planner says so")
    reason: str | None = column(pa.string(), "the planner's (or the fixed order's) reason for the step")
    summary: str | None = column(pa.string(), "JSON: a small description of the output, shown to people and planners")
    recorded_at: dt.datetime | None = column(TS, "when this row was written")
    approval: str | None = column(pa.string(), "approved | rejected, for steps the policy gates (null otherwise)")
    approved_by: str | None = column(pa.string(), "the reviewer, when known")
    approval_via: str | None = column(pa.string(), "flag | tty | ui (older files read approval columns as null)")
    approval_edits: str | None = column(pa.string(), "JSON {param: value} the reviewer changed")
    approval_note: str | None = column(pa.string(), "the reviewer's note")
    inputs_from: str | None = column(pa.string(), "JSON {argument: [step, ...]}: the steps whose results fed each argument, as Prefect tracked them (tracked flows; null: derived from input hashes)")
    files_read: str | None = column(pa.string(), "JSON {param: {path, size, digest}}: the data files the step declared and read (digest: sha256 of the bytes, part of the key; older files read null)")


@dataclass
class ResultRecord(Record):
    """The cache index: one row per stored result, written once when its key is first computed."""

    TABLE: ClassVar[str] = "results"

    cache_key: str | None = column(pa.string(), "the step key; also the result file's name in results/data")
    action: str | None = column(pa.string(), "the action that computed it")
    output_hash: str | None = column(pa.string(), "canonical content hash of the stored value")
    output_kind: str | None = column(pa.string(), "the stored artifact's type name")
    result_digest: str | None = column(pa.string(), "sha256 of the result file's bytes, checked before every use")
    result_bytes: int | None = column(pa.int64(), "size of the result file")
    run_id: str | None = column(pa.string(), "the run that computed it")
    step: int | None = column(pa.int32(), "that run's step")
    created_at: dt.datetime | None = column(TS, "when it was indexed")


@dataclass
class DecisionRecord(Record):
    """One row per planner call (a stop included): prompt and reply exactly as exchanged."""

    TABLE: ClassVar[str] = "decisions"

    run_id: str | None = column(pa.string(), "the run that asked")
    step: int | None = column(pa.int32(), "the step this decision produced (a rejected one too); a stop has the next number")
    model: str | None = column(pa.string(), "the litellm model string")
    temperature: float | None = column(pa.float64(), "sampling temperature sent")
    seed: int | None = column(pa.int64(), "seed sent (providers may ignore it)")
    prompt_hash: str | None = column(pa.string(), "content hash of the prompt messages")
    prompt: str | None = column(pa.string(), "JSON list of chat messages, exactly as sent")
    raw_reply: str | None = column(pa.string(), "the reply text exactly as received")
    action: str | None = column(pa.string(), "parsed action, 'stop', or what an invalid reply claimed")
    params: str | None = column(pa.string(), "JSON, validated, pins applied")
    reason: str | None = column(pa.string(), "the planner's stated reason")
    recovers_step: int | None = column(pa.int32(), "the failed step the decision retries, if any")
    valid: bool | None = column(pa.bool_(), "false: the reply could not be acted on")
    rejection_reason: str | None = column(pa.string(), "why it could not, in one line")
    latency_s: float | None = column(pa.float64(), "wall time of the call")
    prompt_tokens: int | None = column(pa.int64(), "as the provider reported")
    completion_tokens: int | None = column(pa.int64(), "as the provider reported")
    recorded_at: dt.datetime | None = column(TS, "when this row was written")
    endpoint: str | None = column(pa.string(), "the server that answered: its base URL without user, password, query or fragment; in-process for rlam/heuristic")
