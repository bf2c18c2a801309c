#!/usr/bin/env python
"""Wall-clock benchmark of the rlam CLI paths and of the R-LAM layer's per-step overhead.

    python bench/bench_core.py [--quick] [--repeats N] [--planner fixed|default|MODEL]

Every CLI figure is one fresh ``rlam`` process timed from outside (``time.perf_counter``
around ``subprocess.run``), so it includes interpreter start-up and imports, as a user sees it.
``PREFECT_API_URL`` (and any inherited ``RLAM_*``) is removed from every child environment so
that the managed local server of each temporary RLAM_HOME is what gets exercised. The
in-process overhead section runs in one child process against one server.
Measurement only: nothing here asserts a timing. Prints one JSON object on stdout, progress
on stderr, and writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "bench"
SOURCE_DIRS = ("rlam_prefect", "flows", "tasks")
PACKAGES = ("prefect", "scikit-learn", "numpy", "pyarrow", "pydantic", "rlam-prefect")
SUBPROCESS_TIMEOUT_S = 600.0
N_STEPS = 5

# Expected (executed, cached) per scenario: a sample that does not match is flagged, not hidden.
EXPECTED: dict[str, tuple[int, int]] = {
    "script": (5, 0),
    "run_cold": (5, 0),
    "run_warm_executes": (2, 3),
    "run_warm_preprocess": (3, 2),
    "run_warm_cached": (0, 5),
    "replay_warm": (0, 5),
    "fork_warm": (2, 3),
    "run_warm_heuristic": (0, 5),
    "run_warm_cached_inprocess": (0, 5),
    "run_warm_executes_inprocess": (2, 3),
    "replay_warm_inprocess": (0, 5),
    "fork_warm_inprocess": (2, 3),
    "run_warm_heuristic_inprocess": (0, 5),
    "fork_warm_same": (0, 5),  # bench_cli.py: the same fork again (its steps 4-5 are cached by the first one)
}
DESCRIPTIONS: dict[str, str] = {
    "script": "rlam run --pipeline script (plain Python, no Prefect)",
    "run_cold": "first rlam run in a fresh RLAM_HOME (starts the local Prefect server)",
    "run_warm_executes": "rlam run --set train_model.C=<new> (steps 4-5 execute)",
    "run_warm_preprocess": "rlam run --set preprocess_data.random_state=<new> (steps 3-5 execute)",
    "run_warm_cached": "rlam run, default params (all 5 steps from cache)",
    "replay_warm": "rlam replay <first run>",
    "fork_warm": "rlam fork <first run> --step 4 --set train_model.C=<new>",
    "fork_warm_same": "rlam fork <first run> --step 4 --set train_model.C=0.5 (the same fork every time)",
    "run_warm_heuristic": "rlam run with the default planner (rlam/heuristic through litellm; all steps cached)",
    "run_warm_cached_inprocess": "as run_warm_cached, RLAM_EXECUTOR=off (everything in the client process)",
    "run_warm_executes_inprocess": "as run_warm_executes, RLAM_EXECUTOR=off",
    "replay_warm_inprocess": "as replay_warm, RLAM_EXECUTOR=off",
    "fork_warm_inprocess": "as fork_warm, RLAM_EXECUTOR=off",
    "run_warm_heuristic_inprocess": "as run_warm_heuristic, RLAM_EXECUTOR=off (pays import litellm)",
}
WARM_ORDER = (
    "script", "run_warm_cached", "run_warm_executes", "run_warm_preprocess", "replay_warm", "fork_warm", "run_warm_heuristic",
    "run_warm_cached_inprocess", "run_warm_executes_inprocess", "replay_warm_inprocess", "fork_warm_inprocess",
    "run_warm_heuristic_inprocess",
)
TABLE_ORDER = ("script", "run_cold", *WARM_ORDER[1:])
# Scenario -> environment changes (None removes the variable): the in-process variants switch the
# warm executor off, the heuristic ones use the project's default planner instead of RLAM_PLANNER.
SCENARIO_ENV: dict[str, dict[str, str | None]] = {
    "run_warm_heuristic": {"RLAM_PLANNER": None},
    "run_warm_heuristic_inprocess": {"RLAM_PLANNER": None, "RLAM_EXECUTOR": "off"},
    **{name: {"RLAM_EXECUTOR": "off"} for name in WARM_ORDER if name.endswith("_inprocess") and "heuristic" not in name},
}
IMPORTS: dict[str, str] = {
    "python_startup": "pass",
    "import_prefect": "import prefect",
    "import_sklearn_linear_model": "import sklearn.linear_model",
    "import_rlam_prefect_cli": "import rlam_prefect.cli.main",
    "executor_client": "import rlam_prefect.cli.main, rlam_prefect.local.executor_client as e; e.fingerprint()",
}


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays one JSON object."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """Median and min are what the report uses; raw samples are kept so nothing is hidden."""
    return {
        "n": len(samples),
        "median_s": round(statistics.median(samples), 4),
        "min_s": round(min(samples), 4),
        "max_s": round(max(samples), 4),
        "samples_s": [round(s, 4) for s in samples],
    }


# ---- subprocess plumbing -------------------------------------------------------------------


@dataclass(frozen=True)
class EnvPolicy:
    """What every child process sees: no Prefect API/home and no RLAM_* from the caller."""

    planner: str | None  # RLAM_PLANNER for the children; None leaves the project's default

    def env(self, rlam_home: Path | None, prefect_home: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "RLAM_")) and k != "PREFECT_HOME"}
        if self.planner:
            env["RLAM_PLANNER"] = self.planner
        if rlam_home is not None:
            env["RLAM_HOME"] = str(rlam_home)
        if prefect_home is not None:  # keeps a bare `import prefect` away from ~/.prefect
            env["PREFECT_HOME"] = str(prefect_home)
        return env


def rlam_command() -> list[str]:
    """The installed console script next to this interpreter, as a user would run it."""
    script = Path(sys.executable).parent / "rlam"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rlam_prefect.cli"]


@dataclass
class Timed:
    seconds: float
    returncode: int
    stdout: str
    stderr: str


def timed_run(argv: Sequence[str], env: dict[str, str], cwd: Path = ROOT) -> Timed:
    """Wall time of one fresh process, start to exit."""
    start = time.perf_counter()
    proc = subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    return Timed(time.perf_counter() - start, proc.returncode, proc.stdout, proc.stderr)


@dataclass
class Recorder:
    """Collects samples per scenario and flags every outcome that is not the expected one."""

    policy: EnvPolicy
    # The rlam to measure and where to run it; by default this checkout and this interpreter's
    # console script. bench_cli.py points them at another venv and checkout (--python, --cwd).
    command: list[str] | None = None
    cwd: Path = ROOT
    samples: dict[str, list[float]] = field(default_factory=dict)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    planners_seen: set[str] = field(default_factory=set)

    def rlam(self, scenario: str, args: Sequence[str], home: Path) -> dict[str, Any] | None:
        env = self.policy.env(home)
        for name, value in SCENARIO_ENV.get(scenario, {}).items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        result = timed_run([*(self.command or rlam_command()), *args], env, self.cwd)
        self.samples.setdefault(scenario, []).append(result.seconds)
        return self._check(scenario, args, result)

    def _check(self, scenario: str, args: Sequence[str], result: Timed) -> dict[str, Any] | None:
        report: dict[str, Any] | None = None
        problem = None
        try:
            report = json.loads(result.stdout)
        except json.JSONDecodeError:
            problem = "stdout is not JSON"
        if report is not None and report.get("planner"):
            self.planners_seen.add(str(report["planner"]))
        if result.returncode != 0:
            problem = f"exit code {result.returncode}"
        elif report is not None:
            problem = _outcome_problem(scenario, report)
        if problem:
            self.anomalies.append({"scenario": scenario, "args": list(args), "problem": problem, "stderr_tail": result.stderr[-800:]})
            log(f"  ANOMALY {scenario}: {problem}")
        return report


def _outcome_problem(scenario: str, report: dict[str, Any]) -> str | None:
    got = (report.get("executed"), report.get("cached"))
    if report.get("status") != "completed":
        return f"status {report.get('status')!r}"
    if got != EXPECTED[scenario]:
        return f"executed/cached {got}, expected {EXPECTED[scenario]}"
    if report.get("mode") == "replay" and report.get("identical") is not True:
        return "replay not identical"
    return None


# ---- CLI scenarios -------------------------------------------------------------------------


def run_cold(rec: Recorder, home: Path) -> str:
    """First run in a fresh home; its run id is the parent of every replay and fork."""
    report = rec.rlam("run_cold", ["run", "--json"], home)
    if not report or not report.get("run_id"):
        raise RuntimeError(f"the cold run produced no run id; cannot continue: {rec.anomalies[-1:]}")
    return str(report["run_id"])


def warm_args(scenario: str, i: int, first_run: str) -> list[str]:
    """Arguments of repeat ``i``; new parameter values every repeat so executing steps really execute."""
    return {
        "script": ["run", "--pipeline", "script", "--json"],
        "run_warm_cached": ["run", "--json"],
        "run_warm_cached_inprocess": ["run", "--json"],
        "run_warm_heuristic": ["run", "--json"],
        "run_warm_heuristic_inprocess": ["run", "--json"],
        "run_warm_executes_inprocess": ["run", "--set", f"train_model.C={30.0 + i:.1f}", "--json"],
        "replay_warm_inprocess": ["replay", first_run, "--json"],
        "fork_warm_inprocess": ["fork", first_run, "--step", "4", "--set", f"train_model.C={0.55 + 0.01 * i:.2f}", "--json"],
        "run_warm_executes": ["run", "--set", f"train_model.C={2.0 + i:.1f}", "--json"],
        "run_warm_preprocess": ["run", "--set", f"preprocess_data.random_state={1000 + i}", "--json"],
        "replay_warm": ["replay", first_run, "--json"],
        "fork_warm": ["fork", first_run, "--step", "4", "--set", f"train_model.C={0.25 + 0.01 * i:.2f}", "--json"],
    }[scenario]


def warm_rounds(rec: Recorder, home: Path, first_run: str, repeats: int) -> None:
    """Round-robin over the scenarios so that machine drift spreads over all of them alike."""
    for i in range(repeats):
        log(f"warm round {i + 1}/{repeats}")
        for scenario in WARM_ORDER:
            rec.rlam(scenario, warm_args(scenario, i, first_run), home)


def wait_for_executor(home: Path, timeout: float = 300.0) -> dict[str, Any]:
    """The first run starts the home's warm executor in the background; warm samples start once it listens."""
    start = time.perf_counter()
    state_file, sock = home / "prefect" / "executor.json", home / "prefect" / "executor.sock"
    while time.perf_counter() - start < timeout:
        if state_file.exists() and sock.exists():
            state = json.loads(state_file.read_text())
            return {"ready_after_s": round(time.perf_counter() - start, 3), "preload_s": state.get("preload_s"), "pid": state.get("pid")}
        time.sleep(0.2)
    return {"ready_after_s": None, "preload_s": None, "pid": None}


