#!/usr/bin/env python
"""Replay vs original execution, and fork at every step K, on a training-dominated workload.

    python bench/bench_workload.py [--quick]     (normally run by bench/run.py)

The workload is the fixed-order pipeline on ``load_dataset.name=synthetic`` (scikit-learn's
make_classification) with a random forest, sized so that training takes seconds. Everything
runs in ONE child process against one local Prefect server, calling the R-LAM flow directly
(as bench_core's overhead section does), so process start-up and imports are not in the
ratios; the CLI adds a fixed ~3 s per command on top (see bench_core). Each repeat uses a fresh
RLAM_HOME so its original run really executes. Measurement only: nothing here asserts a timing;
a sample whose executed/cached counts are not the expected ones is flagged as an anomaly.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

N_STEPS = 5


def workload(quick: bool) -> dict[str, dict[str, Any]]:
    """Overrides for the fixed planner: the synthetic dataset and a random forest."""
    n_samples, n_features, trees = (8000, 20, 10) if quick else (20000, 20, 120)
    return {
        "load_dataset": {"name": "synthetic", "n_samples": n_samples, "n_features": n_features},
        "train_model": {"model": "random_forest", "n_estimators": trees},
    }


def fork_overrides(k: int, median_variance: float) -> dict[str, dict[str, Any]]:
    """A change at step K whose effect reaches every later step, so steps K..5 must all execute.

    Forks keep the parent's plan and parameters (pin_decisions) and apply only this change.
    """
    return {
        1: {"load_dataset": {"random_state": 1}},
        2: {"analyze_data": {"variance_threshold": median_variance}},  # flags half the features; preprocessing drops them
        3: {"preprocess_data": {"random_state": 7}},
        4: {"train_model": {"n_estimators": 121}},
        5: {"evaluate_model": {"f1_average": "weighted"}},
    }[k]


def child(server_home: Path, state_root: Path, repeats: int, quick: bool, out: Path) -> None:
    from rlam_prefect.core.home import HomeLayout
    from rlam_prefect.local.backend import configure
    from rlam_prefect.local.server import ensure_server

    home = HomeLayout(server_home)
    url = ensure_server(home)
    os.environ["PREFECT_API_URL"] = url
    os.environ["PREFECT_HOME"] = str(home.prefect)
    configure(home)

    import numpy as np

    from rlam_prefect.actions.project import load_action_modules
    from rlam_prefect.actions.registry import get_action
    from rlam_prefect.prefect.flow import rlam_flow
    from rlam_prefect.record.store import TraceStore

    load_action_modules()
    base = workload(quick)
    dataset = get_action("load_dataset").run({}, get_action("load_dataset").validate_params(base["load_dataset"]))
    median_variance = float(np.median(np.var(dataset.X, axis=0)))

    def flow(rlam_home: Path, **params: Any) -> dict[str, Any]:
        os.environ["RLAM_HOME"] = str(rlam_home)
        run_id = uuid.uuid4().hex[:12]
        start = time.perf_counter()
        asyncio.run(rlam_flow(run_id=run_id, **params))
        seconds = time.perf_counter() - start
        store = TraceStore(HomeLayout(rlam_home))
        steps = store.steps(run_id)
        statuses = [s["status"] for s in steps]
        return {
            "run_id": run_id,
            "seconds": seconds,
            "executed": statuses.count("executed"),
            "cached": statuses.count("cached"),
            "status": store.run(run_id)["status"],
            "identical": store.run(run_id)["identical"],
            "steps_s": {s["action"]: round(s["duration_s"], 4) for s in steps},
            "hashes": [s["output_hash"] for s in steps],
        }

    # warm-up, not timed: the first flow run in a process pays imports (sklearn.ensemble, ...) and first round trips
    tiny = {"load_dataset": {**base["load_dataset"], "n_samples": 500}, "train_model": {**base["train_model"], "n_estimators": 2}}
    warm = flow(state_root / "warm-up", planner="fixed", overrides=tiny)
    flow(state_root / "warm-up", replay_of=warm["run_id"])
    samples: list[dict[str, Any]] = []
    for i in range(repeats):
        rlam_home = state_root / f"home-{i}"
        original = flow(rlam_home, planner="fixed", overrides=base)
        replay = flow(rlam_home, replay_of=original["run_id"])
        forks = {}
        for k in range(1, N_STEPS + 1):
            forks[k] = flow(rlam_home, fork_of=original["run_id"], fork_step=k, overrides=fork_overrides(k, median_variance), pin_decisions=True)
        samples.append({"original": original, "replay": replay, "forks": forks})
        print(f"[workload child] repeat {i + 1}/{repeats}: original {original['seconds']:.2f} s, replay {replay['seconds']:.2f} s", file=sys.stderr, flush=True)
    out.write_text(json.dumps({"workload": base, "median_variance": median_variance, "samples": samples}))


def condense(raw: dict[str, Any]) -> dict[str, Any]:
    """Medians and ratios; anomalies (unexpected counts, non-identical replays) listed, never dropped."""
    import statistics

    samples = raw["samples"]
    original = [s["original"]["seconds"] for s in samples]
    replay = [s["replay"]["seconds"] for s in samples]
    anomalies = []
    for i, s in enumerate(samples):
        if (s["original"]["executed"], s["original"]["status"]) != (N_STEPS, "completed"):
            anomalies.append(f"repeat {i}: original executed {s['original']['executed']}, status {s['original']['status']}")
        if (s["replay"]["executed"], s["replay"]["identical"], s["replay"]["hashes"]) != (0, True, s["original"]["hashes"]):
            anomalies.append(f"repeat {i}: replay executed {s['replay']['executed']}, identical {s['replay']['identical']}")
        for k, f in s["forks"].items():
            expected = (N_STEPS - int(k) + 1, int(k) - 1)
            if (f["executed"], f["cached"]) != expected:
                anomalies.append(f"repeat {i}: fork at K={k} executed/cached {f['executed']}/{f['cached']}, expected {expected[0]}/{expected[1]}")
    median_original = statistics.median(original)
    train_share = statistics.median(s["original"]["steps_s"]["train_model"] / s["original"]["seconds"] for s in samples)
    forks = {}
    for k in samples[0]["forks"]:
        seconds = [s["forks"][k]["seconds"] for s in samples]
        forks[k] = {
            "median_s": round(statistics.median(seconds), 3),
            "ratio_to_full_run": round(statistics.median(seconds) / median_original, 3),
            "executed": sorted({s["forks"][k]["executed"] for s in samples}),
            "cached": sorted({s["forks"][k]["cached"] for s in samples}),
            "expected_executed": N_STEPS - int(k) + 1,
        }
    return {
        "workload": raw["workload"],
        "repeats": len(samples),
        "original_median_s": round(median_original, 3),
        "original_train_model_share": round(train_share, 3),
        "original_steps_s": samples[0]["original"]["steps_s"],
        "replay_median_s": round(statistics.median(replay), 3),
        "replay_steps_s": samples[0]["replay"]["steps_s"],
        "replay_ratio": round(statistics.median(replay) / median_original, 4),
        "replay_target": 0.10,
        "forks": forks,
        "anomalies": anomalies,
    }


if __name__ == "__main__":
    server_home, state_root, n, quick, out = sys.argv[1:6]
    child(Path(server_home), Path(state_root), int(n), quick == "1", Path(out))
