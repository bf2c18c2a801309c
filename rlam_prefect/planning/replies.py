"""Parsing and validating a planner's reply. Planner output is data: it is never executed,
evaluated or imported; only a registered action with validated parameters can follow from it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rlam_prefect.actions.spec import ActionSpec
from rlam_prefect.core.errors import InvalidParamsError

MAX_REPLY_BYTES = 16_384
STOP = "stop"


class InvalidDecision(ValueError):
    """The reply cannot be acted on; the message says why, for the trace and the next prompt."""


@dataclass(frozen=True)
class ParsedDecision:
    action: str  # an allowed action, or "stop"
    params: dict[str, Any]  # validated, defaults filled (empty for stop)
    reason: str
    recovers_step: int | None


def parse_reply(text: str | None, allowed: dict[str, ActionSpec]) -> ParsedDecision:
    if text is None or not text.strip():
        raise InvalidDecision("the reply is empty")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_REPLY_BYTES:
        raise InvalidDecision(f"the reply is {size} bytes; the limit is {MAX_REPLY_BYTES}")
    try:
        data = json.loads(_strip_fence(text))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidDecision(f"the reply is not JSON ({exc.__class__.__name__}: {str(exc)[:120]})") from None
    if not isinstance(data, dict):
        raise InvalidDecision(f"the reply is JSON {type(data).__name__}, not an object")
    action = data.get("action")
    if not isinstance(action, str):
        raise InvalidDecision("the reply has no string 'action'")
    reason = data.get("reason", "")
    reason = reason[:500] if isinstance(reason, str) else ""
    recovers = data.get("recovers_step")
    if recovers is not None and (not isinstance(recovers, int) or isinstance(recovers, bool) or recovers < 1):
        raise InvalidDecision("'recovers_step' must be a positive step number")
    if action == STOP:
        return ParsedDecision(STOP, {}, reason, recovers)
    spec = allowed.get(action)
    if spec is None:
        shown = action if len(action) <= 60 else action[:57] + "..."
        raise InvalidDecision(f"unknown action {shown!r}; allowed: {', '.join(sorted(allowed))} or stop")
    params = data.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidDecision(f"'params' must be an object, not {type(params).__name__}")
    try:
        validated = spec.validate_params(params)
    except InvalidParamsError as exc:
        raise InvalidDecision(str(exc)) from None
    return ParsedDecision(action, validated, reason, recovers)


def _strip_fence(text: str) -> str:
    """Accept a reply wrapped in a ```json fence, as many chat models send it."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return stripped