def executor_commands(home: Path) -> int:
    """How many commands the executor ran (one log line each): proves the warm samples went through it."""
    try:
        return sum(" runs rlam " in line for line in (home / "prefect" / "executor.log").read_text().splitlines())
    except FileNotFoundError:
        return 0


def phases_child(home_dir: Path, run_id: str, out: Path) -> None:
    """One in-process replay split into phases: imports, server connect, flow call (tasks, trace I/O, engine)."""
    t0 = time.perf_counter()
    from rlam_prefect.core.home import HomeLayout
    from rlam_prefect.local.backend import configure
    from rlam_prefect.record.store import TraceStore

    marks = {"import_rlam": time.perf_counter() - t0}
    os.environ["RLAM_HOME"] = str(home_dir)
    t = time.perf_counter()
    configure(HomeLayout(home_dir))  # health check of this home's running server
    marks["server_connect"] = time.perf_counter() - t
    t = time.perf_counter()
    import prefect  # noqa: F401

    marks["import_prefect"] = time.perf_counter() - t
    t = time.perf_counter()
    import rlam_prefect.prefect.flow  # noqa: F401  (call_flow imports it lazily; timed here as before)
    from rlam_prefect.execution.session import add_step_listener
    from rlam_prefect.prefect.runner import call_flow

    marks["import_flow_and_engine"] = time.perf_counter() - t
    t = time.perf_counter()
    import sklearn.linear_model  # noqa: F401  (unpickling the cached estimator needs it)

    marks["import_sklearn"] = time.perf_counter() - t
    io = {"s": 0.0, "depth": 0}

    def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            io["depth"] += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                io["depth"] -= 1
                if io["depth"] == 0:
                    io["s"] += time.perf_counter() - start
        return wrapper

    for name in ("append", "_read_partition", "runs"):  # bench-only timers around the one trace reader/writer
        setattr(TraceStore, name, timed(getattr(TraceStore, name)))
    rows: list[dict[str, Any]] = []
    add_step_listener(rows.append)
    t = time.perf_counter()
    call_flow({"replay_of": run_id})  # exactly as `rlam replay` calls it
    marks["flow_call"] = time.perf_counter() - t
    marks["tasks"] = sum(r["duration_s"] for r in rows)
    marks["trace_io"] = io["s"]
    marks["flow_engine_rest"] = marks["flow_call"] - marks["tasks"] - marks["trace_io"]
    marks["total_in_process"] = time.perf_counter() - t0
    out.write_text(json.dumps(marks))


