"""An approval gate paused through Prefect, resumed with edited parameters, then replayed without a pause."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings

from rlam_prefect.record.store import TraceStore
from tests.conftest import ROOT, start_rlam
from tests.warm_cli import WarmProcess

POLICY = "require_approval: [train_model]\nparams:\n  train_model:\n    C: {min: 0.01, max: 10}\n"


def _paused_flow_run(process: WarmProcess | subprocess.Popen[str], deadline_s: float = 180) -> object:
    """Poll the Prefect API until the run's flow run is Paused (only this test pauses flow runs)."""
    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    deadline = time.monotonic() + deadline_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            runs = client.read_flow_runs(flow_run_filter=paused, sort=FlowRunSort.ID_DESC, limit=10)
            if runs:
                assert len(runs) == 1
                return runs[0]
            time.sleep(0.5)
    raise AssertionError("the flow run never paused for approval")


def test_a_paused_approval_is_resumed_with_edited_params_and_replays_without_pausing(workspace, tmp_path, prefect_api_url):
    policy = tmp_path / "rlam-policy.yaml"
    policy.write_text(POLICY)
    env = {**os.environ, "RLAM_HOME": str(workspace.home.root)}
    # no tty, no --approve: the gated step pauses the flow run for the Prefect UI
    process = start_rlam(["run", "--policy", str(policy), "--json"], env, ROOT)
    try:
        with temporary_settings({PREFECT_API_URL: prefect_api_url}):  # prefect was imported before the URL was set
            flow_run = _paused_flow_run(process)
            keyset = flow_run.state.state_details.run_input_keyset
            with get_client(sync_client=True) as client:
                schema = json.loads(client.read_flow_run_input(flow_run.id, keyset["schema"]))
            assert {"approve", "params", "reviewer", "note"} <= set(schema["properties"])
            proposed = schema["properties"]["params"]["default"]
            assert proposed["C"] == 1.0 and proposed["model"] == "logistic_regression"
            edited = {**proposed, "C": 0.5}
            resume_flow_run(flow_run.id, run_input={"approve": True, "params": edited, "reviewer": "alice", "note": "less regularisation"})
        stdout, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "waits for approval: resume " in stderr and str(flow_run.id) in stderr
    run = json.loads(stdout)
    train = next(s for s in run["steps"] if s["action"] == "train_model")
    assert train["status"] == "executed" and train["params"]["C"] == 0.5
    assert (train["approval"], train["approved_by"], train["approval_via"], train["approval_edits"]) == ("approved", "alice", "ui", {"C": 0.5})
    assert train["approval_note"] == "less regularisation"
    recorded = next(s for s in TraceStore(workspace.home).steps(run["run_id"]) if s["action"] == "train_model")
    assert json.loads(recorded["params"])["C"] == 0.5 and json.loads(recorded["approval_edits"]) == {"C": 0.5}

    started = time.monotonic()
    replay = workspace.rlam_json("replay", run["run_id"])  # no tty, no approval: it must not pause
    assert time.monotonic() - started < 120
    assert replay["identical"] is True and replay["executed"] == 0 and replay["llm_calls"] == 0
    assert replay["policy_differs"] is False
    assert [{k: s.get(k) for k in ("action", "output_hash", "params", "approval", "approved_by", "approval_edits")} for s in replay["steps"]] == [
        {k: s.get(k) for k in ("action", "output_hash", "params", "approval", "approved_by", "approval_edits")} for s in run["steps"]
    ]


def test_on_a_terminal_the_gate_is_answered_there(workspace, tmp_path):
    import getpass
    import pty

    policy = tmp_path / "rlam-policy.yaml"
    policy.write_text(POLICY)
    master, slave = pty.openpty()
    os.write(master, b"e\nC=0.25\n\n")  # edit C, then finish editing (read line by line when asked)
    env = {**os.environ, "RLAM_HOME": str(workspace.home.root)}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "rlam_prefect.cli", "run", "--policy", str(policy), "--json"],
            stdin=slave, capture_output=True, text=True, env=env, cwd=ROOT, timeout=240,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 0, proc.stderr
    assert "step 4 train_model needs approval" in proc.stderr
    train = next(s for s in json.loads(proc.stdout)["steps"] if s["action"] == "train_model")
    assert train["params"]["C"] == 0.25 and train["approval_via"] == "tty" and train["approval_edits"] == {"C": 0.25}
    assert train["approved_by"] == getpass.getuser()
