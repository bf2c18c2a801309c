"""``rlam experiments``: the seed's Script / Naive LAM / R-LAM comparison, measured instead of declared.

Every run is a real ``rlam`` process (``python -m rlam_prefect.cli ... --json``) in a fresh
``RLAM_HOME`` under ``--out``: that is what a user runs, each run starts from a clean
interpreter (no litellm, Prefect or sampler state carried over between runs), and its wall
time includes what a user pays. In-process calls would be faster but would share one litellm
call counter, one Prefect client and one set of imports across runs, which is exactly what a
reproducibility measurement must not share. The numbers are then computed from sources that do
not depend on each other: the processes' own JSON, the Parquet trace read after they exited,
and the Prefect API's task runs.

Planner sampling: the LLM pipelines run at ``temperature > 0``. A sampling LLM does not repeat
its draws (providers treat ``seed`` as best effort or drop it), while the offline
``rlam/heuristic`` honours a seed exactly, so run ``i`` of each LLM pipeline gets seed
``base + i``: fresh draws per run, and the same draws for the same ``i`` in every experiment.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlam_prefect.core.errors import RLamError, UsageError
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.experiments.report import LABELS, PIPELINES, comparison_table, write_outputs
from rlam_prefect.record.store import TraceStore

# One injected failure per repeat, cycling through actions every pipeline runs.
INJECT_ORDER = ("train_model", "preprocess_data", "evaluate_model", "analyze_data", "load_dataset")
FORK_C_VALUES = (0.5, 0.05, 5.0, 0.005)  # the fork sets the first C the original run never trained with
CHILD_TIMEOUT_S = 900.0
# Columns a step row must carry to count as a complete record of what ran.
COMPLETE_EXECUTED = ("params", "input_hashes", "output_hash", "output_kind", "cache_key", "code_version", "env_hash", "result_digest", "started_at", "duration_s", "prefect_task_run_id")
COMPLETE_FAILED = ("params", "cache_key", "code_version", "env_hash", "error_type", "error_message", "started_at", "duration_s", "prefect_task_run_id")


class ExperimentError(RLamError):
    """An experiment run did not produce a result that can be measured (the command and its error are named)."""

    exit_code = 1


@dataclass
class Invocation:
    args: list[str]
    seconds: float
    code: int
    report: Any
    stderr: str

    @property
    def error_line(self) -> str:
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit code {self.code}"


@dataclass
class Settings:
    repeats: int = 3
    planner: str = "rlam/heuristic"
    temperature: float = 1.0
    base_seed: int = 0
    out: Path = Path("rlam-experiments")


@dataclass
class Cli:
    """Runs the real CLI against the experiment's own RLAM_HOME and keeps every invocation."""

    home: HomeLayout
    log: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, *args: str, expect_json: bool = True) -> Invocation:
        argv = [sys.executable, "-m", "rlam_prefect.cli", *args] + (["--json"] if expect_json else [])
        env = {**os.environ, "RLAM_HOME": str(self.home.root)}
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        seconds = time.perf_counter() - start
        report = None
        if expect_json and proc.stdout.strip():
            try:
                report = json.loads(proc.stdout)
            except json.JSONDecodeError:
                report = None
        inv = Invocation(list(args), seconds, proc.returncode, report, proc.stderr)
        self.log.append({"args": inv.args, "seconds": round(seconds, 3), "exit_code": inv.code, "error": inv.error_line if inv.code else None})
        print(f"[experiments] rlam {' '.join(args)}: exit {inv.code} in {seconds:.2f} s", file=sys.stderr, flush=True)
        return inv

    def run(self, *args: str) -> Invocation:
        """A run that must produce a report (exit 0 completed, 1 failed); anything else stops the experiment."""
        inv = self(*args)
        if inv.code == UsageError.exit_code:  # e.g. a planner without its API key: the child's own one line
            raise UsageError(inv.error_line.removeprefix("rlam: error: "))
        if inv.code not in (0, 1) or not isinstance(inv.report, dict):
            raise ExperimentError(f"`rlam {' '.join(args)}` exited {inv.code} without a report: {inv.error_line}")
        return inv


