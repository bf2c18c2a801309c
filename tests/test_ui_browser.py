"""The Prefect UI as shipped, opened in a real browser: Playwright for Python driving Debian's Chromium.

Everything here is what a person does and sees. ``rlam`` runs on the embedded default (no
``PREFECT_API_URL``) in the home of the session's server, so the server is the one ``rlam`` itself
starts; the pages are the ones ``rlam server status``, ``rlam show`` and ``rlam ui`` point at. One
module-scoped story (a run, its replay, a fork, a failed run, a rejected step) is shared by the page
tests; the form tests add a deployment of ``prefect.yaml`` and a process worker on the same server.

Playwright cannot download its own browsers here: it is launched on ``chromium`` from Debian
(``apt-get install -y chromium``; ``.ci/run`` installs it). The tests write ``docs/screenshots/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.local import server

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
CONNECTION_ERROR = re.compile(r"Can't connect to Server API|Unable to connect|Oops\. Something went wrong")
POOL = "rlam-pool"
FLOW_PARAMETERS = (
    "run_id", "planner", "temperature", "seed", "max_steps", "target_accuracy", "overrides", "replay_of", "fork_of",
    "fork_step", "pin_decisions", "inject_failures", "policy", "approve", "approval_timeout",
)
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")

expect.set_options(timeout=60_000)  # a loaded 2-core machine renders slowly; every wait is on a condition


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's launch options: Debian's Chromium, no sandbox (root in a container), no network chatter."""
    assert CHROMIUM, "Debian's Chromium is needed: apt-get install -y chromium (Playwright cannot download browsers here)"
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1400, "height": 900}}


