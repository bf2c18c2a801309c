"""One real Prefect server for the whole session; a fresh RLAM_HOME for every test.

The server is rlam's own managed local server (the embedded default), started once in a
session home. Tests point PREFECT_API_URL at it, so each test's RLAM_HOME keeps its own traces
and results while sharing the one backend.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rlam_prefect.core.home import HomeLayout

ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ["tests.llm_server", "tests.witness.plugin"]


@pytest.fixture(scope="session")
def prefect_api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from rlam_prefect.local import server

    session_home = HomeLayout(tmp_path_factory.mktemp("session-home"))
    os.environ.pop("PREFECT_API_URL", None)
    url = server.ensure_server(session_home)
    os.environ["PREFECT_HOME"] = str(session_home.prefect)
    os.environ["PREFECT_API_URL"] = url
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # Test modules that import prefect at collection time froze its settings before the URL existed;
    # without this, in-process flows (test_audit, test_failures) would start an ephemeral server.
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings({PREFECT_API_URL: url, PREFECT_HOME: str(session_home.prefect)}):
        yield url
    server.stop(session_home)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Workspace:
    """A fresh RLAM_HOME and a way to run the real ``rlam`` CLI against it."""

    home: HomeLayout

    def rlam(self, *args: str, extra_env: dict[str, str] | None = None) -> CliResult:
        env = {**os.environ, "RLAM_HOME": str(self.home.root), **(extra_env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "rlam_prefect.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

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


@pytest.fixture
def workspace(prefect_api_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    home = HomeLayout(tmp_path / "rlam-home")
    monkeypatch.setenv("RLAM_HOME", str(home.root))
    return Workspace(home)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``fast``: every test that needs no Prefect server (the loop to run while developing: ``pytest -m fast``)."""
    for item in items:
        if "prefect_api_url" not in getattr(item, "fixturenames", ()) and item.get_closest_marker("server") is None:
            item.add_marker(pytest.mark.fast)
