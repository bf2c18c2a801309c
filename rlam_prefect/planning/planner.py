"""The LLM planner: asks a litellm model for the next decision and validates the reply.

An invalid reply (not JSON, unknown action, bad params, failed provider call) becomes a
``rejected`` step carrying the raw reply and the reason; the model is asked again with that
reason, up to a bound, after which the run ends failed. A ``stop`` reply or the step budget
ends the loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rlam_prefect.actions.registry import registered_actions
from rlam_prefect.core.hashing import canonical_json
from rlam_prefect.planning.goal import DEFAULT_GOAL, Goal
from rlam_prefect.planning.llm import LLMReply, endpoint
from rlam_prefect.planning.names import HEURISTIC_MODEL
from rlam_prefect.planning.prompt import PlannerState, build_messages, prompt_hash
from rlam_prefect.planning.replies import STOP, InvalidDecision, parse_reply

if TYPE_CHECKING:
    from rlam_prefect.planning.policy import Policy


# (messages, step) -> (reply, upstream Prefect states to draw the decision edge from)
PlannerCall = Callable[[list[dict[str, str]], int], tuple[LLMReply, list[Any]]]


@dataclass(frozen=True)
class PlannerOptions:
    model: str = HEURISTIC_MODEL
    temperature: float = 0.0
    seed: int | None = 0
    max_steps: int = 12
    max_rejections: int = 3
    goal: str = DEFAULT_GOAL  # METRIC>=NUMBER or METRIC<=NUMBER (planning/goal.py)

    @classmethod
    def from_json(cls, text: str | None, model: str) -> PlannerOptions:
        data = json.loads(text) if text else {}
        if "goal" not in data and data.get("target_accuracy") is not None:  # recorded before goals were general
            data["goal"] = Goal("accuracy", ">=", float(data["target_accuracy"])).text
        return cls(model=model, **{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "model"})

    def to_json(self) -> str:
        return canonical_json({k: v for k, v in asdict(self).items() if k != "model"})


@dataclass
class PlannedDecision:
    """What one planner call produced, as recorded in the decisions table."""

    action: str | None
    params: dict[str, Any]
    reason: str
    recovers_step: int | None
    rejection: str | None
    record: dict[str, Any]
    upstream: list[Any]


class LLMPlanner:
    def __init__(
        self, options: PlannerOptions, pinned: dict[str, dict[str, Any]], call: PlannerCall, policy: Policy | None = None
    ) -> None:
        self.options = options
        self.policy = policy
        # the step budget is the tighter of the planner's and the policy's
        self.max_steps = min(options.max_steps, policy.max_steps) if policy and policy.max_steps else options.max_steps
        self.pinned = pinned
        self.call = call
        self.failure: str | None = None
        self.stop_record: dict[str, Any] | None = None

    def plan(self, history: list[dict[str, Any]]) -> PlannedDecision | None:
        """The next decision, or None when the run should end (stop, budget, too many rejections)."""
        if len(history) >= self.max_steps:
            return None
        trailing = _trailing_rejections(history)
        if trailing >= self.options.max_rejections:
            self.failure = f"the planner's last {trailing} replies were rejected; last reason: {history[-1]['error_message']}"
            return None
        step = len(history) + 1
        state = PlannerState(
            actions=registered_actions(),
            history=history,
            pinned=self.pinned,
            max_steps=self.max_steps,
            goal=Goal.parse(self.options.goal),
            policy=self.policy.to_dict() if self.policy else None,
            rejection=history[-1]["error_message"] if history and history[-1]["status"] == "rejected" else None,
        )
        messages = build_messages(state)
        reply, upstream = self.call(messages, step)
        record = {
            "step": step,
            "model": self.options.model,
            "temperature": self.options.temperature,
            "seed": self.options.seed,
            "prompt_hash": prompt_hash(messages),
            "prompt": canonical_json(messages),
            "raw_reply": reply.text,
            "latency_s": reply.latency_s,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "endpoint": endpoint(self.options.model),
        }
        if reply.error_type:
            reason = f"the planner call failed: {reply.error_type}: {reply.error_message}"
            return self._rejected(None, reason, record, upstream)
        try:
            parsed = parse_reply(reply.text, registered_actions())
        except InvalidDecision as exc:
            return self._rejected(_claimed_action(reply.text), str(exc), record, upstream)
        recovers = parsed.recovers_step
        if recovers is None and history and history[-1]["status"] == "failed":
            recovers = history[-1]["step"]  # a decision taken right after a failure answers it
        params = {**parsed.params, **self.pinned.get(parsed.action, {})}
        record.update(action=parsed.action, params=canonical_json(params), reason=parsed.reason, recovers_step=recovers, valid=True)
        if parsed.action == STOP:
            self.stop_record = record
            return None
        return PlannedDecision(parsed.action, params, parsed.reason, recovers, None, record, upstream)

    @staticmethod
    def _rejected(action: str | None, reason: str, record: dict[str, Any], upstream: list[Any]) -> PlannedDecision:
        record.update(action=action, valid=False, rejection_reason=reason)
        return PlannedDecision(action, {}, "", None, reason, record, upstream)


def _trailing_rejections(history: list[dict[str, Any]]) -> int:
    count = 0
    for row in reversed(history):
        if row["status"] != "rejected":
            break
        count += 1
    return count


def _claimed_action(text: str | None) -> str | None:
    """The action an invalid reply named, if it named one (kept short), for the rejected step row."""
    try:
        data = json.loads(text or "")
    except (json.JSONDecodeError, RecursionError):
        return None
    action = data.get("action") if isinstance(data, dict) else None
    return action[:60] if isinstance(action, str) else None
