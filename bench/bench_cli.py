#!/usr/bin/env python
"""The CLI's fast paths and warm flow commands of one checkout, for before/after comparisons (issue 16).

    python bench/bench_cli.py --python VENV/bin/python --cwd CHECKOUT [--cli-module MOD] [--repeats N] --out FILE.json

Measures the ``rlam`` of another virtualenv (``--python``; its console script ``VENV/bin/rlam``) run
from another checkout (``--cwd``), so the same script measures the code before and after a refactor:

1. ``rlam --help``: wall time of fresh processes, and its import set from
   ``python -X importtime -m CLI_MODULE --help`` (module count, total import time, whether prefect,
   litellm, sklearn, pyarrow were imported, the top 10 modules by cumulative time).
2. ``rlam runs`` on a home with 20 recorded runs (10 ``rlam run --planner fixed --set
   load_dataset.name=iris`` and a replay of each) and ``rlam show RUN``: the same two measurements.
   The home's server is stopped before they are timed (they never need it); the bench reports it
   if either command started one.
3. Warm ``rlam run --planner fixed``, ``rlam replay RUN``, ``rlam fork RUN --step 4 ...`` against
   ``rlam run --pipeline script`` of the same rounds, through bench_core.py's Recorder (same
   scenarios, same executed/cached checks), after one untimed warm-up round.

Every command runs in a fresh RLAM_HOME under one temporary directory (PREFECT_API_*, PREFECT_HOME and
inherited RLAM_* are removed, as in bench_core.py). At the end ``rlam server stop`` runs for every
home it created and the bench checks, by environment, that no process it started survives.
Measurement only: nothing here asserts a timing. Writes the JSON to --out and a Markdown rendering
next to it (--md); progress goes to stderr. Needs only the standard library.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_core  # noqa: E402  (reused: env policy, timed runs, the warm scenarios and their checks)

WATCHED = ("prefect", "litellm", "sklearn", "pyarrow")  # issue 16: never imported by help, runs, show
ALSO_WATCHED = ("numpy", "pandas", "pydantic", "matplotlib", "httpx", "sqlalchemy", "fastapi", "dask", "flows", "tasks")
SOURCE_DIRS = ("rlam_prefect", "flows", "tasks")
PACKAGES = ("rlam-prefect", "prefect", "litellm", "scikit-learn", "pyarrow", "numpy", "pydantic")
N_RUNS, N_REPLAYS = 10, 10
RUNS_HOME_ARGS = ["run", "--planner", "fixed", "--set", "load_dataset.name=iris", "--json"]
# Warm scenarios (bench_core names, so bench_core's expected executed/cached counts apply), in round order.
WARM = ("script", "run_warm_cached", "run_warm_executes", "replay_warm", "fork_warm", "fork_warm_same")
WARMUP_ROUND = 100  # parameter index of the untimed warm-up round: values no timed round uses
EXECUTOR_TIMEOUT_S = 60.0  # how long to wait for a home's warm executor (4-10 s on a 2-CPU machine); --executor-timeout


def log(message: str) -> None:
    print(f"[bench_cli {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def warm_args(scenario: str, i: int, first_run: str) -> list[str]:
    """The issue's commands; new values per round where a step must really execute (as bench_core)."""
    if scenario == "run_warm_cached":
        return ["run", "--planner", "fixed", "--json"]
    if scenario == "fork_warm_same":
        return ["fork", first_run, "--step", "4", "--set", "train_model.C=0.5", "--json"]
    return bench_core.warm_args(scenario, i, first_run)


# ---- machine and code state ------------------------------------------------------------------


def uptime() -> dict[str, Any]:
    proc = subprocess.run(["uptime"], capture_output=True, text=True)
    return {"time_utc": now_utc(), "uptime": proc.stdout.strip(), "loadavg_1_5_15": bench_core.load_average()}


