"""The suite's shared infrastructure, and why it is shaped this way (docs/contributing.md#tests).

- One real Prefect server per test process. ``prefect_api_url`` starts rlam's own managed local server
  (the embedded default) once per session in a session home and points PREFECT_API_URL at it. Under
  pytest-xdist every worker is its own session, so each worker has exactly one server and the workers
  never share a SQLite database (the "database is locked" 503s of one busy server stay per worker).
- A fresh RLAM_HOME per test (``workspace``): traces and results are per test, the backend is shared.
- Recorded once, copied when written (``recorded_run``, ``recorded_workspace``): a completed run of the
  fixed pipeline costs a CLI process and five real steps, and many tests only need one to exist. It is
  recorded once per worker; a test that writes gets its own copy of that home (``shutil.copytree``: a
  home is relocatable, as tests/test_legacy_home.py proves for a home written by 0.1.0).
- Module-scoped fixtures are grouped for xdist: every test of a module that uses a fixture scoped to the
  module is marked ``xdist_group(<module>)``, and ``--dist loadgroup`` (pyproject's addopts) sends the
  group to one worker, so the fixture (a recorded story, a deployment with a worker, a fresh venv) is
  built once. Mark a module ``xdist_group`` yourself to group it otherwise.
- Any order: pytest-randomly shuffles modules and the tests inside them on every run; a test that needs
  state builds it from a fixture, never from an earlier test.
- Tiers: ``fast`` marks every test that needs no Prefect server (``pytest -m fast``, the loop to run
  while developing); the rest is the full tier.

Fixture modules other tests share (a fixture server, a witness) are registered in ``pytest_plugins``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rlam_prefect.core.home import HomeLayout
from tests.warm_cli import WarmCli, WarmProcess

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Coverage paused in this process for third-party work a test only checks with (the standards' validators).

    On Python 3.11 coverage's tracer is called for every Python function, measured or not: it doubled
    roc-validator's time here (1.0 -> 2.2 s per profile) while measuring nothing of rlam_prefect. Every
    started Coverage is paused: an xdist worker has two, pytest-cov's and the one coverage's own subprocess
    support started when the worker's interpreter did (whose tracer resumes when the first is stopped)."""
    import coverage

    paused: list[coverage.Coverage] = []
    while sys.gettrace() is not None and (cov := coverage.Coverage.current()) is not None:
        cov.stop()
        paused.append(cov)
    try:
        yield
    finally:
        for cov in reversed(paused):
            cov.start()


pytest_plugins = ["tests.llm_server", "tests.witness.plugin", "tests.example_venv"]  # fixture modules shared across test files


