"""``rlam planner check``: one planner call, as a run's first decision would make it, before a run depends on it.

It proves the whole model path a run takes (the key in the environment, the endpoint, litellm's
client, the JSON reply, the action space) without starting Prefect or writing anything. A missing
key fails before any call, like ``rlam run`` (a ``UsageError``); a call that fails (wrong key,
unreachable endpoint, rate limit, timeout) or a reply rlam could not act on comes back as an
outcome with ``ok=False`` and one line saying why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rlam_prefect.actions.project import load_action_modules
from rlam_prefect.actions.registry import registered_actions
from rlam_prefect.core.errors import UsageError
from rlam_prefect.planning.goal import Goal, goal_of_options
from rlam_prefect.planning.llm import check_api_base, check_provider_key, complete, endpoint
from rlam_prefect.planning.names import FIXED_PLANNER, default_planner
from rlam_prefect.planning.planner import PlannerOptions
from rlam_prefect.planning.prompt import PlannerState, build_messages
from rlam_prefect.planning.replies import InvalidDecision, parse_reply


@dataclass(frozen=True)
class PlannerCheck:
    model: str
    endpoint: str | None  # without credentials, as the decisions table records it
    latency_s: float | None  # None: no call was made
    ok: bool
    decision: dict[str, Any] | None  # the parsed, validated decision (action, params, reason)
    error: str | None  # one line: why the call failed or the reply was rejected
    raw_reply: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_planner(model: str | None = None, api_base: str | None = None, goal: str | None = None) -> PlannerCheck:
    """Ask ``model`` (default $RLAM_PLANNER or rlam/heuristic) for the first decision of a new run, once."""
    model = (model or default_planner()).strip()
    if model == FIXED_PLANNER or "/" not in model:
        raise UsageError(f"planner {model!r}: give a litellm model PROVIDER/MODEL (e.g. openai/gpt-4o-mini) or rlam/heuristic; the fixed planner makes no call")
    if api_base is not None:
        if model.startswith("rlam/"):
            raise UsageError(f"{model} runs in-process; --planner-api-base applies to a provider's model")
        api_base = check_api_base(api_base)
    check_provider_key(model)
    load_action_modules()
    actions = registered_actions()
    options = PlannerOptions(model=model, goal=goal_of_options(goal, None))
    state = PlannerState(actions=actions, history=[], max_steps=options.max_steps, goal=Goal.parse(options.goal))
    reply = complete(model, build_messages(state), temperature=options.temperature, seed=options.seed, api_base=api_base)
    where = endpoint(model, api_base)
    if reply.error_type:
        error = f"the call failed: {reply.error_type}: {reply.error_message}"
        return PlannerCheck(model, where, round(reply.latency_s, 3), False, None, error, None)
    try:
        parsed = parse_reply(reply.text, actions)
    except InvalidDecision as exc:
        return PlannerCheck(model, where, round(reply.latency_s, 3), False, None, f"the reply was rejected: {exc}", reply.text)
    decision = {"action": parsed.action, "params": parsed.params, "reason": parsed.reason}
    return PlannerCheck(model, where, round(reply.latency_s, 3), True, decision, None, reply.text)