def busiest_processes(n: int = 6) -> list[str]:
    """What else was using the CPUs (other engineers share this machine)."""
    proc = subprocess.run(["ps", "-eo", "pid,pcpu,etime,args", "--sort=-pcpu"], capture_output=True, text=True)
    return [line[:160] for line in proc.stdout.splitlines()[1 : n + 1]]


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def code_state(cwd: Path) -> dict[str, Any]:
    """Commit, uncommitted source files and a hash of the measured checkout's sources (read only)."""
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    digest = hashlib.sha256()
    files = sorted(p for d in SOURCE_DIRS if (cwd / d).is_dir() for p in (cwd / d).rglob("*.py"))
    for path in files:
        digest.update(str(path.relative_to(cwd)).encode() + b"\0" + path.read_bytes() + b"\0")
    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line[3:].split("/")[0] in SOURCE_DIRS]
    return {"commit": git("rev-parse", "--short", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "uncommitted_source_files": len(changed), "source_sha256": digest.hexdigest()[:16], "source_files": len(files)}


def target_info(python: Path, cli_module: str, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Versions seen by the measured interpreter, and whether ``python -m CLI_MODULE`` can run."""
    code = (
        "import importlib.metadata as m, importlib.util as u, json, platform, sys\n"
        f"mod = {cli_module!r}\n"
        "spec = u.find_spec(mod)\n"
        "runnable = spec is not None and (spec.submodule_search_locations is None or u.find_spec(mod + '.__main__') is not None)\n"
        "v = {}\n"
        f"for p in {PACKAGES!r}:\n"
        "    try: v[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: v[p] = 'not installed'\n"
        "print(json.dumps({'python': platform.python_version(), 'prefix': sys.prefix, 'cli_module_runnable': runnable,\n"
        "                  'cli_module_file': getattr(spec, 'origin', None), 'versions': v}))\n"
    )
    proc = subprocess.run([str(python), "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"bench_cli: {python} cannot run: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


# ---- import sets ------------------------------------------------------------------------------


def parse_importtime(stderr: str) -> list[dict[str, Any]]:
    """``-X importtime`` lines: ``import time: SELF | CUMULATIVE | <indent>name`` (microseconds)."""
    modules = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header line
        raw = parts[2].rstrip()
        name = raw.lstrip()
        modules.append({"name": name, "self_us": int(parts[0]), "cumulative_us": int(parts[1]), "depth": (len(raw) - len(name) - 1) // 2})
    return modules


def summarize_imports(logged: list[dict[str, Any]], at_exit: set[str]) -> dict[str, Any]:
    """``-X importtime`` also logs imports that failed (optional dependencies such as pyarrow's ``import
    pandas``): a logged name counts as imported only if it is in the process's ``sys.modules`` at exit."""
    modules = [m for m in logged if m["name"] in at_exit]
    failed = sorted({m["name"] for m in logged if m["name"] not in at_exit})
    names = [m["name"] for m in modules]

    def imported(pkg: str) -> bool:
        return any(n == pkg or n.startswith(pkg + ".") for n in at_exit)

    per_package: dict[str, dict[str, Any]] = {}
    for m in modules:
        top = m["name"].split(".")[0]
        entry = per_package.setdefault(top, {"modules": 0, "self_ms": 0.0})
        entry["modules"] += 1
        entry["self_ms"] += m["self_us"] / 1000
    top_packages = sorted(per_package.items(), key=lambda kv: -kv[1]["self_ms"])[:10]
    top = sorted(modules, key=lambda m: -m["cumulative_us"])[:10]
    return {
        "modules": len(modules),
        "sys_modules_at_exit": len(at_exit),
        "failed_import_attempts": failed,
        "total_import_ms": round(sum(m["self_us"] for m in logged) / 1000, 1),
        "imported": {pkg: imported(pkg) for pkg in WATCHED},
        "also_imported": {pkg: imported(pkg) for pkg in ALSO_WATCHED},
        "top10_cumulative": [{"name": m["name"], "cumulative_ms": round(m["cumulative_us"] / 1000, 1), "self_ms": round(m["self_us"] / 1000, 1), "depth": m["depth"]} for m in top],
        "top10_packages_by_self_time": [{"package": k, "modules": v["modules"], "self_ms": round(v["self_ms"], 1)} for k, v in top_packages],
        "rlam_prefect_modules": sorted(n for n in names if n == "rlam_prefect" or n.startswith("rlam_prefect.")),
        "module_names": sorted(set(names)),
    }


# ---- the measured commands -------------------------------------------------------------------


class Target:
    """One venv's rlam run from one checkout, with the bench's environment policy."""

    def __init__(self, python: Path, cwd: Path, cli_module: str, policy: bench_core.EnvPolicy, prefect_home: Path) -> None:
        self.python, self.cwd, self.cli_module, self.policy, self.prefect_home = python, cwd, cli_module, policy, prefect_home
        self.rlam = [str(python.parent / "rlam")]
        self.anomalies: list[dict[str, Any]] = []

    def env(self, home: Path) -> dict[str, str]:
        return self.policy.env(home, self.prefect_home)  # PREFECT_HOME: a stray `import prefect` stays out of ~/.prefect

    def run(self, args: Sequence[str], home: Path, what: str) -> bench_core.Timed:
        result = bench_core.timed_run([*self.rlam, *args], self.env(home), self.cwd)
        if result.returncode != 0:
            self.anomalies.append({"what": what, "args": list(args), "problem": f"exit code {result.returncode}", "stderr_tail": result.stderr[-800:]})
            log(f"  ANOMALY {what}: exit code {result.returncode}: {result.stderr.strip()[-300:]}")
        return result

    def modules_at_exit(self, args: Sequence[str], home: Path, scratch: Path) -> set[str]:
        """``sys.modules`` when the command's process exits; runpy runs the module as ``-m`` does."""
        out = scratch / "modules.json"
        code = ("import atexit, json, runpy, sys\n"
                f"atexit.register(lambda: open({str(out)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
                f"sys.argv = [{self.cli_module!r}, *{list(args)!r}]\n"
                f"runpy.run_module({self.cli_module!r}, run_name='__main__', alter_sys=True)\n")
        result = bench_core.timed_run([str(self.python), "-c", code], self.env(home), self.cwd)
        if not out.exists():
            raise RuntimeError(f"modules-at-exit probe of {list(args)} wrote nothing (exit {result.returncode}): {result.stderr[-800:]}")
        return set(json.loads(out.read_text()))

    def importtime(self, args: Sequence[str], home: Path, what: str) -> list[dict[str, Any]]:
        argv = [str(self.python), "-X", "importtime", "-m", self.cli_module, *args]
        result = bench_core.timed_run(argv, self.env(home), self.cwd)
        if result.returncode != 0:
            self.anomalies.append({"what": f"{what} (importtime)", "args": list(args), "problem": f"exit code {result.returncode}", "stderr_tail": result.stderr[-800:]})
        return parse_importtime(result.stderr)


def fast_command(target: Target, name: str, args: list[str], home: Path, repeats: int, scratch: Path) -> dict[str, Any]:
    """Wall time of the console script (after one untimed run) and the import set of ``-m CLI_MODULE``."""
    target.run(args, home, name)  # warm-up: OS file cache
    wall = [target.run(args, home, name).seconds for _ in range(repeats)]
    samples = [target.importtime(args, home, name) for _ in range(repeats)]
    at_exit = target.modules_at_exit(args, home, scratch)
    summary = summarize_imports(samples[0], at_exit)
    sets = {tuple(sorted({m["name"] for m in s})) for s in samples}
    return {
        "command": " ".join(["rlam", *args]),
        "importtime_command": " ".join(["python", "-X", "importtime", "-m", target.cli_module, *args]),
        "modules_at_exit_command": f"python -c 'runpy.run_module({target.cli_module!r}, run_name=\"__main__\") with sys.modules dumped at exit' {' '.join(args)}",
        "wall": bench_core.summarize(wall),
        "imports": summary | {
            "total_import_ms_median": round(statistics.median(sum(m["self_us"] for m in s) / 1000 for s in samples), 1),
            "total_import_ms_samples": [round(sum(m["self_us"] for m in s) / 1000, 1) for s in samples],
            "same_set_every_sample": len(sets) == 1,
        },
    }


def make_runs_home(target: Target, home: Path, executor_timeout: float) -> dict[str, Any]:
    """10 runs of the issue's command, then a replay of each: 20 recorded runs."""
    run_ids: list[str] = []
    start = time.perf_counter()
    for i in range(N_RUNS):
        result = target.run(RUNS_HOME_ARGS, home, "runs-home: run")
        report = json.loads(result.stdout) if result.returncode == 0 else {}
        if not report.get("run_id"):
            raise RuntimeError(f"run {i} of the runs home produced no run id: {result.stderr[-1500:]}")
        run_ids.append(report["run_id"])
        if i == 0:
            log(f"  first run {report['run_id']} done in {result.seconds:.1f} s; waiting for the warm executor")
            log(f"  executor: {bench_core.wait_for_executor(home, executor_timeout)}")
    replay_ids = []
    for run_id in run_ids[:N_REPLAYS]:
        result = target.run(["replay", run_id, "--json"], home, "runs-home: replay")
        report = json.loads(result.stdout) if result.returncode == 0 else {}
        if report.get("identical") is not True:
            target.anomalies.append({"what": "runs-home: replay", "args": [run_id], "problem": f"replay not identical or failed: {report.get('status')}"})
        replay_ids.append(report.get("run_id"))
    listed = target.run(["runs", "--json"], home, "runs-home: runs --json")
    n_listed = len(json.loads(listed.stdout)) if listed.returncode == 0 else None
    return {"runs": run_ids, "replays": replay_ids, "listed": n_listed, "seconds": round(time.perf_counter() - start, 1)}


def server_stop(target: Target, home: Path) -> dict[str, Any]:
    result = bench_core.timed_run([*target.rlam, "server", "stop"], target.env(home), target.cwd)
    return {"home": str(home), "returncode": result.returncode, "output": (result.stdout + result.stderr).strip()[-300:], "seconds": round(result.seconds, 2)}


def our_processes(marker: str) -> list[dict[str, Any]]:
    """Every live process whose environment mentions our temporary root (all our children carry it in RLAM_HOME)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() not in (proc / "environ").read_bytes():
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmdline:  # zombies have none
            found.append({"pid": int(proc.name), "cmdline": cmdline[:200]})
    return found


def per_round_ratio(stats: dict[str, Any], script: dict[str, Any]) -> float:
    """Median over rounds of sample / script sample of the same round: less sensitive to load drifting between rounds."""
    return round(statistics.median(a / b for a, b in zip(stats["samples_s"], script["samples_s"])), 2)


def executor_log_tail(home: Path) -> str:
    try:
        return (home / "prefect" / "executor.log").read_text(errors="replace")[-1500:]
    except FileNotFoundError:
        return ""


def warm_commands(target: Target, home: Path, repeats: int, executor_timeout: float) -> dict[str, Any]:
    """bench_core's warm scenarios against this target: run_cold, one untimed round, then timed rounds."""
    rec = bench_core.Recorder(target.policy, command=target.rlam, cwd=target.cwd)
    first_run = bench_core.run_cold(rec, home)
    executor = bench_core.wait_for_executor(home, executor_timeout)
    log(f"  first run {first_run}; executor {executor}")
    warmup = bench_core.Recorder(target.policy, command=target.rlam, cwd=target.cwd)
    for scenario in WARM:  # the first C=0.5 fork executes steps 4-5 (bench_core's fork_warm outcome); later ones are cached
        warmup.rlam("fork_warm" if scenario == "fork_warm_same" else scenario, warm_args(scenario, WARMUP_ROUND, first_run), home)
    for i in range(repeats):
        log(f"  warm round {i + 1}/{repeats}")
        for scenario in WARM:
            rec.rlam(scenario, warm_args(scenario, i, first_run), home)
    scenarios = {name: bench_core.summarize(rec.samples[name]) for name in ("run_cold", *WARM)}
    script = scenarios["script"]["median_s"]
    for name, stats in scenarios.items():
        stats["ratio_to_script"] = round(stats["median_s"] / script, 2)
        if name != "run_cold":
            stats["ratio_to_script_per_round"] = per_round_ratio(stats, scenarios["script"])
        stats["what"] = bench_core.DESCRIPTIONS[name]
        stats["command"] = "rlam " + " ".join(warm_args(name, 0, "RUN") if name != "run_cold" else ["run", "--json"])
    executor["timeout_s"] = executor_timeout
    executor["commands_served"] = bench_core.executor_commands(home)
    executor["log_tail"] = executor_log_tail(home)
    executor["expected_served"] = (repeats + 1) * (len(WARM) - 1)  # every warm-up and timed sample but script
    return {"first_run_id": first_run, "executor": executor, "scenarios": scenarios,
            "anomalies": rec.anomalies, "warmup_anomalies": warmup.anomalies, "planners_seen": sorted(rec.planners_seen)}


# ---- report ----------------------------------------------------------------------------------


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def render_markdown(r: dict[str, Any]) -> str:
    t, c0, c1 = r["target"], r["code_at_start"], r["code_at_end"]
    lines = [
        f"# rlam CLI benchmark: {r['label']}",
        "",
        f"- Date (UTC): {r['date_utc']}; took {r['duration_s']:.0f} s",
        f"- Command: `{r['command']}`",
        f"- Measured: `{r['python']}` (Python {t['python']}), console script `{r['rlam']}`, cwd `{r['cwd']}`, `-m {r['cli_module']}` ({t['cli_module_file']})",
        f"- Code: {c0['branch']} @ {c0['commit']}, {c0['uncommitted_source_files']} uncommitted source files; source hash {c0['source_sha256']} at start, "
        f"{c1['source_sha256']} at end" + (" (CHANGED during the run: figures mix code versions)" if c0["source_sha256"] != c1["source_sha256"] else " (unchanged)"),
        "- Packages: " + ", ".join(f"{k} {v}" for k, v in t["versions"].items()),
        f"- Machine: {r['machine']['nproc']} CPUs ({r['machine']['cpu_model']}), {r['machine']['platform']}",
        f"- Environment: RLAM_PLANNER={r['planner']}; PYTHONDONTWRITEBYTECODE={r['env_notes']['PYTHONDONTWRITEBYTECODE'] or '(unset)'} "
        "(inherited; with it set, modules without a .pyc are compiled in every process)",
        f"- Repeats: {r['repeats']} per command, after one untimed warm-up",
        "",
        "## Load (shared machine)",
        "",
        "| when | load average 1/5/15 min |",
        "|---|---|",
        *[f"| {p['phase']} ({p['time_utc']}) | {' / '.join(str(x) for x in p['loadavg_1_5_15'])} |" for p in r["load"]],
        "",
        f"`uptime` at start: `{r['load'][0]['uptime']}`; at end: `{r['load'][-1]['uptime']}`.",
        "",
        "Busiest processes at start:", "", "```", *r["busiest_processes_at_start"], "```", "",
        "Busiest processes at end:", "", "```", *r["busiest_processes_at_end"], "```",
        "",
        "## Fast commands: wall time (console script, fresh process) and import set (`-X importtime -m`)",
        "",
        "| command | median s | min s | max s | modules imported | import time ms (median) | prefect | litellm | sklearn | pyarrow |",
        "|---|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for entry in r["fast"].values():
        w, im = entry["wall"], entry["imports"]
        lines.append(f"| `{entry['command']}` | {w['median_s']:.3f} | {w['min_s']:.3f} | {w['max_s']:.3f} | {im['modules']} | {im['total_import_ms_median']:.1f} | "
                     + " | ".join(yes(im["imported"][p]) for p in WATCHED) + " |")
    lines += ["", f"`rlam runs` and `rlam show` read a home with {r['runs_home']['listed']} recorded runs "
              f"({N_RUNS} x `rlam {' '.join(RUNS_HOME_ARGS)}` and a replay of each), its server stopped; "
              f"a server started by them: {yes(r['runs_home']['server_started_by_fast_commands'])}.", ""]
    for entry in r["fast"].values():
        im = entry["imports"]
        also = ", ".join(p for p, v in im["also_imported"].items() if v) or "none"
        lines += [f"### `{entry['command']}`", "",
                  f"{im['modules']} modules imported ({im['sys_modules_at_exit']} in sys.modules at exit, counting those loaded before "
                  f"`-X importtime` reports), {len(im['rlam_prefect_modules'])} of them rlam_prefect; also imported: {also}; "
                  f"failed import attempts (logged, not imported): {', '.join(im['failed_import_attempts']) or 'none'}; "
                  f"same set in every sample: {yes(im['same_set_every_sample'])}. Total import ms per sample: {im['total_import_ms_samples']}.", "",
                  "| top 10 by cumulative time | depth | cumulative ms | self ms |", "|---|---:|---:|---:|"]
        lines += [f"| `{m['name']}` | {m['depth']} | {m['cumulative_ms']:.1f} | {m['self_ms']:.1f} |" for m in im["top10_cumulative"]]
        lines += ["", "| top 10 packages by self time | modules | self ms |", "|---|---:|---:|"]
        lines += [f"| `{p['package']}` | {p['modules']} | {p['self_ms']:.1f} |" for p in im["top10_packages_by_self_time"]]
        lines.append("")
    w = r.get("warm") or {"scenarios": {}, "executor": {}, "anomalies": [], "warmup_anomalies": []}
    if not w["scenarios"]:
        lines += ["## Warm flow commands", "", "Not measured (--skip-warm or the run stopped before them).", ""]
    else:
        lines += render_warm(w)
    lines += ["## Checks", ""]
    anomalies = r.get("anomalies", []) + w["anomalies"] + w["warmup_anomalies"]
    return finish_markdown(r, lines, anomalies)


def render_warm(w: dict[str, Any]) -> list[str]:
    lines = [
        "## Warm flow commands vs the Script pipeline (same rounds, round-robin)",
        "",
        "| scenario | command | n | median s | min s | max s | median / script median | median of per-round ratios |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in w["scenarios"].items():
        per_round = "-" if name == "run_cold" else f"{per_round_ratio(s, w['scenarios']['script']):.2f}"
        lines.append(f"| `{name}` | `{s['command']}` | {s['n']} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['max_s']:.3f} | {s['ratio_to_script']:.2f} | {per_round} |")
    ex = w["executor"]
    lines += [
        "",
        "`run_cold` is the first run of the fresh home (starts its Prefect server), one sample. `fork_warm` uses a new "
        "`train_model.C` every round (steps 4-5 execute); `fork_warm_same` is the same `C=0.5` fork every time (cached after "
        "the warm-up). `run_warm_executes`: `rlam run --set train_model.C=<new>` (planner from RLAM_PLANNER=fixed).",
        "",
        f"Warm executor: ready {ex['ready_after_s']} s after the first run (preload {ex['preload_s']} s); it served "
        f"{ex['commands_served']} commands (expected {ex['expected_served']}).",
        "",
    ]
    if ex["commands_served"] != ex["expected_served"]:
        lines += [f"**The warm executor served {ex['commands_served']} of {ex['expected_served']} warm commands** (not ready within "
                  f"{ex['timeout_s']:.0f} s, or it died): the others ran in-process. End of its log:", "", "```", *ex["log_tail"].splitlines()[-12:], "```", ""]
    return lines


def finish_markdown(r: dict[str, Any], lines: list[str], anomalies: list[dict[str, Any]]) -> str:
    lines.append("- Every command returned exit 0 and the expected executed/cached counts." if not anomalies else f"- {len(anomalies)} problem(s):")
    lines += [f"  - {a.get('what') or a.get('scenario')} `{' '.join(a['args'])}`: {a['problem']}" for a in anomalies]
    cl = r["cleanup"]
    never = f" ({len(cl['homes_never_created'])} more never came into existence: {', '.join(Path(h).name for h in cl['homes_never_created'])})" if cl["homes_never_created"] else ""
    lines.append(f"- `rlam server stop` ran for each of the {len(cl['stops'])} homes that exist{never}; processes of this bench alive afterwards: {len(cl['alive_after_stop'])}"
                 + (f" (then ended by pid: {cl['alive_after_stop']})" if cl["alive_after_stop"] else "") + ".")
    lines += ["", "Wall times on a shared 2-CPU machine; compare before and after only with the load shown above in mind.", ""]
    return "\n".join(lines)


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Wall time and import set of rlam's fast commands; warm flow commands vs Script.")
    p.add_argument("--render", type=Path, default=None, metavar="JSON", help="only write the Markdown of an earlier run's JSON (to --md or next to it)")
    p.add_argument("--python", type=Path, required=None, help="interpreter of the venv to measure (its bin/ holds the rlam console script)")
    p.add_argument("--cwd", type=Path, required=None, help="the checkout to run from")
    p.add_argument("--cli-module", default="rlam_prefect.cli", help="module for `python -X importtime -m MODULE` (default rlam_prefect.cli)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, required=None, help="JSON results")
    p.add_argument("--md", type=Path, default=None, help="Markdown rendering (default: --out with .md)")
    p.add_argument("--label", default=None, help="title of the Markdown report (default: the checkout's commit)")
    p.add_argument("--planner", default="fixed", help="RLAM_PLANNER of every child (bench_core's default; 'default' = the project's own)")
    p.add_argument("--skip-warm", action="store_true", help="only (1) and (2)")
    p.add_argument("--executor-timeout", type=float, default=EXECUTOR_TIMEOUT_S, help="seconds to wait for a home's warm executor (default 60)")
    p.add_argument("--keep-homes", action="store_true", help="keep the temporary RLAM_HOMEs")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        md = args.md or args.render.with_suffix(".md")
        md.write_text(render_markdown(json.loads(args.render.read_text())))
        log(f"wrote {md}")
        return 0
    if not (args.python and args.cwd and args.out):
        raise SystemExit("bench_cli: --python, --cwd and --out are required (or --render JSON)")
    python = args.python if args.python.is_absolute() else Path.cwd() / args.python  # not resolved: a venv's python is a symlink
    cwd = args.cwd.resolve()
    if not (python.parent / "rlam").exists():
        raise SystemExit(f"bench_cli: no console script {python.parent / 'rlam'}")
    if args.repeats < 1:
        raise SystemExit("bench_cli: --repeats must be at least 1")
    policy = bench_core.EnvPolicy(planner=None if args.planner == "default" else args.planner)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` still stops the servers
    tmp_root = Path(tempfile.mkdtemp(prefix="rlam-bench-cli-"))
    target = Target(python, cwd, args.cli_module, policy, tmp_root / "prefect-home")
    info = target_info(python, args.cli_module, target.env(tmp_root / "probe-home"), cwd)
    if not info["cli_module_runnable"]:
        raise SystemExit(f"bench_cli: `python -m {args.cli_module}` cannot run with {python} (no such module or no __main__)")
    homes = {"help": tmp_root / "help-home", "runs": tmp_root / "runs-home", "warm": tmp_root / "warm-home"}
    start = time.perf_counter()
    code0 = code_state(cwd)
    results: dict[str, Any] = {
        "label": args.label or f"{code0['branch']} @ {code0['commit']}",
        "date_utc": now_utc(),
        "command": " ".join(["python bench/bench_cli.py", *(sys.argv[1:] if argv is None else argv)]),
        "python": str(python), "rlam": target.rlam[0], "cwd": str(cwd), "cli_module": args.cli_module,
        "repeats": args.repeats, "planner": policy.planner or "(project default)",
        "machine": bench_core.machine_info() | {"bench_python": sys.executable},
        "target": info,
        "env_notes": {k: os.environ.get(k) for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONOPTIMIZE")},
        "code_at_start": code0,
        "load": [uptime() | {"phase": "start"}],
        "busiest_processes_at_start": busiest_processes(),
        "tmp_root": str(tmp_root),
    }
    log(f"measuring {python} from {cwd}; homes under {tmp_root}; {args.repeats} repeats; load {results['load'][0]['loadavg_1_5_15']}")
    try:
        log("(1) rlam --help")
        results["fast"] = {"help": fast_command(target, "help", ["--help"], homes["help"], args.repeats, tmp_root)}
        results["load"].append(uptime() | {"phase": "after help"})
        log(f"(2) making the runs home ({N_RUNS} runs + {N_REPLAYS} replays)")
        runs_home = make_runs_home(target, homes["runs"], args.executor_timeout)
        runs_home["server_stop_before_timing"] = server_stop(target, homes["runs"])
        show_id = runs_home["runs"][0]
        log(f"    rlam runs / rlam show {show_id} (server stopped)")
        results["fast"]["runs"] = fast_command(target, "runs", ["runs"], homes["runs"], args.repeats, tmp_root)
        results["fast"]["show"] = fast_command(target, "show", ["show", show_id], homes["runs"], args.repeats, tmp_root)
        runs_home["server_started_by_fast_commands"] = (homes["runs"] / "prefect" / "server.json").exists() or bool(
            [p for p in our_processes(str(homes["runs"])) if "prefect" in p["cmdline"] or "rlam" in p["cmdline"]])
        results["runs_home"] = runs_home
        results["load"].append(uptime() | {"phase": "after runs/show"})
        if not args.skip_warm:
            log("(3) warm run / replay / fork vs script")
            results["warm"] = warm_commands(target, homes["warm"], args.repeats, args.executor_timeout)
            results["load"].append(uptime() | {"phase": "after warm commands"})
    finally:
        log("stopping the servers of every home this bench created")
        stops = [server_stop(target, home) for home in homes.values() if home.exists()]
        deadline = time.monotonic() + 30.0
        while our_processes(str(tmp_root)) and time.monotonic() < deadline:
            time.sleep(0.5)
        alive = our_processes(str(tmp_root))
        for proc in alive:  # only processes carrying our temporary root in their environment, by pid
            try:
                os.kill(proc["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
        results["cleanup"] = {"stops": stops, "alive_after_stop": alive,
                              "homes_never_created": [str(h) for h in homes.values() if not h.exists()]}
        if alive:
            log(f"WARNING: still alive after `rlam server stop`, ended by pid: {alive}")
        if not args.keep_homes:
            shutil.rmtree(tmp_root, ignore_errors=True)
    results["anomalies"] = target.anomalies
    results["code_at_end"] = code_state(cwd)
    results["load"].append(uptime() | {"phase": "end"})
    results["busiest_processes_at_end"] = busiest_processes()
    results["duration_s"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    md = args.md or args.out.with_suffix(".md")
    md.write_text(render_markdown(results))
    log(f"wrote {args.out} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
