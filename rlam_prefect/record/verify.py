"""``rlam verify``: prove a run's stored results are still the ones its trace recorded.

Two checks per step, in this order: the result file's bytes against the digest indexed when it
was written (nothing is unpickled before that matches), then the loaded value's canonical
content hash against the step's recorded output hash. Every problem is collected; nothing is
written or repaired.
"""

from __future__ import annotations

from typing import Any

from rlam_prefect.core.errors import StoredResultError, one_line
from rlam_prefect.core.hashing import content_hash
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.record.compare import succeeded
from rlam_prefect.record.results import ResultGuard
from rlam_prefect.record.store import TraceStore


def verify_run(home: HomeLayout, run_id: str) -> dict[str, Any]:
    store = TraceStore(home)
    guard = ResultGuard(home)
    checks = []
    for step in store.steps(run_id):
        checks.append({"step": step["step"], "action": step["action"], **_check_step(store, guard, step)})
    problems = [c for c in checks if c["result"] not in ("ok", "no result")]
    return {"run_id": run_id, "intact": not problems, "checked": sum(c["result"] == "ok" for c in checks), "problems": len(problems), "steps": checks}


def _check_step(store: TraceStore, guard: ResultGuard, step: dict[str, Any]) -> dict[str, Any]:
    if not succeeded(step) or not step.get("cache_key"):
        return {"result": "no result", "detail": f"{step['status']} step: nothing was stored"}
    key = step["cache_key"]
    what = f"step {step['step']} {step['action']}"
    record = store.result_record(key)
    if record is None:
        return {"result": "missing", "detail": f"{what}: no index entry for its result {key[:16]}"}
    if record["output_hash"] != step["output_hash"]:
        return {"result": "mismatch", "detail": f"{what}: the index records {record['output_hash'][:19]}, the step {step['output_hash'][:19]}"}
    try:
        guard.verify(key, record, what)
    except StoredResultError as exc:
        return {"result": "missing" if "missing" in str(exc) else "tampered", "detail": str(exc)}
    try:
        loaded = _load(guard, key)  # safe: the bytes are the recorded ones
    except Exception as exc:
        return {"result": "unloadable", "detail": f"{what}: the stored result's bytes are intact but cannot be loaded here ({type(exc).__name__}: {one_line(exc)})"}
    artifact = type(loaded).__module__ == "rlam_prefect.actions.artifact" and type(loaded).__qualname__ == "Artifact"
    recomputed = content_hash(loaded.value if artifact else loaded)  # an action's Artifact, or a tracked flow task's own value
    if recomputed != step["output_hash"]:
        return {"result": "mismatch", "detail": f"{what}: the stored value hashes to {recomputed[:19]}, recorded {step['output_hash'][:19]}"}
    return {"result": "ok", "detail": step["output_hash"]}


def _load(guard: ResultGuard, key: str) -> Any:
    from prefect._internal.result_records import ResultRecord

    record: ResultRecord[Any] = ResultRecord.deserialize_from_result_and_metadata(
        result=guard.read(guard.data_path(key)), metadata=guard.read(guard.key_path(key))
    )
    return record.result
