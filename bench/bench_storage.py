#!/usr/bin/env python
"""A replay and a fork with traces and results on an object store, against the same on local disk (issue 20).

    python bench/bench_storage.py [--repeats N] [--baseline-python /work/main/.venv/bin/python --baseline-cwd /work/main]
                                  [--out bench/RESULTS_storage.md]

The object store is moto's S3 server on 127.0.0.1 (in this process): it measures the s3fs code path
and its request count, not a real S3's latency. One Prefect server (this checkout's embedded one,
in a temporary home) serves every command, so server start-up is not measured. For each storage
(local RLAM_HOME; RLAM_STORE_URL=s3://...), in a fresh home: one untimed ``rlam run --planner fixed``
of the seed workflow, then N timed ``rlam replay RUN`` and N ``rlam fork RUN --step 4 --set
train_model.C=...`` (a new C each time, so steps 4-5 execute). With ``--baseline-*`` the local
storage is also measured with another checkout's rlam (the code before this change), to show that
local paths did not slow down. Measurement only: nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rlam(python: str, cwd: Path, env: dict[str, str], *args: str) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([python, "-m", "rlam_prefect.cli", *args, "--json"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"rlam {' '.join(args)} exited {proc.returncode}: {proc.stderr[-1500:]}")
    return elapsed, json.loads(proc.stdout)


def measure(label: str, python: str, cwd: Path, env: dict[str, str], repeats: int) -> dict:
    _, run = rlam(python, cwd, env, "run", "--planner", "fixed")
    assert run["status"] == "completed", run
    replays, forks = [], []
    for i in range(repeats):
        seconds, replay = rlam(python, cwd, env, "replay", run["run_id"])
        assert replay["identical"] and replay["executed"] == 0, replay
        replays.append(seconds)
        seconds, fork = rlam(python, cwd, env, "fork", run["run_id"], "--step", "4", "--set", f"train_model.C={0.11 + i / 100:.2f}")
        assert fork["cached"] >= 3 and fork["executed"] >= 2, fork
        forks.append(seconds)
        print(f"{label}: replay {replays[-1]:.2f}s fork {forks[-1]:.2f}s", file=sys.stderr)
    return {"label": label, "replay": replays, "fork": forks}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-python")
    parser.add_argument("--baseline-cwd", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS_storage.md")
    args = parser.parse_args()

    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    from rlam_prefect.core.home import HomeLayout
    from rlam_prefect.local import server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    aws = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1").create_bucket(Bucket="bench")
    with tempfile.TemporaryDirectory(prefix="rlam-bench-storage-") as tmp:
        server_home = HomeLayout(Path(tmp) / "server-home")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RLAM_", "PREFECT_", "AWS_"))}
        try:
            api = server.ensure_server(server_home)
            base.update(PREFECT_API_URL=api, PREFECT_HOME=str(server_home.prefect), LITELLM_LOCAL_MODEL_COST_MAP="True")
            here = sys.executable
            rows = []
            if args.baseline_python:
                env = {**base, "RLAM_HOME": f"{tmp}/baseline"}
                rows.append(measure("local disk, before (baseline checkout)", args.baseline_python, args.baseline_cwd or ROOT, env, args.repeats))
            rows.append(measure("local disk", here, ROOT, {**base, "RLAM_HOME": f"{tmp}/local"}, args.repeats))
            rows.append(measure("S3 (moto on 127.0.0.1)", here, ROOT, {**base, **aws, "RLAM_HOME": f"{tmp}/s3", "RLAM_STORE_URL": "s3://bench/rlam"}, args.repeats))
        finally:
            server.stop(server_home)
            moto.stop()
    load = Path("/proc/loadavg").read_text().split()[:3]
    write(args.out, rows, load, args.repeats)


def write(out: Path, rows: list[dict], load: list[str], repeats: int) -> None:
    local = next(r for r in rows if r["label"] == "local disk")
    lines = [
        "# Storage: replay and fork with results on an object store vs local disk",
        "",
        f"`python bench/bench_storage.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {' '.join(load)} on 2 cores,",
        f"median of {repeats} each, one bench run; the seed workflow, `--planner fixed`; one Prefect server for all).",
        "The object store is moto's S3 server on 127.0.0.1: this is s3fs's request path, not a real S3's latency.",
        "",
        "| storage | replay (s) | fork from step 4 (s) | replay vs local | fork vs local |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        rep, fork = statistics.median(row["replay"]), statistics.median(row["fork"])
        lines.append(f"| {row['label']} | {rep:.2f} | {fork:.2f} | {rep / statistics.median(local['replay']):.2f}x | {fork / statistics.median(local['fork']):.2f}x |")
    lines += ["", "All times: " + "; ".join(f"{r['label']}: replay {[round(x, 2) for x in r['replay']]}, fork {[round(x, 2) for x in r['fork']]}" for r in rows), ""]
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
