"""The Naive LAM baseline: the LLM planner chooses each action, which executes directly.

Same planner, prompt and validation as R-LAM, but no cache, no trace and so no replay:
what it did can only be re-done, not reproduced.
"""

from __future__ import annotations

from typing import Any

from rlam_prefect.direct import run_directly
from rlam_prefect.llm import LLMReply, complete
from rlam_prefect.planner import LLMPlanner
from rlam_prefect.planning import PlannerDecisions, RunPlan


def run_naive_lam(plan: RunPlan) -> dict[str, Any]:
    options = plan.planner

    def call(messages: list[dict[str, str]], step: int) -> tuple[LLMReply, list[Any]]:
        return complete(options.model, messages, temperature=options.temperature, seed=options.seed), []

    return run_directly(PlannerDecisions(LLMPlanner(options, plan.overrides, call)), "lam", plan.inject_failures)
