"""What the Prefect UI shows of an R-LAM run: its flow run name and artifacts, built from the trace.

Three artifacts per flow run: the steps (a table), the lineage (markdown: parent run, fork step,
overrides, where the Parquet files are) and the metrics (a table). They stay small on purpose:
the server stores any size, but drops the event of an artifact over about 1.5 MB, so the UI
links to the trace instead of copying it. Keys are fixed, so each key's history in the
Artifacts page is the sequence of runs. Values are plain Python (numpy scalars break tables).
"""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any
from uuid import UUID

from rlam_prefect.record.store import TraceStore

STEPS_KEY = "rlam-steps"
LINEAGE_KEY = "rlam-lineage"
METRICS_KEY = "rlam-metrics"
MAX_TABLE_ROWS = 300  # 300 short rows are ~30 KB; a run is bounded by max_steps (<= 200) plus rejections


def steps_table(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One short row per step: step, action, status, output hash prefix, duration."""
    return [
        {
            "step": int(s["step"]),
            "action": str(s["action"]),
            "status": str(s["status"]),
            "output_hash": (s.get("output_hash") or "")[7:19],
            "duration_s": round(float(s.get("duration_s") or 0.0), 3),
            "error": (s.get("error_message") or "")[:120],
        }
        for s in steps[:MAX_TABLE_ROWS]
    ]


def metrics_table(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's status and its last evaluation's metrics, one row each."""
    metrics = json.loads(run["metrics"]) if run.get("metrics") else {}
    rows: list[dict[str, Any]] = [{"metric": "status", "value": str(run["status"])}]
    options = json.loads(run["planner_options"]) if run.get("planner_options") else {}
    if options.get("goal") and run.get("planner") != "fixed":
        rows.append({"metric": "goal", "value": str(options["goal"])})
    rows += [{"metric": str(k), "value": _plain(v)} for k, v in metrics.items()]
    return rows


def lineage_markdown(store: TraceStore, run: dict[str, Any], steps: list[dict[str, Any]], parent_page: str | None = None) -> str:
    """Where the run came from (``parent_page``: the parent's flow run in the UI) and where its records are, as markdown."""
    run_id = run["run_id"]
    overrides = json.loads(run["overrides"]) if run.get("overrides") else {}
    counts = {status: sum(s["status"] == status for s in steps) for status in ("executed", "cached", "failed", "rejected")}
    parent = run.get("parent_run_id")
    rows = [
        ("mode", run["mode"]),
        ("status", run["status"]),
        ("planner", f"`{run['planner']}`"),
        ("parent run", (f"[`{parent}`]({parent_page}) (its flow run)" if parent_page else f"`{parent}`") if parent else "none"),
        ("fork step", str(run["fork_step"]) if run.get("fork_step") else "none"),
        ("overrides", ", ".join(f"`{a}.{p}={json.dumps(v)}`" for a, ps in overrides.items() for p, v in ps.items()) or "none"),
        ("steps", f"{len(steps)} ({', '.join(f'{n} {k}' for k, n in counts.items())})"),
    ]
    if run["mode"] == "replay":
        rows.append(("identical to parent", "yes" if run.get("identical") else "**no**"))
    if run["mode"] == "fork":
        fork_step = int(run["fork_step"])
        reused = [int(s["step"]) for s in steps if int(s["step"]) < fork_step and s["status"] == "cached"]
        served = [int(s["step"]) for s in steps if int(s["step"]) >= fork_step and s["status"] == "cached"]
        rows.append(("reused steps", f"{_step_list(reused)} of `{parent}` (served from the verified cache, not executed)"))
        if served:
            rows.append(("cached after the fork step", f"{_step_list(served)} (same content key as an earlier computation)"))
    if run.get("error_message"):
        rows.append(("error", str(run["error_message"]).replace("|", "\\|")[:300]))
    root = store.root
    files = [
        ("runs", root / "runs" / run_id),
        ("steps", root / "steps" / run_id),
        ("decisions", root / "decisions" / run_id),
        ("result index", root / "results"),
        ("result storage", f"{store.home.shared.url}/results/data" if store.home.shared else str(store.home.result_data)),
    ]
    lines = [f"# R-LAM run `{run_id}`", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "", "## Parquet trace", ""]
    lines += [f"- {name}: `{store.io.url(path) if isinstance(path, PurePath) else path}`" + (f" ({len(store.io.parquet_files(path))} files)" if name in ("runs", "steps", "decisions") else "") for name, path in files]
    lines += ["", f"Inspect: `RLAM_HOME={store.home.root} rlam show {run_id}` · `rlam lineage {run_id}` · `rlam replay {run_id}`"]
    return "\n".join(lines)


async def publish_run_artifacts(store: TraceStore, run_id: str) -> list[UUID]:
    """Create the three artifacts of ``run_id`` in the current flow run, concurrently.

    Three sequential API calls cost about 150 ms per flow run on the local server (a quarter of a
    cached five-step run's flow call); sent together they cost about one round trip.
    """
    import asyncio

    from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
    from prefect.utilities.urls import url_for

    run = store.run(run_id)
    steps = store.steps(run_id)
    parent_flow_run = store.run(run["parent_run_id"]).get("prefect_flow_run_id") if run.get("parent_run_id") else None
    parent_page = url_for("flow-run", obj_id=parent_flow_run) if parent_flow_run else None
    what = f"run {run_id} ({run['mode']}, {run['status']})"
    truncated = f"; first {MAX_TABLE_ROWS} of {len(steps)} steps, all in the Parquet trace" if len(steps) > MAX_TABLE_ROWS else ""
    return list(
        await asyncio.gather(
            acreate_table_artifact(steps_table(steps), key=STEPS_KEY, description=f"steps of {what}{truncated}"),
            acreate_markdown_artifact(lineage_markdown(store, run, steps, parent_page), key=LINEAGE_KEY, description=f"lineage of {what}{_parent_text(run)}"),
            acreate_table_artifact(metrics_table(run), key=METRICS_KEY, description=f"metrics of {what}"),
        )
    )


def _parent_text(run: dict[str, Any]) -> str:
    if run["mode"] == "replay":
        return f": replay of {run['parent_run_id']}, " + ("identical" if run.get("identical") else "NOT identical")
    if run["mode"] == "fork":
        return f": fork of {run['parent_run_id']} at step {run['fork_step']}"
    return ""


def _step_list(steps: list[int]) -> str:
    if not steps:
        return "none"
    if len(steps) > 1 and steps == list(range(steps[0], steps[-1] + 1)):
        return f"{steps[0]}-{steps[-1]}"
    return ", ".join(map(str, steps))


def _plain(value: Any) -> Any:
    """A JSON scalar for the table (metrics are already JSON; anything else becomes text)."""
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


AUDIT_KEY = "rlam-audit"


def publish_audit_artifact(audit: dict[str, Any]) -> UUID:
    """The audit's verdicts as one markdown artifact in the current flow run."""
    from prefect.artifacts import create_markdown_artifact

    from rlam_prefect.record.audit import audit_markdown

    text = audit_markdown(audit)[:200_000]  # bounded: far below the size whose event is dropped
    return create_markdown_artifact(text, key=AUDIT_KEY, description=audit["message"][:500], _sync=True)  # type: ignore[call-arg, return-value]  # sync_compatible takes _sync (undeclared); with it the call returns the UUID, not a coroutine


def flow_run_name() -> str:
    """``<mode>-<run_id>`` from the flow run's parameters, set when the run is created.

    Given to the ``@flow`` decorator instead of ``rlam_flow.with_options(flow_run_name=...)`` per
    call, which rebuilt the Flow object (about 30 ms a run). A deployment run without a
    ``run_id`` is renamed by ``name_flow_run`` once its id is chosen.
    """
    from prefect.runtime import flow_run

    params = flow_run.parameters
    mode = "replay" if params.get("replay_of") else "fork" if params.get("fork_of") else "run"
    return f"{mode}-{params.get('run_id') or 'planning'}"


def run_tags(mode: str, parent_run_id: str | None) -> list[str]:
    """The flow run's tags, so the Runs list filters R-LAM runs, replays and forks, and a run's children."""
    return ["rlam", mode, *([f"parent:{parent_run_id}"] if parent_run_id else [])]


def name_flow_run(name: str, tags: list[str] | None = None) -> None:
    """Rename and tag the current flow run so the UI shows ``<mode>-<run_id>`` and its tags.

    A deployment run starts with a random name and the deployment's tags; a run ``rlam`` starts is
    created with both (``runner.call_flow``), so it costs no API call here.
    """
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    current = list(flow_run.get_tags()) if run_id else []
    missing = [t for t in tags or () if t not in current]
    if run_id is None or (flow_run.get_name() == name and not missing):
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(run_id), name=name, tags=[*current, *missing] if missing else None)
