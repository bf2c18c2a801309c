"""Your own data file through the real CLI: content in the key, edits seen, replays refused, bad files one line each."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

LOAD = ("--planner", "fixed")


def _csv(path: Path, flip: int = 0) -> Path:
    """Breast cancer as a CSV with same-length labels (benign/malign), so flipping labels keeps the size."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    labels = np.where(data.target == 1, "benign", "malign")
    labels[:flip] = np.where(labels[:flip] == "benign", "malign", "benign")
    header = ",".join(f"f{i}" for i in range(data.data.shape[1])) + ",diagnosis"
    rows = [",".join(f"{v:.6g}" for v in row) + f",{label}" for row, label in zip(data.data, labels)]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def _run(workspace, path: Path, *extra: str):
    return workspace.rlam("run", *LOAD, "--set", f"load_dataset.path={path}", "--set", "load_dataset.target=diagnosis", *extra, "--json")


def test_editing_the_file_in_place_re_executes_and_a_replay_of_the_old_run_names_the_file_and_both_digests(workspace, tmp_path):
    data = _csv(tmp_path / "cancer.csv")
    first = _run(workspace, data)
    assert first.code == 0, first.stderr
    run = first.json
    assert run["executed"] == 5
    from rlam_prefect.record.store import TraceStore

    row = TraceStore(workspace.home).steps(run["run_id"])[0]
    read = json.loads(row["files_read"])["path"]
    assert read["path"] == str(data) and read["size"] == data.stat().st_size and read["digest"].startswith("sha256:")
    again = _run(workspace, data).json
    assert again["executed"] == 0 and again["cached"] == 5  # same bytes: served

    size = data.stat().st_size
    _csv(data, flip=25)  # in place: same size, 25 labels flipped
    assert data.stat().st_size == size
    edited = _run(workspace, data).json
    assert edited["steps"][0]["status"] == "executed"
    assert edited["steps"][0]["output_hash"] != run["steps"][0]["output_hash"]

    before = workspace.snapshot()
    replay = workspace.rlam("replay", run["run_id"])
    assert replay.code == 4, replay.stdout + replay.stderr
    message = replay.stderr.strip()
    assert message.count("\n") == 0 and str(data) in message
    assert read["digest"] in message and json.loads(TraceStore(workspace.home).steps(edited["run_id"])[0]["files_read"])["path"]["digest"] in message
    assert workspace.snapshot() == before  # neither served the old result nor re-executed: nothing was written


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str, str]]:
    """row -> (file, target, what the one line says)."""
    tmp_path.mkdir(exist_ok=True)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    malformed = tmp_path / "malformed.csv"
    malformed.write_text("a,b,y\n1,2,cat\n3,4,5,6\n")
    text = tmp_path / "text.csv"
    text.write_text("a,color,y\n1,red,cat\n2,blue,dog\n")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    return {
        "missing": (tmp_path / "missing.csv", "y", "does not exist"),
        "unreadable": (blocker / "data.csv", "y", "cannot be read"),
        "empty": (empty, "y", "is empty"),
        "malformed": (malformed, "y", "is not a readable csv file"),
        "unknown target column": (text, "label", "has no target column 'label'"),
        "non-numeric feature": (text, "y", "feature 'color'"),
    }


@pytest.mark.parametrize("row", ["missing", "unreadable", "empty", "malformed", "unknown target column", "non-numeric feature"])
def test_a_bad_data_file_is_one_line_a_non_zero_exit_and_no_completed_step(workspace, tmp_path, row):
    path, target, says = _bad_files(tmp_path / "files")[row]
    if row == "unreadable" and os.geteuid() != 0:  # root reads any mode; a path below a regular file is unreadable for anyone
        path = tmp_path / "files" / "locked.csv"
        path.write_text("a,y\n1,cat\n")
        path.chmod(0)
    result = workspace.rlam("run", *LOAD, "--set", f"load_dataset.path={path}", "--set", f"load_dataset.target={target}")
    assert result.code != 0
    if row in ("missing", "unreadable", "empty"):  # found before anything runs: exit 2, RLAM_HOME untouched
        assert result.code == 2
        assert result.stderr.strip().startswith("rlam: error: data file") and says in result.stderr and result.stderr.strip().count("\n") == 0
        assert not workspace.home.root.exists() or workspace.snapshot() == {}
        return
    # found by the load action reading it: the run is recorded as failed at step 1, nothing else is written
    assert result.code == 1
    failed = [line for line in result.stdout.splitlines() if "load_dataset" in line]
    assert len(failed) == 1 and "failed" in failed[0] and "DataFileError" in failed[0] and says in failed[0]
    from rlam_prefect.record.store import TraceStore

    store = TraceStore(workspace.home)
    (run,) = store.runs()
    steps = store.steps(run["run_id"])
    assert run["status"] == "failed" and [s["status"] for s in steps] == ["failed"]
    indexed = {path for path in workspace.snapshot("traces", "results") if not path.endswith("_schema.parquet")}
    assert indexed == set()  # no result indexed (the table's empty schema file aside)
    assert steps[0]["cache_key"] and not (workspace.home.result_data / steps[0]["cache_key"]).exists()  # nor stored under the step's key


