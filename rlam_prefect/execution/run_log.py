"""What the Prefect UI's Logs tab says about an R-LAM run, one line per event, secrets redacted.

Each step is one line on its task run: action, outcome, the start of its cache key and output hash,
and for a cached step the run that computed it; a failure adds its error line. Rejected steps (no
task run), the planner's decisions and the run's start and outcome are flow-run lines.

The lines go to Prefect's API through their own ``rlam`` logger with Prefect's ``APILogHandler``,
the flow and task run ids set on each record, so they are sent whatever ``PREFECT_LOGGING_LEVEL``
says (rlam keeps it at WARNING so the terminal stays quiet) and never reach the console.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from rlam_prefect.core.secrets import redact, secret_values

LOGGER_NAME = "rlam"
_PREFIX = len("sha256:")


def _logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        from prefect.logging.handlers import APILogHandler

        logger.addHandler(APILogHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False  # Prefect's console handler would print them in the terminal
    return logger


class RunLog:
    """The log lines of one flow run; silent without one (a flow run id is what they attach to)."""

    def __init__(self, flow_run_id: str | None) -> None:
        self.flow_run_id = flow_run_id
        self.secrets = secret_values()

    def flow(self, message: str, level: int = logging.INFO) -> None:
        self._emit(level, message, None)

    def step(self, row: dict[str, Any], computed_by: tuple[str, int] | None = None) -> None:
        """The step's line, on its task run when it has one (a rejected step has none)."""
        parts = [f"step {row['step']} {row['action']} {row['status']}"]
        if row.get("cache_key"):
            parts.append(f"key {row['cache_key'][:12]}")
        if row.get("output_hash"):
            parts.append(f"output {row['output_hash'][_PREFIX : _PREFIX + 12]}")
        if row["status"] == "cached" and computed_by is not None:
            parts.append(f"computed by run {computed_by[0]} step {computed_by[1]}")
        if row.get("error_message"):
            parts.append(f"{row.get('error_type')}: {row['error_message']}")
        if row.get("approval"):
            parts.append(f"{row['approval']}" + (f" by {row['approved_by']}" if row.get("approved_by") else "") + f" ({row.get('approval_via')})")
        level = {"failed": logging.ERROR, "rejected": logging.WARNING}.get(row["status"], logging.INFO)
        self._emit(level, " | ".join(parts), row.get("prefect_task_run_id"))

    def decision(self, step: int, action: str, params: Any, reason: str, planner: str) -> None:
        shown = params if isinstance(params, str) else json.dumps(params, sort_keys=True, default=str)
        self.flow(f"step {step} decision ({planner}): {action} {shown}" + (f" because {reason}" if reason else ""))

    def _emit(self, level: int, message: str, task_run_id: str | None) -> None:
        if self.flow_run_id is None:
            return
        text = redact(" ".join(message.split()), self.secrets)  # one line, whatever the error text held
        _logger().log(level, text, extra={"flow_run_id": self.flow_run_id, "task_run_id": task_run_id})


def flow_run_page(flow_run_id: str | None) -> str | None:
    """The UI page of a flow run, as Prefect links it (``PREFECT_UI_URL``, derived from the API URL)."""
    if not flow_run_id:
        return None
    from prefect.utilities.urls import url_for

    return url_for("flow-run", obj_id=flow_run_id)


def start_line(plan: Any, parent_page: str | None) -> str:
    """What the run is: a new run, or a replay or fork of which run (and where that run's page is)."""
    overrides = " ".join(f"{a}.{p}={json.dumps(v)}" for a, ps in (plan.overrides or {}).items() for p, v in ps.items())
    parent = f"; parent flow run {parent_page}" if parent_page else ""
    if plan.mode == "replay":
        return f"replay {plan.run_id} of run {plan.parent_run_id}: every decision from the trace, every step from the verified cache{parent}"
    if plan.mode == "fork":
        reused = f"steps 1-{plan.fork_step - 1} reused from run {plan.parent_run_id}" if plan.fork_step > 1 else "no step reused"
        return f"fork {plan.run_id} of run {plan.parent_run_id} at step {plan.fork_step}" + (f" with {overrides}" if overrides else "") + f": {reused}{parent}"
    return f"run {plan.run_id}: planner {plan.planner.model}" + (f" with {overrides}" if overrides else "")


def outcome_line(plan: Any, row: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """How the run ended; a replay says whether it is identical, a fork which steps it reused."""
    counts = ", ".join(f"{status} {sum(s['status'] == status for s in history)}" for status in ("executed", "cached", "failed", "rejected"))
    error = f": {row['error_message']}" if row.get("error_message") else ""
    if plan.mode == "replay":
        verdict = "identical" if row.get("identical") else "NOT identical"
        return f"replay of run {plan.parent_run_id}: {verdict} ({len(history)} steps: {counts}){error}"
    if plan.mode == "fork":
        reused = [s["step"] for s in history if s["step"] < plan.fork_step and s["status"] == "cached"]
        served = [s["step"] for s in history if s["step"] >= plan.fork_step and s["status"] == "cached"]
        text = f"fork of run {plan.parent_run_id} at step {plan.fork_step} {row['status']}: reused steps {_steps(reused)} of run {plan.parent_run_id}"
        if served:
            text += f"; steps {_steps(served)} served from the cache by content"
        return f"{text} ({counts}){error}"
    return f"run {plan.run_id} {row['status']} ({counts}){error}"


def _steps(steps: list[int]) -> str:
    if not steps:
        return "none"
    if steps == list(range(steps[0], steps[-1] + 1)) and len(steps) > 1:
        return f"{steps[0]}-{steps[-1]}"
    return ", ".join(map(str, steps))