def run_experiments(settings: Settings) -> dict[str, Any]:
    """Run everything, compute the table, write Markdown, CSV, JSON and PNG under ``settings.out``."""
    if settings.repeats < 1:
        raise UsageError("--repeats must be at least 1")
    if not 0.0 < settings.temperature <= 2.0:
        raise UsageError(f"--temperature {settings.temperature} must be above 0 (a sampling planner) and at most 2")
    out = settings.out.resolve()
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty; choose a new directory (results are never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    home = HomeLayout(out / "home")
    cli = Cli(home)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` still stops the server we started
    _start_server(cli)
    try:
        results: dict[str, Any] = {
            "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "settings": {"repeats": settings.repeats, "planner": settings.planner, "temperature": settings.temperature, "base_seed": settings.base_seed},
            "rlam_home": str(home.root),
            "pipelines": {p: _measure_pipeline(p, cli, settings) for p in PIPELINES},
        }
    finally:
        cli("server", "stop", expect_json=False)
    results["invocations"] = cli.log
    results["table"] = comparison_table(results)
    results["files"] = write_outputs(results, out)
    return results


def _start_server(cli: Cli) -> None:
    """Start this home's server and its warm executor first, so no run's time includes them and the three
    pipelines' runs are all served warm; with PREFECT_API_URL set, only the executor (RLAM_EXECUTOR=on)."""
    inv = cli("server", "start", expect_json=False)
    if inv.code != 0:
        raise ExperimentError(f"could not start the local Prefect server: {inv.error_line}")


def _planner_args(pipeline: str, settings: Settings, i: int) -> list[str]:
    if pipeline == "script":
        return []
    return ["--planner", settings.planner, "--temperature", str(settings.temperature), "--seed", str(settings.base_seed + i)]


def _measure_pipeline(pipeline: str, cli: Cli, settings: Settings) -> dict[str, Any]:
    store = TraceStore(cli.home)
    # Script and Naive LAM: one original and N re-runs. R-LAM: N runs, each replayed and forked.
    n_runs = settings.repeats if pipeline == "rlam" else settings.repeats + 1
    runs = [cli.run("run", "--pipeline", pipeline, *_planner_args(pipeline, settings, i)) for i in range(n_runs)]
    injections = []
    for i in range(settings.repeats):
        action = INJECT_ORDER[i % len(INJECT_ORDER)]
        inv = cli.run("run", "--pipeline", pipeline, *_planner_args(pipeline, settings, i), "--inject-failure", action)
        injections.append(_failure_visibility(pipeline, action, inv, store))
    if pipeline == "rlam":
        replays = [_try_replay(cli, inv.report) for inv in runs]
        forks = [_try_fork(cli, inv.report) for inv in runs]
        reproduction = [r["reproduced"] for r in replays]
    else:
        replays = [_try_untraced(cli, pipeline, inv.report, "replay") for inv in runs[:1]]
        forks = [_try_untraced(cli, pipeline, inv.report, "fork") for inv in runs[:1]]
        reproduction = [_same_outputs(runs[0].report, inv.report) for inv in runs[1:]]
    processes = [*runs, *(i["invocation"] for i in injections)]
    processes += [r["invocation"] for r in (*replays, *forks) if r.get("invocation") is not None]
    completeness = _trace_completeness(pipeline, [p.report for p in processes if isinstance(p.report, dict)], store, cli.home)
    return {
        "runs": [_brief(inv) for inv in runs],
        "reproduction": {"compared": len(reproduction), "equal": sum(r["equal"] for r in reproduction), "details": reproduction},
        "trace_completeness": completeness,
        "failure_visibility": {
            "injected": len(injections),
            "visible": sum(i["visible"] for i in injections),
            "details": [{k: v for k, v in i.items() if k != "invocation"} for i in injections],
        },
        "replay": _attempts(replays),
        "fork": _attempts(forks),
        "llm_calls_during_replay": sum(r.get("llm_calls", 0) for r in replays if r.get("ran")) if any(r.get("ran") for r in replays) else None,
        "median_run_s": round(statistics.median(inv.seconds for inv in runs), 3),
        "run_seconds": [round(inv.seconds, 3) for inv in runs],
    }


def _brief(inv: Invocation) -> dict[str, Any]:
    r = inv.report
    return {
        "run_id": r.get("run_id"),
        "status": r.get("status"),
        "seconds": round(inv.seconds, 3),
        "actions": [s.get("action") for s in r.get("steps", [])],
        "executed": r.get("executed"),
        "cached": r.get("cached"),
        "llm_calls": r.get("llm_calls"),
        "accuracy": (r.get("metrics") or {}).get("accuracy"),  # the seed's headline number, kept for older reports
        "metrics": dict(r.get("metrics") or {}),  # every metric the run's evaluation reported (a user's own too)
    }


def _outputs(report: dict[str, Any]) -> list[tuple[Any, Any, Any]]:
    return [(s.get("action"), s.get("status") in ("executed", "cached"), s.get("output_hash")) for s in report.get("steps", [])]


def _same_outputs(original: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Per-step (action, success, output hash) and the final output hash, compared with the original's."""
    a, b = _outputs(original), _outputs(other)
    first = next((i + 1 for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if first is None and len(a) != len(b):
        first = min(len(a), len(b)) + 1
    final_a = next((h for _, ok, h in reversed(a) if ok and h), None)
    final_b = next((h for _, ok, h in reversed(b) if ok and h), None)
    return {"run_id": other.get("run_id"), "equal": first is None and final_a == final_b, "first_difference_step": first, "steps": [len(a), len(b)]}


def _try_replay(cli: Cli, original: dict[str, Any]) -> dict[str, Any]:
    inv = cli("replay", original["run_id"])
    report = inv.report if isinstance(inv.report, dict) else {}
    compared = _same_outputs(original, report) if report else {"equal": False, "first_difference_step": None}
    ok = inv.code == 0 and bool(report.get("identical")) and compared["equal"] and report.get("executed") == 0
    return {
        "invocation": inv,
        "ran": True,
        "succeeded": ok,
        "reproduced": {**compared, "equal": ok, "replay_run_id": report.get("run_id"), "replay_says_identical": report.get("identical")},
        "executed": report.get("executed"),
        "llm_calls": report.get("llm_calls", 0),
        "why": None if ok else (inv.error_line if inv.code not in (0, 1) else f"identical={report.get('identical')}, executed={report.get('executed')}, first difference at step {compared['first_difference_step']}"),
    }


def _try_fork(cli: Cli, original: dict[str, Any]) -> dict[str, Any]:
    """Fork at the first train_model step: steps before it must come from the parent unchanged, none executed."""
    steps = original.get("steps", [])
    k = next((s["step"] for s in steps if s["action"] == "train_model"), len(steps))
    used = {(s.get("params") or {}).get("C") for s in steps if s["action"] == "train_model"}
    c = next(v for v in FORK_C_VALUES if v not in used)  # a changed parameter, so the fork re-executes from K
    inv = cli("fork", original["run_id"], "--step", str(k), "--set", f"train_model.C={c}")
    report = inv.report if isinstance(inv.report, dict) else {}
    before = [(s["action"], s["output_hash"]) for s in steps[: k - 1]]
    reused = [(s["action"], s["output_hash"]) for s in report.get("steps", [])[: k - 1]]
    reused_cached = all(s["status"] == "cached" for s in report.get("steps", [])[: k - 1])
    ok = inv.code == 0 and report.get("status") == "completed" and reused == before and reused_cached
    why = None
    if not ok:
        why = inv.error_line if inv.code not in (0, 1) else f"status {report.get('status')}, steps 1..{k - 1} reused unchanged: {reused == before and reused_cached}"
    return {"invocation": inv, "ran": True, "succeeded": ok, "fork_step": k, "executed": report.get("executed"), "cached": report.get("cached"), "why": why}


def _try_untraced(cli: Cli, pipeline: str, report: dict[str, Any], what: str) -> dict[str, Any]:
    """Try to replay or fork a Script / Naive LAM run: find its record, then ask rlam for it."""
    listing = cli("runs")
    recorded = [r for r in (listing.report or []) if r.get("pipeline") == pipeline]
    ref = report.get("run_id") or (recorded[0]["run_id"] if recorded else None)
    if ref is None:
        why = f"nothing to {what}: the {LABELS[pipeline]} run reported run_id null and `rlam runs` lists no {pipeline} run ({len(listing.report or [])} runs recorded, all by other pipelines)"
        return {"invocation": None, "ran": False, "succeeded": False, "why": why}
    args = ("replay", ref) if what == "replay" else ("fork", ref, "--step", "1")
    inv = cli(*args)
    ok = inv.code == 0
    return {"invocation": inv, "ran": True, "succeeded": ok, "llm_calls": (inv.report or {}).get("llm_calls", 0), "why": None if ok else inv.error_line}


def _attempts(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tried": len(attempts),
        "succeeded": sum(a["succeeded"] for a in attempts),
        "why_not": sorted({a["why"] for a in attempts if a.get("why")}),
        "details": [{k: v for k, v in a.items() if k not in ("invocation", "reproduced")} for a in attempts],
    }


def _failure_visibility(pipeline: str, action: str, inv: Invocation, store: TraceStore) -> dict[str, Any]:
    """Visible = a failed row for the injected action, with error type and message, in the record left after the process ended."""
    printed = any(s.get("action") == action and s.get("status") == "failed" and s.get("error_type") for s in inv.report.get("steps", []))
    run_id = inv.report.get("run_id")
    rows = store.steps(run_id) if run_id else []
    failed = [r for r in rows if r["action"] == action and r["status"] == "failed" and r.get("error_type") and r.get("error_message")]
    where = f"trace of run {run_id}: {len(failed)} failed {action} row(s)" if run_id else "no record: the run reported run_id null, so no trace row exists (the failure was only printed)"
    return {"invocation": inv, "action": action, "run_id": run_id, "visible": bool(failed), "printed_by_the_process": printed, "where": where,
            "error": f"{failed[0]['error_type']}: {failed[0]['error_message']}" if failed else None}


def _trace_completeness(pipeline: str, reports: list[dict[str, Any]], store: TraceStore, home: HomeLayout) -> dict[str, Any]:
    """Actions that ran, counted outside the trace, against the complete trace rows that record them."""
    if pipeline != "rlam":
        ran = sum((r.get("executed") or 0) + (r.get("failed") or 0) for r in reports)
        recorded = [run for run in store.runs() if run.get("pipeline") == pipeline]
        return {"actions_ran": ran, "complete_rows": 0, "counted_by": "each process's own report (executed + failed steps)",
                "trace_rows_found": len(recorded), "incomplete": [f"no trace: `rlam runs` lists {len(recorded)} {pipeline} runs"] if ran else []}
    tasks = _prefect_task_runs([store.run(r["run_id"])["prefect_flow_run_id"] for r in reports if r.get("run_id")], home)
    rows: dict[str, dict[str, Any]] = {}
    for r in reports:
        if r.get("run_id"):
            for step_row in store.steps(r["run_id"]):
                if step_row.get("prefect_task_run_id"):
                    rows[step_row["prefect_task_run_id"]] = step_row
    ran, complete, incomplete = 0, 0, []
    for task in tasks:
        if task["name"].startswith("plan #"):
            continue  # planner calls are decisions, not actions
        executed = task["state_type"] == "COMPLETED" and task["state_name"] != "Cached"
        failed = task["state_type"] in ("FAILED", "CRASHED")
        if not (executed or failed):
            continue
        ran += 1
        row = rows.get(task["id"])
        needed = COMPLETE_EXECUTED if executed else COMPLETE_FAILED
        missing = ["row"] if row is None else [c for c in needed if row.get(c) in (None, "")]
        if row is not None and row["status"] != ("executed" if executed else "failed"):
            missing.append(f"status {row['status']}")
        if missing:
            incomplete.append(f"task run {task['name']} ({task['id'][:8]}): missing {', '.join(missing)}")
        else:
            complete += 1
    return {"actions_ran": ran, "complete_rows": complete, "counted_by": "Prefect API task runs (Completed, not Cached, or Failed) of every R-LAM flow run", "incomplete": incomplete}


def _prefect_task_runs(flow_run_ids: Sequence[str | None], home: HomeLayout) -> list[dict[str, Any]]:
    """Task runs of these flow runs straight from the Prefect server's REST API (not from our trace)."""
    import httpx

    from rlam_prefect.local import server

    url = os.environ.get("PREFECT_API_URL") or server.status(home).get("url")
    if not url:
        raise ExperimentError(f"no Prefect server for {home.root}: cannot count task runs independently of the trace")
    ids = [i for i in flow_run_ids if i]
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        body = {"task_runs": {"flow_run_id": {"any_": ids}}, "limit": 200, "offset": offset}
        response = httpx.post(f"{url.rstrip('/')}/task_runs/filter", json=body, timeout=30)
        response.raise_for_status()
        page = response.json()
        found += [{"id": t["id"], "name": t["name"], "state_type": t.get("state_type"), "state_name": t.get("state_name")} for t in page]
        if len(page) < 200:
            return found
        offset += 200


# ---- the table -------------------------------------------------------------------------------


def utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
