"""The embedded server's idle tuning (rlam_prefect/local/prefect_server.py), checked against the real libraries.

The tuning changes how an idle Prefect server waits, not what it does, so these tests check what must not change:
a pub/sub message is read as soon as it is published, a caller's timeout is kept, no thread is parked per wait,
and the tuning is applied only to the versions it was measured with. The idle CPU itself is a benchmark figure
(bench/bench_startup.py), never a test. Each check runs in a fresh interpreter: the tuning patches the process.
The supervisor's warm-up requests (supervisor.WARM_UP) are checked here against a stub, and in test_server.py against
Prefect's server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlam_prefect.local import prefect_server

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_installed_versions_are_the_ones_the_tuning_was_measured_with():
    assert prefect_server.untuned() == []  # an upgrade of pydocket or burner-redis fails here: measure again, then widen


def test_the_tuning_reaches_the_worker_prefects_server_creates():
    seen = _python("""
        import json
        from rlam_prefect.local import prefect_server
        applied = prefect_server.tune()
        from burner_redis.pubsub import PubSub
        from prefect.server.api import background_workers
        made = background_workers.Worker.keywords
        print(json.dumps({"applied": applied, "poll": [made["minimum_check_interval"].total_seconds(),
                          made["scheduling_resolution"].total_seconds()],
                          "queue": type(PubSub(client=None)._queue).__name__}))
    """)
    assert seen == {"applied": True, "poll": [2.0, 2.0], "queue": "WakingQueue"}


def test_a_published_message_is_read_at_once_and_a_timeout_is_kept_without_a_thread():
    seen = _python("""
        import asyncio, json, threading, time
        from rlam_prefect.local import prefect_server
        prefect_server.tune()
        from docket import Docket

        async def main():
            out = {}
            async with Docket(name="t", url="memory://") as docket, docket._pubsub() as pubsub:
                await pubsub.psubscribe(docket.key("cancel:*"))
                out["confirmed"] = (await pubsub.get_message(timeout=1.0))["type"]
                start = time.monotonic()
                out["nothing"] = await pubsub.get_message(timeout=0.3)
                out["waited"] = time.monotonic() - start
                start = time.monotonic()
                out["no_wait"] = await pubsub.get_message(timeout=0.0)
                out["no_wait_s"] = time.monotonic() - start

                async def publish():
                    await asyncio.sleep(0.2)
                    async with docket.redis() as redis:
                        await redis.publish(docket.key("cancel:k"), "stop")

                publisher = asyncio.create_task(publish())
                start = time.monotonic()
                message = await pubsub.get_message(timeout=None)  # delivered by burner-redis's own listener
                out["message"] = [message["type"], message["data"].decode()]
                out["message_s"] = time.monotonic() - start
                await publisher
                out["threads"] = threading.active_count()
            return out

        print(json.dumps(asyncio.run(main())))
    """)
    assert seen["confirmed"] == "psubscribe" and seen["message"] == ["pmessage", "stop"]
    assert seen["nothing"] is None and 0.3 <= seen["waited"] < 1.0  # the caller's timeout, not a longer slice
    assert seen["no_wait"] is None and seen["no_wait_s"] < 0.1
    assert 0.15 <= seen["message_s"] < 1.0  # woken by the message, not by a poll
    assert seen["threads"] == 1  # upstream parks a thread-pool thread per 0.1 s wait; here none was started


def test_other_versions_run_prefect_as_shipped_and_say_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr(prefect_server.metadata, "version", lambda name: "9.0.0")

    def must_not_run() -> None:
        raise AssertionError("tuned an unchecked version")

    monkeypatch.setattr(prefect_server, "_slow_docket_polling", must_not_run)
    monkeypatch.setattr(prefect_server, "_wake_on_pubsub_messages", must_not_run)
    assert prefect_server.tune() is False
    assert capsys.readouterr().err.strip() == ("rlam: pydocket 9.0.0, burner-redis 9.0.0 not checked for the idle tuning; Prefect's server runs untuned")


def test_the_warm_up_sends_only_reads_and_says_in_one_line_what_failed(capsys: pytest.CaptureFixture[str]):
    """The supervisor's warm-up of a fresh server (supervisor.WARM_UP), against a stub that records what it is sent."""
    import http.server
    import threading

    from rlam_prefect.local import supervisor

    seen: list[tuple[str, str, bytes]] = []

    class Stub(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.command, self.path, body))
            code = 404 if "00000000-" in self.path else 500 if self.path.endswith("/logs/filter") else 200
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{stub.server_address[1]}/api"
    try:
        supervisor._warm_up(url, lambda: False)
    finally:
        stub.shutdown()
    assert [(method, path) for method, path, _ in seen] == [(m, f"/api{p}") for m, p in supervisor.WARM_UP]
    assert {body for method, _, body in seen if method == "POST"} == {b'{"limit": 1}'}  # filters: reads, one row at most
    assert capsys.readouterr().out == "rlam: warming the server up: POST /logs/filter answered 500\n"  # 404s are expected

    supervisor._warm_up(url, lambda: False)  # the stub is gone: one line, and nothing more is tried
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("rlam: warming the server up: POST /flows/filter failed") and "rest is skipped" in out
    seen.clear()
    supervisor._warm_up(url, lambda: True)  # a stopping supervisor sends nothing
    assert seen == [] and capsys.readouterr().out == ""
