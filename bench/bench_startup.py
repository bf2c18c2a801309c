#!/usr/bin/env python
"""Start-up of the embedded default (issue 20, item 5), for one or more checkouts in one run.

    python bench/bench_startup.py --target before=/tmp/before/.venv/bin/python:/tmp/before \\
        --target after=.venv/bin/python:. --out bench/startup.json [--idle-s 60] [--script-repeats 3] [--default-repeats 3]

For each target (a label, a virtualenv's interpreter and the checkout it runs from), in this order:

1. ``rlam run --pipeline script`` (plain Python, no Prefect): one untimed, then ``--script-repeats`` timed.
2. Home A, with a fresh per-user template cache (``RLAM_CACHE_DIR``): the first ``rlam run`` in a fresh
   RLAM_HOME, the ``rlam replay`` typed right after it, the next replay, a fork from step 4, a fully
   cached ``rlam run``; then ``rlam server stop``. This is the first home on a new machine: checkouts
   that ship a template for their Prefect (``rlam_prefect/local/templates/``) unpack it into the empty
   cache, older ones migrate the home's own database and build the template in the background.
3. Homes C1..Cn (``--default-repeats``), with the warm cache: the first ``rlam run`` with the default planner
   (the README's command: the in-process model through litellm), then ``rlam server stop``.
4. Home B, with the cache home A left (warm): the same five commands, then the idle CPU of the
   server's process group and of the warm executor over ``--idle-s`` seconds (utime + stime from
   /proc, after ``--settle-s`` seconds of quiet), then ``rlam server stop``: its wall time and every
   process left behind (the server's process group, the executor, anything whose command line
   names the home or the server's port).
5. Script again (``--script-repeats`` timed): the Script figure is the median of all its samples.

Checkouts without a template cache ignore ``RLAM_CACHE_DIR``; for them home A and home B are the same
cold case. Every command is a fresh process of the target's console script with ``--json``; its
executed/cached counts are checked. PREFECT_* and RLAM_* are removed from the children's environment.
Load averages are recorded before and after each target. Measurement only: nothing is asserted.
Needs only the standard library.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

COMMANDS = (  # (name, argv after `rlam`, expected executed, expected cached); RUN is the first run's id
    ("first_run", ["run", "--planner", "fixed", "--json"], 5, 0),
    ("replay_right_after", ["replay", "RUN", "--json"], 0, 5),
    ("replay_next", ["replay", "RUN", "--json"], 0, 5),
    ("fork", ["fork", "RUN", "--step", "4", "--set", "train_model.C=0.3", "--planner", "fixed", "--json"], 2, 3),
    ("run_cached", ["run", "--planner", "fixed", "--json"], 0, 5),
)
SCRIPT = ["run", "--pipeline", "script", "--json"]
DEFAULT_PLANNER_RUN = ["run", "--json"]  # the README's command: the default planner, through litellm


def log(message: str) -> None:
    print(f"[bench_startup {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def child_env(home: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RLAM_"))}
    env.update(RLAM_HOME=str(home), RLAM_CACHE_DIR=str(cache))
    return env


def rlam(python: Path, cwd: Path, args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    script = python.parent / "rlam"
    started = time.monotonic()
    done = subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return time.monotonic() - started, done


def sequence(python: Path, cwd: Path, home: Path, cache: Path, checks: list[str], label: str) -> dict[str, float]:
    env = child_env(home, cache)
    times: dict[str, float] = {}
    run_id = ""
    for name, argv, executed, cached in COMMANDS:
        args = [run_id if a == "RUN" else a for a in argv]
        seconds, done = rlam(python, cwd, args, env)
        times[name] = round(seconds, 3)
        try:
            report = json.loads(done.stdout)
        except json.JSONDecodeError:
            checks.append(f"{label} {name}: exit {done.returncode}, no JSON: {done.stderr.strip()[-300:]}")
            continue
        run_id = run_id or report["run_id"]
        if (report.get("executed"), report.get("cached")) != (executed, cached) or done.returncode != 0:
            checks.append(f"{label} {name}: exit {done.returncode}, executed {report.get('executed')} cached {report.get('cached')}, expected {executed}/{cached}")
        log(f"{label} {name}: {seconds:.2f} s")
    return times


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def processes() -> list[dict[str, Any]]:
    rows = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        rows.append({"pid": int(stat.parent.name), "state": fields[0], "pgid": int(fields[2]), "cmd": cmd})
    return rows


def read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def idle_cpu(home: Path, idle_s: float, settle_s: float) -> dict[str, Any]:
    """CPU of the server's process group and of the executor while nothing is asked of them."""
    time.sleep(settle_s)
    state, executor = read_json(home / "prefect" / "server.json"), read_json(home / "prefect" / "executor.json")
    group = state.get("supervisor_pid")
    server_pids = [p["pid"] for p in processes() if group and p["pgid"] == group]
    executor_pids = [executor["pid"]] if executor.get("pid") else []
    s0, e0, t0 = cpu_seconds(server_pids), cpu_seconds(executor_pids), time.monotonic()
    time.sleep(idle_s)
    s1, e1, t1 = cpu_seconds(server_pids), cpu_seconds(executor_pids), time.monotonic()
    wall = t1 - t0
    return {"seconds": round(wall, 1), "server_processes": len(server_pids), "server_cpu_pct": round(100 * (s1 - s0) / wall, 2),
            "executor_cpu_pct": round(100 * (e1 - e0) / wall, 2) if executor_pids else None}


