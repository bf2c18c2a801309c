"""The Prefect UI as shipped, opened in a real browser: Playwright for Python driving Debian's Chromium.

Everything here is what a person does and sees. ``rlam`` runs on the embedded default (no
``PREFECT_API_URL``) in the home of the session's server, so the server is the one ``rlam`` itself
starts, and its flow commands go through that home's warm executor as a user's do; the pages are the
ones ``rlam server status``, ``rlam show`` and ``rlam ui`` point at. One module-scoped story (a run, its
replay, a fork, a failed run, a rejected step) is shared by the page tests; the form tests add a deployment
of ``prefect.yaml`` and a process worker on the same server.

Playwright cannot download its own browsers here: it is launched on ``chromium`` from Debian
(``apt-get install -y chromium``; ``.ci/run`` installs it). The tests write ``docs/screenshots/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.local import executor_client as executor
from rlam_prefect.local import server
from rlam_prefect.record.store import TraceStore

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
CONNECTION_ERROR = re.compile(r"Can't connect to Server API|Unable to connect|Oops\. Something went wrong")
POOL = "rlam-pool"
FLOW_PARAMETERS = (
    "run_id",
    "planner",
    "temperature",
    "seed",
    "max_steps",
    "target_accuracy",
    "overrides",
    "goal",
    "replay_of",
    "fork_of",
    "fork_step",
    "pin_decisions",
    "inject_failures",
    "policy",
    "approve",
    "approval_timeout",
)

expect.set_options(timeout=60_000)  # a loaded 2-core machine renders slowly; every wait is on a condition


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's launch options: Debian's Chromium, no sandbox (root in a container), no network chatter."""
    assert CHROMIUM, "Debian's Chromium is needed: apt-get install -y chromium (Playwright cannot download browsers here)"
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1400, "height": 900}}


@pytest.fixture
def context(context: BrowserContext) -> BrowserContext:
    """pytest-playwright's context, its pages on a 4 Hz animation clock (tests/frame_clock.js says why).

    Without it an open flow run page kept both cores busy drawing the graph, and the other xdist worker's
    tests with them. Prefect's UI runs unchanged; only its animation frames come less often.
    """
    context.add_init_script(path=str(Path(__file__).with_name("frame_clock.js")))
    return context