def test_the_planner_may_not_choose_a_data_file_and_no_raw_file_content_reaches_its_prompt(workspace, tmp_path, llm_server):
    data = tmp_path / "mine.csv"
    data.write_text("a,b,secret_column_zz9,y\n" + "".join(f"{i},{i % 3}.123456789,{i * 7}.987654321,{'cat' if i % 2 else 'dog'}\n" for i in range(40)))
    other = tmp_path / "other.csv"
    other.write_text(data.read_text())
    choose = json.dumps({"action": "load_dataset", "params": {"path": str(other), "target": "y"}, "reason": "r"})
    pinned = json.dumps({"action": "load_dataset", "params": {}, "reason": "r"})
    llm_server.script(choose, pinned, json.dumps({"action": "stop"}))
    env = llm_server.env()
    result = workspace.rlam(
        "run", "--planner", "openai/gpt-4o-mini", "--set", f"load_dataset.path={data}", "--set", "load_dataset.target=y",
        "--set", "load_dataset.columns=[\"a\",\"b\"]", "--json", extra_env=env,
    )
    assert result.code == 0, result.stderr
    steps = result.json["steps"]
    # the pin wins over the planner's choice of path; the planner's own choice never reaches the action
    assert steps[0]["status"] == "executed" and steps[0]["params"]["path"] == str(data)
    from rlam_prefect.record.store import TraceStore

    prompts = " ".join(d["prompt"] or "" for d in TraceStore(workspace.home).decisions(result.json["run_id"]))
    assert "secret_column_zz9" not in prompts and "987654321" not in prompts and "123456789" not in prompts
    sent = json.dumps(llm_server.requests)  # and what actually went over the wire to the provider
    assert llm_server.count == result.json["llm_calls"] == 3 and "secret_column_zz9" not in sent and "987654321" not in sent and "123456789" not in sent


def test_without_a_pin_a_path_the_planner_picks_is_a_rejected_decision_naming_the_rule(workspace, tmp_path, llm_server, witness):
    data = _csv(tmp_path / "cancer.csv")
    choose = json.dumps({"action": "load_dataset", "params": {"path": str(data), "target": "diagnosis"}, "reason": "r"})
    stop = json.dumps({"action": "stop"})
    llm_server.script(choose, stop, choose, stop)
    env = llm_server.env()
    result = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", "--json", extra_env=env)
    step = result.json["steps"][0]
    assert step["status"] == "rejected" and step["error_type"] == "PolicyViolation" and "file_roots" in step["error_message"]
    assert llm_server.count == 2 and witness.calls() == []
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"file_roots: [{tmp_path}]\n")
    allowed = workspace.rlam("run", "--planner", "openai/gpt-4o-mini", "--policy", str(policy), "--json", extra_env=env)
    assert allowed.code == 0, allowed.stderr
    assert allowed.json["steps"][0]["status"] == "executed"
    assert llm_server.count == 4 and witness.calls() == ["load_dataset"]


def test_a_data_file_is_hashed_once_per_run_however_often_its_key_is_computed(workspace, tmp_path):
    import rlam_prefect as rlam
    from rlam_prefect.core import files

    data = _csv(tmp_path / "cancer.csv")
    files.clear_stat_cache()
    before = files.hash_count
    run = rlam.run(planner="fixed", overrides={"load_dataset": {"path": str(data), "target": "diagnosis"}})
    assert run.status == "completed" and run.executed == 5
    assert files.hash_count == before + 1  # validation, the engine's key, Prefect's cache policy, the after-read check: one read
    rlam.replay(run.run_id)
    assert files.hash_count == before + 1  # unchanged file, same process: the stat cache
