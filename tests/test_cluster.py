"""Many workers on one PostgreSQL-backed Prefect server: concurrent runs, forks and replays, and the database failing.

The module starts Debian's PostgreSQL (a throwaway cluster on a random port), rlam's own server on it
(``PREFECT_API_DATABASE_CONNECTION_URL``), the project's deployments and three process workers on one
pool. The workers share one RLAM_HOME on this machine (one POSIX directory, flock per content key).

The witness is outside the library: the project copy's actions are registered through
``tasks/witness.py`` (written below), whose wrapper appends one line per executed action body to the
file named by ``RLAM_TEST_WITNESS``; the tests count those lines, not what rlam reports.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.local import server
from rlam_prefect.record.store import TraceStore
from tests.workers import stop_worker, wait_for_flow_runs

pytestmark = pytest.mark.server  # starts PostgreSQL and a Prefect server of its own

ROOT = Path(__file__).resolve().parents[1]
PG_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
POOL = "rlam-pool"
WORKERS = 3

WITNESS_MODULE = '''"""Test-only: every action body appends "<action> <params>" to $RLAM_TEST_WITNESS before it runs.

With RLAM_TEST_SLOW=<action> that action first touches $RLAM_TEST_WITNESS.slow and sleeps RLAM_TEST_SLOW_S seconds.
The wrapper is not part of any key: rlam hashes the wrapped function's own source.
"""

import functools
import os
import time
from pathlib import Path

from rlam_prefect import DataFile, DataFileError, Effect, Precondition  # noqa: F401 (re-exported to the actions)
from rlam_prefect import action as _action


def action(*args, **kwargs):
    def register(fn):
        @functools.wraps(fn)
        def counted(*a, **kw):
            params = kw.get("params")
            with open(os.environ["RLAM_TEST_WITNESS"], "a") as handle:
                handle.write(f"{fn.__name__} {params.model_dump_json() if params is not None else '{}'}\\n")
            if os.environ.get("RLAM_TEST_SLOW") == fn.__name__:
                Path(os.environ["RLAM_TEST_WITNESS"] + ".slow").touch()
                time.sleep(float(os.environ["RLAM_TEST_SLOW_S"]))
            return fn(*a, **kw)

        return _action(*args, **kwargs)(counted)

    return register
'''


class Postgres:
    """A throwaway PostgreSQL cluster; initdb and pg_ctl run as the ``postgres`` user when we are root."""

    def __init__(self, initdb: Path, base: Path, port: int) -> None:
        self.bin, self.base, self.port = initdb.parent, base, port
        self.data = base / "data"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/prefect"

    def run(self, tool: str, *args: str) -> str:
        command = shlex.join([str(self.bin / tool), *args])
        argv = ["su", "postgres", "-c", command] if os.geteuid() == 0 else ["sh", "-c", command]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{tool} {args}: {result.stdout}{result.stderr}"
        return result.stdout

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
        self.run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.base / "postgres.log"), "start", "-w")

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "stop", "-m", mode, "-w")

    def query(self, sql: str) -> str:
        return self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "prefect", "-tAc", sql).strip()


@dataclass
class Cluster:
    url: str
    project: Path
    env: dict[str, str]
    witness_path: Path
    worker_logs: list[Path]
    pg: Postgres

    @property
    def store(self) -> TraceStore:
        return TraceStore(HomeLayout(self.project / ".rlam"))  # RLAM_HOME = "{{ $PWD }}/.rlam" in prefect.yaml

    def prefect(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "prefect", *args], cwd=self.project, env=self.env, capture_output=True, text=True, timeout=180)

    def rlam(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """The ``rlam`` CLI as a user runs it against this server, from the project directory."""
        env = {**self.env, "RLAM_HOME": str(self.project / ".rlam"), **(extra_env or {})}
        command = [sys.executable, "-m", "rlam_prefect.cli", *args]
        return subprocess.Popen(command, cwd=self.project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, f"{self.url}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def create(self, params: dict[str, Any]) -> str:
        deployment = self.api("GET", "/deployments/name/rlam/rlam")
        return str(self.api("POST", f"/deployments/{deployment['id']}/create_flow_run", {"parameters": params})["id"])

    def wait(self, flow_run_ids: list[str], timeout: float = 420.0) -> dict[str, dict[str, Any]]:
        return wait_for_flow_runs(self.api, flow_run_ids, timeout, lambda: "\n".join(log.read_text()[-1500:] for log in self.worker_logs))

    def recorded_run(self, flow_run_id: str) -> dict[str, Any]:
        matches = [r for r in self.store.runs() if r["prefect_flow_run_id"] == flow_run_id]
        assert len(matches) == 1, f"{len(matches)} R-LAM runs recorded for flow run {flow_run_id}"
        return matches[0]

    def take_witness(self) -> list[tuple[str, dict[str, Any]]]:
        """The action bodies executed since the last call: (action, params)."""
        lines = self.witness_path.read_text().splitlines() if self.witness_path.exists() else []
        self.witness_path.write_text("")
        return [(name, json.loads(params)) for name, params in (line.split(" ", 1) for line in lines)]

    def pulled_by(self, flow_run_ids: list[str]) -> list[int]:
        """How many of these flow runs each worker submitted, from its log.

        Two workers may both try a run; the server lets one move it to PENDING and the other logs "Aborted submission".
        """
        counts = []
        for log in self.worker_logs:
            text = log.read_text()
            submitted = set(re.findall(r"submitting flow run '([0-9a-f-]{36})'", text))
            aborted = set(re.findall(r"Aborted submission of flow run '([0-9a-f-]{36})'", text))
            counts.append(len((submitted - aborted) & set(flow_run_ids)))
        return counts


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _witnessed_project(project: Path) -> None:
    """A copy of the repository's project whose actions are registered through tasks/witness.py."""
    project.mkdir()
    for name in ("prefect.yaml", "pyproject.toml"):  # pyproject's [tool.rlam] names the project's actions
        shutil.copy(ROOT / name, project)
    for name in ("flows", "tasks"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    for module in (project / "tasks").glob("*.py"):
        text = module.read_text()
        module.write_text(re.sub(r"^from rlam_prefect import ", "from tasks.witness import ", text, flags=re.M))
    (project / "tasks" / "witness.py").write_text(WITNESS_MODULE)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not PG_BINS:
        pytest.skip("PostgreSQL binaries not found under /usr/lib/postgresql (apt-get install -y postgresql)")
    base = tmp_path_factory.mktemp("cluster")
    pg_dir = Path(tempfile.mkdtemp(prefix="rlam-pg-"))  # the postgres user cannot enter pytest's 0700 base temp
    if os.geteuid() == 0:
        shutil.chown(pg_dir, "postgres")
    pg = Postgres(PG_BINS[-1], pg_dir, _free_port())
    server_home = HomeLayout(base / "server")
    workers: list[subprocess.Popen[bytes]] = []
    url = ""
    try:
        pg.run("initdb", "-D", str(pg.data), "-A", "trust", "-U", "postgres")
        pg.start()
        pg.run("createdb", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "prefect")
        os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = pg.url  # read by rlam's server at start-up only
        try:
            url = server.ensure_server(server_home)
        finally:
            os.environ.pop("PREFECT_API_DATABASE_CONNECTION_URL")
        project = base / "project"
        _witnessed_project(project)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RLAM_"))}
        env.update(
            PREFECT_API_URL=url,
            PREFECT_HOME=str(server_home.prefect),
            PWD=str(project),  # what "{{ $PWD }}" in prefect.yaml resolves to, as in a shell
            PREFECT_WORKER_QUERY_SECONDS="2",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            RLAM_TEST_WITNESS=str(base / "witness.txt"),
        )
        logs = [base / f"worker-{i}.log" for i in range(WORKERS)]
        cluster = Cluster(url, project, env, base / "witness.txt", logs, pg)
        for args in (("work-pool", "create", POOL, "--type", "process"), ("--no-prompt", "deploy", "--all")):
            result = cluster.prefect(*args)
            assert result.returncode == 0, result.stdout + result.stderr
        for i, log_path in enumerate(logs):
            with open(log_path, "wb") as log:  # --limit 2: six concurrent flow runs need all three workers
                command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--name", f"worker-{i}", "--limit", "2"]
                worker_env = {**env, "PREFECT_LOGGING_LEVEL": "INFO"}  # each worker logs the flow runs it submits
                workers.append(subprocess.Popen(command, cwd=project, env=worker_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        yield cluster
    finally:
        if url and workers:
            _let_flow_runs_finish(url)
        for worker in workers:
            stop_worker(worker)
        server.stop(server_home)
        if pg.data.exists():
            subprocess.run(["su", "postgres", "-c", f"{pg.bin / 'pg_ctl'} -D {pg.data} stop -m fast"] if os.geteuid() == 0 else [str(pg.bin / "pg_ctl"), "-D", str(pg.data), "stop", "-m", "fast"], capture_output=True)
        shutil.rmtree(pg_dir, ignore_errors=True)


def _let_flow_runs_finish(url: str, timeout: float = 120.0) -> None:
    # the workers' flow runs only: the flow run of a `rlam run` cut off by the database stays RUNNING in the API
    body = {"flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING", "CANCELLING"]}}}, "work_pools": {"name": {"any_": [POOL]}}, "limit": 50}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not httpx.post(f"{url}/flow_runs/filter", json=body, timeout=30).json():
                return
        except httpx.HTTPError:
            return
        time.sleep(0.5)



