#!/usr/bin/env python
"""Trace scale: list runs, load one run's steps and lineage, append one run, with 10^5 runs / 10^6 step rows.

    python bench/bench_trace_scale.py [--runs N] [--steps-per-run S] [--root DIR]   (normally run by bench/run.py)

Bulk generation: writing 1.2x10^6 files through ``TraceStore.append`` (fsync per file and per
directory) would take hours here, so the generator writes the SAME layout and schema with
pyarrow directly (``traces/<table>/<run_id>/<name>.parquet``, page checksums on) but without
fsync. Each run has a start and an end event and S step rows; every 10th run is a fork of the
run before it (so lineage walks an ancestry). Rows are a real run's shape with distinct ids.
What is measured afterwards goes through the real ``TraceStore`` and ``rlam_prefect.record.lineage``:
before and after ``TraceStore.compact()``. Measurement only: nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import datetime as dt  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from rlam_prefect.core.home import HomeLayout  # noqa: E402
from rlam_prefect.record.schema import TABLES  # noqa: E402
from rlam_prefect.record.store import TraceStore  # noqa: E402

ACTIONS = ("load_dataset", "analyze_data", "preprocess_data", "train_model", "evaluate_model")
KINDS = ("Dataset", "Analysis", "Split", "TrainedModel", "Metrics")


def _h(seed: str) -> str:
    return "sha256:" + uuid.uuid5(uuid.NAMESPACE_OID, seed).hex * 2


def _run_rows(run_id: str, parent: str | None, i: int, steps: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i)
    common = {"run_id": run_id, "prefect_flow_run_id": str(uuid.uuid4()), "pipeline": "rlam", "mode": "fork" if parent else "run",
              "parent_run_id": parent, "fork_step": 4 if parent else None, "overrides": json.dumps({"train_model": {"C": 0.5}}) if parent else None,
              "planner": "fixed", "planner_options": json.dumps({"temperature": 0.0, "seed": 0, "max_steps": 12}), "injected_failures": "[]",
              "started_at": at, "env_hash": _h("env"), "environment": json.dumps({"python": "3.11.7", "numpy": "2.4.6"}),
              "action_modules": json.dumps(["tasks"]), "rlam_version": "0.1.0", "hostname": "bench", "pid": 1}
    runs = [{**common, "event": "start", "status": "running", "recorded_at": at},
            {**common, "event": "end", "status": "completed", "ended_at": at, "recorded_at": at, "n_steps": steps, "executed": steps,
             "cached": 0, "llm_calls": 0, "metrics": json.dumps({"accuracy": 0.98})}]
    rows = []
    for s in range(1, steps + 1):
        a = (s - 1) % len(ACTIONS)
        rows.append({"run_id": run_id, "step": s, "action": ACTIONS[a], "params": json.dumps({"C": 1.0, "model": "logistic_regression"}),
                     "input_hashes": json.dumps({"dataset": _h(f"{run_id}{s - 1}")}) if s > 1 else "{}", "output_hash": _h(f"{run_id}{s}"),
                     "output_kind": KINDS[a], "result_digest": _h(f"d{run_id}{s}"), "cache_key": _h(f"k{run_id}{s}")[7:],
                     "code_version": _h(ACTIONS[a])[7:23], "env_hash": _h("env"), "status": "executed", "started_at": at, "duration_s": 0.05,
                     "prefect_task_run_id": str(uuid.uuid4()), "reason": "seed order", "summary": json.dumps({"n": 569}), "recorded_at": at})
    return runs, rows


RUN_MARK, PARENT_MARK = "RUNIDMARK000", "PARENTMARK00"  # 12 characters, like a run id


def _templates(steps: int) -> dict[str, bytes]:
    """File bytes of one run with placeholder ids, written by pyarrow with the store's schema."""
    out: dict[str, bytes] = {}
    for kind, parent in (("run", None), ("fork", PARENT_MARK)):
        runs, rows = _run_rows(RUN_MARK, parent, 0, steps)
        for name, row in zip(("00-start", "01-end"), runs):
            out[f"{kind}/runs/{name}"] = _bytes([row], "runs")
    for row in _run_rows(RUN_MARK, None, 0, steps)[1]:
        out[f"steps/step-{row['step']:05d}"] = _bytes([row], "steps")
    return out


def _bytes(rows: list[dict[str, Any]], table: str) -> bytes:
    sink = pa.BufferOutputStream()
    # no page checksums here: the ids are patched into the bytes below, which a checksum would (rightly) reject
    pq.write_table(pa.Table.from_pylist(rows, schema=TABLES[table]), sink, write_page_checksum=False)
    return sink.getvalue().to_pybytes()


