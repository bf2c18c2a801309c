#!/usr/bin/env python
"""A sweep of 8 forks on 1, 2 and 4 Dask workers against a PostgreSQL-backed Prefect server: wall time and executions.

    python bench/bench_workers.py [--points 8] [--workers 1,2,4] [--db postgres|sqlite]

In a temporary directory: a copy of the repository's project whose actions append one line per
executed body to a witness file (outside the library, as in tests/test_cluster.py), a throwaway
PostgreSQL cluster (Debian's binaries; ``--db sqlite`` skips it) and rlam's own server on it
(``PREFECT_API_DATABASE_CONNECTION_URL``). It records a fixed-planner run, then times one
``rlam sweep --step 4 --grid train_model.C=<8 new values> --workers N`` per worker count. Each
figure is one fresh process timed from outside (interpreter start-up, imports and starting the
local Dask cluster included), one sample each. Measurement only: nothing is asserted; every
sweep's executions are counted by the witness and shown next to the expected 2 per fork.
Prints JSON on stdout and writes bench/RESULTS_workers.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PG_INITDB = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))

WITNESS_MODULE = '''"""Bench-only: every action body appends its name to $RLAM_BENCH_WITNESS (rlam hashes the wrapped function)."""

import functools
import os

from rlam_prefect import DataFile, DataFileError, Effect, Precondition  # noqa: F401 (re-exported to the actions)
from rlam_prefect import action as _action


def action(*args, **kwargs):
    def register(fn):
        @functools.wraps(fn)
        def counted(*a, **kw):
            with open(os.environ["RLAM_BENCH_WITNESS"], "a") as handle:
                handle.write(fn.__name__ + "\\n")
            return fn(*a, **kw)

        return _action(*args, **kwargs)(counted)

    return register
'''


def _witnessed_project(project: Path) -> None:
    project.mkdir()
    shutil.copy(ROOT / "pyproject.toml", project)  # its [tool.rlam] names the project's actions
    shutil.copytree(ROOT / "tasks", project / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    for module in (project / "tasks").glob("*.py"):
        module.write_text(re.sub(r"^from rlam_prefect import ", "from tasks.witness import ", module.read_text(), flags=re.M))
    (project / "tasks" / "witness.py").write_text(WITNESS_MODULE)


def _as_postgres(command: list[str]) -> None:
    line = shlex.join(command)
    argv = ["su", "postgres", "-c", line] if os.geteuid() == 0 else ["sh", "-c", line]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)


def _start_postgres(base: Path) -> tuple[str, Path]:
    """A throwaway cluster on a free port; returns its asyncpg URL and data directory."""
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    bin_dir, data = PG_INITDB[-1].parent, base / "data"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"])
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
    _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "start", "-w"])
    _as_postgres([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "prefect"])
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect", data


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres" if PG_INITDB else "sqlite")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    results: dict[str, Any] = {"points": args.points, "db": args.db, "cpus": os.cpu_count(), "python": platform.python_version(),
                               "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "load_start": _load(), "sweeps": []}
    tmp = Path(tempfile.mkdtemp(prefix="rlam-bench-workers-"))
    pg_data: Path | None = None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RLAM_"))}
    env.update(RLAM_HOME=str(tmp / "home"), RLAM_BENCH_WITNESS=str(tmp / "witness.txt"), LITELLM_LOCAL_MODEL_COST_MAP="True")
    project = tmp / "project"
    _witnessed_project(project)

    def rlam(*cli: str) -> tuple[float, dict[str, Any], int]:
        witness = Path(env["RLAM_BENCH_WITNESS"])
        witness.write_text("")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "rlam_prefect.cli", *cli, "--json"], capture_output=True, text=True, env=env, cwd=project, timeout=1800)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"rlam {' '.join(cli)} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
        return elapsed, json.loads(proc.stdout), len(witness.read_text().splitlines())

    try:
        if args.db == "postgres":
            pg_dir = Path(tempfile.mkdtemp(prefix="rlam-bench-pg-"))  # its own: the postgres user cannot enter tmp (0700)
            env["PREFECT_API_DATABASE_CONNECTION_URL"], pg_data = _start_postgres(pg_dir)
        elapsed, parent, executed = rlam("run", "--planner", "fixed")
        results["first_run_s"], results["first_run_executions"] = round(elapsed, 2), executed
        values = iter(round(0.001 * i, 3) for i in range(1, 10_000))
        for workers in counts:
            grid = ",".join(str(next(values)) for _ in range(args.points))
            print(f"sweep of {args.points} forks on {workers} Dask worker(s)...", file=sys.stderr)
            load_before = _load()
            elapsed, sweep, executed = rlam("sweep", parent["run_id"], "--step", "4", "--grid", f"train_model.C={grid}", "--workers", str(workers))
            results["sweeps"].append({
                "workers": workers, "wall_s": round(elapsed, 2), "executions": executed, "expected": 2 * args.points,
                "completed": sum(f["status"] == "completed" for f in sweep["forks"]), "load_before": load_before,
            })
    finally:
        subprocess.run([sys.executable, "-m", "rlam_prefect.cli", "server", "stop"], env=env, cwd=project, capture_output=True)
        if pg_data is not None:
            _as_postgres([str(PG_INITDB[-1].parent / "pg_ctl"), "-D", str(pg_data), "stop", "-m", "fast"])
            shutil.rmtree(pg_data.parent, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_end"] = _load()
    print(json.dumps(results, indent=2))
    _write(results, args)


def _write(results: dict[str, Any], args: argparse.Namespace) -> None:
    base = results["sweeps"][0]["wall_s"] if results["sweeps"] else 1.0
    lines = [
        "# A sweep of forks on 1, 2 and 4 Dask workers (PostgreSQL-backed Prefect server)",
        "",
        f"`python bench/bench_workers.py --points {args.points} --workers {args.workers} --db {args.db}` on {results['when']}:",
        f"{results['cpus']} CPUs, Python {results['python']}, load average (1/5/15 min) {results['load_start']} at start, {results['load_end']} at end.",
        "One sample per row, each a fresh `rlam sweep` process timed from outside (imports and the local Dask cluster's start-up included);",
        "the machine was shared with other work. Each fork reuses steps 1-3 and executes 4-5 (train, evaluate); executions are",
        f"counted by a witness in the action bodies, outside the library. Recording the parent run (first command, server start-up on {args.db}):",
        f"{results['first_run_s']:.1f} s, {results['first_run_executions']} executions.",
        "",
        "| Dask workers | forks completed | wall time | vs 1 worker | executions (witness) | expected | load before |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in results["sweeps"]:
        lines.append(f"| {s['workers']} | {s['completed']}/{args.points} | {s['wall_s']:.1f} s | {s['wall_s'] / base:.2f} | {s['executions']} | {s['expected']} | {s['load_before']} |")
    (ROOT / "bench" / "RESULTS_workers.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