@dataclass
class Story:
    """The session server's own home, a project copy to run from, and what ``rlam`` did there."""

    home: HomeLayout
    project: Path
    api_url: str
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The embedded default: no PREFECT_* settings at all, only RLAM_HOME (the executor stays off)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        return {**env, "RLAM_HOME": str(self.home.root), "RLAM_EXECUTOR": "off", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}

    def rlam(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "rlam_prefect.cli", *args], check=False, cwd=self.project, env=env or self.env,
                              capture_output=True, text=True, timeout=300)
        assert not check or proc.returncode in (0, 1), proc.stderr
        return proc

    def rlam_json(self, *args: str) -> dict[str, Any]:
        return json.loads(self.rlam(*args, "--json").stdout)

    def page_of(self, name: str) -> str:
        """The flow run page ``rlam show`` prints for one of the story's runs."""
        shown = self.rlam_json("show", self.runs[name]["run_id"])
        return shown["prefect_ui_url"]

    def api(self, method: str, path: str, body: Any = None) -> Any:
        for _ in range(20):  # like Prefect's client: retry while SQLite answers 503 "database is locked"
            response = httpx.request(method, f"{self.api_url}{path}", json=body, timeout=30)
            if response.status_code not in (429, 503):
                break
            time.sleep(0.5)
        response.raise_for_status()
        return response.json()

    def logs(self, flow_run_id: str) -> list[dict[str, Any]]:
        return self.api("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "sort": "TIMESTAMP_ASC"})


def _project_copy(base: Path, home: HomeLayout) -> Path:
    """A checkout as a user has it: prefect.yaml, pyproject.toml ([tool.rlam]), tasks/ and flows/.

    Its ``.rlam`` (the RLAM_HOME prefect.yaml gives flow runs on a worker) is the story's home.
    """
    project = base / "project"
    project.mkdir()
    for name in ("prefect.yaml", "pyproject.toml"):
        shutil.copy(ROOT / name, project)
    for name in ("tasks", "flows"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    (project / ".rlam").symlink_to(home.root, target_is_directory=True)
    return project


@pytest.fixture(scope="module")
def story(prefect_api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Story:
    home = HomeLayout(Path(os.environ["PREFECT_HOME"]).parent)  # conftest: the session server's home
    assert server.read_state(home)["url"] == prefect_api_url  # the server rlam itself started for that home
    story = Story(home, _project_copy(tmp_path_factory.mktemp("ui"), home), prefect_api_url)
    story.runs["run"] = run = story.rlam_json("run")  # the default planner, rlam/heuristic
    assert run["status"] == "completed", run
    story.runs["replay"] = story.rlam_json("replay", run["run_id"])
    story.runs["fork"] = story.rlam_json("fork", run["run_id"], "--step", "4", "--set", "train_model.C=0.05")
    story.runs["failed"] = story.rlam_json("run", "--planner", "fixed", "--inject-failure", "train_model")
    policy = story.project / "no-evaluation.yaml"
    policy.write_text("allowed_actions: [load_dataset, analyze_data, preprocess_data, train_model]\n")
    story.runs["rejected"] = story.rlam_json("run", "--planner", "fixed", "--policy", str(policy))
    assert story.runs["replay"]["identical"] is True and story.runs["fork"]["status"] == "completed"
    assert story.runs["failed"]["failed"] == 1 and story.runs["rejected"]["rejected"] == 1
    return story


def _open(page: Page, url: str, shows: str | re.Pattern[str]) -> None:
    """Open a UI page, wait until it shows ``shows`` (data from the API), and check it has no connection error."""
    page.goto(url)
    expect(page.get_by_text(shows).first).to_be_visible()
    expect(page.locator("body")).not_to_contain_text(CONNECTION_ERROR)


# ---- 1. the UI connects wherever the server runs ------------------------------------------------


def test_the_ui_of_the_embedded_server_connects_to_its_own_api(story: Story, page: Page) -> None:
    status = story.rlam_json("server", "status")
    assert status["running"] and status["url"] == story.api_url
    assert status["ui_url"] == story.api_url.removesuffix("/api") and f"\nui: {status['ui_url']}\n" in story.rlam("server", "status").stdout
    settings = httpx.get(f"{status['ui_url']}/ui-settings", timeout=10).json()
    assert settings["api_url"] == story.api_url  # not Prefect's default http://127.0.0.1:4200/api

    failed_requests: list[str] = []
    page.on("requestfailed", lambda request: failed_requests.append(request.url) if "127.0.0.1" in request.url else None)
    _open(page, status["ui_url"], "Flow Runs")  # the address `rlam server status` prints: the server's default UI
    _open(page, story.rlam("ui").stdout.strip(), "Flow Runs")  # `rlam ui`: the dashboard
    assert failed_requests == []


def test_show_and_ui_print_the_flow_run_page_and_follow_prefect_api_url(story: Story, tmp_path: Path) -> None:
    run = story.runs["run"]
    page_url = f"{story.api_url.removesuffix('/api')}/runs/flow-run/{run['prefect_flow_run_id']}"
    assert f"  prefect: {page_url}" in story.rlam("show", run["run_id"]).stdout.splitlines()
    assert story.rlam("ui", run["run_id"][:6]).stdout.strip() == page_url
    browser = tmp_path / "browser.sh"  # --open hands the address to $BROWSER
    browser.write_text(f"#!/bin/sh\necho \"$1\" > {tmp_path / 'opened'}\n")
    browser.chmod(0o755)
    assert story.rlam("ui", run["run_id"], "--open", env={**story.env, "BROWSER": str(browser)}).returncode == 0
    assert (tmp_path / "opened").read_text().strip() == page_url

    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    for api, ui in (("https://prefect.example.org/api", "https://prefect.example.org"),
                    ("https://api.prefect.cloud/api/accounts/a1/workspaces/w2", "https://app.prefect.cloud/account/a1/workspace/w2")):
        with temporary_settings({PREFECT_API_URL: api}):
            assert PREFECT_UI_URL.value() == ui  # the rule rlam mirrors without importing Prefect
        env = {**story.env, "PREFECT_API_URL": api}
        shown = story.rlam("show", run["run_id"], "--json", env=env)
        assert json.loads(shown.stdout)["prefect_ui_url"] == f"{ui}/runs/flow-run/{run['prefect_flow_run_id']}"
        assert story.rlam("ui", run["run_id"], env=env).stdout.strip() == f"{ui}/runs/flow-run/{run['prefect_flow_run_id']}"
        assert json.loads(story.rlam("server", "status", "--json", env=env).stdout)["ui_url"] == ui
