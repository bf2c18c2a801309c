"""The Parquet trace store: atomic, append-only, readable without the project, loud about damage."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from rlam_prefect.core.errors import TraceCorruptError, UnknownRunError
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.record.store import TraceStore, utcnow


def _step(run_id: str, step: int) -> dict:
    return {"run_id": run_id, "step": step, "action": "load_dataset", "params": "{}", "status": "executed", "started_at": utcnow(), "duration_s": 0.1}


def _start(run_id: str, pid: int) -> dict:
    return {"run_id": run_id, "event": "start", "mode": "run", "pipeline": "rlam", "status": "running", "started_at": utcnow(), "pid": pid, "hostname": __import__("socket").gethostname()}


@pytest.fixture
def store(tmp_path) -> TraceStore:
    return TraceStore(HomeLayout(tmp_path))


def test_a_file_is_never_replaced(store):
    path = store.append("steps", [_step("r1", 1)], partition="r1", name="fixed-name")
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        store.append("steps", [_step("r1", 2)], partition="r1", name="fixed-name")
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_tables_read_back_with_plain_pyarrow_and_duckdb(store, tmp_path):
    for step in (1, 2, 3):
        store.append_step(_step("abc", step))
    store.append_run_event(_start("abc", 1))
    script = f"""
import duckdb, pyarrow.dataset as ds
t = ds.dataset({str(store.root / 'steps')!r}, format='parquet').to_table()
assert sorted(t.column('step').to_pylist()) == [1, 2, 3], t
n = duckdb.sql("select count(*) from read_parquet('{store.root}/steps/**/*.parquet')").fetchall()[0][0]
assert n == 3, n
print('ok')
"""
    # a fresh interpreter that never imports this project
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "ok", out.stderr


def test_temporary_files_are_invisible_to_readers(store):
    store.append_step(_step("r1", 1))
    (store.root / "steps" / "r1" / ".half-written.tmp").write_bytes(b"PAR1 garbage")
    assert [r["step"] for r in store.steps("r1")] == [1]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_damaged_file_is_named_not_skipped(store, damage):
    path = store.append("steps", [_step("r1", 1)], partition="r1", name="s1")
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not parquet at all", "empty": b""}[damage])
    with pytest.raises(TraceCorruptError, match=str(path)):
        store.steps("r1")
    assert path.exists()


def test_a_run_whose_process_died_reads_as_incomplete(store):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store.append_run_event(_start("gone", int(dead.stdout)))
    assert store.run("gone")["status"] == "incomplete"
    store.append_run_event(_start("alive", __import__("os").getpid()))
    assert store.run("alive")["status"] == "running"


def test_latest_event_wins_and_prefixes_resolve(store):
    store.append_run_event(_start("abcdef123456", 1))
    store.append_run_event({**_start("abcdef123456", 1), "event": "end", "status": "completed", "ended_at": utcnow() + dt.timedelta(seconds=1)})
    assert store.run("abcdef123456")["status"] == "completed"
    assert store.resolve_run_id("abcd") == "abcdef123456"
    store.append_run_event(_start("abcxyz000000", 1))
    with pytest.raises(UnknownRunError, match="ambiguous"):
        store.resolve_run_id("abc")
    with pytest.raises(UnknownRunError):
        store.resolve_run_id("zzz")


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory) -> tuple[bytes, list[dict]]:
    store = TraceStore(HomeLayout(tmp_path_factory.mktemp("fuzz")))
    path = store.append("steps", [_step("r1", n) for n in (1, 2, 3)], partition="r1", name="sample")
    return path.read_bytes(), store.steps("r1")


def _read_damaged(tmp_path, content: bytes) -> list[dict]:
    store = TraceStore(HomeLayout(tmp_path))
    directory = store.root / "steps" / "r1"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "damaged.parquet").write_bytes(content)
    return store.steps("r1")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_a_truncated_file_is_an_error_never_fewer_rows(tmp_path, sample_file, cut):
    content, rows = sample_file
    cut = cut % len(content)
    with pytest.raises(TraceCorruptError):
        _read_damaged(tmp_path, content[:cut])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0, max_value=10_000), flip=st.integers(min_value=1, max_value=255))
def test_a_flipped_byte_is_an_error_or_changes_nothing(tmp_path, sample_file, position, flip):
    content, rows = sample_file
    position = position % len(content)
    damaged = content[:position] + bytes([content[position] ^ flip]) + content[position + 1 :]
    try:
        read = _read_damaged(tmp_path, damaged)
    except TraceCorruptError:
        return
    assert read == rows  # a byte the reader does not depend on (e.g. statistics); the data is unchanged


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=2000))
def test_garbage_files_are_errors(tmp_path, garbage):
    with pytest.raises(TraceCorruptError):
        _read_damaged(tmp_path, garbage)


def test_files_from_before_a_column_existed_read_it_as_nulls_beside_new_ones(store):
    """Many files are read in one dataset scan; an older file's missing columns must still come back as nulls."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    store.append_step({**_step("r1", 2), "approval": "approved"})
    old = {k: v for k, v in _step("r1", 1).items()}  # the columns an early version wrote, nothing newer
    pq.write_table(pa.Table.from_pylist([old]), store.root / "steps" / "r1" / "step-00001-old.parquet")
    first, second = store.steps("r1")
    assert (first["step"], first["approval"], first["action"]) == (1, None, "load_dataset")
    assert (second["step"], second["approval"]) == (2, "approved")
    assert set(first) == set(second)
