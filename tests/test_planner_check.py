"""``rlam planner check`` against the scripted OpenAI-compatible server (tests/llm_server.py), over real HTTP.

One call per check, counted by the server; a wrong key, an unreachable port and a garbage reply each
end in one line and a non-zero exit, a missing key in the usage error ``rlam run`` gives (exit 2).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from rlam_prefect.core.errors import UsageError
from rlam_prefect.planning.check import check_planner
from tests.conftest import ROOT, CliResult, run_rlam
from tests.llm_server import GARBAGE, HTTP, LLMServer

MODEL = "openai/gpt-4o-mini"


def _cli(*args: str, env: dict[str, str]) -> CliResult:
    """``rlam planner check args``: in a child of the warm CLI server, which imported litellm once (tests/warm_cli.py)."""
    return run_rlam(["planner", "check", *args], {**os.environ, **env}, ROOT, timeout=120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_working_endpoint_prints_model_endpoint_latency_and_the_decision(llm_server: LLMServer) -> None:
    llm_server.script({"action": "load_dataset", "params": {"name": "iris"}, "reason": "start with data"})
    result = _cli("--planner", MODEL, "--json", env=llm_server.env())
    assert result.code == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert (outcome["ok"], outcome["model"], outcome["endpoint"]) == (True, MODEL, llm_server.url)
    assert outcome["decision"]["action"] == "load_dataset" and outcome["decision"]["params"]["name"] == "iris"
    assert outcome["latency_s"] > 0 and llm_server.count == 1
    body = llm_server.requests[0]  # the same request a run's first decision makes
    assert (body["model"], body["temperature"], body["seed"], body["response_format"]) == ("gpt-4o-mini", 0.0, 0, {"type": "json_object"})
    assert "<<<STATE" in body["messages"][-1]["content"] and "load_dataset" in body["messages"][-1]["content"]


def test_planner_api_base_points_the_call_without_any_environment_variable(llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    llm_server.script({"action": "stop", "reason": "nothing to do"})
    outcome = check_planner(MODEL, api_base=llm_server.url)
    assert outcome.ok and outcome.decision == {"action": "stop", "params": {}, "reason": "nothing to do"}
    assert outcome.endpoint == llm_server.url and llm_server.count == 1


def test_a_wrong_key_is_one_line_and_exit_1() -> None:
    server = LLMServer(key="sk-the-right-one").start()
    try:
        result = _cli("--planner", MODEL, env=server.env(key="sk-a-wrong-one"))
        assert server.count == 1
    finally:
        server.stop()
    assert result.code == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"rlam: error: planner {MODEL} at {server.url}: the call failed: AuthenticationError")
    assert "sk-a-wrong-one" not in result.stderr


def test_a_missing_key_fails_before_any_call_with_exit_2(llm_server: LLMServer) -> None:
    result = _cli("--planner", MODEL, env={**llm_server.env(), "OPENAI_API_KEY": ""})
    assert result.code == 2 and result.stderr == f"rlam: error: planner '{MODEL}' needs OPENAI_API_KEY set in the environment\n"
    assert llm_server.count == 0


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (GARBAGE, "the call failed: InternalServerError"),
        (HTTP(429), "the call failed: RateLimitError"),
        ({"action": "delete_everything"}, "the reply was rejected: unknown action 'delete_everything'"),
        ("not json", "the reply was rejected: the reply is not JSON"),
    ],
)
def test_a_failed_call_or_an_unusable_reply_is_not_ok(llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch, script: object, error: str) -> None:
    for name, value in llm_server.env().items():
        monkeypatch.setenv(name, value)
    llm_server.script(script)
    outcome = check_planner(MODEL)
    assert not outcome.ok and outcome.decision is None and outcome.error.startswith(error), outcome.error
    assert llm_server.count == 1  # one request, no retry


def test_an_unreachable_endpoint_is_not_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    url = f"http://127.0.0.1:{_free_port()}/v1"
    outcome = check_planner(MODEL, api_base=url)
    assert not outcome.ok and outcome.endpoint == url and "Connection error" in (outcome.error or ""), outcome.error


@pytest.mark.parametrize(
    ("model", "api_base", "message"),
    [
        ("fixed", None, "the fixed planner makes no call"),
        ("rlam/heuristic", "http://127.0.0.1:1/v1", "runs in-process"),
        (MODEL, "http://user:secret@127.0.0.1:1/v1", "must not carry a user, password"),
        (MODEL, "ftp://127.0.0.1/v1", "is not an http:// or https:// URL"),
    ],
)
def test_bad_options_are_usage_errors(model: str, api_base: str | None, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(UsageError, match=message):
        check_planner(model, api_base=api_base)


def test_the_offline_default_answers_in_process() -> None:
    outcome = check_planner("rlam/heuristic")
    assert outcome.ok and outcome.endpoint == "in-process" and outcome.decision is not None
    assert outcome.decision["action"] == "load_dataset"


def test_warming_the_planner_makes_no_call_of_a_run_and_leaves_nothing_for_the_first_call_to_import() -> None:
    """What the warm executor does before it forks commands: one call to the offline model, not counted."""
    code = """
import json, sys
from rlam_prefect.planning import llm, prompt
llm.warm_up()
warmed = llm.calls_so_far()
before = set(sys.modules)
reply = llm.complete("rlam/heuristic", [{"role": "user", "content": f"{prompt.STATE_BEGIN}{{}}{prompt.STATE_END}"}], temperature=0.0, seed=0)
print(json.dumps({"warmed": warmed, "imported": sorted(set(sys.modules) - before), "after_one": llm.calls_seen(), "action": json.loads(reply.text)["action"]}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"warmed": 0, "imported": [], "after_one": 1, "action": "load_dataset"}  # without warm_up, about 50 modules here
    assert "warming the planner failed" not in done.stderr