def phase_breakdown(policy: EnvPolicy, home: Path, run_id: str, repeats: int, scratch: Path) -> dict[str, Any]:
    """Medians of ``repeats`` phases children (fresh processes) against the warm home."""
    samples: dict[str, list[float]] = {}
    env = {**policy.env(home), "RLAM_EXECUTOR": "off"}
    for i in range(repeats):
        out = scratch / f"phases-{i}.json"
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--phases-child", str(home), run_id, str(out)],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
        if proc.returncode != 0:
            raise RuntimeError(f"phases child failed: {proc.stderr[-2000:]}")
        for name, value in json.loads(out.read_text()).items():
            samples.setdefault(name, []).append(value)
    return {name: summarize(values) for name, values in samples.items()}


def import_breakdown(policy: EnvPolicy, repeats: int, prefect_home: Path) -> dict[str, Any]:
    """Fixed costs every `rlam run` process pays before any work: start-up and imports."""
    samples: dict[str, list[float]] = {name: [] for name in IMPORTS}
    env = policy.env(None, prefect_home)
    for _ in range(repeats):
        for name, code in IMPORTS.items():
            result = timed_run([sys.executable, "-c", code], env)
            if result.returncode != 0:
                raise RuntimeError(f"python -c {code!r} failed: {result.stderr[-500:]}")
            samples[name].append(result.seconds)
    return {name: summarize(values) | {"command": f"python -c {IMPORTS[name]!r}"} for name, values in samples.items()}


# ---- in-process overhead (runs in a child: Prefect must be configured before it is imported) --


# The same five tasks doing real work (about 1 s of training): the layer's cost is per run and per
# step, not proportional to the work, so its ratio depends on how long the tasks take.
OVERHEAD_WORKLOAD = {"load_dataset": {"name": "synthetic", "n_samples": 8000, "n_features": 20}, "train_model": {"model": "random_forest", "n_estimators": 40}}


