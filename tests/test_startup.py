"""A new home's start-up: the migrated database template (local/template.py) and a stop that leaves nothing.

The template is built with Prefect's own migrations once per cache directory, reused, rebuilt when it
is stale or damaged, and a home seeded from it runs a real flow. `rlam server stop` leaves no process
of the home's server or executor behind (how fast it is, is measured in bench/bench_startup.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rlam_prefect.core.files import file_digest
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.local import executor_client as executor
from rlam_prefect.local import server, template
from rlam_prefect.local.processes import pid_alive

pytestmark = pytest.mark.server  # builds templates and starts Prefect servers of its own

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One template built by Prefect's migrations in a fresh cache directory for the module (the shipped one set aside)."""
    root = tmp_path_factory.mktemp("template-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(template, "SHIPPED", root / "nothing-shipped")
        template.ensure_template({template.CACHE_ENV: str(root)})
    assert "build_s" in json.loads((_folder(root) / template.META_NAME).read_text())  # built here, not unpacked
    return root


def _folder(cache: Path) -> Path:
    version, head = template.installed_key()
    return cache / "prefect-db" / f"{version}-{head}"


def _block_types(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return int(con.execute("SELECT count(*) FROM block_type").fetchone()[0])


def _head_of(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [r[0] for r in con.execute("SELECT version_num FROM alembic_version")]


def test_the_template_is_prefects_migrated_database_built_once_and_reused(cache: Path):
    folder = _folder(cache)
    meta = json.loads((folder / template.META_NAME).read_text())
    version, head = template.installed_key()
    assert (meta["prefect_version"], meta["migration_head"]) == (version, head)
    assert _head_of(folder / template.DB_NAME) == [head]
    assert meta["blocks"] == template.blocks_record() and _block_types(folder / template.DB_NAME) >= 40  # as a server registers them
    built = (folder / template.DB_NAME).stat().st_mtime_ns
    again = template.ensure_template({template.CACHE_ENV: str(cache)})  # no rebuild: same file, same record
    assert again == folder / template.DB_NAME and again.stat().st_mtime_ns == built
    assert json.loads((folder / template.META_NAME).read_text()) == meta


def test_a_damaged_template_is_refused(cache: Path, tmp_path: Path):
    copy = tmp_path / "damaged"
    shutil.copytree(_folder(cache), copy)
    version, head = template.installed_key()
    with open(copy / template.DB_NAME, "r+b") as handle:  # flip bytes inside the file: the digest no longer matches
        handle.seek(8192)
        handle.write(b"\xff" * 64)
    assert template.check_template(copy, version, head) == "its bytes changed since it was built"
    (copy / template.DB_NAME).write_bytes(b"not a database")  # a consistent record of a non-database is refused too
    meta = json.loads((copy / template.META_NAME).read_text())
    (copy / template.META_NAME).write_text(json.dumps({**meta, "sha256": file_digest(copy / template.DB_NAME).digest}))
    problem = template.check_template(copy, version, head)
    assert problem is not None and problem.startswith("not a readable Prefect database")


def test_a_stale_template_is_rebuilt_and_said_so(cache: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    stale = tmp_path / "cache"
    shutil.copytree(cache, stale)
    folder = _folder(stale)
    meta = json.loads((folder / template.META_NAME).read_text())
    (folder / template.META_NAME).write_text(json.dumps({**meta, "prefect_version": "0.0.1"}))
    rebuilt = template.ensure_template({template.CACHE_ENV: str(stale)})
    assert "is unusable (built for Prefect 0.0.1" in capfd.readouterr().err
    fresh = json.loads((folder / template.META_NAME).read_text())
    assert fresh["prefect_version"] == template.installed_key()[0] and fresh["built_at"] > meta["built_at"]
    assert template.check_template(folder, *template.installed_key()) is None
    assert _head_of(rebuilt) == [template.installed_key()[1]]


def test_the_pinned_prefect_ships_its_template_and_a_new_cache_unpacks_it_checked(tmp_path: Path):
    version, head = template.installed_key()
    shipped = template.shipped_template(version, head)
    assert shipped is not None, "no template shipped for the installed Prefect: run python -m rlam_prefect.local.template --ship"
    env = {**os.environ, template.CACHE_ENV: str(tmp_path / "cache")}
    started = time.monotonic()
    assert template.seed_home(tmp_path / "prefect", env) is True  # the first home on a machine migrates nothing
    unpacked = time.monotonic() - started
    meta = json.loads((_folder(tmp_path / "cache") / template.META_NAME).read_text())
    assert meta["source"] == shipped.name and "build_s" not in meta, meta
    assert template.check_template(_folder(tmp_path / "cache"), version, head) is None
    assert _head_of(tmp_path / "prefect" / template.DB_NAME) == [head]
    assert meta["blocks"]["collections"] == template.installed_collections()  # shipped from this very environment
    assert template.block_settings(tmp_path / "prefect", {}) == template.SKIP_BLOCK_REGISTRATION
    print(f"\nshipped template unpacked and copied in {unpacked:.3f} s")


def test_a_shipped_template_that_fails_its_check_is_said_and_one_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]):
    import gzip

    version, head = template.installed_key()
    monkeypatch.setattr(template, "SHIPPED", tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    with gzip.open(tmp_path / "shipped" / f"prefect-{version}-{head}.db.gz", "wb") as packed:
        packed.write(b"not a database")
    built = template.ensure_template({template.CACHE_ENV: str(tmp_path / "cache")})
    err = capfd.readouterr().err
    assert "the Prefect database template shipped in" in err and "fails its check (not a readable Prefect database" in err, err
    meta = json.loads((built.parent / template.META_NAME).read_text())
    assert "build_s" in meta and "source" not in meta  # built with Prefect's migrations instead
    assert _head_of(built) == [head]


def test_without_a_template_the_home_migrates_itself_and_the_template_is_built_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(template, "SHIPPED", tmp_path / "nothing-shipped")  # this process only: the background build may unpack it
    env = {**os.environ, template.CACHE_ENV: str(tmp_path / "cache")}
    assert template.seed_home(tmp_path / "prefect", env) is False  # nothing to copy yet: Prefect migrates this home itself
    folder = _folder(tmp_path / "cache")
    deadline = time.monotonic() + 300
    while template.check_template(folder, *template.installed_key()) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert template.check_template(folder, *template.installed_key()) is None, (folder / "build.log").read_text()
    assert template.seed_home(tmp_path / "prefect", env) is True
    assert _head_of(tmp_path / "prefect" / template.DB_NAME) == [template.installed_key()[1]]


def test_a_seeded_home_skips_registering_block_types_only_while_the_installed_ones_registered_them(cache: Path, tmp_path: Path):
    home = tmp_path / "prefect"
    assert template.block_settings(home, {}) == {}  # no record: Prefect registers, as always
    assert template.seed_home(home, {template.CACHE_ENV: str(cache)}) is True
    record = json.loads((home / template.BLOCKS_NAME).read_text())
    assert record == template.blocks_record()
    assert template.block_settings(home, {}) == template.SKIP_BLOCK_REGISTRATION
    assert template.block_settings(home, {"PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://x/y"}) == {}  # not this file
    (home / template.BLOCKS_NAME).write_text(json.dumps({**record, "collections": record["collections"] + ["prefect-other==1.0"]}))
    assert template.block_settings(home, {}) == template.SKIP_BLOCK_REGISTRATION  # more registered than installed: nothing missing
    if record["collections"]:  # a collection installed after the template was built: its block types are not in it
        (home / template.BLOCKS_NAME).write_text(json.dumps({**record, "collections": record["collections"][1:]}))
        assert template.block_settings(home, {}) == {}
    (home / template.BLOCKS_NAME).write_text(json.dumps({**record, "prefect": "3.0.0"}))
    assert template.block_settings(home, {}) == {}  # another Prefect registered them
    (home / template.DB_NAME).unlink()  # the database the record spoke of is gone
    assert template.seed_home(home, {"PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://x/y"}) is False
    assert not (home / template.BLOCKS_NAME).exists() and template.block_settings(home, {}) == {}


def test_a_template_built_without_block_types_is_updated_and_said_so(cache: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    earlier = tmp_path / "cache"
    shutil.copytree(cache, earlier)
    meta_path = _folder(earlier) / template.META_NAME
    meta = json.loads(meta_path.read_text())
    del meta["blocks"]  # as an earlier rlam wrote it: the database is right, its record says nothing of blocks
    meta_path.write_text(json.dumps(meta))
    assert template.check_template(_folder(earlier), *template.installed_key()) == template.NO_BLOCKS
    assert template.seed_home(tmp_path / "prefect", {**os.environ, template.CACHE_ENV: str(earlier)}) is True
    assert "rlam: updating the Prefect database template in" in capfd.readouterr().err
    assert json.loads(meta_path.read_text())["blocks"] == json.loads((tmp_path / "prefect" / template.BLOCKS_NAME).read_text())


def test_without_a_shipped_one_a_template_without_block_types_still_seeds_while_a_rebuild_is_under_way(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import fcntl

    earlier = tmp_path / "cache"
    shutil.copytree(cache, earlier)
    folder = _folder(earlier)
    meta = json.loads((folder / template.META_NAME).read_text())
    del meta["blocks"]
    (folder / template.META_NAME).write_text(json.dumps(meta))
    monkeypatch.setattr(template, "SHIPPED", tmp_path / "nothing-shipped")
    with open(folder / "build.lock", "a+b") as held:  # another process is rebuilding it
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert template.seed_home(tmp_path / "prefect", {**os.environ, template.CACHE_ENV: str(earlier)}) is True
    assert _head_of(tmp_path / "prefect" / template.DB_NAME) == [template.installed_key()[1]]
    assert not (tmp_path / "prefect" / template.BLOCKS_NAME).exists()  # so its server registers the block types itself
    assert template.block_settings(tmp_path / "prefect", {}) == {}


def test_a_database_url_in_the_environment_seeds_nothing(cache: Path, tmp_path: Path):
    env = {template.CACHE_ENV: str(cache), "PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://x/y"}
    assert template.seed_home(tmp_path / "prefect", env) is False
    assert not (tmp_path / "prefect" / template.DB_NAME).exists()


def _env(home: HomeLayout, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RLAM_"))}
    return {**env, "RLAM_HOME": str(home.root), template.CACHE_ENV: str(cache), "RLAM_PLANNER": "fixed"}


def _group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_a_home_seeded_from_the_template_runs_a_flow_and_stop_leaves_no_process(cache: Path, tmp_path: Path):
    home = HomeLayout(tmp_path / "home")
    try:
        first = subprocess.run([sys.executable, "-m", "rlam_prefect.cli", "run", "--json"], env=_env(home, cache), cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["executed"] == 5
        head = template.installed_key()[1]
        assert _head_of(home.prefect / template.DB_NAME) == [head]  # Prefect's migrate-on-start found nothing to do
        state = server.read_state(home)
        assert state and server.healthy(state["url"])
        flow_run_id = json.loads(first.stdout)["prefect_flow_run_id"]
        with urllib.request.urlopen(f"{state['url']}/flow_runs/{flow_run_id}", timeout=10) as response:
            assert json.loads(response.read())["state_type"] == "COMPLETED"  # a real Prefect flow run on that server
        deadline = time.monotonic() + 120  # the executor spawned by the first command
        while not executor.status(home)["running"] and time.monotonic() < deadline:
            time.sleep(0.2)
        executor_pid = executor.status(home).get("pid")
        assert executor_pid, executor.log_path(home).read_text()
        group = int(state["supervisor_pid"])
        assert len(_group_members(group)) >= 2  # the supervisor and Prefect's server
        command = Path(f"/proc/{state['server_pid']}/cmdline").read_bytes().split(b"\0")
        assert command[1:3] == [b"-m", b"rlam_prefect.local.prefect_server"]  # Prefect's server, tuned for idling
        assert b"PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_LOOP_SECONDS=30" in Path(f"/proc/{state['server_pid']}/environ").read_bytes()
        assert "not checked for the idle tuning" not in server.log_path(home).read_text()
        assert not (home.prefect / "memo_store.toml").exists()  # Prefect writes it after registering block types: it did not
        request = urllib.request.Request(f"{state['url']}/block_types/filter", data=b"{}", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:  # the template's block types, served
            assert len(json.loads(response.read())) == _block_types(_folder(cache) / template.DB_NAME)
        stopped = subprocess.run([sys.executable, "-m", "rlam_prefect.cli", "server", "stop"], env=_env(home, cache), cwd=ROOT,
                                 capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped", stopped.stderr
        assert _group_members(group) == [] and not pid_alive(executor_pid)
        assert server.read_state(home) is None and executor.read_state(home) is None
    finally:
        server.stop(home)