def generate(traces: Path, n_runs: int, steps: int) -> list[str]:
    """Write n_runs runs in the store's layout; returns the run ids (bulk, no fsync: see the module docstring).

    Each file is a pyarrow-written template whose 12-character placeholder ids are replaced by the
    run's ids (same length, so every Parquet offset stays valid); ~20x faster than one pyarrow write per file.
    """
    templates = _templates(steps)
    ids: list[str] = []
    for i in range(n_runs):
        run_id = uuid.UUID(int=random.getrandbits(128)).hex[:12]
        parent = ids[-1] if i % 10 == 9 else None
        kind = "fork" if parent else "run"
        patch = lambda data: data.replace(RUN_MARK.encode(), run_id.encode()).replace(PARENT_MARK.encode(), (parent or "").encode())  # noqa: E731
        run_dir, step_dir = traces / "runs" / run_id, traces / "steps" / run_id
        run_dir.mkdir(parents=True)
        step_dir.mkdir(parents=True)
        for name in ("00-start", "01-end"):
            (run_dir / f"{name}.parquet").write_bytes(patch(templates[f"{kind}/runs/{name}"]))
        for s in range(1, steps + 1):
            (step_dir / f"step-{s:05d}-{uuid.uuid4().hex[:8]}.parquet").write_bytes(patch(templates[f"steps/step-{s:05d}"]))
        ids.append(run_id)
        if i and i % 10000 == 0:
            print(f"[trace scale] generated {i}/{n_runs} runs", file=sys.stderr, flush=True)
    return ids


def disk_usage(traces: Path) -> dict[str, int]:
    files = total = 0
    for dirpath, _, names in os.walk(traces):
        for n in names:
            files += 1
            total += os.stat(os.path.join(dirpath, n)).st_size
    return {"files": files, "bytes": total}


def timed(fn: Any, repeats: int = 1) -> dict[str, Any]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        samples.append(time.perf_counter() - start)
    return {"median_ms": round(statistics.median(samples) * 1000, 2), "samples_ms": [round(s * 1000, 2) for s in samples], "value": value}


def append_one_run(store: TraceStore, steps: int) -> int:
    """One run's events and step rows through the real writer (fsync per file)."""
    run_id = uuid.uuid4().hex[:12]
    runs, rows = _run_rows(run_id, None, 0, steps)
    store.append_run_event(runs[0])
    for row in rows:
        store.append_step(row)
    store.append_run_event(runs[1])
    return steps + 2


def measure(n_runs: int, steps: int, root: Path, list_uncompacted: bool = True) -> dict[str, Any]:
    from rlam_prefect.record.lineage import build_lineage

    home = HomeLayout(root / "home")
    start = time.perf_counter()
    ids = generate(home.traces, n_runs, steps)
    generation_s = time.perf_counter() - start
    store = TraceStore(home)
    forks = [r for i, r in enumerate(ids) if i % 10 == 9]
    probe = random.Random(0).sample(forks, min(5, len(forks)))

    def per_run() -> dict[str, Any]:
        fresh = lambda: TraceStore(home)  # noqa: E731 - a new store per call, as each CLI command makes one
        return {
            "load_one_run_steps": timed(lambda: len(fresh().steps(probe[0])), 5) | {"rows": steps},
            "lineage_one_run": timed(lambda: len(build_lineage(fresh(), random.choice(probe))["steps"]), 5),
        }

    result: dict[str, Any] = {"runs": n_runs, "step_rows": n_runs * steps, "steps_per_run": steps, "generation_s": round(generation_s, 1),
                              "disk_before_compact": disk_usage(home.traces)}
    result["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if list_uncompacted:
        print("[trace scale] listing runs (uncompacted)", file=sys.stderr, flush=True)
        result["list_runs_uncompacted"] = timed(lambda: len(TraceStore(home).runs()))
    result.update({f"{k}_uncompacted": v for k, v in per_run().items()})
    result["append_one_run"] = timed(lambda: append_one_run(store, steps), 3)
    print("[trace scale] compacting", file=sys.stderr, flush=True)
    compaction = timed(lambda: TraceStore(home).compact())
    result["compact"] = {"seconds": round(compaction["median_ms"] / 1000, 2), "runs": compaction["value"]["runs"], "rows": compaction["value"]["rows"]}
    result["append_one_run_compacted"] = timed(lambda: append_one_run(store, steps), 3)  # finished runs after compaction: read from their partitions
    result["list_runs_compacted"] = timed(lambda: len(TraceStore(home).runs()), 3)
    result.update({f"{k}_compacted": v for k, v in per_run().items()})
    result["disk_after_compact"] = disk_usage(home.traces)
    result["lineage_target_ms"] = 100
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps-per-run", type=int, default=10)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--skip-uncompacted-list", action="store_true", help="do not time listing before compaction (two file reads per run)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    random.seed(0)
    root = args.root or Path(tempfile.mkdtemp(prefix="rlam-trace-scale-"))
    result = measure(args.runs, args.steps_per_run, root, list_uncompacted=not args.skip_uncompacted_list)
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
