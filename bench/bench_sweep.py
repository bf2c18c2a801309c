#!/usr/bin/env python
"""Wall-clock cost of ``rlam sweep`` against the same forks run one after another with ``rlam fork``.

    python bench/bench_sweep.py [--points N] [--workers 1,2]

In a fresh temporary RLAM_HOME (its own managed Prefect server, stopped at the end): record a
fixed-planner run, then time N sequential ``rlam fork --step 4 --set train_model.C=<new>``
commands, and one ``rlam sweep`` over N new C values per worker count. Every figure is one
fresh process timed from outside, one sample each, so it includes interpreter start-up, imports
and (for a sweep) starting the local Dask cluster. Measurement only: nothing is asserted.
Prints JSON on stdout and writes bench/RESULTS_sweep.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _rlam(home: Path, *args: str) -> tuple[float, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL" and not k.startswith("RLAM_")}
    env["RLAM_HOME"] = str(home)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rlam_prefect.cli", *args, "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"rlam {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return elapsed, json.loads(proc.stdout) if proc.stdout.strip() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    results: dict[str, Any] = {"points": args.points, "cpus": os.cpu_count(), "python": platform.python_version(), "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="rlam-bench-sweep-") as tmp:
        home = Path(tmp) / "home"
        try:
            _, parent = _rlam(home, "run", "--planner", "fixed")
            values = iter(round(0.001 * i, 3) for i in range(1, 1000))
            print(f"parent {parent['run_id']}; {args.points} sequential forks...", file=sys.stderr)
            sequential = 0.0
            for _ in range(args.points):
                elapsed, fork = _rlam(home, "fork", parent["run_id"], "--step", "4", "--set", f"train_model.C={next(values)}")
                assert (fork["executed"], fork["cached"]) == (2, 3), fork
                sequential += elapsed
            results["sequential_forks_s"] = round(sequential, 2)
            for workers in worker_counts:
                grid = ",".join(str(next(values)) for _ in range(args.points))
                print(f"sweep of {args.points} points on {workers} worker(s)...", file=sys.stderr)
                elapsed, sweep = _rlam(home, "sweep", parent["run_id"], "--step", "4", "--grid", f"train_model.C={grid}", "--workers", str(workers))
                assert all((f["executed"], f["cached"]) == (2, 3) for f in sweep["forks"]), sweep
                results[f"sweep_{workers}_workers_s"] = round(elapsed, 2)
        finally:
            env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
            subprocess.run([sys.executable, "-m", "rlam_prefect.cli", "server", "stop"], env={**env, "RLAM_HOME": str(home)}, cwd=ROOT, capture_output=True)
    print(json.dumps(results, indent=2))
    lines = [
        "# rlam sweep vs sequential rlam fork",
        "",
        f"`python bench/bench_sweep.py --points {args.points} --workers {args.workers}` on {results['when']}: {results['cpus']} CPUs, Python {results['python']}.",
        "One sample per row (noisy: the machine was shared). Each row covers the same number of forks, each executing steps 4-5 and reusing 1-3.",
        "",
        "| what | wall time | vs sequential |",
        "|---|---:|---:|",
        f"| {args.points} x `rlam fork` one after another | {results['sequential_forks_s']:.1f} s | 1.00 |",
    ]
    for workers in worker_counts:
        seconds = results[f"sweep_{workers}_workers_s"]
        lines.append(f"| `rlam sweep` of {args.points} points, {workers} local worker(s) | {seconds:.1f} s | {seconds / results['sequential_forks_s']:.2f} |")
    (ROOT / "bench" / "RESULTS_sweep.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
