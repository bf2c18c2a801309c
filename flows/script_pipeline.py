"""The Script baseline: the same actions in the seed's fixed order, plain Python.

No Prefect, no cache, no trace. Output hashes are computed so that experiments can measure
whether re-runs reproduce; nothing is stored.
"""

from __future__ import annotations

import time
from typing import Any

from rlam_prefect.actions import get_action, load_action_modules
from rlam_prefect.hashing import content_hash


def run_script(overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    load_action_modules()
    from tasks import SEED_ORDER

    overrides = overrides or {}
    artifacts: dict[str, Any] = {}
    steps: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    status = "completed"
    for number, name in enumerate(SEED_ORDER, start=1):
        spec = get_action(name)
        started = time.perf_counter()
        try:
            params = spec.validate_params(overrides.get(name, {}))
            value = spec.run({arg: artifacts[kind] for arg, kind in spec.input_kinds.items()}, params)
        except Exception as exc:  # noqa: BLE001 - reported as the step's outcome
            steps.append({"step": number, "action": name, "status": "failed", "output_hash": None, "error": f"{type(exc).__name__}: {exc}"})
            status = "failed"
            break
        artifacts[spec.output_kind] = value
        steps.append(
            {
                "step": number,
                "action": name,
                "status": "executed",
                "output_hash": content_hash(value),
                "duration_s": round(time.perf_counter() - started, 4),
            }
        )
        if spec.output_kind == "Metrics":
            metrics = value.summary()
    return {
        "run_id": None,
        "pipeline": "script",
        "status": status,
        "steps": steps,
        "executed": sum(s["status"] == "executed" for s in steps),
        "cached": 0,
        "llm_calls": 0,
        "metrics": metrics,
    }
