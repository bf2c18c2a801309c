"""The reproducibility audit: replay recent runs and say which steps no longer reproduce.

A scheduled deployment (``rlam-audit`` in prefect.yaml) replays the most recent completed runs
and forks (replays themselves are not audited again). A replay executes nothing: every step must
be served from the verified cache with its recorded output hash, so a deleted or altered result,
a code change or an environment change shows up as a diverging step, named with its reason.
This module selects the runs and judges the replays from the trace; ``flows/audit_flow.py``
only runs the replays.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from rlam_prefect.core.errors import UnknownRunError, UsageError
from rlam_prefect.record.compare import outcome
from rlam_prefect.record.store import TraceStore, utcnow

AUDITED_MODES = ("run", "fork")
MAX_LIMIT = 100


def select_runs(store: TraceStore, limit: int, max_age_hours: float | None = None) -> list[str]:
    """Ids of the newest completed runs and forks (at most ``limit``, started within ``max_age_hours``)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit {limit} is out of range 1..{MAX_LIMIT}")
    if max_age_hours is not None and max_age_hours <= 0:
        raise UsageError(f"max_age_hours {max_age_hours} must be positive (or empty for any age)")
    since = utcnow() - dt.timedelta(hours=max_age_hours) if max_age_hours is not None else None
    chosen = [
        run["run_id"]
        for run in store.runs()  # newest first
        if run["status"] == "completed" and run["mode"] in AUDITED_MODES and (since is None or run["started_at"] >= since)
    ]
    return chosen[:limit]


def judge_replay(store: TraceStore, original: str, replay: str, flow_message: str | None = None) -> dict[str, Any]:
    """The verdict on one replay, read from the trace: identical, or the steps that diverge and why."""
    try:
        run = store.run(replay)
    except UnknownRunError:  # the replay failed before recording anything
        return {"run_id": original, "replay_run_id": replay, "identical": False, "diverging": [], "error": flow_message or "the replay recorded nothing"}
    replayed, recorded = store.steps(replay), store.steps(original)
    diverging = []
    for position in range(max(len(replayed), len(recorded))):
        a = replayed[position] if position < len(replayed) else None
        b = recorded[position] if position < len(recorded) else None
        if a is not None and b is not None and outcome(a) == outcome(b):
            continue
        diverging.append({"step": position + 1, "action": (a or b or {}).get("action"), "reason": _reason(a, b)})
    identical = bool(run.get("identical")) and run["status"] == "completed"
    return {"run_id": original, "replay_run_id": replay, "identical": identical, "diverging": diverging, "error": None if identical else run.get("error_message")}


def summarize(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """The audit's outcome and a one-line message naming every diverging step."""
    failed = [v for v in verdicts if not v["identical"]]
    if not verdicts:
        message = "no completed runs or forks to audit"
    elif not failed:
        message = f"{len(verdicts)} run(s) replayed identically: {', '.join(v['run_id'] for v in verdicts)}"
    else:
        message = f"{len(failed)} of {len(verdicts)} run(s) do not reproduce: " + "; ".join(_describe(v) for v in failed)
    return {"ok": not failed, "audited": len(verdicts), "not_identical": len(failed), "message": message, "runs": verdicts}


def audit_markdown(audit: dict[str, Any]) -> str:
    """The audit as markdown: one row per audited run, then every diverging step."""
    lines = ["# R-LAM reproducibility audit", "", audit["message"].replace("|", "\\|"), ""]
    if audit["runs"]:
        lines += ["| run | replay | verdict |", "|---|---|---|"]
        lines += [f"| `{v['run_id']}` | `{v['replay_run_id']}` | {'identical' if v['identical'] else '**NOT identical**'} |" for v in audit["runs"]]
    for verdict in audit["runs"]:
        if verdict["identical"]:
            continue
        lines += ["", f"## `{verdict['run_id']}` (replay `{verdict['replay_run_id']}`)", ""]
        lines += [f"- step {d['step']} `{d['action']}`: {d['reason']}".replace("|", "\\|") for d in verdict["diverging"]]
        if verdict.get("error"):
            lines.append(f"- {verdict['error']}".replace("|", "\\|"))
    return "\n".join(lines)


def _reason(replayed: dict[str, Any] | None, recorded: dict[str, Any] | None) -> str:
    if replayed is None:
        return "the replay has no such step"
    if recorded is None:
        return "the original has no such step"
    if replayed.get("error_message"):
        return f"{replayed['status']}: {replayed.get('error_type')}: {replayed['error_message']}"
    return f"output {str(replayed.get('output_hash'))[7:19]} differs from recorded {str(recorded.get('output_hash'))[7:19]}"


def _describe(verdict: dict[str, Any]) -> str:
    if not verdict["diverging"]:
        return f"run {verdict['run_id']} (replay {verdict['replay_run_id']}): {verdict.get('error')}"
    steps = ", ".join(f"step {d['step']} {d['action']} ({d['reason'][:400]})" for d in verdict["diverging"])
    return f"run {verdict['run_id']} (replay {verdict['replay_run_id']}): {steps}"