@pytest.fixture(scope="session")
def prefect_api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The one server of this test process (of this xdist worker), started on first use and stopped at the end."""
    from rlam_prefect.local import server

    session_home = HomeLayout(tmp_path_factory.mktemp("session-home"))
    os.environ.pop("PREFECT_API_URL", None)
    # Tests reach this server through PREFECT_API_URL, which never touches its idle clock: without a
    # long idle limit it stops itself 30 minutes in, in the middle of a slow (loaded) session.
    os.environ.setdefault(server.IDLE_ENV, "600")
    # This server answers every API call of this worker's tests. Traced by coverage, Prefect's server costs more
    # CPU and measures only rlam's supervisor, which test_server.py and test_startup.py measure in servers of their own.
    untraced = {k: os.environ.pop(k) for k in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START") if k in os.environ}
    try:
        url = server.ensure_server(session_home)
    finally:
        os.environ.update(untraced)
    os.environ["PREFECT_HOME"] = str(session_home.prefect)
    os.environ["PREFECT_API_URL"] = url
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # Test modules that import prefect at collection time froze its settings before the URL existed;
    # without this, in-process flows (test_audit, test_failures) would start an ephemeral server.
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    global _warm_cli
    _warm_cli = WarmCli.launch(session_home.root)  # imports while the first tests start
    try:
        with temporary_settings({PREFECT_API_URL: url, PREFECT_HOME: str(session_home.prefect)}):
            yield url
    finally:
        _warm_cli.stop()
        _warm_cli = None
        server.stop(session_home)


_warm_cli: WarmCli | None = None  # this test process's fork server for `rlam` commands (tests/warm_cli.py)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def run_rlam(argv: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: float = 300) -> CliResult:
    """``rlam argv`` run to its end: in a child of this process's warm CLI server when it runs the same there
    (tests/warm_cli.py says when), else in a fresh ``python -m rlam_prefect.cli``."""
    child = start_rlam(argv, env, cwd)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        raise
    return CliResult(child.returncode, out, err)  # type: ignore[arg-type]  # set once it ended


def start_rlam(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> WarmProcess | subprocess.Popen[str]:
    """``rlam argv`` started, not waited for (``communicate``, ``poll``, ``pid`` in a session of its own)."""
    if _warm_cli is not None and _warm_cli.takes(env):
        return _warm_cli.start(argv, env, cwd)
    return subprocess.Popen([sys.executable, "-m", "rlam_prefect.cli", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


@dataclass
class Workspace:
    """A fresh RLAM_HOME and a way to run the real ``rlam`` CLI against it."""

    home: HomeLayout

    def rlam(self, *args: str, extra_env: dict[str, str] | None = None) -> CliResult:
        return run_rlam(list(args), {**os.environ, "RLAM_HOME": str(self.home.root), **(extra_env or {})})

    def rlam_json(self, *args: str) -> dict[str, Any]:
        result = self.rlam(*args, "--json")
        assert result.code in (0, 1), result.stderr
        return result.json

    def snapshot(self, *parts: str) -> dict[str, str]:
        """Path -> sha256 of every file below home/parts (to prove nothing changed)."""
        base = self.home.root.joinpath(*parts)
        if not base.exists():
            return {}
        return {
            str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*"))
            if p.is_file()
        }

    def copy_from(self, source: HomeLayout) -> None:
        """Make this (still empty) home a copy of ``source``: traces and results, byte for byte."""
        assert not self.home.root.exists(), f"{self.home.root} is not empty"
        shutil.copytree(source.root, self.home.root, symlinks=True)
        # Prefect's result metadata (results/keys/<key>, JSON) names its data file by absolute path, and
        # Prefect refuses a path outside the storage's base: point the copy's metadata at its own data.
        for meta in self.home.result_keys.glob("*"):
            meta.write_text(meta.read_text().replace(str(source.root), str(self.home.root)))


@pytest.fixture
def workspace(prefect_api_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    home = HomeLayout(tmp_path / "rlam-home")
    monkeypatch.setenv("RLAM_HOME", str(home.root))
    return Workspace(home)


@pytest.fixture(autouse=True)
def _no_running_loop_left_by_playwright(request: pytest.FixtureRequest) -> Iterator[None]:
    """Hide an event loop that pytest-playwright's session-scoped Playwright left marked as running on
    this worker's main thread, for every test but the browser tests that own it: with it, asyncio.run
    refuses to start and Prefect's sync calls return coroutines (tests that run flows in-process)."""
    import asyncio

    leaked = asyncio._get_running_loop()
    if leaked is None or "page" in request.fixturenames:
        yield
        return
    asyncio._set_running_loop(None)
    try:
        yield
    finally:
        asyncio._set_running_loop(leaked)


@dataclass(frozen=True)
class Recorded:
    """A home holding one completed ``rlam run --planner fixed`` and that command's ``--json`` report."""

    home: HomeLayout
    report: dict[str, Any]


@pytest.fixture(scope="session")
def recorded_run(prefect_api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """One completed run of the fixed pipeline, recorded once per test process. Read-only: copy it to write."""
    space = Workspace(HomeLayout(tmp_path_factory.mktemp("recorded") / "rlam-home"))
    report = space.rlam_json("run", "--planner", "fixed")
    assert report["status"] == "completed" and report["executed"] == 5, report
    return Recorded(space.home, report)


@pytest.fixture
def recorded_workspace(recorded_run: Recorded, workspace: Workspace) -> Workspace:
    """This test's own workspace, holding a copy of ``recorded_run``'s home (write to it freely)."""
    workspace.copy_from(recorded_run.home)
    return workspace


def _uses_a_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(d.scope in ("module", "class") for defs in info.name2fixturedefs.values() for d in defs)


@pytest.hookimpl(tryfirst=True)  # before xdist reads xdist_group markers to build its work units
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``fast`` tests (no Prefect server) and keep each module that builds a module-scoped fixture
    on one xdist worker: the fixture is built once, and the module's other tests, which may touch what
    it built (the executor test changes source mtimes its executor fingerprints), never run beside it."""
    shared = {item.module.__name__ for item in items if isinstance(item, pytest.Function) and _uses_a_module_fixture(item)}
    for item in items:
        if "prefect_api_url" not in getattr(item, "fixturenames", ()) and item.get_closest_marker("server") is None:
            item.add_marker(pytest.mark.fast)
        module = item.module.__name__ if isinstance(item, pytest.Function) else None
        if module in shared and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(module))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Stop at once if ``--dist loadgroup`` is not grouping: each worker would build every module fixture
    and run a module's tests beside each other (pytest 9.2 with pytest-xdist 3.8, pytest-dev/pytest-xdist#1386)."""
    if not session.config.getoption("loadgroup", default=False):  # set on xdist workers only
        return
    lost = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        raise pytest.UsageError(f"xdist_group is not applied to {lost[0]} (and {len(lost) - 1} more): pin pytest<9.2 (pytest-xdist#1386)")