def overhead_child(server_home: Path, state_root: Path, repeats: int, out: Path) -> None:
    """Plain Prefect flow vs the R-LAM flow, same tasks, same process, same server."""
    from rlam_prefect.core.home import HomeLayout
    from rlam_prefect.local.backend import configure
    from rlam_prefect.local.server import ensure_server

    assert "prefect" not in sys.modules, "Prefect imported before its API was configured"
    home = HomeLayout(server_home)
    url = ensure_server(home)
    os.environ["PREFECT_API_URL"] = url
    os.environ["PREFECT_HOME"] = str(home.prefect)
    configure(home)  # the CLI's quiet defaults (logging level, analytics off); starts nothing with the URL set

    from rlam_prefect.execution.session import add_step_listener
    from rlam_prefect.prefect.client import shared_sync_client
    from rlam_prefect.prefect.runner import call_flow

    plain_flow = build_plain_flow()
    rows: list[dict[str, Any]] = []
    add_step_listener(rows.append)

    def run_rlam(rlam_home: Path, overrides: dict[str, Any] | None) -> dict[str, Any]:
        os.environ["RLAM_HOME"] = str(rlam_home)  # the flow reads it through HomeLayout.from_env()
        rows.clear()
        start = time.perf_counter()
        run_id = uuid.uuid4().hex[:12]
        call_flow({"run_id": run_id, "overrides": overrides, "planner": "fixed"})  # exactly as `rlam run` calls it
        call = time.perf_counter() - start
        statuses = [r["status"] for r in rows]
        return {"call_s": call, "steps_s": sum(r["duration_s"] for r in rows), "executed": statuses.count("executed"), "cached": statuses.count("cached")}

    def run_plain(overrides: dict[str, Any] | None, shared_client: bool = False) -> dict[str, Any]:
        start = time.perf_counter()
        if shared_client:  # the same Prefect client reuse `rlam` does, to separate it from the layer's own cost
            with shared_sync_client():
                inner = asyncio.run(plain_flow(overrides=overrides))
        else:
            inner = asyncio.run(plain_flow(overrides=overrides))
        return {"call_s": time.perf_counter() - start, "body_s": inner["body_s"], "steps_s": inner["task_s"]}

    shared = state_root / "shared"
    variants: dict[str, Callable[[int], dict[str, Any]]] = {
        "plain": lambda i: run_plain({"preprocess_data": {"random_state": 1000 + i}}),
        "rlam_overrides": lambda i: run_rlam(shared, {"preprocess_data": {"random_state": 1000 + i}}),
        "rlam_fresh_home": lambda i: run_rlam(state_root / f"fresh-{i}", None),
        "plain_shared_client": lambda i: run_plain({"preprocess_data": {"random_state": 2000 + i}}, shared_client=True),
        "plain_workload": lambda i: run_plain(OVERHEAD_WORKLOAD),
        "rlam_workload": lambda i: run_rlam(state_root / f"workload-{i}", OVERHEAD_WORKLOAD),
    }
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for i in range(repeats + 1):  # iteration 0 is the warm-up: imports, task objects, first server round trips
        for name, variant in variants.items():
            sample = variant(i)
            if i > 0:
                samples[name].append(sample)
        print(f"[overhead child] iteration {i}/{repeats} done", file=sys.stderr, flush=True)
    out.write_text(json.dumps({"api_url": url, "samples": samples}))


def build_plain_flow() -> Any:
    """A Prefect flow of the same five actions, no cache, no persistence, no R-LAM layer."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    import tasks  # noqa: F401 - registers the actions
    from rlam_prefect.actions.project import fixed_order
    from rlam_prefect.actions.registry import get_action

    def make_task(name: str) -> Any:
        spec = get_action(name)

        def run_action(inputs: dict[str, Any], params: dict[str, Any]) -> Any:
            return spec.run(inputs, params)

        run_action.__name__ = run_action.__qualname__ = name
        return task(run_action, name=name, cache_policy=NO_CACHE, persist_result=False)

    plain_tasks = {name: make_task(name) for name in fixed_order()}

    # async like the R-LAM flow, so both use the same Prefect engine (the sync one waits for its heartbeat thread)
    @flow(name="plain-bench", persist_result=False)
    async def plain_flow(overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, float]:
        body_start = time.perf_counter()
        artifacts: dict[str, Any] = {}
        task_s = 0.0
        for name in fixed_order():
            spec = get_action(name)
            params = spec.validate_params((overrides or {}).get(name, {}))
            inputs = {arg: artifacts[kind] for arg, kind in spec.input_kinds.items()}
            started = time.perf_counter()
            artifacts[spec.output_kind] = plain_tasks[name](inputs=inputs, params=params)
            task_s += time.perf_counter() - started
        return {"body_s": time.perf_counter() - body_start, "task_s": task_s}

    return plain_flow


def measure_overhead(policy: EnvPolicy, server_home: Path, state_root: Path, repeats: int) -> dict[str, Any]:
    """Run the overhead child and condense its samples into medians and per-step overhead."""
    state_root.mkdir(parents=True, exist_ok=True)
    out, log_file = state_root / "overhead.json", state_root / "overhead-child.log"
    argv = [sys.executable, str(Path(__file__).resolve()), "--overhead-child", str(server_home), str(state_root), str(repeats), str(out)]
    with open(log_file, "w") as handle:
        proc = subprocess.run(argv, env=policy.env(None), cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, timeout=SUBPROCESS_TIMEOUT_S * 2)
    if proc.returncode != 0:
        raise RuntimeError(f"overhead child failed (exit {proc.returncode}):\n{log_file.read_text()[-3000:]}")
    return condense_overhead(json.loads(out.read_text())["samples"])


def condense_overhead(raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Flow-call medians, ratios and per-step overhead; also the same at step level (no flow set-up/teardown)."""
    result: dict[str, Any] = {"variants": {}}
    for name, samples in raw.items():
        entry: dict[str, Any] = {
            "flow_call": summarize([s["call_s"] for s in samples]),
            "steps_sum": summarize([s["steps_s"] for s in samples]),
        }
        if "body_s" in samples[0]:
            entry["flow_body"] = summarize([s["body_s"] for s in samples])
        if "executed" in samples[0]:
            entry["executed_cached"] = sorted({(s["executed"], s["cached"]) for s in samples})
        result["variants"][name] = entry
    for name, baseline in OVERHEAD_COMPARISONS:
        plain, rlam = result["variants"][baseline], result["variants"][name]
        call_delta = rlam["flow_call"]["median_s"] - plain["flow_call"]["median_s"]
        step_delta = rlam["steps_sum"]["median_s"] - plain["steps_sum"]["median_s"]
        result[comparison_key(name, baseline)] = {
            "flow_call_ratio": round(rlam["flow_call"]["median_s"] / plain["flow_call"]["median_s"], 3),
            "per_step_overhead_ms": round(call_delta / N_STEPS * 1000, 1),
            "steps_sum_ratio": round(rlam["steps_sum"]["median_s"] / plain["steps_sum"]["median_s"], 3),
            "per_step_overhead_ms_step_level": round(step_delta / N_STEPS * 1000, 1),
        }
    return result


