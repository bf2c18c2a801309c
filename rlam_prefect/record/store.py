"""The one trace writer and reader: append-only Parquet tables under ``$RLAM_HOME/traces``.

Layout: ``traces/<table>/<run_id>/<name>.parquet`` (``results/<key>.parquet`` for the cache
index), in RLAM_HOME or on the object store of RLAM_STORE_URL (record/backends.py). Every write
makes a new file that fails rather than replace an existing one (a hard link locally, a
conditional create on S3). A file is therefore complete or absent, even after ``kill -9``, and
no trace file is ever rewritten. Writers never share a
file, so concurrent processes need no lock. Readers skip the hidden temporary files; a file
that cannot be read is an error naming it, never silently skipped. Many files are read in one
pyarrow dataset scan (about 4x faster than one read per file); only when that scan fails are
the files read one by one, to name the damaged one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import uuid
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, TypeVar, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from rlam_prefect.core.errors import TraceCorruptError, UnknownRunError, one_line
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.core.secrets import redact, secret_values
from rlam_prefect.record.backends import Files, trace_files
from rlam_prefect.record.records import DecisionRecord, Record, ResultRecord, RunEvent, StepRecord
from rlam_prefect.record.schema import TABLES

R = TypeVar("R", bound=Record)
T = TypeVar("T")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TraceStore:
    def __init__(self, home: HomeLayout) -> None:
        self.home = home
        self.io: Files = trace_files(home)
        self.root = self.io.root
        self.uncompacted_runs = 0  # set by runs()
        self._tables_ensured = False

    # ---- writing -------------------------------------------------------------------------

    def append(self, table: str, rows: list[Mapping[str, Any]], *, partition: str, name: str) -> PurePath:
        """Write ``rows`` as one new file; raises FileExistsError instead of replacing a file."""
        self.ensure_tables()
        return self.io.write_new(self.root / table / partition, name, _arrow_rows(table, rows))

    def ensure_tables(self) -> None:
        """Every table exists with its schema from the first write on (a run with no planner call too).

        A table nothing was written to yet gets one zero-row file, ``<table>/_schema.parquet``, so
        ``read_parquet('traces/<table>/**/*.parquet')`` works on any home. It is written like any
        trace file (never replaces one) and only where the table's directory does not exist yet;
        this store's readers skip it (its name starts with ``_``).
        """
        if self._tables_ensured:
            return
        for table, schema in TABLES.items():
            if self.io.is_dir(self.root / table):
                continue
            try:
                self.io.write_new(self.root / table, SCHEMA_FILE, schema.empty_table())
            except FileExistsError:
                pass  # another process made it first
        self._tables_ensured = True

    def append_run_event(self, record: RunEvent | Mapping[str, Any]) -> None:
        row = _typed(RunEvent, record)
        row.recorded_at = utcnow()
        run_id, event = _required(row, "run_id", row.run_id), _required(row, "event", row.event)
        self.append("runs", [row.to_row()], partition=run_id, name=f"{_EVENT_ORDER[event]}-{event}")

    def append_step(self, record: StepRecord | Mapping[str, Any]) -> None:
        row = _typed(StepRecord, record)
        row.recorded_at = utcnow()
        self.append("steps", [row.to_row()], partition=_required(row, "run_id", row.run_id), name=f"step-{row.step:05d}-{uuid.uuid4().hex[:8]}")

    def append_decision(self, record: DecisionRecord | Mapping[str, Any]) -> None:
        row = _typed(DecisionRecord, record)
        row.recorded_at = utcnow()
        self.append("decisions", [row.to_row()], partition=_required(row, "run_id", row.run_id), name=f"decision-{row.step:05d}-{uuid.uuid4().hex[:8]}")

    def put_result_record(self, record: ResultRecord | Mapping[str, Any]) -> bool:
        """Index a stored result under its cache key. False if the key is already indexed."""
        row = _typed(ResultRecord, record)
        cache_key = _required(row, "cache_key", row.cache_key)
        try:
            self.append("results", [row.to_row()], partition=cache_key[:2], name=cache_key)
        except FileExistsError:
            return False
        return True

    # ---- reading -------------------------------------------------------------------------

    def result_record(self, cache_key: str) -> dict[str, Any] | None:
        path = self.root / "results" / cache_key[:2] / f"{cache_key}.parquet"
        if not self.io.exists(path):
            return None
        rows = _read_file(path, "results", self.io)
        return rows[0] if rows else None

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._read_partition("steps", run_id)
        return sorted(rows, key=lambda r: r["step"])

    def decisions(self, run_id: str) -> list[dict[str, Any]]:
        return sorted(self._read_partition("decisions", run_id), key=lambda r: (r["step"], r["recorded_at"]))

    def run(self, run_id: str) -> dict[str, Any]:
        events = _latest_per_run(self._partition_table("runs", run_id)).to_pylist()
        if not events:
            raise UnknownRunError(f"unknown run {run_id!r} in {self.root}")
        return _with_liveness(events[0])

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        """A run's rows as recorded (start, end), oldest first."""
        return sorted(self._read_partition("runs", run_id), key=lambda r: (_EVENT_ORDER.get(r["event"], "99"), r["recorded_at"]))

    def runs(self) -> list[dict[str, Any]]:
        """Every run's current row, newest first (finished runs from segments, the rest from their partitions).

        Also sets ``uncompacted_runs``: how many runs were read from their partitions, so a caller
        can suggest ``rlam compact`` when listing has become slow.
        """
        if not self.io.is_dir(self.root / "runs"):
            return []
        segments = self._segment_table()
        uncovered = self._uncompacted_partitions(segments)
        self.uncompacted_runs = len(uncovered)
        events = pa.concat_tables([segments, _read_files([f for d in uncovered for f in self.io.parquet_files(d)], "runs", self.io)])
        current = [_with_liveness(row) for row in _latest_per_run(events).to_pylist()]
        return sorted(current, key=lambda r: r["started_at"] or r["recorded_at"], reverse=True)

    def resolve_run_id(self, ref: str) -> str:
        """A full run id or an unambiguous prefix of one, like git."""
        ref = ref.strip()
        table_dir = self.root / "runs"
        if ref and self.io.is_dir(table_dir / ref):
            return ref
        names = self.io.subdirs(table_dir) if ref else []
        if not names:
            raise UnknownRunError(f"unknown run {ref!r} (no runs recorded in {self.root})")
        matches = [name for name in names if name.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UnknownRunError(f"unknown run {ref!r} (see `rlam runs`)")
        raise UnknownRunError(f"run id {ref!r} is ambiguous: {', '.join(sorted(matches)[:5])}")

    def files(self) -> list[PurePath]:
        return self.io.parquet_files(self.root)

    # ---- compaction (additive: new segment files, nothing removed or rewritten) ------------

    def compact(self) -> dict[str, Any]:
        """Copy the run events of every finished run not yet in a segment into ONE new segment file.

        Listing runs then reads a few segments instead of two files per run. Only runs with an
        ``end`` event are taken (nothing writes to a run's partition after that); the partition
        files stay where they are and remain the record, so any Parquet query over
        ``traces/runs/**`` is unchanged. Segments live in ``traces/_segments/runs/``.
        """
        segments = self._segment_table()
        covered = pc.count_distinct(segments["run_id"]).as_py()
        events = _read_files([f for d in self._uncompacted_partitions(segments) for f in self.io.parquet_files(d)], "runs", self.io)
        finished = pc.unique(events.filter(pc.equal(events["event"], "end"))["run_id"])
        events = events.filter(pc.is_in(events["run_id"], value_set=finished))
        if not events.num_rows:
            return {"segment": None, "runs": 0, "rows": 0, "already_compacted": covered}
        events = events.sort_by([("run_id", "ascending"), ("event", "descending")])  # "start" before "end"
        name = f"runs-{utcnow():%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
        path = self.io.write_new(self.root / SEGMENTS / "runs", name, events)  # rows were redacted when first written
        return {"segment": str(path), "runs": len(finished), "rows": events.num_rows, "already_compacted": covered}

    def _segment_table(self) -> pa.Table:
        directory = self.root / SEGMENTS / "runs"
        return _read_files(self.io.parquet_files(directory), "runs", self.io)

    def _uncompacted_partitions(self, segments: pa.Table) -> list[PurePath]:
        """The runs-table partitions of runs not in ``segments``, by run id."""
        table_dir = self.root / "runs"
        covered = set(segments.column("run_id").to_pylist())
        return sorted(table_dir / name for name in self.io.subdirs(table_dir) if name not in covered)

    def _partition_table(self, table: str, partition: str) -> pa.Table:
        directory = self.root / table / partition
        return _read_files(self.io.parquet_files(directory), table, self.io)

    def _read_partition(self, table: str, partition: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._partition_table(table, partition).to_pylist()  # pyarrow is untyped
        return rows


_EVENT_ORDER = {"start": "00", "end": "01"}
SEGMENTS = "_segments"  # traces/_segments/<table>/: consolidated copies written by `rlam compact`
SCHEMA_FILE = "_schema"  # traces/<table>/_schema.parquet: zero rows, the table's schema (see ensure_tables)


def _typed(kind: type[R], record: R | Mapping[str, Any]) -> R:
    """The record itself, or a mapping read as one (a column the table does not have is an error)."""
    if isinstance(record, kind):
        return dataclasses.replace(record)  # a copy: recorded_at is set on it, not on the caller's
    try:
        # not an instance of kind, so the mapping of the signature (mypy does not narrow a TypeVar on a failed isinstance)
        return kind(**cast(Mapping[str, Any], record))
    except TypeError as exc:
        raise TypeError(f"not a {kind.__name__}: {exc}") from None


def _required(record: Record, column: str, value: T | None) -> T:
    """A column the file's location is made of: a record without it cannot be written."""
    if value is None:
        raise ValueError(f"a {type(record).__name__} needs a {column} to be written")
    return value


def _arrow_rows(table: str, rows: list[Mapping[str, Any]]) -> pa.Table:
    """New rows in the table's schema, secrets redacted: the only way rows enter a trace file."""
    return pa.Table.from_pylist([_redacted(r) for r in rows], schema=TABLES[table])


def _redacted(row: Mapping[str, Any]) -> dict[str, Any]:
    secrets = secret_values()
    return {k: redact(v, secrets) if isinstance(v, str) else v for k, v in row.items()}


def _latest_per_run(events: pa.Table) -> pa.Table:
    """Each run's current event: its end event over its start, then the newest recorded."""
    if not events.num_rows:
        return events
    ordered = events.sort_by([("run_id", "ascending"), ("event", "ascending"), ("recorded_at", "descending")])  # "end" < "start"
    run_ids = ordered.column("run_id").to_pylist()
    firsts = [i for i, run_id in enumerate(run_ids) if i == 0 or run_id != run_ids[i - 1]]
    return ordered.take(firsts)


def _with_liveness(row: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(row)
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


_PARQUET = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True))


def _read_files(paths: list[PurePath], table: str, io: Files) -> pa.Table:
    """All rows of these trace files in the table's schema; TraceCorruptError names a damaged file."""
    schema = TABLES[table]
    batches = [_scan(paths[i : i + SCAN_BATCH_FILES], table, io) for i in range(0, len(paths), SCAN_BATCH_FILES)]
    return pa.concat_tables(batches) if batches else schema.empty_table()


SCAN_BATCH_FILES = 1024  # a scan holds every file footer until it ends: 2x10^5 files in one scan took 22 GB, 1024 take ~80 MB


def _scan(paths: list[PurePath], table: str, io: Files) -> pa.Table:
    """One dataset scan over ``paths``, as one contiguous table; on any error the files are read one by one to name it."""
    try:
        dataset = ds.dataset([str(p) for p in paths], schema=TABLES[table], format=_PARQUET, filesystem=io.filesystem)
        data = dataset.to_table()  # a column a file lacks (written before it existed) reads as nulls
        for fragment in dataset.get_fragments():
            _check_columns(fragment.physical_schema.names, table)
        return data.combine_chunks()
    except (OSError, pa.ArrowException, ValueError) as exc:
        for path in paths:
            _read_file(path, table, io)  # raises, naming the first damaged file
        raise TraceCorruptError(f"trace files under {io.url(paths[0].parent)} cannot be read ({one_line(exc, 200)}); they were left as they are") from None


def _check_columns(names: list[str], table: str) -> None:
    unknown = [name for name in names if name not in TABLES[table].names]
    if unknown:  # never written by any version of this schema: a damaged footer, not an old file
        raise ValueError(f"columns the {table} table never had: {', '.join(unknown)[:80]}")


def _read_file(path: PurePath, table: str, io: Files) -> list[dict[str, Any]]:
    """Rows of one trace file, or TraceCorruptError naming it: damage is never decoded into data."""
    schema = TABLES[table]
    try:
        data = pq.read_table(str(path), page_checksum_verification=True, filesystem=io.filesystem)
        _check_columns(data.column_names, table)
        for field in schema:  # files written before a column existed read it as nulls
            if field.name not in data.column_names:
                data = data.append_column(field.name, pa.nulls(data.num_rows, field.type))
        rows: list[dict[str, Any]] = data.select(schema.names).cast(schema).to_pylist()  # pyarrow is untyped
        return rows
    except (OSError, pa.ArrowException, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise TraceCorruptError(f"trace file {io.url(path)} cannot be read ({one_line(exc, 200)}); it was left as it is") from None
