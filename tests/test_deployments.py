"""Operating rlam-prefect the Prefect way, end to end: prefect.yaml deployed to a real server, a process
worker, a run and a fork with parameters, a mistyped fork, concurrent runs, and the audit schedule.

This module starts its own ``prefect server`` (rlam's ``ensure_server`` on a fresh home) instead of the
session server: deploy, work pool and worker get an isolated PREFECT_HOME and database, the scheduler's
loop interval is a setting the server reads at start-up, and the audit deployment's schedule must not
leave scheduled runs or a polling worker behind for other tests. Everything is driven the way a user
would: the ``prefect`` CLI for deploying and triggering, the REST API for reading what happened.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.local import server
from rlam_prefect.record.store import TraceStore
from tests.witness.plugin import Witness
from tests.witness.sitecustomize import FILE_ENV, ROOTS_ENV
from tests.workers import stop_worker, wait_for_flow_runs

pytestmark = pytest.mark.server  # starts Prefect servers of its own

ROOT = Path(__file__).resolve().parents[1]
POOL = "rlam-pool"
SCHEDULER_LOOP = "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"


@dataclass
class Deployed:
    url: str
    project: Path
    env: dict[str, str]
    worker_log: Path
    witness: Witness  # action-body calls in the worker's flow-run processes, seen from outside rlam

    @property
    def store(self) -> TraceStore:
        return TraceStore(HomeLayout(self.project / ".rlam"))  # RLAM_HOME = "{{ $PWD }}/.rlam" in prefect.yaml

    def prefect(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "prefect", *args], cwd=self.project, env=self.env, capture_output=True, text=True, timeout=180)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """One REST call; like Prefect's own client, retry while SQLite answers 503 "database is locked"."""
        for _ in range(20):
            response = httpx.request(method, f"{self.url}{path}", json=body, timeout=30)
            if response.status_code not in (429, 503):
                break
            time.sleep(0.5)
        response.raise_for_status()
        return response.json()

    def trigger(self, deployment: str, params: dict[str, Any]) -> str:
        """``prefect deployment run NAME --params JSON``; returns the flow run id it prints."""
        result = self.prefect("deployment", "run", deployment, "--params", json.dumps(params))
        assert result.returncode == 0, result.stdout + result.stderr
        match = re.search(r"UUID: ([0-9a-f-]{36})", result.stdout)
        assert match, result.stdout
        return match.group(1)

    def wait(self, flow_run_ids: list[str], timeout: float = 240.0) -> dict[str, dict[str, Any]]:
        return wait_for_flow_runs(self.api, flow_run_ids, timeout, lambda: self.worker_log.read_text()[-3000:])

    def task_runs(self, flow_run_id: str) -> list[dict[str, Any]]:
        body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200, "sort": "EXPECTED_START_TIME_ASC"}
        return self.api("POST", "/task_runs/filter", body)

    def artifacts(self, flow_run_id: str) -> dict[str, dict[str, Any]]:
        body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 50}
        return {a["key"]: a for a in self.api("POST", "/artifacts/filter", body)}

    def recorded_run(self, flow_run_id: str) -> dict[str, Any]:
        matches = [r for r in self.store.runs() if r["prefect_flow_run_id"] == flow_run_id]
        assert len(matches) == 1, f"{len(matches)} R-LAM runs recorded for flow run {flow_run_id}"
        return matches[0]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    base = tmp_path_factory.mktemp("deployments")
    server_home = HomeLayout(base / "server")
    previous = os.environ.get(SCHEDULER_LOOP)
    os.environ[SCHEDULER_LOOP] = "2"  # read by the server at start-up (ensure_server passes the environment on)
    try:
        url = server.ensure_server(server_home)
    finally:
        if previous is None:
            os.environ.pop(SCHEDULER_LOOP, None)
        else:
            os.environ[SCHEDULER_LOOP] = previous
    project = base / "project"  # a copy, so flow runs (and their RLAM_HOME) live in the temp dir
    project.mkdir()
    for name in ("prefect.yaml", "pyproject.toml"):  # pyproject's [tool.rlam] names the project's actions
        shutil.copy(ROOT / name, project)
    for name in ("flows", "tasks"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "RLAM_HOME"}
    env.update(
        PREFECT_API_URL=url,
        PREFECT_HOME=str(server_home.prefect),
        PWD=str(project),  # what "{{ $PWD }}" in prefect.yaml resolves to, as in a shell
        PREFECT_WORKER_QUERY_SECONDS="2",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    witness = Witness(base / "witness.log")  # the worker's flow runs inherit its environment
    env.update({FILE_ENV: str(witness.path), ROOTS_ENV: os.pathsep.join([str(project / "tasks"), env.get(ROOTS_ENV, "")])})
    worker: subprocess.Popen[bytes] | None = None
    worker_log = base / "worker.log"
    try:
        deployed = Deployed(url, project, env, worker_log, witness)
        pool = deployed.prefect("work-pool", "create", POOL, "--type", "process")
        assert pool.returncode == 0, pool.stdout + pool.stderr
        deploy = deployed.prefect("--no-prompt", "deploy", "--all")
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        with open(worker_log, "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
                cwd=project,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        yield deployed
    finally:
        if worker is not None:
            _let_flow_runs_finish(url)  # after a failed test some may still run: never leave their processes behind
            stop_worker(worker)
        server.stop(server_home)  # measured 25 s under load: the supervisor's SIGINT/SIGTERM grace for the server


def _let_flow_runs_finish(url: str, timeout: float = 120.0) -> None:
    body = {"flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING", "CANCELLING"]}}}, "limit": 50}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and httpx.post(f"{url}/flow_runs/filter", json=body, timeout=30).json():
        time.sleep(0.5)



