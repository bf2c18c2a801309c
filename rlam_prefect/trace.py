"""The one trace writer and reader: append-only Parquet tables under ``$RLAM_HOME/traces``.

Layout: ``traces/<table>/<run_id>/<name>.parquet`` (``results/<key>.parquet`` for the cache
index). Every write makes a new file: written beside its final name, fsynced, then hard-linked
into place, which fails rather than replace an existing file. A file is therefore complete or
absent, even after ``kill -9``, and no trace file is ever rewritten. Writers never share a
file, so concurrent processes need no lock. Readers skip the hidden temporary files; a file
that cannot be read is an error naming it, never silently skipped.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rlam_prefect.errors import TraceCorruptError, UnknownRunError, one_line
from rlam_prefect.home import Home
from rlam_prefect.secrets import redact
from rlam_prefect.trace_schema import TABLES


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class TraceStore:
    def __init__(self, home: Home) -> None:
        self.home = home
        self.root = home.traces

    # ---- writing -------------------------------------------------------------------------

    def append(self, table: str, rows: list[Mapping[str, Any]], *, partition: str, name: str) -> Path:
        """Write ``rows`` as one new file; raises FileExistsError instead of replacing a file."""
        return _write_new(self.root / table / partition, name, table, rows)

    def append_run_event(self, row: Mapping[str, Any]) -> None:
        event = row["event"]
        self.append("runs", [{**row, "recorded_at": utcnow()}], partition=row["run_id"], name=f"{_EVENT_ORDER[event]}-{event}")

    def append_step(self, row: Mapping[str, Any]) -> None:
        self.append(
            "steps",
            [{**row, "recorded_at": utcnow()}],
            partition=row["run_id"],
            name=f"step-{row['step']:05d}-{uuid.uuid4().hex[:8]}",
        )

    def append_decision(self, row: Mapping[str, Any]) -> None:
        self.append(
            "decisions",
            [{**row, "recorded_at": utcnow()}],
            partition=row["run_id"],
            name=f"decision-{row['step']:05d}-{uuid.uuid4().hex[:8]}",
        )

    def put_result_record(self, row: Mapping[str, Any]) -> bool:
        """Index a stored result under its cache key. False if the key is already indexed."""
        key = row["cache_key"]
        try:
            self.append("results", [row], partition=key[:2], name=key)
        except FileExistsError:
            return False
        return True

    # ---- reading -------------------------------------------------------------------------

    def result_record(self, cache_key: str) -> dict[str, Any] | None:
        path = self.root / "results" / cache_key[:2] / f"{cache_key}.parquet"
        if not path.exists():
            return None
        rows = _read_file(path, "results")
        return rows[0] if rows else None

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._read_partition("steps", run_id)
        return sorted(rows, key=lambda r: r["step"])

    def decisions(self, run_id: str) -> list[dict[str, Any]]:
        return sorted(self._read_partition("decisions", run_id), key=lambda r: (r["step"], r["recorded_at"]))

    def run(self, run_id: str) -> dict[str, Any]:
        events = self._read_partition("runs", run_id)
        if not events:
            raise UnknownRunError(f"unknown run {run_id!r} in {self.root}")
        return _current(events)

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        """A run's rows as recorded (start, end), oldest first."""
        return sorted(self._read_partition("runs", run_id), key=lambda r: (_EVENT_ORDER.get(r["event"], "99"), r["recorded_at"]))

    def runs(self) -> list[dict[str, Any]]:
        """Every run's current row, newest first (finished runs from segments, the rest from their partitions)."""
        table_dir = self.root / "runs"
        if not table_dir.exists():
            return []
        by_run: dict[str, list[dict[str, Any]]] = {}
        for row in self._segment_rows():
            by_run.setdefault(row["run_id"], []).append(row)
        covered = set(by_run)
        for entry in os.scandir(table_dir):  # names only: no Path objects or stat calls for covered runs
            if entry.name in covered or not entry.is_dir():
                continue  # a compacted run: nothing is written to its partition after its end event
            for path in _parquet_files(Path(entry.path)):
                for row in _read_file(path, "runs"):
                    by_run.setdefault(row["run_id"], []).append(row)
        current = [_current(events) for events in by_run.values()]
        return sorted(current, key=lambda r: r["started_at"] or r["recorded_at"], reverse=True)

    def resolve_run_id(self, ref: str) -> str:
        """A full run id or an unambiguous prefix of one, like git."""
        ref = ref.strip()
        table_dir = self.root / "runs"
        if not ref or not table_dir.exists():
            raise UnknownRunError(f"unknown run {ref!r} (no runs recorded in {self.root})")
        if (table_dir / ref).is_dir():
            return ref
        matches = [p.name for p in table_dir.iterdir() if p.is_dir() and p.name.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UnknownRunError(f"unknown run {ref!r} (see `rlam runs`)")
        raise UnknownRunError(f"run id {ref!r} is ambiguous: {', '.join(sorted(matches)[:5])}")

    def files(self) -> list[Path]:
        return _parquet_files(self.root) if self.root.exists() else []

    # ---- compaction (additive: new segment files, nothing removed or rewritten) ------------

    def compact(self) -> dict[str, Any]:
        """Copy the run events of every finished run not yet in a segment into ONE new segment file.

        Listing runs then reads a few segments instead of two files per run. Only runs with an
        ``end`` event are taken (nothing writes to a run's partition after that); the partition
        files stay where they are and remain the record, so any Parquet query over
        ``traces/runs/**`` is unchanged. Segments live in ``traces/_segments/runs/``.
        """
        table_dir = self.root / "runs"
        covered = {row["run_id"] for row in self._segment_rows()}
        rows: list[dict[str, Any]] = []
        finished = 0
        for entry in sorted(os.scandir(table_dir), key=lambda e: e.name) if table_dir.exists() else []:
            if entry.name in covered or not entry.is_dir():
                continue
            events = [row for path in _parquet_files(Path(entry.path)) for row in _read_file(path, "runs")]
            if any(e["event"] == "end" for e in events):
                rows.extend(events)
                finished += 1
        if not rows:
            return {"segment": None, "runs": 0, "rows": 0, "already_compacted": len(covered)}
        rows.sort(key=lambda r: (r["run_id"], _EVENT_ORDER.get(r["event"], "99")))
        name = f"runs-{utcnow():%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
        path = _write_new(self.root / SEGMENTS / "runs", name, "runs", rows, redact_rows=False)  # rows were redacted when first written
        return {"segment": str(path), "runs": finished, "rows": len(rows), "already_compacted": len(covered)}

    def _segment_rows(self) -> list[dict[str, Any]]:
        directory = self.root / SEGMENTS / "runs"
        if not directory.is_dir():
            return []
        return [row for path in _parquet_files(directory) for row in _read_file(path, "runs")]

    def _read_partition(self, table: str, partition: str) -> list[dict[str, Any]]:
        directory = self.root / table / partition
        if not directory.is_dir():
            return []
        rows: list[dict[str, Any]] = []
        for path in _parquet_files(directory):
            rows.extend(_read_file(path, table))
        return rows


_EVENT_ORDER = {"start": "00", "end": "01"}
SEGMENTS = "_segments"  # traces/_segments/<table>/: consolidated copies written by `rlam compact`


def _write_new(directory: Path, name: str, table: str, rows: list[Mapping[str, Any]], redact_rows: bool = True) -> Path:
    """One new complete file: written beside its final name, fsynced, hard-linked into place (never replaces)."""
    schema = TABLES[table]
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{name}.parquet"
    arrow_table = pa.Table.from_pylist([_redacted(r) for r in rows] if redact_rows else [dict(r) for r in rows], schema=schema)
    tmp = directory / f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(arrow_table, tmp, write_page_checksum=True)  # damage is detected on read, not decoded
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.link(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(directory)
    return final


def _redacted(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: redact(v) if isinstance(v, str) else v for k, v in row.items()}


def _current(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    latest = max(events, key=lambda r: (_EVENT_ORDER.get(r["event"], "99"), r["recorded_at"]))
    row = dict(latest)
    if row["status"] == "running" and not _owner_alive(row):
        row["status"] = "incomplete"
    return row


def _owner_alive(row: Mapping[str, Any]) -> bool:
    if row.get("hostname") != socket.gethostname() or not row.get("pid"):
        return True  # cannot tell from here; trust the record
    try:
        os.kill(int(row["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parquet_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.parquet") if not p.name.startswith((".", "_")))


def _read_file(path: Path, table: str) -> list[dict[str, Any]]:
    """Rows of one trace file, or TraceCorruptError naming it: damage is never decoded into data."""
    schema = TABLES[table]
    try:
        data = pq.read_table(path, page_checksum_verification=True)
        unknown = [name for name in data.column_names if name not in schema.names]
        if unknown:  # never written by any version of this schema: a damaged footer, not an old file
            raise ValueError(f"columns the {table} table never had: {', '.join(unknown)[:80]}")
        for field in schema:  # files written before a column existed read it as nulls
            if field.name not in data.column_names:
                data = data.append_column(field.name, pa.nulls(data.num_rows, field.type))
        return data.select(schema.names).cast(schema).to_pylist()
    except (OSError, pa.ArrowException, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise TraceCorruptError(f"trace file {path} cannot be read ({one_line(exc, 200)}); it was left as it is") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
