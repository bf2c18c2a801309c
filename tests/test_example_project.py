"""examples/wine-knn installed into a fresh virtual environment and run end to end: run, replay (identical, 0 executed), fork.

Slow (a fresh venv and a full install, started in the background as soon as this test is collected:
tests/example_venv.py). It never skips by itself: a failure to build the venv or install the project fails the
test. Skip it only on purpose, with ``RLAM_SKIP_EXAMPLE=1`` (or ``-m "not example"``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.example_venv import PROJECT, SKIP_ENV

pytestmark = [
    pytest.mark.example,
    pytest.mark.skipif(os.environ.get(SKIP_ENV) == "1", reason="RLAM_SKIP_EXAMPLE=1 was set explicitly"),
]


def _rlam(venv: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLAM_") and k != "VIRTUAL_ENV"}
    env.update(RLAM_HOME=str(home), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    return subprocess.run([str(venv / "bin" / "rlam"), *args], capture_output=True, text=True, env=env, cwd=PROJECT, timeout=600)


def test_the_example_project_installs_alone_and_runs_replays_and_forks(example_venv, prefect_api_url, tmp_path):
    where = subprocess.run([str(example_venv / "bin" / "python"), "-c", "import rlam_prefect, wine_knn; print(rlam_prefect.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path)
    assert str(example_venv) in where.stdout  # the installed library, not this checkout
    home = tmp_path / "home"
    run = _rlam(example_venv, home, "run", "--planner", "fixed", "--json")
    assert run.returncode == 0, run.stderr
    original = json.loads(run.stdout)
    assert [s["action"] for s in original["steps"]] == ["load_table", "log_features", "fit_knn", "score"]
    assert original["executed"] == 4 and 0.5 < original["metrics"]["mcc"] <= 1.0

    replay = json.loads(_rlam(example_venv, home, "replay", original["run_id"], "--json").stdout)
    assert replay["identical"] is True and replay["executed"] == 0 and replay["cached"] == 4
    assert [s["output_hash"] for s in replay["steps"]] == [s["output_hash"] for s in original["steps"]]

    fork = json.loads(_rlam(example_venv, home, "fork", original["run_id"], "--step", "3", "--set", "fit_knn.n_neighbors=9", "--json").stdout)
    assert fork["status"] == "completed" and fork["parent_run_id"] == original["run_id"]
    assert [s["status"] for s in fork["steps"]] == ["cached", "cached", "executed", "executed"]
    assert fork["steps"][2]["params"]["n_neighbors"] == 9

    runs = _rlam(example_venv, home, "runs")
    assert f"accuracy={original['metrics']['accuracy']}" in runs.stdout  # the project's own metrics in the listing
    diff = _rlam(example_venv, home, "diff", original["run_id"], fork["run_id"], "--json")
    assert "mcc" in json.loads(diff.stdout)["metrics"]