def _upstream(task_runs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Each task run's name -> the names of the task runs it has data edges from."""
    names = {t["id"]: t["name"] for t in task_runs}
    return {
        t["name"]: {names[ref["id"]] for refs in t["task_inputs"].values() for ref in refs if ref.get("input_type") == "task_run"}
        for t in task_runs
    }


def test_deploy_creates_both_deployments_and_the_schedule_creates_an_audit_run(deployed: Deployed) -> None:
    rlam = deployed.api("GET", "/deployments/name/rlam/rlam")
    audit = deployed.api("GET", "/deployments/name/rlam-audit/audit")
    assert rlam["work_pool_name"] == audit["work_pool_name"] == POOL
    assert rlam["job_variables"]["env"]["RLAM_HOME"] == str(deployed.project / ".rlam")
    assert {"run_id", "planner", "overrides", "replay_of", "fork_of", "fork_step", "pin_decisions"} <= set(
        rlam["parameter_openapi_schema"]["properties"]
    )
    assert [s["schedule"].get("cron") for s in audit["schedules"]] == ["0 3 * * *"]
    deadline = time.monotonic() + 60
    scheduled: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not scheduled:
        body = {"deployments": {"id": {"any_": [audit["id"]]}}, "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}, "limit": 10}
        scheduled = deployed.api("POST", "/flow_runs/filter", body)
        time.sleep(1.0)
    assert scheduled, "the server's scheduler created no run for the audit deployment"
    assert all(r["auto_scheduled"] and r["parameters"] == {"limit": 5} for r in scheduled)


def test_run_then_fork_with_parameters_through_the_worker(deployed: Deployed) -> None:
    seen = deployed.witness.mark()
    first = deployed.trigger("rlam/rlam", {"planner": "fixed", "overrides": {"load_dataset": {"name": "wine"}}})
    assert deployed.wait([first])[first]["state"]["type"] == "COMPLETED"
    run = deployed.recorded_run(first)
    steps = deployed.store.steps(run["run_id"])
    assert run["status"] == "completed" and run["mode"] == "run"
    assert [s["status"] for s in steps] == ["executed"] * 5
    assert deployed.witness.calls(since=seen) == [s["action"] for s in steps]  # N = 5 > 0: the witness sees the worker's runs
    seen = deployed.witness.mark()
    assert json.loads(steps[0]["params"])["name"] == "wine"

    fork = deployed.trigger("rlam/rlam", {"fork_of": run["run_id"][:6], "fork_step": 4, "overrides": {"train_model": {"C": 0.05}}})
    fork_flow_run = deployed.wait([fork])[fork]
    assert fork_flow_run["state"]["type"] == "COMPLETED"
    forked = deployed.recorded_run(fork)
    assert fork_flow_run["name"] == f"fork-{forked['run_id']}"
    assert (forked["mode"], forked["parent_run_id"], forked["fork_step"]) == ("fork", run["run_id"], 4)
    fork_steps = deployed.store.steps(forked["run_id"])
    assert [s["status"] for s in fork_steps] == ["cached"] * 3 + ["executed"] * 2
    assert deployed.witness.calls(since=seen) == ["train_model", "evaluate_model"]
    assert [s["output_hash"] for s in fork_steps[:3]] == [s["output_hash"] for s in steps[:3]]
    assert json.loads(fork_steps[3]["params"])["C"] == 0.05

    task_runs = deployed.task_runs(fork)
    assert {t["id"] for t in task_runs} == {s["prefect_task_run_id"] for s in fork_steps}
    assert [t["state"]["name"] for t in task_runs][:3] == ["Cached"] * 3
    assert _upstream(task_runs) == {
        "load_dataset #1": set(),
        "analyze_data #2": {"load_dataset #1"},
        "preprocess_data #3": {"load_dataset #1", "analyze_data #2"},
        "train_model #4": {"preprocess_data #3"},
        "evaluate_model #5": {"train_model #4", "preprocess_data #3"},
    }

    artifacts = deployed.artifacts(fork)
    assert set(artifacts) == {"rlam-steps", "rlam-lineage", "rlam-metrics"}
    table = json.loads(artifacts["rlam-steps"]["data"])
    assert [(r["step"], r["action"], r["status"]) for r in table] == [(s["step"], s["action"], s["status"]) for s in fork_steps]
    lineage = artifacts["rlam-lineage"]["data"]
    assert f"`{run['run_id']}`" in lineage and "`train_model.C=0.05`" in lineage and str(deployed.store.root / "steps" / forked["run_id"]) in lineage
    metrics = {r["metric"]: r["value"] for r in json.loads(artifacts["rlam-metrics"]["data"])}
    assert metrics["accuracy"] == json.loads(forked["metrics"])["accuracy"]


def test_concurrent_runs_complete_with_complete_traces_and_a_mistyped_fork_fails_alone(deployed: Deployed) -> None:
    deployment = deployed.api("GET", "/deployments/name/rlam/rlam")
    with pytest.raises(httpx.HTTPStatusError) as refused:  # refused by the server: no flow run is created
        deployed.api("POST", f"/deployments/{deployment['id']}/create_flow_run", {"parameters": {"fork_of": "x", "fork_step": "four"}})
    assert refused.value.response.status_code in (409, 422) and "fork_step" in refused.value.response.text
    before = {r["run_id"] for r in deployed.store.runs()}
    seen = deployed.witness.mark()
    params = [{"planner": "fixed", "overrides": {"train_model": {"C": c}}} for c in (0.1, 3.0, 10.0)]
    ids = [deployed.api("POST", f"/deployments/{deployment['id']}/create_flow_run", {"parameters": p})["id"] for p in params]
    bad = deployed.trigger("rlam/rlam", {"fork_of": "nosuchrun", "fork_step": 2})  # triggered together with them
    finished = deployed.wait([*ids, bad])

    state = finished[bad]["state"]
    assert state["type"] == "FAILED" and "UnknownRunError: unknown run 'nosuchrun'" in state["message"]
    assert deployed.task_runs(bad) == []  # it failed before any work
    assert {i: finished[i]["state"]["type"] for i in ids} == {i: "COMPLETED" for i in ids}
    for flow_run_id, p in zip(ids, params):
        run = deployed.recorded_run(flow_run_id)
        steps = deployed.store.steps(run["run_id"])
        assert (run["status"], run["n_steps"]) == ("completed", 5)
        assert [s["step"] for s in steps] == [1, 2, 3, 4, 5] and all(s["output_hash"] and s["prefect_task_run_id"] for s in steps)
        assert json.loads(steps[3]["params"])["C"] == p["overrides"]["train_model"]["C"]
        assert {t["id"] for t in deployed.task_runs(flow_run_id)} == {s["prefect_task_run_id"] for s in steps}
    assert {r["run_id"] for r in deployed.store.runs()} - before == {deployed.recorded_run(i)["run_id"] for i in ids}  # nothing from the bad fork
    keys = [s["cache_key"] for r in deployed.store.runs() for s in deployed.store.steps(r["run_id"]) if s["status"] == "executed"]
    assert len(keys) == len(set(keys)), "a key was executed twice: shared steps must be computed once"
    executed = [s["action"] for i in ids for s in deployed.store.steps(deployed.recorded_run(i)["run_id"]) if s["status"] == "executed"]
    assert sorted(deployed.witness.calls(since=seen)) == sorted(executed)  # each executed step's body ran once, nothing else ran
    assert deployed.witness.counts(since=seen)["train_model"] == 3


@pytest.fixture
def two_completed_runs(deployed: Deployed) -> None:
    """What the audit replays: at least two completed runs, triggered here when no earlier test left them
    (pytest-randomly runs this module's tests in any order)."""
    done = [r for r in deployed.store.runs() if r["mode"] in ("run", "fork") and r["status"] == "completed"]
    for c in (0.2, 0.4)[len(done) :]:
        flow_run_id = deployed.trigger("rlam/rlam", {"planner": "fixed", "overrides": {"train_model": {"C": c}}})
        assert deployed.wait([flow_run_id])[flow_run_id]["state"]["type"] == "COMPLETED"


def test_the_audit_deployment_replays_recent_runs_as_child_flow_runs(deployed: Deployed, two_completed_runs: None) -> None:
    audited = [r["run_id"] for r in deployed.store.runs() if r["mode"] in ("run", "fork") and r["status"] == "completed"][:2]
    seen = deployed.witness.mark()
    audit = deployed.trigger("rlam-audit/audit", {"limit": 2})
    flow_run = deployed.wait([audit])[audit]
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]["message"]
    assert deployed.witness.calls(since=seen) == []  # the replays executed nothing
    report = deployed.artifacts(audit)["rlam-audit"]["data"]
    assert "2 run(s) replayed identically" in report and all(f"`{r}`" in report for r in audited)
    replays = [r for r in deployed.store.runs() if r["mode"] == "replay"]
    assert sorted(r["parent_run_id"] for r in replays) == sorted(audited) and all(r["identical"] for r in replays)
    children = deployed.api("POST", "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [audit]}}, "limit": 10})
    assert sorted(c["name"] for c in children) == sorted(f"replay-{r['run_id']}" for r in replays)
