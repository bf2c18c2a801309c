"""`rlam compact`: finished runs' events copied into a new segment; nothing recorded is removed or rewritten."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pytest

from rlam_prefect.core.errors import TraceCorruptError
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.record.store import SEGMENTS, TraceStore


def _event(run_id: str, event: str, status: str, minute: int) -> dict[str, Any]:
    at = dt.datetime(2026, 1, 1, 0, minute, tzinfo=dt.UTC)
    return {"run_id": run_id, "event": event, "pipeline": "rlam", "mode": "run", "status": status, "started_at": at,
            "ended_at": at if event == "end" else None, "planner": "fixed", "hostname": "elsewhere", "pid": 1}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def store(tmp_path: Path) -> TraceStore:
    store = TraceStore(HomeLayout(tmp_path / "home"))
    for i, run_id in enumerate(("aaaa00000001", "aaaa00000002", "aaaa00000003")):
        store.append_run_event(_event(run_id, "start", "running", i))
    store.append_run_event(_event("aaaa00000001", "end", "completed", 10))
    store.append_run_event(_event("aaaa00000002", "end", "failed", 11))
    return store


def test_compact_keeps_every_answer_and_every_file(store: TraceStore) -> None:
    before_rows, before_files = store.runs(), _snapshot(store.root)
    assert store.uncompacted_runs == 3  # what `rlam runs` bases its hint to compact on
    outcome = store.compact()
    assert outcome["runs"] == 2 and outcome["rows"] == 4 and Path(outcome["segment"]).parent == store.root / SEGMENTS / "runs"
    assert store.runs() == before_rows  # same rows, same order, the unfinished run still read from its partition
    assert store.uncompacted_runs == 1
    after = _snapshot(store.root)
    assert {k: after[k] for k in before_files} == before_files  # nothing rewritten or removed
    assert [k for k in after if k not in before_files] == [str(Path(outcome["segment"]).relative_to(store.root))]


def test_compact_again_covers_only_newly_finished_runs(store: TraceStore) -> None:
    first = store.compact()
    assert store.compact()["segment"] is None  # nothing new: no second copy of a run
    store.append_run_event(_event("aaaa00000003", "end", "completed", 12))
    second = store.compact()
    assert second["runs"] == 1 and second["already_compacted"] == 2 and second["segment"] != first["segment"]
    assert {r["run_id"]: r["status"] for r in store.runs()} == {"aaaa00000001": "completed", "aaaa00000002": "failed", "aaaa00000003": "completed"}


def test_a_damaged_segment_is_an_error_naming_it(store: TraceStore) -> None:
    segment = Path(store.compact()["segment"])
    data = bytearray(segment.read_bytes())
    data[len(data) // 3] ^= 0xFF
    segment.chmod(0o644)
    segment.write_bytes(bytes(data))
    with pytest.raises(TraceCorruptError, match=segment.name):
        store.runs()


def test_rlam_compact_cli(workspace: Any) -> None:
    run = workspace.rlam_json("run", "--planner", "fixed")
    assert workspace.rlam("compact").stdout.startswith("compacted 1 finished runs")
    listed = workspace.rlam_json("runs")
    assert [r["run_id"] for r in listed] == [run["run_id"]] and listed[0]["status"] == "completed"
    assert workspace.rlam("compact").stdout.startswith("nothing to compact (1 runs already")
