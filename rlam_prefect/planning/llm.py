"""The one door to litellm: lazy import, the offline default model, and a call counter.

``import litellm`` costs 2-3 s and, unless told otherwise, fetches a cost map from the
internet, so it is imported only when a planner is actually asked something.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from rlam_prefect.core.errors import UsageError, one_line
from rlam_prefect.planning.offline import stay_offline

DEFAULT_TIMEOUT_S = 60.0

_lock = threading.Lock()
_state: dict[str, Any] = {"litellm": None, "started": 0, "counted": 0}


@dataclass
class LLMReply:
    text: str | None
    latency_s: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error_type: str | None = None
    error_message: str | None = None


def litellm_module() -> Any:
    """Import litellm once, offline, with the in-process default model and the call counter registered."""
    with _lock:
        if _state["litellm"] is None:
            stay_offline()
            import litellm
            from litellm.integrations.custom_logger import CustomLogger

            from rlam_prefect.planning.heuristic import HeuristicLLM

            class _CallCounter(CustomLogger):  # counts what litellm itself saw, success or failure
                def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
                    _count()

                def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
                    _count()

            litellm.custom_provider_map = [
                *[p for p in (litellm.custom_provider_map or []) if p.get("provider") != "rlam"],
                {"provider": "rlam", "custom_handler": HeuristicLLM()},
            ]
            litellm.callbacks = [*(litellm.callbacks or []), _CallCounter()]
            litellm.suppress_debug_info = True
            _state["litellm"] = litellm
        return _state["litellm"]


def _count() -> None:
    with _lock:
        _state["counted"] += 1


def complete(
    model: str, messages: list[dict[str, str]], *, temperature: float, seed: int | None, api_base: str | None = None
) -> LLMReply:
    """One planner call. Provider errors (no key, timeout, rate limit) come back as data, not exceptions.

    ``api_base`` (``--planner-api-base``) overrides where litellm sends it; else litellm's own lookup.
    """
    litellm = litellm_module()
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "temperature": temperature,
        "response_format": {"type": "json_object"},
        "timeout": float(os.environ.get("RLAM_PLANNER_TIMEOUT") or DEFAULT_TIMEOUT_S),
        "num_retries": 0,  # a retry would be an unrecorded second decision
        "drop_params": True,  # e.g. Anthropic rejects `seed`
    }
    if seed is not None:
        kwargs["seed"] = seed
    if api_base:
        kwargs["api_base"] = api_base
    with _lock:
        _state["started"] += 1
    started = time.perf_counter()
    try:
        response = litellm.completion(**kwargs)
    except Exception as exc:
        return LLMReply(None, time.perf_counter() - started, error_type=type(exc).__name__, error_message=one_line(exc))
    latency = time.perf_counter() - started
    usage = getattr(response, "usage", None)
    text = response.choices[0].message.content if response.choices else None
    return LLMReply(
        text if isinstance(text, str) else None,
        latency,
        getattr(usage, "prompt_tokens", None),
        getattr(usage, "completion_tokens", None),
    )


IN_PROCESS = "in-process"  # the endpoint recorded for a model served inside rlam (rlam/heuristic)


def endpoint(model: str, api_base: str | None = None) -> str | None:
    """The server a planner call to ``model`` goes to, without credentials, for the decisions table.

    ``api_base`` given to the call wins; else litellm takes the base URL from ``litellm.api_base``, then
    ``<PROVIDER>_BASE_URL`` / ``<PROVIDER>_API_BASE`` (e.g. ``OPENAI_API_BASE``), then the provider's
    default. User info, query and fragment are dropped, so a key passed in the URL is never recorded.
    None: litellm knows no URL for this provider (it then uses the provider SDK's default).
    """
    if model.startswith("rlam/"):
        return IN_PROCESS
    if api_base:
        return without_credentials(api_base)
    provider = model.split("/", 1)[0].upper().replace("-", "_")
    litellm = litellm_module()
    base = getattr(litellm, "api_base", None) or os.environ.get(f"{provider}_BASE_URL") or os.environ.get(f"{provider}_API_BASE")
    if not base:
        try:
            base = litellm.get_api_base(model, {})
        except Exception:  # an unknown provider has no default URL
            base = None
    return without_credentials(base) if base else None


def without_credentials(url: str) -> str:
    """``scheme://host[:port]/path`` of ``url``: user, password, query and fragment removed."""
    parts = urllib.parse.urlsplit(url.strip())
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_provider_key(model: str) -> None:
    """A provider without its API key fails now, in one line (exit 2), not mid-run or as a rejected step."""
    if model.startswith("rlam/"):
        return
    empty = {k: v for k, v in os.environ.items() if not v.strip()}  # litellm counts an empty key as set
    for name in empty:
        del os.environ[name]
    try:
        check = litellm_module().validate_environment(model=model)
    except Exception as exc:
        raise UsageError(f"planner {model!r} is not a model litellm knows ({type(exc).__name__}: {exc})") from None
    finally:
        os.environ.update(empty)
    missing = [k for k in check.get("missing_keys") or [] if not k.endswith("_API_BASE")]  # bases have defaults
    if missing:
        raise UsageError(f"planner {model!r} needs {', '.join(missing)} set in the environment")


def check_api_base(url: str) -> str:
    """A ``--planner-api-base`` as given, if it is an http(s) URL without credentials (it is recorded as is)."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"planner API base {url!r} is not an http:// or https:// URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise UsageError("the planner API base must not carry a user, password, query or fragment; "
                         "give the key in the provider's variable (e.g. OPENAI_API_KEY)")
    try:
        _ = parts.port  # a port out of range or not a number raises here
    except ValueError as exc:
        raise UsageError(f"planner API base {url!r}: {exc}") from None
    return url.strip()


def warm_up() -> None:
    """One call to the in-process default model, so that a process forked after this one (the warm executor's
    commands) does not pay litellm's lazy first-call imports: 0.2-0.3 s of every command's first planner call
    here. It is no run's decision, so the call counters are set back once litellm's callback has counted it."""
    from rlam_prefect.planning.names import HEURISTIC_MODEL
    from rlam_prefect.planning.prompt import STATE_BEGIN, STATE_END

    with _lock:
        before = dict(_state)
    reply = complete(HEURISTIC_MODEL, [{"role": "user", "content": f"{STATE_BEGIN}\n{{}}\n{STATE_END}"}], temperature=0.0, seed=0)
    if reply.error_type:  # said, never hidden: the command that meets the same error reports it as a run's failure
        print(f"rlam: warming the planner failed: {reply.error_type}: {reply.error_message}", file=sys.stderr, flush=True)
    calls_seen()
    with _lock:
        _state["started"], _state["counted"] = before["started"], before["counted"]


def calls_so_far() -> int:
    """Calls counted in this process; 0 without importing litellm when no planner ever ran."""
    return calls_seen() if _state["litellm"] is not None else 0


def calls_seen(timeout: float = 5.0) -> int:
    """LLM calls litellm's callback counted, after waiting for its logging thread to catch up."""
    deadline = time.monotonic() + timeout
    while True:
        with _lock:
            started, counted = _state["started"], _state["counted"]
        if counted >= started or time.monotonic() > deadline:
            return int(counted)
        time.sleep(0.01)

