"""The planner names a command may give, readable without importing the planner (the CLI decides with them before any heavy import)."""

from __future__ import annotations

import os

PLANNER_ENV = "RLAM_PLANNER"
FIXED_PLANNER = "fixed"  # the seed's five steps in order: no model, no litellm
HEURISTIC_MODEL = "rlam/heuristic"  # the in-process default, registered with litellm as a custom provider


def default_planner() -> str:
    return os.environ.get(PLANNER_ENV) or HEURISTIC_MODEL


def uses_litellm(model: str | None) -> bool:
    """Whether a run with ``--planner model`` (None: the default) asks its planner through litellm."""
    return (model or default_planner()) != FIXED_PLANNER
