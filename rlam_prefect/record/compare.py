"""Why a step was served or executed, and where two runs part ways: both compare key parts.

A step's cache key is built from named parts (``keys.key_parts``); every part is recorded in
its trace row. Comparing those columns says exactly what moved: the action chosen, its
parameters, an input artifact (and which earlier step produced it), the code, or the environment.
"""

from __future__ import annotations

import json
from typing import Any

from rlam_prefect.record.store import TraceStore

SUCCEEDED = ("executed", "cached")  # a step that produced its output, whether it ran or was served


def succeeded(row: dict[str, Any]) -> bool:
    return row["status"] in SUCCEEDED


def outcome(row: dict[str, Any]) -> tuple[str, str, str | None]:
    """What a step produced, whether it ran or was served: a replay must match it exactly."""
    return row["action"], "ok" if succeeded(row) else row["status"], row.get("output_hash")


def is_metrics_kind(kind: str | None) -> bool:
    """A metrics artifact: its type's name ends in ``Metrics`` (the seed's ``Metrics``, a user's ``RegressionMetrics``...)."""
    return bool(kind) and str(kind).endswith("Metrics")


def run_metrics(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's metrics: the summary of its last metrics artifact (what ``rlam show``, diff and artifacts report)."""
    for row in reversed(history):
        if is_metrics_kind(row.get("output_kind")) and row.get("summary"):
            metrics: dict[str, Any] = json.loads(row["summary"]) if isinstance(row["summary"], str) else dict(row["summary"])
            return metrics
    return {}


def key_differences(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """What differs between two steps' keys, part by part (empty: same key)."""
    differences: list[dict[str, Any]] = []
    if a["action"] != b["action"]:
        differences.append({"part": "planner decision", "detail": f"action {b['action']} -> {a['action']}"})
        return differences
    params_a, params_b = _json(a.get("params")), _json(b.get("params"))
    changed = {k: (params_b.get(k), params_a.get(k)) for k in sorted(set(params_a) | set(params_b)) if params_a.get(k) != params_b.get(k)}
    if changed:
        differences.append({"part": "params", "detail": ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()), "changed": changed})
    inputs_a, inputs_b = _json(a.get("input_hashes")), _json(b.get("input_hashes"))
    moved = sorted(k for k in set(inputs_a) | set(inputs_b) if inputs_a.get(k) != inputs_b.get(k))
    if moved:
        differences.append({"part": "input artifacts", "detail": ", ".join(f"{k} {str(inputs_b.get(k))[7:19]} -> {str(inputs_a.get(k))[7:19]}" for k in moved), "inputs": moved})
    files_a, files_b = _json(a.get("files_read")), _json(b.get("files_read"))
    files_moved = sorted(k for k in set(files_a) | set(files_b) if (files_a.get(k) or {}).get("digest") != (files_b.get(k) or {}).get("digest"))
    if files_moved:
        detail = ", ".join(f"{k} {(files_b.get(k) or {}).get('path')} {str((files_b.get(k) or {}).get('digest'))[7:19]} -> {str((files_a.get(k) or {}).get('digest'))[7:19]}" for k in files_moved)
        differences.append({"part": "data files", "detail": detail, "files": files_moved})
    if a.get("code_version") != b.get("code_version"):
        differences.append({"part": "code version", "detail": f"{str(b.get('code_version'))[7:19]} -> {str(a.get('code_version'))[7:19]}"})
    if a.get("env_hash") != b.get("env_hash"):
        differences.append({"part": "environment", "detail": f"{str(b.get('env_hash'))[7:19]} -> {str(a.get('env_hash'))[7:19]}"})
    return differences


def explain_step(store: TraceStore, run_id: str, step_number: int) -> dict[str, Any]:
    steps = store.steps(run_id)
    if not 1 <= step_number <= len(steps):
        from rlam_prefect.core.errors import UsageError

        raise UsageError(f"step {step_number} is out of range: run {run_id} has steps 1..{len(steps)}")
    step = steps[step_number - 1]
    base = {"run_id": run_id, "step": step_number, "action": step["action"], "status": step["status"], "cache_key": step["cache_key"]}
    if not succeeded(step):
        return {**base, "verdict": step["status"], "explanation": f"{step['error_type']}: {step['error_message']}"}
    if step["status"] == "cached":
        record = store.result_record(step["cache_key"]) if step.get("cache_key") else None
        origin = f"run {record['run_id']} step {record['step']}" if record else "an earlier run"
        return {**base, "verdict": "hit", "explanation": f"same action, code, params, inputs and environment as {origin}, which computed it", "computed_by": record and {"run_id": record["run_id"], "step": record["step"]}}
    nearest = _nearest_earlier(store, step)
    if nearest is None:
        return {**base, "verdict": "miss", "explanation": f"the first {step['action']} recorded in this RLAM_HOME", "nearest": None, "differences": []}
    differences = key_differences(step, nearest)
    _name_producers(store, run_id, step, differences)
    reasons = "; ".join(f"{d['part']}: {d['detail']}" for d in differences) or "no key part differs (its result was not indexed)"
    return {
        **base,
        "verdict": "miss",
        "explanation": f"compared with run {nearest['run_id']} step {nearest['step']}: {reasons}",
        "nearest": {"run_id": nearest["run_id"], "step": nearest["step"]},
        "differences": differences,
    }


def diff_runs(store: TraceStore, run_a: str, run_b: str) -> dict[str, Any]:
    steps_a, steps_b = store.steps(run_a), store.steps(run_b)
    aligned = []
    first: dict[str, Any] | None = None
    for position in range(max(len(steps_a), len(steps_b))):
        a = steps_a[position] if position < len(steps_a) else None
        b = steps_b[position] if position < len(steps_b) else None
        same = bool(a and b and outcome(a) == outcome(b))
        aligned.append({"step": position + 1, "a": _brief(a), "b": _brief(b), "same": same})
        if not same and first is None:
            causes = key_differences(b, a) if a and b else [{"part": "length", "detail": f"run {run_a if a is None else run_b} has no step {position + 1}"}]
            if a and b and not causes:
                causes = [{"part": "outcome", "detail": f"{a['status']} vs {b['status']}: {a.get('error_message') or b.get('error_message') or 'same key, different outputs'}"}]
            first = {"step": position + 1, "causes": causes}
    metrics_a, metrics_b = _metrics(store, run_a), _metrics(store, run_b)
    deltas = {
        name: {"a": metrics_a.get(name), "b": metrics_b.get(name), "delta": _delta(metrics_a.get(name), metrics_b.get(name))}
        for name in sorted(set(metrics_a) | set(metrics_b))
    }
    return {"run_a": run_a, "run_b": run_b, "identical": first is None, "first_divergence": first, "steps": aligned, "metrics": deltas}


def _nearest_earlier(store: TraceStore, step: dict[str, Any]) -> dict[str, Any] | None:
    """The earlier successful step of the same action whose key differs in the fewest parts."""
    candidates = [
        row
        for run in store.runs()
        if run["run_id"] != step["run_id"]
        for row in store.steps(run["run_id"])
        if row["action"] == step["action"] and succeeded(row) and row["started_at"] < step["started_at"]
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda row: (len(key_differences(step, row)), -row["started_at"].timestamp()))


def _name_producers(store: TraceStore, run_id: str, step: dict[str, Any], differences: list[dict[str, Any]]) -> None:
    """For a moved input, say which earlier step of this run produced it."""
    produced = {row["output_hash"]: row for row in store.steps(run_id) if row["step"] < step["step"] and row.get("output_hash")}
    inputs = _json(step.get("input_hashes"))
    for difference in differences:
        if difference["part"] == "input artifacts":
            sources = [f"{name} from step {produced[inputs[name]]['step']} {produced[inputs[name]]['action']}" for name in difference["inputs"] if inputs.get(name) in produced]
            if sources:
                difference["detail"] += f" ({'; '.join(sources)})"


def _brief(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {"action": row["action"], "status": row["status"], "output_hash": row["output_hash"]}


def _metrics(store: TraceStore, run_id: str) -> dict[str, Any]:
    return _json(store.run(run_id).get("metrics"))


def _delta(a: Any, b: Any) -> float | None:
    numeric = (int, float)
    if isinstance(a, numeric) and isinstance(b, numeric) and not isinstance(a, bool) and not isinstance(b, bool):
        return round(b - a, 6)
    return None


def _json(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}