@dataclass
class Story:
    """The session server's own home, a project copy to run from, and what ``rlam`` did there."""

    home: HomeLayout
    project: Path
    api_url: str
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The embedded default: no PREFECT_* settings at all, only RLAM_HOME (and the warm executor, as a user has it)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "RLAM_EXECUTOR"}
        return {**env, "RLAM_HOME": str(self.home.root), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}

    def rlam(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "rlam_prefect.cli", *args], check=False, cwd=self.project, env=env or self.env, capture_output=True, text=True, timeout=300
        )
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
def story(prefect_api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
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
    assert " runs rlam " in executor.log_path(home).read_text()  # the later commands ran in the home's executor
    yield story
    executor.stop(home)  # the session server's home: the server is stopped with the session


def _open(page: Page, url: str, shows: str | re.Pattern[str]) -> None:
    """Open a UI page, wait until it shows ``shows`` (data from the API), and check it has no connection error."""
    page.goto(url)
    expect(page.get_by_text(shows).first).to_be_visible()
    expect(page.locator("body")).not_to_contain_text(CONNECTION_ERROR)


def _tab(page: Page, name: str) -> None:
    page.locator(".p-tab", has_text=re.compile(rf"^{name}$")).click()


def _log_lines(page: Page) -> Any:
    return page.locator(".log-row, .logs-row, [class*='log-row']")


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


def test_show_and_ui_print_the_flow_run_page_and_follow_prefect_api_url(story: Story, tmp_path: Path, page: Page) -> None:
    run = story.runs["run"]
    page_url = f"{story.api_url.removesuffix('/api')}/runs/flow-run/{run['prefect_flow_run_id']}"
    assert f"  prefect: {page_url}" in story.rlam("show", run["run_id"]).stdout.splitlines()
    assert story.rlam("ui", run["run_id"][:6]).stdout.strip() == page_url
    _open(page, page_url, f"run-{run['run_id']}")  # the link opens that run's page
    browser = tmp_path / "browser.sh"  # --open hands the address to $BROWSER
    browser.write_text(f'#!/bin/sh\necho "$1" > {tmp_path / "opened"}\n')
    browser.chmod(0o755)
    assert story.rlam("ui", run["run_id"], "--open", env={**story.env, "BROWSER": str(browser)}).returncode == 0
    assert (tmp_path / "opened").read_text().strip() == page_url

    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    for api, ui in (
        ("https://prefect.example.org/api", "https://prefect.example.org"),
        ("https://api.prefect.cloud/api/accounts/a1/workspaces/w2", "https://app.prefect.cloud/account/a1/workspace/w2"),
    ):
        with temporary_settings({PREFECT_API_URL: api}):
            assert PREFECT_UI_URL.value() == ui  # the rule rlam mirrors without importing Prefect
        env = {**story.env, "PREFECT_API_URL": api}
        shown = story.rlam("show", run["run_id"], "--json", env=env)
        assert json.loads(shown.stdout)["prefect_ui_url"] == f"{ui}/runs/flow-run/{run['prefect_flow_run_id']}"
        assert story.rlam("ui", run["run_id"], env=env).stdout.strip() == f"{ui}/runs/flow-run/{run['prefect_flow_run_id']}"
        assert json.loads(story.rlam("server", "status", "--json", env=env).stdout)["ui_url"] == ui


# ---- 2. every step tells its story; 3. replay and fork are visible as such ----------------------


def _step_line(step: dict[str, Any]) -> str:
    """The start of the Logs tab line of a step: action, outcome, cache key and output hash prefixes."""
    line = f"step {step['step']} {step['action']} {step['status']}"
    if step.get("cache_key"):
        line += f" | key {step['cache_key'][:12]}"
    if step.get("output_hash"):
        line += f" | output {step['output_hash'][7:19]}"
    return line


def _task_names(run: dict[str, Any]) -> list[str]:
    return [f"{s['action']} #{s['step']}" for s in run["steps"] if s.get("prefect_task_run_id")]


def _open_run(page: Page, story: Story, name: str) -> set[str]:
    """Open a run's page from the link ``rlam show`` prints; the names of the task runs its graph was drawn from."""
    run = story.runs[name]
    graph = f"/flow_runs/{run['prefect_flow_run_id']}/graph-v2"
    with page.expect_response(lambda response: response.url.endswith(graph)) as response:
        _open(page, story.page_of(name), f"{run['mode']}-{run['run_id']}")
    expect(page.locator("canvas").first).to_be_visible()  # the graph is drawn on a canvas, from that response
    return {node["label"] for _, node in response.value.json()["nodes"]}


def _expect_tags(page: Page, *tags: str) -> None:
    header = page.locator(".page-heading, .flow-run-header, header").first
    for tag in tags:
        expect(header.locator(".p-tag", has_text=re.compile(rf"^{re.escape(tag)}$")).first).to_be_visible()


def _expect_states(page: Page, states: dict[str, str]) -> None:
    """The Task Runs tab lists each task run with its state."""
    _tab(page, "Task Runs")
    for name, state in states.items():
        item = page.locator(".state-list-item", has=page.get_by_role("link", name=name, exact=True))
        expect(item.locator(".state-badge")).to_have_text(state)


def _shot(page: Page, name: str) -> None:
    """docs/screenshots/NAME.png: the page as it is, tall enough for the graph and the first log lines."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.__frameClock.setPeriod(0)")  # real frames while the graph settles (tests/frame_clock.js)
    page.set_viewport_size({"width": 1400, "height": 1300})
    graph, last, deadline = page.locator("canvas").first, b"", time.monotonic() + 20
    while (drawn := graph.screenshot()) != last and time.monotonic() < deadline:  # the graph's drawing has settled
        last = drawn
        page.wait_for_timeout(500)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    page.evaluate("window.__frameClock.setPeriod(250)")


def test_a_run_page_shows_its_graph_its_steps_and_the_planner_decisions(story: Story, page: Page) -> None:
    run = story.runs["run"]
    assert set(_task_names(run)) <= _open_run(page, story, "run")
    _expect_tags(page, "rlam", "run")
    logs = page.locator("body")
    expect(logs).to_contain_text(f"run {run['run_id']}: planner rlam/heuristic")
    for step in run["steps"]:
        expect(logs).to_contain_text(_step_line(step))
        expect(logs).to_contain_text(re.compile(rf"step {step['step']} decision \(rlam/heuristic\): {step['action']} \{{.*\}} because \w"))
    expect(logs).to_contain_text(re.compile(r"planner \(rlam/heuristic\) stopped: held-out accuracy"))
    expect(logs).to_contain_text(f"run {run['run_id']} completed (executed {run['executed']}, cached {run['cached']}, failed 0, rejected 0)")
    _shot(page, "run")
    _expect_states(page, {name: "Completed" for name in _task_names(run)})

    # each step's line is attached to its own task run: the task run's page shows it, and only it
    second, third = run["steps"][1], run["steps"][2]
    _open(page, f"{story.api_url.removesuffix('/api')}/runs/task-run/{second['prefect_task_run_id']}", f"{second['action']} #2")
    expect(page.locator("body")).to_contain_text(_step_line(second))
    expect(page.locator("body")).not_to_contain_text(_step_line(third))


def test_a_replay_page_shows_cached_steps_identical_and_links_its_parent(story: Story, page: Page) -> None:
    run, replay = story.runs["run"], story.runs["replay"]
    assert set(_task_names(replay)) <= _open_run(page, story, "replay")
    _expect_tags(page, "rlam", "replay", f"parent:{run['run_id']}")
    body = page.locator("body")
    expect(body).to_contain_text(f"replay of run {run['run_id']}: identical ({len(run['steps'])} steps: executed 0, cached {len(run['steps'])}")
    for step in replay["steps"]:
        original = run["steps"][step["step"] - 1]
        expect(body).to_contain_text(f"{_step_line(step)} | computed by run {run['run_id']} step {original['step']}")
    _shot(page, "replay")
    _expect_states(page, {name: "Cached" for name in _task_names(replay)})
    _follow_parent_link(page, story, run)


def _follow_parent_link(page: Page, story: Story, parent: dict[str, Any]) -> None:
    _tab(page, "Logs")
    link = page.get_by_role("link", name=f"{story.api_url.removesuffix('/api')}/runs/flow-run/{parent['prefect_flow_run_id']}")
    link.first.click()
    expect(page).to_have_url(re.compile(rf"/runs/flow-run/{parent['prefect_flow_run_id']}$"))
    expect(page.get_by_text(f"run-{parent['run_id']}").first).to_be_visible()


def test_a_fork_page_says_which_steps_it_reused_and_links_its_parent(story: Story, page: Page) -> None:
    run, fork = story.runs["run"], story.runs["fork"]
    assert set(_task_names(fork)) <= _open_run(page, story, "fork")
    _expect_tags(page, "rlam", "fork", f"parent:{run['run_id']}")
    body = page.locator("body")
    expect(body).to_contain_text(f"fork {fork['run_id']} of run {run['run_id']} at step 4 with train_model.C=0.05: steps 1-3 reused from run {run['run_id']}")
    expect(body).to_contain_text(f"fork of run {run['run_id']} at step 4 completed: reused steps 1-3 of run {run['run_id']}")
    for step in fork["steps"]:
        expect(body).to_contain_text(_step_line(step))
    _shot(page, "fork")
    actions = [s for s in fork["steps"] if s.get("prefect_task_run_id")]
    _expect_states(page, {f"{s['action']} #{s['step']}": "Cached" if s["step"] < 4 else "Completed" for s in actions})
    _tab(page, "Artifacts")
    expect(body).to_contain_text(f"lineage of run {fork['run_id']} (fork, completed): fork of {run['run_id']} at step 4")
    _follow_parent_link(page, story, run)


def test_failures_and_rejections_log_their_error_line(story: Story, page: Page) -> None:
    failed, rejected = story.runs["failed"], story.runs["rejected"]
    _open_run(page, story, "failed")
    step = failed["steps"][3]
    assert (step["action"], step["status"], step["error_type"]) == ("train_model", "failed", "InjectedFailure")
    body = page.locator("body")
    expect(body).to_contain_text(f"{_step_line(step)} | InjectedFailure: injected failure in train_model (step 4)")
    expect(body).to_contain_text(f"run {failed['run_id']} failed (executed {failed['executed']}, cached {failed['cached']}, failed 1, rejected 0)")

    _open_run(page, story, "rejected")
    step = rejected["steps"][-1]
    assert (step["action"], step["status"], step["error_type"]) == ("evaluate_model", "rejected", "PolicyViolation")
    expect(body).to_contain_text(f"step 5 evaluate_model rejected | PolicyViolation: {step['error_message']}")


def test_nothing_secret_reaches_the_logs(story: Story, page: Page) -> None:
    secret = "injected failure in load_dataset"  # what the step's error line would say, made a secret's value
    env = {**story.env, "UI_DEMO_TOKEN": secret}
    story.runs["secret"] = failed = json.loads(story.rlam("run", "--planner", "fixed", "--inject-failure", "load_dataset", "--json", env=env).stdout)
    assert failed["status"] == "failed"
    _open_run(page, story, "secret")
    expect(page.locator("body")).to_contain_text("step 1 load_dataset failed | key")
    expect(page.locator("body")).to_contain_text("InjectedFailure: [redacted UI_DEMO_TOKEN] (step 1)")
    lines = [log["message"] for log in story.logs(failed["prefect_flow_run_id"]) if log["name"] == "rlam"]
    assert lines and not [line for line in lines if secret in line]


# ---- 4. fork and replay from the UI's forms -------------------------------------------------------


@dataclass
class Deployment:
    id: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def deployment(story: Story) -> Iterator[Deployment]:
    """prefect.yaml's ``rlam`` deployment on the story's server, from the project copy, and a process worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "RLAM_HOME"}
    env.update(
        PREFECT_API_URL=story.api_url,
        PREFECT_HOME=str(story.home.prefect),
        PWD=str(story.project),
        PREFECT_WORKER_QUERY_SECONDS="2",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )

    def prefect(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "prefect", *args], check=False, cwd=story.project, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr

    prefect("work-pool", "create", POOL, "--type", "process", "--overwrite")
    prefect("--no-prompt", "deploy", "--name", "rlam")  # the rlam deployment only: the audit one has a schedule
    log = story.project / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
            cwd=story.project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Deployment(story.api("GET", "/deployments/name/rlam/rlam")["id"], env)
    finally:
        for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGINT, 15.0)):  # a background worker needs TERM, then INT
            if worker.poll() is None:
                worker.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.wait(timeout=wait)
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def _property(page: Page, name: str) -> Any:
    label = page.locator(".schema-form-property__label", has_text=re.compile(rf"^{re.escape(name)} \(Optional\)$"))
    return page.locator(".schema-form-property", has=label).first