def _train_cs(executed: list[tuple[str, dict[str, Any]]]) -> list[float]:
    return sorted(params["C"] for name, params in executed if name == "train_model")


def test_three_workers_pull_concurrent_runs_forks_and_replays_computing_each_key_once(cluster: Cluster) -> None:
    assert int(cluster.pg.query("select count(*) from deployment")) == 2  # the server's state is in PostgreSQL
    first = cluster.create({"planner": "fixed"})
    assert cluster.wait([first])[first]["state"]["type"] == "COMPLETED"
    parent = cluster.recorded_run(first)
    assert sorted(name for name, _ in cluster.take_witness()) == sorted(
        ["load_dataset", "analyze_data", "preprocess_data", "train_model", "evaluate_model"]
    )
    fork = {"fork_of": parent["run_id"], "fork_step": 4}
    params = [
        {"planner": "fixed", "overrides": {"train_model": {"C": 0.2}}},
        {"planner": "fixed", "overrides": {"train_model": {"C": 0.2}}},
        {**fork, "overrides": {"train_model": {"C": 0.3}}},
        {**fork, "overrides": {"train_model": {"C": 0.3}}},
        {**fork, "overrides": {"train_model": {"C": 0.2}}},  # the same steps 4-5 as the two runs above
        {"replay_of": parent["run_id"]},
    ]
    ids = [cluster.create(p) for p in params]
    finished = cluster.wait(ids)

    assert {i: r["state"]["type"] for i, r in finished.items()} == {i: "COMPLETED" for i in ids}
    executed = cluster.take_witness()
    assert Counter(name for name, _ in executed) == {"train_model": 2, "evaluate_model": 2}, executed
    assert _train_cs(executed) == [0.2, 0.3]  # each distinct key once; steps 1-3 and the replay: nothing
    pulled = cluster.pulled_by(ids)
    assert sum(pulled) == len(ids) and sum(n > 0 for n in pulled) >= 2, pulled
    for flow_run_id, p in zip(ids, params):
        run = cluster.recorded_run(flow_run_id)
        steps = cluster.store.steps(run["run_id"])
        assert (run["status"], run["n_steps"]) == ("completed", 5)
        assert [s["step"] for s in steps] == [1, 2, 3, 4, 5] and all(s["output_hash"] and s["prefect_task_run_id"] for s in steps)
        if "replay_of" in p:
            assert run["identical"] and all(s["status"] == "cached" for s in steps)
        else:
            assert json.loads(steps[3]["params"])["C"] == p["overrides"]["train_model"]["C"]
    ours = [parent["run_id"]] + [cluster.recorded_run(i)["run_id"] for i in ids]  # the module's other test records runs too
    keys = [s["cache_key"] for run_id in ours for s in cluster.store.steps(run_id) if s["status"] == "executed"]
    assert len(keys) == len(set(keys)) == 9, f"the trace says a key was executed twice: {sorted(keys)}"