# ---- servers: stop what we started, and prove nothing is left -----------------------------


def server_processes(marker: str | None = None) -> list[dict[str, Any]]:
    """`prefect server` and rlam supervisor processes; with ``marker``, only those whose environment mentions it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            environ = (proc / "environ").read_bytes().decode(errors="replace") if marker else ""
        except OSError:
            continue
        if ("prefect server start" in cmdline or "rlam_prefect.local.supervisor" in cmdline or "rlam_prefect.local.server" in cmdline or "rlam_prefect.cli.executor_entry" in cmdline) and (marker is None or marker in environ):
            found.append({"pid": int(proc.name), "cmdline": cmdline})
    return found


def stop_everything(policy: EnvPolicy, homes: Sequence[Path], marker: str) -> dict[str, Any]:
    """`rlam server stop` per home we used; anything of ours still alive after that is reported, then ended by pid."""
    stops = []
    for home in homes:
        if (home / "prefect" / "server.json").exists():
            result = timed_run([*rlam_command(), "server", "stop"], policy.env(home))
            stops.append({"home": str(home), "seconds": round(result.seconds, 3), "returncode": result.returncode, "output": result.stdout.strip()})
    deadline = time.monotonic() + 20.0
    while server_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    stray = server_processes(marker)
    for proc in stray:
        try:
            os.kill(proc["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    return {"stops": stops, "stray_after_stop": stray}


# ---- provenance: machine, versions, code ---------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": model, "python": platform.python_version(), "platform": platform.platform(), "executable": sys.executable}


def load_average() -> list[float]:
    """Other work on the machine skews wall times; recorded at start and end so it can be seen."""
    return [round(x, 2) for x in os.getloadavg()]


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def code_state() -> dict[str, Any]:
    """Which code was measured: commit, modified files, and a hash of every source file (read-only)."""
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    digest = hashlib.sha256()
    files = sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py"))
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line[3:].split("/")[0] in SOURCE_DIRS]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_source_files": changed, "source_sha256": digest.hexdigest()[:16], "source_files": len(files)}


# ---- report ----------------------------------------------------------------------------------


def add_ratios(scenarios: dict[str, dict[str, Any]]) -> None:
    script_median = scenarios["script"]["median_s"]
    for stats in scenarios.values():
        stats["ratio_to_script"] = round(stats["median_s"] / script_median, 2)


def render_markdown(results: dict[str, Any]) -> str:
    m, code = results["machine"], results["code_at_start"]
    dirty = f", {len(code['uncommitted_source_files'])} source files uncommitted" if code["uncommitted_source_files"] else ""
    lines = [
        "# rlam-prefect core benchmark",
        "",
        f"- Date (UTC): {results['date_utc']}",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model'] or 'unknown model'}), Python {m['python']}, {m['platform']}",
        f"- Load average (1/5/15 min): {results['load_average_1_5_15min_at_start']} at start, {results['load_average_1_5_15min_at_end']} at end",
        "- Packages: " + ", ".join(f"{k} {val}" for k, val in results["versions"].items()),
        f"- Code: commit {code['commit']}{dirty}; source hash {code['source_sha256']} at start, {results['code_at_end']['source_sha256']} at end",
        f"- Planner: RLAM_PLANNER={results['planner'] or '(project default)'}; planners reported by the runs: {', '.join(results['planners_seen']) or '-'}",
        f"- Repeats per warm scenario: {results['repeats']} (round-robin order); `run_cold`: {results['scenarios']['run_cold']['n']} sample",
        f"- Command: `{' '.join(['python bench/bench_core.py', *results['argv']])}`",
        "",
        "## CLI scenarios (fresh process each, wall time)",
        "",
        "| scenario | what | n | median s | min s | max s | median / script |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in TABLE_ORDER:
        s = results["scenarios"][name]
        lines.append(f"| `{name}` | {DESCRIPTIONS[name]} | {s['n']} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['max_s']:.3f} | {s['ratio_to_script']:.2f} |")
    lines += render_targets(results) + render_phases(results)
    lines += render_overhead(results["overhead"]) + render_breakdown(results) + render_checks(results)
    lines += ["", "## What the numbers mean", "", *notes(results), "", "## Raw JSON", "", "```json", json.dumps(results, indent=2), "```", ""]
    return "\n".join(lines)


OVERHEAD_LABELS = {
    "plain": "plain Prefect flow (NO_CACHE, no persistence)",
    "rlam_overrides": "R-LAM flow, new preprocess_data.random_state per iteration",
    "rlam_fresh_home": "R-LAM flow, fresh RLAM_HOME per iteration",
    "plain_shared_client": "plain Prefect flow called inside one shared sync client (as `rlam` calls its flow)",
    "plain_workload": "plain Prefect flow, ~1 s of training (synthetic 8000x20, 40 trees)",
    "rlam_workload": "R-LAM flow, ~1 s of training, fresh RLAM_HOME per iteration",
}
BASELINE_NAMES = {"plain": "the plain flow", "plain_workload": "the plain flow, ~1 s of training", "plain_shared_client": "the plain flow in one shared client"}


def comparison_key(name: str, baseline: str) -> str:
    return f"{name}_vs_{baseline}"


OVERHEAD_COMPARISONS = (("rlam_overrides", "plain"), ("rlam_fresh_home", "plain"), ("rlam_workload", "plain_workload"), ("rlam_fresh_home", "plain_shared_client"))


def render_overhead(overhead: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## R-LAM layer vs a plain Prefect flow (one process, one server)",
        "",
        "Medians over the timed iterations after one warm-up. *flow call*: the whole call of the flow "
        "(flow-run creation, body, teardown). *steps*: sum of the five task calls (plain) or of the "
        "engine's per-step `duration_s` (R-LAM: validation, cache key, index lookup, lock, task call, digest or verify).",
        "",
        "| variant | executed/cached | flow call median s | flow call min s | steps median s |",
        "|---|---|---:|---:|---:|",
    ]
    for name, entry in overhead["variants"].items():
        counts = ", ".join(f"{e}/{c}" for e, c in entry.get("executed_cached", [])) or "5/0 (no cache)"
        lines.append(f"| {OVERHEAD_LABELS[name]} | {counts} | {entry['flow_call']['median_s']:.3f} | {entry['flow_call']['min_s']:.3f} | {entry['steps_sum']['median_s']:.3f} |")
    lines += ["", "| comparison | flow call ratio | overhead ms/step (flow call) | steps ratio | overhead ms/step (steps) |", "|---|---:|---:|---:|---:|"]
    for name, baseline in OVERHEAD_COMPARISONS:
        c = overhead.get(comparison_key(name, baseline))
        if c is None:  # results recorded before this comparison existed
            continue
        lines.append(f"| {OVERHEAD_LABELS[name]} vs {BASELINE_NAMES[baseline]} | {c['flow_call_ratio']:.2f} | {c['per_step_overhead_ms']:.1f} | {c['steps_sum_ratio']:.2f} | {c['per_step_overhead_ms_step_level']:.1f} |")
    plain = overhead["variants"]["plain"]
    lines += ["", f"Plain flow: median body {plain['flow_body']['median_s']:.3f} s inside a median call of {plain['flow_call']['median_s']:.3f} s."]
    return lines


TARGETS = (("run_warm_cached", "run_warm_cached_inprocess"), ("run_warm_executes", "run_warm_executes_inprocess"),
           ("replay_warm", "replay_warm_inprocess"), ("fork_warm", "fork_warm_inprocess"),
           ("run_warm_heuristic", "run_warm_heuristic_inprocess"))
TARGET_RATIO = 1.7


def render_targets(results: dict[str, Any]) -> list[str]:
    s, ex = results["scenarios"], results["executor"]
    lines = [
        "", f"## Issue 9 target: warm commands at most {TARGET_RATIO}x the Script pipeline (this run)", "",
        "| command | through the warm executor | ratio | in-process (RLAM_EXECUTOR=off) | ratio | target met (executor) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for warm, inproc in TARGETS:
        a, b = s[warm], s[inproc]
        lines.append(f"| `{warm}` | {a['median_s']:.3f} s | {a['ratio_to_script']:.2f} | {b['median_s']:.3f} s | {b['ratio_to_script']:.2f} | "
                     f"{'yes' if a['ratio_to_script'] <= TARGET_RATIO else 'NO'} |")
    lines += [
        "",
        f"Executor: ready {ex['ready_after_s']} s after the first run returned (preload {ex['preload_s']} s, in the background); "
        f"it ran {ex['commands_served']} commands (expected {ex['expected_served']}: every warm sample not marked in-process); "
        f"pid {ex['pid']} at start, {ex['pid_at_end']} at end.",
    ]
    return lines


PHASE_LABELS = {
    "import_rlam": "import rlam_prefect (trace, backend)",
    "server_connect": "server connect (health check of the running home server)",
    "import_prefect": "import prefect",
    "import_flow_and_engine": "import the flow, engine, planner modules",
    "import_sklearn": "import scikit-learn (cached estimators unpickle into it)",
    "flow_call": "flow call (replay of 5 cached steps)",
    "tasks": "  of which: the 5 steps (verify + Prefect task run + cache read)",
    "trace_io": "  of which: trace reads and writes (Parquet)",
    "flow_engine_rest": "  of which: flow engine, plan, teardown (the rest)",
    "total_in_process": "total inside the process (without interpreter start-up and CLI report)",
}


def render_phases(results: dict[str, Any]) -> list[str]:
    lines = [
        "", "## Where an in-process warm replay spends its time (fresh process each, medians)", "",
        "The same replay as `replay_warm_inprocess`, timed phase by phase inside the process (`--phases-child`); "
        "the warm executor pays only the flow call per command, because it imports everything once.", "",
        "| phase | median s | min s |", "|---|---:|---:|",
    ]
    for name, label in PHASE_LABELS.items():
        p = results["phases"][name]
        lines.append(f"| {label} | {p['median_s']:.3f} | {p['min_s']:.3f} |")
    return lines


def render_breakdown(results: dict[str, Any]) -> list[str]:
    lines = ["", "## Fixed per-process costs (fresh `python -c`, wall time)", "", "| command | median s | min s |", "|---|---:|---:|"]
    for entry in results["breakdown"].values():
        lines.append(f"| `{entry['command']}` | {entry['median_s']:.3f} | {entry['min_s']:.3f} |")
    warm = results["scenarios"]["run_warm_cached_inprocess"]["median_s"]
    lines += [
        "",
        f"A warm, fully cached `rlam run` without the executor takes {warm:.3f} s (median). Minus the `import prefect` process and the extra "
        f"cost of importing scikit-learn (its time minus bare start-up), roughly {results['breakdown_rough_remainder_s']:.3f} s "
        "remain for everything else (flow and task runs against the server, trace and result I/O, flow teardown). "
        "Import costs overlap (numpy, pydantic), so this split is an estimate.",
    ]
    return lines


def render_checks(results: dict[str, Any]) -> list[str]:
    anomalies, cleanup = results["anomalies"], results["cleanup"]
    lines = ["", "## Checks", ""]
    lines.append("- Every CLI sample returned the expected status and executed/cached counts." if not anomalies else f"- {len(anomalies)} CLI sample(s) did not return the expected outcome:")
    lines += [f"  - `{a['scenario']}` `{' '.join(a['args'])}`: {a['problem']}" for a in anomalies]
    changed = results["code_at_start"]["source_sha256"] != results["code_at_end"]["source_sha256"]
    lines.append("- The project's source files CHANGED during the bench run: figures mix code versions." if changed else "- The project's source files did not change during the bench run.")
    lines.append(
        f"- Servers started by the bench: {len(cleanup['stops'])}, stopped with `rlam server stop`; still alive afterwards: "
        f"{len(cleanup['stray_after_stop'])}. Server processes that existed before the bench (not ours, left alone): {len(results['pre_existing_servers'])}."
    )
    return lines


def notes(results: dict[str, Any]) -> list[str]:
    """Plain-language reading of this run's own figures; no number here comes from anywhere else."""
    s, b, o = results["scenarios"], results["breakdown"], results["overhead"]
    plain = o["variants"]["plain"]
    fresh = o["rlam_fresh_home_vs_plain"]
    return [
        "- Wall time on this one machine from a single bench run; min and max are shown so the noise can be judged. Nothing here is a guarantee.",
        f"- `script` ({s['script']['median_s']:.2f} s) is the floor: interpreter start-up, imports and the five scikit-learn actions, without Prefect. "
        "Each ratio divides a scenario's median by the script median of this same run.",
        f"- In-process (RLAM_EXECUTOR=off), every Prefect-backed command pays `import prefect` ({b['import_prefect']['median_s']:.2f} s as a bare process), "
        "scikit-learn (cached estimators unpickle into it), the flow run's round trips to the server and its teardown: "
        f"a fully cached run takes {s['run_warm_cached_inprocess']['median_s']:.2f} s. Through the warm executor the client process "
        f"only imports the CLI and hands its command over ({b['executor_client']['median_s']:.3f} s as a bare process); the forked "
        f"child starts with everything imported, so a fully cached run takes {s['run_warm_cached']['median_s']:.2f} s.",
        f"- The default planner (rlam/heuristic through litellm): {s['run_warm_heuristic']['median_s']:.2f} s through the executor "
        f"(litellm preloaded), {s['run_warm_heuristic_inprocess']['median_s']:.2f} s in-process (pays `import litellm`).",
        f"- Both flows in the overhead section are `async def` with synchronous bodies. Prefect {results['versions']['prefect']}'s sync engine "
        "joins its heartbeat thread at exit, and that thread sleeps in 1 s slices (`_send_heartbeats` in prefect/flow_engine.py), which adds "
        "up to 1 s to every sync flow call and would hide the layer's cost. "
        f"The plain flow's body took {plain['flow_body']['median_s']:.3f} s of a {plain['flow_call']['median_s']:.3f} s call.",
        f"- Like for like (all five steps executing, fresh RLAM_HOME), the R-LAM engine's steps took {fresh['steps_sum_ratio']:.2f}x the plain "
        f"task calls, {fresh['per_step_overhead_ms_step_level']:.1f} ms per step (content hashing, cache key, index lookup, lock, "
        f"pickled result persistence and digest); at flow-call level the difference is {fresh['per_step_overhead_ms']:.1f} ms per step.",
        f"- `run_cold` ({s['run_cold']['median_s']:.2f} s) includes starting this home's `prefect server` (database creation and migrations); "
        "it is one sample per fresh RLAM_HOME.",
        "- The `rlam_overrides` variant executes only steps 3-5 (1-2 are cache hits), so it is not the same work as the plain flow; "
        "`rlam_fresh_home` is the like-for-like comparison.",
    ]


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark rlam's CLI paths and the R-LAM layer's overhead.")
    parser.add_argument("--quick", action="store_true", help="2 repeats instead of 5")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of every warm scenario (default 5)")
    parser.add_argument("--planner", default="fixed", help="RLAM_PLANNER for every child ('default' = the project's own default)")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md", help="where to write the Markdown report")
    parser.add_argument("--keep-homes", action="store_true", help="keep the temporary RLAM_HOMEs for inspection")
    parser.add_argument("--phases-child", nargs=3, metavar=("HOME", "RUN_ID", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--overhead-child", nargs=4, metavar=("SERVER_HOME", "STATE_ROOT", "REPEATS", "OUT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_benchmark(policy: EnvPolicy, repeats: int, tmp_root: Path) -> dict[str, Any]:
    """All measurements; servers are stopped by the caller whatever happens here."""
    rec = Recorder(policy)
    log("warm-up: one untimed script run (OS file cache)")
    timed_run([*rlam_command(), "run", "--pipeline", "script", "--json"], policy.env(tmp_root / "warmup-home"))
    log("run_cold: first rlam run in a fresh RLAM_HOME")
    first_run = run_cold(rec, tmp_root / "cli-home")
    log("waiting for the warm executor the first run started")
    executor = wait_for_executor(tmp_root / "cli-home")
    log(f"executor: {executor}")
    warm_rounds(rec, tmp_root / "cli-home", first_run, repeats)
    executor["commands_served"] = executor_commands(tmp_root / "cli-home")
    executor["expected_served"] = repeats * sum(1 for n in WARM_ORDER if n != "script" and not n.endswith("_inprocess"))
    end_state = tmp_root / "cli-home" / "prefect" / "executor.json"
    executor["pid_at_end"] = json.loads(end_state.read_text()).get("pid") if end_state.exists() else None
    log("phases of an in-process replay")
    phases = phase_breakdown(policy, tmp_root / "cli-home", first_run, repeats, tmp_root)
    log("in-process overhead: plain Prefect flow vs R-LAM flow")
    overhead = measure_overhead(policy, tmp_root / "overhead-server-home", tmp_root / "overhead-state", repeats)
    log("breakdown: python start-up and imports")
    breakdown = import_breakdown(policy, repeats, tmp_root / "import-prefect-home")
    scenarios = {name: summarize(rec.samples[name]) for name in TABLE_ORDER}
    add_ratios(scenarios)
    rough = (
        scenarios["run_warm_cached_inprocess"]["median_s"]
        - breakdown["import_prefect"]["median_s"]
        - (breakdown["import_sklearn_linear_model"]["median_s"] - breakdown["python_startup"]["median_s"])
    )
    return {
        "first_run_id": first_run,
        "executor": executor,
        "phases": phases,
        "scenarios": scenarios,
        "overhead": overhead,
        "breakdown": breakdown,
        "breakdown_rough_remainder_s": round(rough, 4),
        "anomalies": rec.anomalies,
        "planners_seen": sorted(rec.planners_seen),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.phases_child:
        home, run_id, out = args.phases_child
        phases_child(Path(home), run_id, Path(out))
        return 0
    if args.overhead_child:
        server_home, state_root, n, out = args.overhead_child
        overhead_child(Path(server_home), Path(state_root), int(n), Path(out))
        return 0
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    if repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    policy = EnvPolicy(planner=None if args.planner == "default" else args.planner)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` still stops the servers
    tmp_root = Path(tempfile.mkdtemp(prefix="rlam-bench-"))
    results: dict[str, Any] = {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "argv": list(sys.argv[1:] if argv is None else argv),
        "repeats": repeats,
        "planner": policy.planner,
        "machine": machine_info(),
        "load_average_1_5_15min_at_start": load_average(),
        "versions": package_versions(),
        "code_at_start": code_state(),
        "descriptions": DESCRIPTIONS,
        "pre_existing_servers": server_processes(),
    }
    log(f"temporary homes under {tmp_root}; {repeats} repeats; RLAM_PLANNER={policy.planner or '(default)'}")
    try:
        results.update(run_benchmark(policy, repeats, tmp_root))
    finally:
        log("stopping the servers this bench started")
        results["cleanup"] = stop_everything(policy, [tmp_root / "cli-home", tmp_root / "overhead-server-home"], str(tmp_root))
        if results["cleanup"]["stray_after_stop"]:
            log(f"WARNING: still alive after `rlam server stop`, ended by pid: {results['cleanup']['stray_after_stop']}")
        if not args.keep_homes:
            shutil.rmtree(tmp_root, ignore_errors=True)
    results["code_at_end"] = code_state()
    results["load_average_1_5_15min_at_end"] = load_average()
    args.results.write_text(render_markdown(results))
    log(f"wrote {args.results}")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