def stop(python: Path, cwd: Path, home: Path, cache: Path) -> dict[str, Any]:
    state = read_json(home / "prefect" / "server.json")
    executor = read_json(home / "prefect" / "executor.json")
    port = str(state.get("port", "-"))
    seconds, done = rlam(python, cwd, ["server", "stop"], child_env(home, cache))
    time.sleep(0.2)  # a process that exits right after the command returned is not left behind
    left = [p for p in processes() if p["state"] != "Z" and p["pid"] != os.getpid() and (
        (state.get("supervisor_pid") and p["pgid"] == state["supervisor_pid"]) or p["pid"] == executor.get("pid")
        or str(home) in p["cmd"] or f"--port {port}" in p["cmd"])]
    for p in left:  # leave the machine as it was; the report names them
        try:
            os.kill(p["pid"], 9)
        except ProcessLookupError:
            pass
    return {"seconds": round(seconds, 3), "exit": done.returncode, "left_behind": [f"{p['pid']} {p['cmd'][:120]}" for p in left]}


def default_planner_runs(python: Path, cwd: Path, scratch: Path, cache: Path, repeats: int, checks: list[str], label: str) -> list[float]:
    """The first ``rlam run`` (default planner) in each of ``repeats`` fresh homes, each stopped after."""
    samples = []
    for i in range(repeats):
        home = scratch / f"home-c{i + 1}"
        seconds, done = rlam(python, cwd, DEFAULT_PLANNER_RUN, child_env(home, cache))
        try:
            report = json.loads(done.stdout)
        except json.JSONDecodeError:
            report = {}
        if done.returncode != 0 or (report.get("executed"), report.get("cached")) != (5, 0):
            checks.append(f"{label} C{i + 1} first run, default planner: exit {done.returncode}, executed {report.get('executed')} cached {report.get('cached')}")
        samples.append(round(seconds, 3))
        log(f"{label} C{i + 1} first run, default planner: {seconds:.2f} s")
        left = stop(python, cwd, home, cache)["left_behind"]
        checks += [f"{label} C{i + 1}: left behind {p}" for p in left]
    return samples


def script_samples(python: Path, cwd: Path, scratch: Path, repeats: int) -> list[float]:
    env = child_env(scratch / "script-home", scratch / "script-cache")
    samples = []
    for _ in range(repeats):
        seconds, done = rlam(python, cwd, SCRIPT, env)
        if done.returncode == 0:
            samples.append(round(seconds, 3))
    return samples


