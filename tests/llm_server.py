"""A scripted OpenAI-compatible chat server on 127.0.0.1, for planner tests over real HTTP.

rlam reaches it the way a user reaches any OpenAI-compatible endpoint: litellm's ``openai/...``
model with ``OPENAI_API_BASE`` (or ``--planner-api-base``) pointing here. Nothing in rlam knows it
is a test. The server answers ``POST /v1/chat/completions`` from a script, in order:

- a string: a 200 reply whose message content is that string (a JSON decision, or anything else);
- ``HTTP(500)``, ``HTTP(429)``, ...: that status with an OpenAI-style error body;
- ``HANG``: the request is read and never answered (until the server stops), so the client times out;
- ``GARBAGE``: a 200 whose body is not JSON at all.

It counts every request it receives, keeps every request body (tests check temperature, seed and
response_format there), and answers 401 to a request whose bearer token is not ``key`` when one is
required. A request past the end of the script gets a 500 naming that, so a test that asks more
than it scripted fails loudly instead of hanging.

Registered as a pytest plugin (``pytest_plugins`` in tests/conftest.py): the ``llm_server`` fixture.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

TEST_KEY = "sk-test-llm-server-0123456789"


@dataclass(frozen=True)
class HTTP:
    """A scripted error status (500, 429, 401, ...)."""

    status: int
    message: str = "scripted failure"


HANG = "<hang>"
GARBAGE = "<garbage>"
_GARBAGE_BODY = b"<html><body>502 Bad Gateway (not JSON)</body></html>"


class LLMServer:
    """The server and its script; start() binds 127.0.0.1 on a free port."""

    def __init__(self, key: str | None = None) -> None:
        self.key = key  # when set, any other bearer token is answered 401
        self._script: deque[Any] = deque()
        self._bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._http: ThreadingHTTPServer | None = None

    # ---- the test's side ----------------------------------------------------------------

    def script(self, *items: Any) -> LLMServer:
        """Append replies (strings, dicts sent as JSON text, HTTP(...), HANG, GARBAGE) to the script."""
        with self._lock:
            self._script.extend(json.dumps(i) if isinstance(i, dict) else i for i in items)
        return self

    @property
    def count(self) -> int:
        """Requests received so far, whatever was answered."""
        with self._lock:
            return len(self._bodies)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON body of every request received, in order."""
        with self._lock:
            return list(self._bodies)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    @property
    def url(self) -> str:
        assert self._http is not None, "the server is not started"
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def env(self, key: str = TEST_KEY) -> dict[str, str]:
        """The environment a user sets to point litellm's openai/ models here."""
        return {"OPENAI_API_BASE": self.url, "OPENAI_API_KEY": key}

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the LLM server received {self.count} requests, expected {count}")
            time.sleep(0.05)

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> LLMServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"unparsed": raw.decode("utf-8", "replace")}
                item = server._take(body, self.path, self.headers.get("Authorization") or "")
                if item == HANG:
                    server._stopping.wait(600)
                    self.close_connection = True
                    return
                if item == GARBAGE:
                    self._send(200, _GARBAGE_BODY, "text/html")
                elif isinstance(item, HTTP):
                    error = {"error": {"message": item.message, "type": "server_error" if item.status >= 500 else "invalid_request_error", "code": str(item.status)}}
                    self._send(item.status, json.dumps(error).encode())
                else:
                    self._send(200, json.dumps(_completion(str(item), body)).encode())

            def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="llm-server", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def _take(self, body: dict[str, Any], path: str, authorization: str) -> Any:
        with self._lock:
            self._bodies.append(body)
            if not path.rstrip("/").endswith("/chat/completions"):
                return HTTP(404, f"no route {path}")
            if self.key is not None and authorization != f"Bearer {self.key}":
                return HTTP(401, "Incorrect API key provided")
            if not self._script:
                return HTTP(500, f"the test's script is exhausted (request {len(self._bodies)})")
            return self._script.popleft()


def _completion(content: str, request: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-test-{int(time.time() * 1000)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "test-model"),
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


@pytest.fixture
def llm_server() -> Iterator[LLMServer]:
    """A fresh scripted server for one test (its own port, script and request count)."""
    server = LLMServer().start()
    try:
        yield server
    finally:
        server.stop()
