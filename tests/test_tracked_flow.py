"""R-LAM on an ordinary Prefect flow (no LLM): @rlam.track on the flow, @rlam.step on its three tasks (one .map).

The witness is outside the library: every task body appends a line to a file next to the flow, and the
tests count those lines, not anything rlam reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FLOW = '''
from pathlib import Path

from prefect import flow, task

import rlam_prefect as rlam

WITNESS = Path(__file__).with_name("witness.txt")


def note(what):
    with open(WITNESS, "a") as handle:
        handle.write(what + "\\n")


def helper(x):
    return x * 2


@rlam.step
@task
def load(n: int) -> list:
    note("load")
    return list(range(1, n + 1))


@rlam.step
@task
def square(x: int) -> int:
    note(f"square {x}")
    return helper(x) * x


@rlam.step
@task
def total(xs: list, scale: float = 1.0) -> float:
    note("total")
    return sum(xs) * scale


@rlam.track
@flow
def pipeline(n: int = 3, scale: float = 1.0) -> float:
    xs = load(n)
    ys = square.map(xs)
    return total(ys, scale=scale)


if __name__ == "__main__":
    print(pipeline(n=3, rlam_run_id="f10a000000a1"))
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "myflow.py").write_text(FLOW)
    return tmp_path


def _witness(project: Path) -> list[str]:
    path = project / "witness.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def _run_flow(project: Path, workspace) -> str:
    import os

    env = {**os.environ, "RLAM_HOME": str(workspace.home.root), "PREFECT_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "myflow.py"], cwd=project, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_plain_prefect_flow_runs_replays_with_zero_executions_and_forks_at_step_2(workspace, project):
    assert _run_flow(project, workspace) == "28.0"  # 2*1*1 + 2*2*2 + 2*3*3
    assert sorted(_witness(project)) == ["load", "square 1", "square 2", "square 3", "total"]
    run_id = "f10a000000a1"
    shown = workspace.rlam_json("show", run_id)
    assert shown["pipeline"] == "flow" and shown["status"] == "completed"
    assert [(s["step"], s["action"], s["status"]) for s in shown["steps"]] == [
        (1, "load", "executed"), (2, "square", "executed"), (3, "square", "executed"), (4, "square", "executed"), (5, "total", "executed")]
    assert [s["params"].get("x") for s in shown["steps"][1:4]] == [1, 2, 3]  # .map: one step per call, in item order

    replay = workspace.rlam_json("replay", run_id)
    assert replay["identical"] is True and replay["executed"] == 0 and replay["cached"] == 5
    assert _witness(project) == []  # nothing ran: counted outside the library

    fork = workspace.rlam_json("fork", run_id, "--step", "2", "--set", "total.scale=3")
    assert fork["status"] == "completed" and fork["parent_run_id"] == run_id and fork["fork_step"] == 2
    assert [s["status"] for s in fork["steps"]] == ["cached", "cached", "cached", "cached", "executed"]
    assert _witness(project) == ["total"]  # exactly the step whose key changed
    again = workspace.rlam_json("fork", run_id, "--step", "2", "--set", "total.scale=3")
    assert again["executed"] == 0 and _witness(project) == []

    lineage = workspace.rlam_json("lineage", fork["run_id"])  # data edges as Prefect tracked them, not matched by value
    edges = {(e["from"], e["to"]) for e in lineage["edges"]}
    assert edges == {(1, 2), (1, 3), (1, 4), (2, 5), (3, 5), (4, 5)}
    assert lineage["steps"][0]["reused_from"] == run_id
    assert workspace.rlam("verify", run_id).code == 0  # every stored result re-hashed against the trace


def test_a_helper_edit_changes_the_code_version_and_a_replay_then_fails_naming_the_step(workspace, project):
    _run_flow(project, workspace)
    _witness(project)
    (project / "myflow.py").write_text(FLOW.replace("return x * 2", "return x * 3"))
    replay = workspace.rlam("replay", "f10a000000a1", "--json")
    assert replay.code == 1
    result = json.loads(replay.stdout)
    assert result["identical"] is False and result["executed"] == 0
    failed = [s for s in result["steps"] if s["status"] == "failed"]
    assert failed and failed[0]["action"] == "square" and "ReplayMismatchError" == failed[0]["error_type"]
    assert "no cached result for its key" in failed[0]["error_message"]
    assert _witness(project) == []  # a replay executes nothing, not even the steps after the refused ones
    fork = workspace.rlam_json("fork", "f10a000000a1", "--step", "2")
    assert [s["status"] for s in fork["steps"]] == ["cached", "executed", "executed", "executed", "executed"]


def test_a_fork_override_naming_no_later_task_is_one_line_and_nothing_runs(workspace, project):
    _run_flow(project, workspace)
    _witness(project)
    bad = workspace.rlam("fork", "f10a000000a1", "--step", "5", "--set", "load.n=4")
    assert bad.code == 2 and "task load is not called at or after step 5" in bad.stderr
    assert _witness(project) == []


FILE_FLOW = '''
import threading
from pathlib import Path

from prefect import flow, task

import rlam_prefect as rlam

WITNESS = Path(__file__).with_name("witness.txt")


@rlam.step
@task
def count_lines(path: rlam.DataFile) -> int:
    with open(WITNESS, "a") as handle:
        handle.write("count\\n")
    return len(Path(path).read_text().splitlines())


@rlam.step
@task
def hold(n: int, lock: object = None) -> int:
    return n


@rlam.track
@flow
def files(path: str = "data.txt", bad: bool = False) -> int:
    n = count_lines(path)
    if bad:
        hold(n, lock=threading.Lock())
    return n


if __name__ == "__main__":
    import sys
    print(files(bad=len(sys.argv) > 1, rlam_run_id=sys.argv[2] if len(sys.argv) > 2 else None))
'''


def test_a_task_argument_typed_datafile_is_hashed_by_content_and_an_unhashable_argument_fails_its_step(workspace, tmp_path):
    import os

    (tmp_path / "fileflow.py").write_text(FILE_FLOW)
    data = tmp_path / "data.txt"
    data.write_text("a\nb\n")
    env = {**os.environ, "RLAM_HOME": str(workspace.home.root), "PREFECT_LOGGING_LEVEL": "CRITICAL"}

    def run(*args):
        return subprocess.run([sys.executable, "fileflow.py", *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)

    assert run().stdout.strip().endswith("2") and run().stdout.strip().endswith("2")
    assert _witness(tmp_path) == ["count"]  # the second run was served: same bytes
    data.write_text("a\nc\n")  # same size, new bytes
    assert run("bad", "feedfacecafe").returncode != 0  # the unhashable argument fails the flow run, as a failing task does
    assert _witness(tmp_path) == ["count"]  # new bytes under the same path and size: executed again
    failed = workspace.rlam_json("show", "feedfacecafe")
    step = failed["steps"][1]
    assert failed["status"] == "failed" and step["action"] == "hold" and step["status"] == "failed"
    assert "no canonical content" in step["error_message"] and "_thread.lock" in step["error_message"]
    rows = workspace.home.root / "traces" / "steps" / "feedfacecafe"
    from rlam_prefect.record.store import TraceStore

    read = json.loads(TraceStore(workspace.home).steps("feedfacecafe")[0]["files_read"])["path"]
    assert read["path"] == "data.txt" and read["size"] == 4 and rows.exists()


def test_the_tracked_flow_keeps_its_parameters_and_gains_the_rlam_ones_for_the_custom_run_form(tmp_path):
    import importlib.util

    (tmp_path / "myflow.py").write_text(FLOW)
    spec = importlib.util.spec_from_file_location("myflow_schema", tmp_path / "myflow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    properties = module.pipeline.parameters.properties
    assert {"n", "scale", "rlam_replay_of", "rlam_fork_of", "rlam_fork_step", "rlam_overrides", "rlam_run_id"} <= set(properties)
    assert module.pipeline.name == "pipeline"
    assert module.total.fn([module.square.fn(2)], scale=0.5) == 4.0  # outside a tracked run the task is the user's own
    with pytest.raises(TypeError, match="above @task"):
        import rlam_prefect as rlam

        rlam.step(lambda x: x)
