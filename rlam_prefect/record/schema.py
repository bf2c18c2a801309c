"""Schemas of the Parquet trace tables. The README documents every column listed here."""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

RUNS = pa.schema(
    [
        ("run_id", pa.string()),
        ("event", pa.string()),  # start | end: a run's current row is its latest event
        ("recorded_at", TS),
        ("prefect_flow_run_id", pa.string()),
        ("pipeline", pa.string()),
        ("mode", pa.string()),  # run | replay | fork
        ("parent_run_id", pa.string()),  # replayed or forked run
        ("fork_step", pa.int32()),
        ("overrides", pa.string()),  # JSON {action: {param: value}}
        ("planner", pa.string()),  # fixed, or the litellm model that chose the steps
        ("planner_options", pa.string()),  # JSON: temperature, seed, max_steps, target...
        ("injected_failures", pa.string()),  # JSON list of actions made to fail on purpose (experiments)
        ("status", pa.string()),  # running | completed | failed (readers show a dead 'running' as incomplete)
        ("started_at", TS),
        ("ended_at", TS),
        ("env_hash", pa.string()),
        ("environment", pa.string()),  # JSON: Python, platform, package versions
        ("action_modules", pa.string()),  # JSON list of modules that define the action space
        ("rlam_version", pa.string()),
        ("hostname", pa.string()),
        ("pid", pa.int64()),
        ("n_steps", pa.int32()),
        ("executed", pa.int32()),
        ("cached", pa.int32()),
        ("llm_calls", pa.int32()),
        ("identical", pa.bool_()),  # replay only: every step's output hash equals the original's
        ("metrics", pa.string()),  # JSON
        ("error_message", pa.string()),
        ("policy_hash", pa.string()),  # content hash of the execution policy (null: none)
        ("policy", pa.string()),  # JSON: the policy's rules, canonical form
    ]
)

STEPS = pa.schema(
    [
        ("run_id", pa.string()),
        ("step", pa.int32()),  # 1-based, execution order
        ("action", pa.string()),
        ("params", pa.string()),  # JSON, validated, defaults filled
        ("input_hashes", pa.string()),  # JSON {argument: sha256:...}
        ("output_hash", pa.string()),
        ("output_kind", pa.string()),
        ("result_digest", pa.string()),  # sha256 of the stored result file's bytes
        ("cache_key", pa.string()),
        ("code_version", pa.string()),
        ("env_hash", pa.string()),
        ("status", pa.string()),  # executed | cached | failed | rejected
        ("error_type", pa.string()),
        ("error_message", pa.string()),
        ("started_at", TS),
        ("duration_s", pa.float64()),
        ("prefect_task_run_id", pa.string()),
        ("recovers_step", pa.int32()),
        ("reason", pa.string()),
        ("summary", pa.string()),  # JSON: a small description of the output, shown to people and planners
        ("recorded_at", TS),
        ("approval", pa.string()),  # approved | rejected, for steps the policy gates (null otherwise)
        ("approved_by", pa.string()),  # the reviewer, when known
        ("approval_via", pa.string()),  # flag | tty | ui
        ("approval_edits", pa.string()),  # JSON {param: value} the reviewer changed
        ("approval_note", pa.string()),
    ]
)

RESULTS = pa.schema(
    [
        ("cache_key", pa.string()),
        ("action", pa.string()),
        ("output_hash", pa.string()),
        ("output_kind", pa.string()),
        ("result_digest", pa.string()),
        ("result_bytes", pa.int64()),
        ("run_id", pa.string()),
        ("step", pa.int32()),
        ("created_at", TS),
    ]
)

DECISIONS = pa.schema(
    [
        ("run_id", pa.string()),
        ("step", pa.int32()),  # the step this decision produced (a rejected one too); a stop has the next number
        ("model", pa.string()),
        ("temperature", pa.float64()),
        ("seed", pa.int64()),
        ("prompt_hash", pa.string()),
        ("prompt", pa.string()),  # JSON list of chat messages, exactly as sent
        ("raw_reply", pa.string()),
        ("action", pa.string()),  # parsed action, "stop", or what an invalid reply claimed
        ("params", pa.string()),  # JSON, validated, pins applied
        ("reason", pa.string()),
        ("recovers_step", pa.int32()),
        ("valid", pa.bool_()),
        ("rejection_reason", pa.string()),
        ("latency_s", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("recorded_at", TS),
    ]
)

TABLES: dict[str, pa.Schema] = {"runs": RUNS, "steps": STEPS, "results": RESULTS, "decisions": DECISIONS}
