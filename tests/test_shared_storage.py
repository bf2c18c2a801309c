"""Two workers that share nothing but an S3 store, the Prefect API and a Redis lock (issue 20, item 4).

moto's S3 server on 127.0.0.1 stands in for the object store (a protocol check of the s3fs paths,
not a store), redis-server is started here, the Prefect API is the session server. Each worker is
an ``rlam`` CLI process with its own RLAM_HOME. Executions are counted by the test actions' own
witness file (tests/witness_storage/storage_actions.py), never by rlam's trace.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("s3fs", reason="the [s3] extra is not installed")
pytest.importorskip("moto", reason="moto[server] (dev) is not installed")

from tests.conftest import start_rlam
from tests.warm_cli import WarmProcess

BUCKET = "rlam-shared"
ACTIONS = Path(__file__).parent / "witness_storage" / "storage_actions.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_env() -> Any:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)  # this process lists and reads the bucket too
    yield env
    for name, value in saved.items():
        os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
    server.stop()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@dataclass
class Cluster:
    """The shared parts: a store prefix, a witness file, the env every worker gets; and a project dir."""

    tmp: Path
    store: str
    witness: Path
    env: dict[str, str]

    def project(self, *order: str) -> Path:
        directory = self.tmp / ("project-" + "-".join(order))
        directory.mkdir(exist_ok=True)
        (directory / "pyproject.toml").write_text(f'[tool.rlam]\nactions = ["storage_actions"]\norder = {json.dumps(list(order))}\n')
        shutil.copy(ACTIONS, directory / "storage_actions.py")
        return directory

    def worker(self, name: str) -> Worker:
        return Worker(self, self.tmp / f"home-{name}")

    def executions(self) -> Counter[tuple[str, str]]:
        lines = self.witness.read_text().splitlines() if self.witness.exists() else []
        return Counter(tuple(line.split("\t")[:2]) for line in lines)  # type: ignore[misc]

    def objects(self) -> list[str]:
        import s3fs

        fs = s3fs.S3FileSystem(use_listings_cache=False)
        return sorted(fs.find(self.store.removeprefix("s3://")))


@dataclass
class Worker:
    cluster: Cluster
    home: Path

    def environ(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **self.cluster.env, "RLAM_HOME": str(self.home), **extra}

    def start(self, project: Path, *args: str, **extra: str) -> WarmProcess | subprocess.Popen[str]:
        return start_rlam(list(args), self.environ(**extra), cwd=project)

    def rlam(self, project: Path, *args: str, **extra: str) -> tuple[int, Any, str]:
        proc = self.start(project, *args, "--json", **extra)
        out, err = proc.communicate(timeout=300)
        try:
            return proc.returncode, json.loads(out), err
        except json.JSONDecodeError:
            raise AssertionError(f"rlam {' '.join(args)} exited {proc.returncode}: {err[-2000:]}") from None


@pytest.fixture
def cluster(prefect_api_url: str, s3_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Cluster:
    store = f"s3://{BUCKET}/{request.node.name[:40]}-{os.getpid()}"
    witness = tmp_path / "witness.log"
    env = {**s3_env, "RLAM_STORE_URL": store, "RLAM_TEST_WITNESS": str(witness), "PREFECT_API_URL": prefect_api_url}
    os.environ.pop("RLAM_LOCK_URL", None)
    return Cluster(tmp_path, store, witness, env)


def test_a_run_on_worker_a_is_replayed_on_worker_b_with_zero_executions(cluster: Cluster) -> None:
    project = cluster.project("make_numbers", "scale", "total")
    a, b = cluster.worker("a"), cluster.worker("b")
    code, run, err = a.rlam(project, "run", "--planner", "fixed")
    assert code == 0 and run["executed"] == 3, (err, json.dumps(run)[:3000])
    assert err.count("warning: results are on shared storage") == 1  # no RLAM_LOCK_URL: said once at start-up
    assert sum(cluster.executions().values()) == 3
    code, replay, err = b.rlam(project, "replay", run["run_id"])
    assert code == 0 and replay["identical"] is True and replay["executed"] == 0, err
    assert sum(cluster.executions().values()) == 3  # the witness: nothing ran on B
    code, verified, err = b.rlam(project, "verify", run["run_id"])
    assert code == 0 and verified["intact"] is True, (err, json.dumps(verified))
    for home in (a.home, b.home):  # nothing shared was written locally
        assert not (home / "traces").exists() and not (home / "results").exists()
    objects = cluster.objects()
    assert any("/traces/steps/" + run["run_id"] in o for o in objects)
    assert sum("/results/data/" in o for o in objects) == 3


def test_eight_concurrent_forks_across_two_workers_compute_each_key_once(cluster: Cluster, redis_url: str) -> None:
    cluster.env["RLAM_LOCK_URL"] = redis_url
    project = cluster.project("make_numbers", "scale", "total")
    a, b = cluster.worker("a"), cluster.worker("b")
    code, run, err = a.rlam(project, "run", "--planner", "fixed")
    assert code == 0, err
    assert "warning: results are on shared storage" not in err
    factors = [3, 4, 5, 6]
    jobs = [(w, f) for f in factors for w in (a, b)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: job[0].rlam(project, "fork", run["run_id"], "--step", "2", "--set", f"scale.factor={job[1]}"), jobs))
    for code, fork, err in results:
        assert code == 0 and fork["status"] == "completed", err
    counts = cluster.executions()
    for factor in factors:
        assert counts[("scale", json.dumps({"factor": float(factor)}))] == 1
    assert counts[("total", "{}")] == 1 + len(factors)  # one total per distinct scaled list
    assert counts[("make_numbers", json.dumps({"n": 5}))] == 1
    assert sum(fork["executed"] for _, fork, _ in results) == 2 * len(factors)


def test_without_a_shared_lock_identical_duplicates_are_accepted_and_differing_ones_refused(cluster: Cluster) -> None:
    a, b = cluster.worker("a"), cluster.worker("b")
    barrier = {"RLAM_TEST_BARRIER": "2"}  # both bodies of a key run at the same time: a real duplicate computation
    same = cluster.project("make_numbers", "scale", "total")
    procs = [w.start(same, "run", "--planner", "fixed", "--json", **barrier) for w in (a, b)]
    runs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(r["status"] == "completed" and r["executed"] == 3 for r in runs)  # deterministic actions: both accepted
    assert set(cluster.executions().values()) == {2}  # each key really was computed twice
    for r in runs:
        code, replay, err = b.rlam(same, "replay", r["run_id"])
        assert code == 0 and replay["identical"] is True and replay["executed"] == 0, err

    noisy = cluster.project("make_numbers", "draw", "total")
    procs = [w.start(noisy, "run", "--planner", "fixed", "--set", "make_numbers.n=7", "--json", **barrier) for w in (a, b)]
    outputs = [p.communicate(timeout=300) for p in procs]
    runs = [json.loads(out) for out, _ in outputs]
    assert cluster.executions()[("draw", json.dumps({"n": 3}))] == 2, [err[-2000:] for _, err in outputs]  # a real duplicate
    draws = [next((s for s in r["steps"] if s["action"] == "draw"), None) for r in runs]
    assert None not in draws, [(r["status"], r["error_message"], [(s["action"], s["status"], s["error_message"]) for s in r["steps"]], err[-3000:]) for r, (_, err) in zip(runs, outputs)]
    refused = [d for d in draws if d["status"] == "failed"]
    assert len(refused) == 1 and refused[0]["error_type"] == "StoredResultError"
    # refused when indexing finds the other result, or when the other write replaced the object under this read
    assert any(why in refused[0]["error_message"] for why in ("computed twice without a shared lock and the results differ", "another worker may have written the same key at once")), refused
    winner = next(r for r, d in zip(runs, draws) if d["status"] == "executed")
    before = sum(cluster.executions().values())
    code, replay, err = b.rlam(noisy, "replay", winner["run_id"])
    assert replay["executed"] == 0 and sum(cluster.executions().values()) == before  # never recomputed
    served = next(s for s in replay["steps"] if s["action"] == "draw")
    if served["status"] == "cached":  # the winner's bytes survived: served only as recorded
        assert served["output_hash"] == next(s for s in winner["steps"] if s["action"] == "draw")["output_hash"]
    else:  # the loser's write replaced them: refused by the digest check, named, not served
        assert code != 0 and served["error_type"] == "StoredResultError", err


def test_a_worker_killed_mid_step_loses_no_completed_step_and_leaves_no_half_written_object(cluster: Cluster, redis_url: str) -> None:
    import pyarrow.parquet as pq
    import s3fs

    cluster.env.update(RLAM_LOCK_URL=redis_url, RLAM_LOCK_HOLD_SECONDS="5")
    project = cluster.project("make_numbers", "scale", "total")
    a, b = cluster.worker("a"), cluster.worker("b")
    proc = a.start(project, "run", "--planner", "fixed", "--json", RLAM_TEST_SCALE_SLEEP="120")
    deadline = time.monotonic() + 120
    while not any(action == "scale" for action, _ in cluster.executions()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    fs = s3fs.S3FileSystem(use_listings_cache=False)
    objects = cluster.objects()
    assert not [o for o in objects if o.endswith(".tmp") or "/quarantine/" in o]
    for name in (o for o in objects if o.endswith(".parquet")):  # every trace object is complete: it reads
        pq.read_table(name, filesystem=fs)
    assert sum("/results/data/" in o for o in objects) == 1  # make_numbers' result, indexed; scale's absent
    assert sum("/traces/results/" in o and not o.endswith("_schema.parquet") for o in objects) == 1

    code, run, err = b.rlam(project, "run", "--planner", "fixed")  # waits out the dead worker's lock (5 s)
    assert code == 0, err
    assert [s["status"] for s in run["steps"]] == ["cached", "executed", "executed"]
    assert cluster.executions()[("make_numbers", json.dumps({"n": 5}))] == 1
    code, runs, err = b.rlam(project, "runs")
    assert {r["status"] for r in runs if r["run_id"] != run["run_id"]} == {"incomplete"}


def test_a_trace_file_on_s3_is_created_once_and_never_replaced(s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    from rlam_prefect.core.home import HomeLayout
    from rlam_prefect.record.store import TraceStore

    monkeypatch.setenv("RLAM_STORE_URL", f"s3://{BUCKET}/created-once-{os.getpid()}")
    store = TraceStore(HomeLayout(tmp_path / "home"))
    record = {"cache_key": "ab" * 32, "action": "scale", "output_hash": "sha256:1", "output_kind": "Scaled",
              "result_digest": "sha256:2", "result_bytes": 1, "run_id": "r1", "step": 1}
    assert store.put_result_record(record) is True
    assert store.put_result_record({**record, "output_hash": "sha256:other", "run_id": "r2"}) is False  # the store refused (412)
    assert store.result_record("ab" * 32)["run_id"] == "r1"  # the first file is unchanged
    fs = s3fs.S3FileSystem(use_listings_cache=False)
    names = fs.find(f"{BUCKET}/created-once-{os.getpid()}")
    assert not [n for n in names if ".tmp" in n] and not (tmp_path / "home").exists()