def test_the_database_going_down_mid_run_fails_in_one_line_keeps_completed_steps_and_a_fork_resumes(cluster: Cluster) -> None:
    slow = {"RLAM_TEST_SLOW": "train_model", "RLAM_TEST_SLOW_S": "8"}
    marker = Path(f"{cluster.witness_path}.slow")
    marker.unlink(missing_ok=True)
    cluster.take_witness()
    before = {r["run_id"] for r in cluster.store.runs()}
    wine = ("--set", "load_dataset.name=wine")  # keys of its own: the module's tests can run in any order
    process = cluster.rlam("run", "--planner", "fixed", *wine, "--set", "train_model.C=0.7", extra_env=slow)
    deadline = time.monotonic() + 180
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), f"train_model never started: {process.communicate()}"
    cluster.pg.stop("immediate")  # PostgreSQL crashes while step 4 runs
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        cluster.pg.start()
    assert process.returncode != 0, stdout
    # rlam's one line, no traceback; Prefect's own log shipper adds "--- Error logging to API ---" and its error before it
    assert "Traceback" not in stderr and stderr.count("rlam: error: ") == 1, stderr
    assert re.search(r"rlam: error: the Prefect API failed during the run \(Server error '5\d\d [^\n]*fork from the first missing step", stderr), stderr

    (failed,) = [r for r in cluster.store.runs() if r["run_id"] not in before]
    assert failed["status"] == "failed"
    kept = cluster.store.steps(failed["run_id"])
    completed = [s for s in kept if s["output_hash"]]
    assert [s["step"] for s in completed][:3] == [1, 2, 3]  # nothing completed before the crash is lost
    executed_before = cluster.take_witness()
    assert [name for name, _ in executed_before] == ["load_dataset", "analyze_data", "preprocess_data", "train_model"]

    undone = [a for a in ("train_model", "evaluate_model") if a not in {s["action"] for s in completed}]
    fork = cluster.rlam("fork", failed["run_id"], "--step", "4", "--set", "train_model.C=0.7", "--json")  # a fork re-plans from K
    stdout, stderr = fork.communicate(timeout=300)
    assert fork.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["status"] == "completed" and report["cached"] == 5 - len(undone)
    assert [name for name, _ in cluster.take_witness()] == undone  # exactly the steps the crash left undone