def _fill(page: Page, name: str, kind: str, value: str) -> None:
    """An optional field starts as None: choose its type, then type the value (JSON for dict and list)."""
    prop = _property(page, name)
    prop.get_by_role("button", name=kind, exact=True).click()
    prop.locator("textarea, input").first.fill(value)


def _submit_custom_run(page: Page, story: Story, deployment: Deployment, fields: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Deployments -> rlam -> Run -> Custom run, fill ``fields``, Submit; the flow run that created, once it ended."""
    body = {"flow_runs": {"deployment_id": {"any_": [deployment.id]}}, "limit": 200}
    before = {r["id"] for r in story.api("POST", "/flow_runs/filter", body)}
    _open(page, f"{story.api_url.removesuffix('/api')}/deployments/deployment/{deployment.id}", "rlam-pool")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("link", name="Custom run").click()
    for entry in fields:
        _fill(page, *entry)
    answers = []
    for _ in range(5):  # a busy SQLite server answers 503 "database is locked": the UI shows an error, a person submits again
        with page.expect_response(lambda response: response.url.endswith("/create_flow_run"), timeout=120_000) as answer:
            page.get_by_role("button", name="Submit").click()
        answers.append(answer.value.status)
        if answer.value.status not in (429, 503):
            break
    assert answers[-1] == 201, answers
    expect(page).not_to_have_url(re.compile(r"/run(\?|$)"))  # the form was accepted and left
    created = [r for r in story.api("POST", "/flow_runs/filter", body) if r["id"] not in before]
    assert len(created) == 1, created
    _open(page, f"{story.api_url.removesuffix('/api')}/runs/flow-run/{created[0]['id']}", "rlam")
    expect(page.locator(".state-badge").first).to_have_text(re.compile("Completed|Failed|Crashed"), timeout=240_000)  # live, as a person watches it
    return story.api("GET", f"/flow_runs/{created[0]['id']}")


def test_the_custom_run_form_documents_every_parameter_and_forks_through_a_worker(story: Story, deployment: Deployment, page: Page) -> None:
    schema = story.api("GET", f"/deployments/{deployment.id}")["parameter_openapi_schema"]["properties"]
    assert set(schema) == set(FLOW_PARAMETERS)
    _open(page, f"{story.api_url.removesuffix('/api')}/deployments/deployment/{deployment.id}/run", "Parameters")
    for name in FLOW_PARAMETERS:
        description = _property(page, name).locator(".schema-form-property__description")
        expect(description).to_have_text(schema[name]["description"])
        assert len(schema[name]["description"]) > 30, name

    run = story.runs["run"]
    flow_run = _submit_custom_run(
        page,
        story,
        deployment,
        [
            ("fork_of", "str", run["run_id"][:6]),
            ("fork_step", "int", "4"),
            ("overrides", "dict", '{"train_model": {"C": 0.2}}'),
        ],
    )
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]
    recorded = [r for r in TraceStore(story.home).runs() if r["prefect_flow_run_id"] == flow_run["id"]]
    assert len(recorded) == 1
    fork = recorded[0]
    assert (fork["mode"], fork["parent_run_id"], fork["fork_step"], json.loads(fork["overrides"])) == ("fork", run["run_id"], 4, {"train_model": {"C": 0.2}})
    steps = TraceStore(story.home).steps(fork["run_id"])
    assert [s["status"] for s in steps[:3]] == ["cached"] * 3 and [s["output_hash"] for s in steps[:3]] == [s["output_hash"] for s in run["steps"][:3]]
    assert json.loads(steps[3]["params"])["C"] == 0.2 and steps[3]["status"] == "executed"
    expect(page.get_by_text(f"fork-{fork['run_id']}").first).to_be_visible()  # renamed once the plan was checked
    _expect_tags(page, "rlam", "fork", f"parent:{run['run_id']}")
    expect(page.locator("body")).to_contain_text(f"fork of run {run['run_id']} at step 4 completed: reused steps 1-3 of run {run['run_id']}")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([("fork_of", "str", "nosuchrun"), ("fork_step", "int", "2")], re.escape("UnknownRunError: unknown run 'nosuchrun' (see `rlam runs`)")),
        ([("fork_of", "str", "{run}"), ("fork_step", "int", "9")], r"UsageError: step 9 is out of range: run {run} has steps 1\.\.\d+"),
        (
            [("fork_of", "str", "{run}"), ("fork_step", "int", "4"), ("overrides", "dict", '{"train_model": {"CC": 0.2}}')],
            re.escape("InvalidParamsError: train_model: CC: unknown parameter"),
        ),
    ],
    ids=["unknown-run-id", "step-out-of-range", "mistyped-override"],
)
def test_bad_input_from_the_form_fails_the_flow_run_before_any_work_in_one_line(
    story: Story, deployment: Deployment, page: Page, fields: list[tuple[str, str, str]], message: str
) -> None:
    run_id = story.runs["run"]["run_id"]
    recorded = {r["run_id"] for r in TraceStore(story.home).runs()}
    flow_run = _submit_custom_run(page, story, deployment, [(n, k, v.replace("{run}", run_id)) for n, k, v in fields])
    state = flow_run["state"]
    pattern = re.compile(message.replace("{run}", run_id))
    assert state["type"] == "FAILED" and "\n" not in state["message"] and pattern.fullmatch(state["message"]), state
    expect(page.locator("body")).to_contain_text(f"refused before any work: {state['message']}")
    assert story.api("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}}) == []  # no work
    logs = story.logs(flow_run["id"])
    assert [log["message"] for log in logs if log["name"] == "rlam"] == [f"refused before any work: {state['message']}"]
    assert not [log["message"] for log in logs if "Traceback" in log["message"] or "\n" in log["message"]]
    assert {r["run_id"] for r in TraceStore(story.home).runs()} == recorded  # nothing recorded


def _drain(lines: queue.Queue[str]) -> str:
    text = []
    while not lines.empty():
        text.append(lines.get_nowait())
    return "".join(text)


def _resume_with_edits(page: Page) -> None:
    """Resume -> the approval form: the proposal in words, C edited to 0.5, a reviewer and a note -> Submit."""
    page.get_by_role("button", name="Resume").click()
    form = page.locator(".p-modal")
    expect(form).to_contain_text("Step 4: train_model needs approval.")
    params = _property(page, "Params").locator("textarea")
    proposed = json.loads(params.input_value())
    params.fill(json.dumps({**proposed, "C": 0.5}))
    _property(page, "Reviewer").locator("textarea, input").first.fill("alice")
    _property(page, "Note").locator("textarea, input").first.fill("less regularisation")
    for attempt in range(3):  # a loaded server may leave the form open (CI, load 5-8): a person submits again
        form.get_by_role("button", name="Submit").click()
        try:
            expect(form).to_be_hidden(timeout=30_000)  # the UI sent the answer
            return
        except AssertionError:
            if attempt == 2:
                raise


def test_an_approval_gate_is_resumed_from_the_ui(story: Story, page: Page) -> None:
    policy = story.project / "approve-training.yaml"
    policy.write_text("require_approval: [train_model]\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "rlam_prefect.cli", "run", "--planner", "fixed", "--policy", str(policy), "--json"],
        cwd=story.project,
        env=story.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        output: list[str] = []
        threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
        reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)
        reader.start()
        seen, match = [], None
        while match is None:  # `rlam` says on stderr where to resume, as a person would read it
            seen.append(lines.get(timeout=240))
            match = re.fullmatch(r"step 4 train_model waits for approval: resume (http://\S+/runs/flow-run/\S+) \(form: .*\)\n", seen[-1])
        _open(page, match.group(1), "Paused")
        expect(page.locator("body")).to_contain_text("step 4 train_model waits for approval: Resume this flow run")
        # On a busy SQLite server a resume now and then leaves the run Paused: the server answers it with
        # neither ACCEPT nor REJECT, which Prefect's resume does not report. A person sees the run still
        # Paused and presses Resume again; so does this test, at most twice more.
        for _ in range(3):
            _resume_with_edits(page)
            try:
                expect(page.locator(".state-badge").first).not_to_have_text("Paused", timeout=30_000)
                break
            except AssertionError:
                continue
        process.wait(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, "".join(seen) + _drain(lines)
    page.reload()
    expect(page.locator(".state-badge").first).to_have_text("Completed")
    reader.join(timeout=30)
    train = next(s for s in json.loads(output[0])["steps"] if s["action"] == "train_model")
    assert (train["status"], train["params"]["C"], train["approved_by"], train["approval_via"]) == ("executed", 0.5, "alice", "ui")
    assert (train["approval_edits"], train["approval_note"]) == ({"C": 0.5}, "less regularisation")
    expect(page.locator("body")).to_contain_text("step 4 train_model executed | key")
    expect(page.locator("body")).to_contain_text("approved by alice (ui)")
