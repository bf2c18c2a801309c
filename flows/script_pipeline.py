"""The Script baseline: the seed's hard-coded order, plain Python. No LLM, Prefect, cache or trace."""

from __future__ import annotations

from typing import Any

from rlam_prefect.actions import load_action_modules
from rlam_prefect.direct import run_directly
from rlam_prefect.planning import FixedOrder


def run_script(overrides: dict[str, dict[str, Any]] | None = None, inject_failures: tuple[str, ...] = ()) -> dict[str, Any]:
    load_action_modules()
    from tasks import SEED_ORDER

    return run_directly(FixedOrder(SEED_ORDER, overrides or {}), "script", inject_failures)