def measure(label: str, python: Path, cwd: Path, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"label": label, "python": str(python), "cwd": str(cwd), "load_before": os.getloadavg(), "checks": []}
    result["commit"] = subprocess.run(["git", "-C", str(cwd), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result["dirty"] = bool(subprocess.run(["git", "-C", str(cwd), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip())
    rlam(python, cwd, SCRIPT, child_env(scratch / "script-home", scratch / "script-cache"))  # untimed: file caches
    script = script_samples(python, cwd, scratch, args.script_repeats)
    cache = scratch / "cache"
    home_a, home_b = scratch / "home-a", scratch / "home-b"
    log(f"{label}: home A, fresh template cache")
    result["fresh_cache"] = sequence(python, cwd, home_a, cache, result["checks"], f"{label} A")
    result["fresh_cache_stop"] = stop(python, cwd, home_a, cache)
    result["default_planner_first_runs"] = default_planner_runs(python, cwd, scratch, cache, args.default_repeats, result["checks"], label)
    log(f"{label}: home B, warm template cache")
    result["warm_cache"] = sequence(python, cwd, home_b, cache, result["checks"], f"{label} B")
    log(f"{label}: idle CPU over {args.idle_s:g} s")
    result["idle"] = idle_cpu(home_b, args.idle_s, args.settle_s)
    result["stop"] = stop(python, cwd, home_b, cache)
    log(f"{label}: server stop {result['stop']['seconds']} s, left {len(result['stop']['left_behind'])}")
    script += script_samples(python, cwd, scratch, args.script_repeats)
    result["script_samples"] = script
    result["script_median"] = statistics.median(script) if script else None
    result["load_after"] = os.getloadavg()
    return result


def render(results: dict[str, Any]) -> str:
    lines = [f"# Start-up of the embedded default ({results['date']})", "",
             f"Machine: {results['cpus']} CPUs, Python {results['python']}. Produced by `python bench/bench_startup.py {' '.join(results['argv'])}`.",
             "One run; every figure is one sample (Script: the median of its samples in the same target's block).", ""]
    head = "| | " + " | ".join(f"{r['label']} ({r['commit']}{', dirty' if r['dirty'] else ''})" for r in results["targets"]) + " |"
    lines += [head, "|---|" + "---|" * len(results["targets"])]

    def row(name: str, cell: Any) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(r) for r in results["targets"]) + " |")

    def ratio(r: dict[str, Any], v: float) -> str:
        return f"{v:.2f} s ({v / r['script_median']:.2f}x)" if r["script_median"] else f"{v:.2f} s"

    row("load average before / after", lambda r: f"{r['load_before'][0]:.2f} / {r['load_after'][0]:.2f}")
    row("Script pipeline (median)", lambda r: f"{r['script_median']:.2f} s (n={len(r['script_samples'])})")
    for block, title in (("fresh_cache", "fresh template cache"), ("warm_cache", "warm template cache")):
        for name, *_ in COMMANDS:
            row(f"{title}: {name.replace('_', ' ')}", lambda r, b=block, n=name: ratio(r, r[b][n]) if n in r[b] else "-")
    row("warm template cache: first run, default planner (each in a new home)", lambda r: ", ".join(f"{v:.2f}" for v in r.get("default_planner_first_runs", [])) + " s")
    row("idle server CPU (% of one core)", lambda r: f"{r['idle']['server_cpu_pct']:.2f} % over {r['idle']['seconds']:g} s ({r['idle']['server_processes']} processes)")
    row("idle executor CPU (% of one core)", lambda r: "-" if r["idle"]["executor_cpu_pct"] is None else f"{r['idle']['executor_cpu_pct']:.2f} %")
    row("`rlam server stop` (fresh-cache home)", lambda r: f"{r['fresh_cache_stop']['seconds']:.2f} s, {len(r['fresh_cache_stop']['left_behind'])} left")
    row("`rlam server stop` (after idle)", lambda r: f"{r['stop']['seconds']:.2f} s, {len(r['stop']['left_behind'])} left")
    lines += ["", "Ratios are to the Script median of the same target. Checks (executed/cached counts, exit codes):", ""]
    problems = [c for r in results["targets"] for c in r["checks"]] + [
        f"{r['label']}: left behind {p}" for r in results["targets"] for key in ("fresh_cache_stop", "stop") for p in r[key]["left_behind"]]
    lines += [f"- {p}" for p in problems] or ["- all commands exited 0 with the expected executed/cached counts; no process left behind"]
    lines += ["", "```json", json.dumps(results, indent=1), "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", required=True, help="LABEL=PYTHON:CHECKOUT")
    parser.add_argument("--out", type=Path, required=True, help="JSON output; the Markdown goes next to it (.md)")
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--settle-s", type=float, default=10.0)
    parser.add_argument("--script-repeats", type=int, default=3)
    parser.add_argument("--default-repeats", type=int, default=3, help="first runs with the default planner, each in a new home")
    args = parser.parse_args()
    results: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
                               "python": sys.version.split()[0], "argv": sys.argv[1:], "targets": []}
    for spec in args.target:
        label, _, rest = spec.partition("=")
        python, _, cwd = rest.partition(":")
        scratch = Path(tempfile.mkdtemp(prefix=f"bench-startup-{label}-"))
        try:
            results["targets"].append(measure(label, Path(python).absolute(), Path(cwd).resolve(), scratch, args))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    args.out.write_text(json.dumps(results, indent=1))
    args.out.with_suffix(".md").write_text(render(results))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
