"""How the CLI shows results: plain text renderings of the API's reports (``--json`` prints them as they are)."""

from __future__ import annotations

import json
from typing import Any


def render_step(step: dict[str, Any]) -> str:
    digest = (step.get("output_hash") or "")[7:19]
    line = f"  {step['step']:>3}  {step['action']:<18} {step['status']:<9} {step.get('duration_s') or 0:7.2f}s  {digest}"
    if step.get("error_message"):
        line += f"  {step.get('error_type')}: {step['error_message']}"
    elif step.get("approval"):
        who = f" by {step['approved_by']}" if step.get("approved_by") else ""
        edits = step.get("approval_edits")
        edits = json.loads(edits) if isinstance(edits, str) else edits
        line += f"  {step['approval']}{who} ({step.get('approval_via')})" + (f", edited {_params_text(edits)}" if edits else "")
    return line


def render_run(report: dict[str, Any], with_steps: bool = True) -> str:
    header = f"run {report['run_id']}  {report['mode']}  {report['status']}"
    if report["mode"] == "replay":
        header += f"  replay of {report['replay_of']}: {'identical' if report['identical'] else 'NOT identical'}"
    if report["mode"] == "fork":
        header += f"  fork of {report['parent_run_id']} at step {report['fork_step']}"
        if report.get("overrides"):
            header += f" with {_overrides_text(report['overrides'])}"
    lines = [header, *(render_step(s) for s in report["steps"] if with_steps)]
    if report.get("policy_differs"):
        parent = report.get("parent_run_id") or report.get("replay_of")
        lines.append(f"  policy differs from run {parent}'s: {_short(report.get('parent_policy_hash'))} -> {_short(report.get('policy_hash'))}")
    elif report.get("policy_hash"):
        lines.append(f"  policy {_short(report['policy_hash'])}")
    lines.append(
        f"  executed {report['executed']}, cached {report['cached']}, failed {report['failed']}, "
        f"rejected {report['rejected']}, llm calls {report['llm_calls']}"
    )
    if report["metrics"]:
        lines.append("  metrics: " + ", ".join(f"{k}={v}" for k, v in report["metrics"].items()))
    if report.get("goal") and report.get("planner") != "fixed":
        lines.append(f"  goal: {report['goal']}")
    for difference in report.get("differences") or []:
        lines.append(f"  differs at step {difference['step']} {difference['action']}: {difference['replay']} vs {difference['original']}")
    if report.get("error_message"):
        lines.append(f"  error: {report['error_message']}")
    if report.get("prefect_ui_url"):
        stopped = "" if report.get("prefect_ui_running", True) else f"  (the local server is stopped: `rlam ui {report['run_id']}` starts it)"
        lines.append(f"  prefect: {report['prefect_ui_url']}{stopped}")
    return "\n".join(lines)


def render_runs(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no runs recorded yet (try `rlam run`)"
    cells = [_headline_metric(r) for r in rows]
    width = max([len("metric"), *(len(c) for c in cells)])
    lines = [f"{'run_id':<13} {'status':<10} {'mode':<7} {'steps':>5} {'exec':>4} {'cache':>5}  {'metric':>{width}}  {'parent':<13} started"]
    for r, metric in zip(rows, cells):
        parent = (r["parent_run_id"] or "-") + (f"@{r['fork_step']}" if r["fork_step"] else "")
        lines.append(
            f"{r['run_id']:<13} {r['status']:<10} {r['mode']:<7} {r['n_steps'] if r['n_steps'] is not None else '-':>5} "
            f"{r['executed'] if r['executed'] is not None else '-':>4} {r['cached'] if r['cached'] is not None else '-':>5}  "
            f"{metric:>{width}}  {parent:<13} {r['started_at']}"
        )
    return "\n".join(lines)


def _headline_metric(row: dict[str, Any]) -> str:
    """The run's goal metric (``accuracy=0.9333``, ``rmse=0.41``), else its first numeric metric, else ``-``."""
    metrics = row.get("metrics") or {}
    goal = row.get("goal") or ""
    name = next((m for m in metrics if goal.startswith(m) and goal[len(m) : len(m) + 2] in (">=", "<=")), None)
    if name is None:
        name = next((k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)), None)
    return "-" if name is None else f"{name}={metrics[name]}"


def _overrides_text(overrides: dict[str, dict[str, Any]]) -> str:
    return " ".join(f"{a}.{p}={json.dumps(v)}" for a, params in overrides.items() for p, v in params.items())


def _short(policy_hash: str | None) -> str:
    return policy_hash[7:19] if policy_hash else "none"


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in params.items())


def render_untraced(report: dict[str, Any]) -> str:
    title = f"{report['pipeline']} pipeline  {report['status']}  (no cache, no trace)"
    lines = [title, *(render_step(s) for s in report["steps"])]
    lines.append(f"  executed {report['executed']}, llm calls {report['llm_calls']}")
    if report["metrics"]:
        lines.append("  metrics: " + ", ".join(f"{k}={v}" for k, v in report["metrics"].items()))
    return "\n".join(lines)


def render_diff(outcome: dict[str, Any]) -> str:
    lines = [f"{outcome['run_a']} vs {outcome['run_b']}: " + ("identical" if outcome["identical"] else f"first divergence at step {outcome['first_divergence']['step']}")]
    for entry in outcome["steps"]:
        a, b = entry["a"] or {}, entry["b"] or {}
        mark = " " if entry["same"] else "*"
        lines.append(f" {mark}{entry['step']:>3}  {a.get('action', '-'):<18} {str(a.get('output_hash'))[7:19]:<12}  {b.get('action', '-'):<18} {str(b.get('output_hash'))[7:19]}")
    if outcome["first_divergence"]:
        lines += [f"  cause: {c['part']}: {c['detail']}" for c in outcome["first_divergence"]["causes"]]
    deltas = [f"{name} {m['a']} -> {m['b']} ({m['delta']:+})" for name, m in outcome["metrics"].items() if m["delta"]]
    if deltas:
        lines.append("  metrics: " + ", ".join(deltas))
    return "\n".join(lines)


def render_verify(outcome: dict[str, Any]) -> str:
    verdict = "intact" if outcome["intact"] else f"NOT intact: {outcome['problems']} problem(s)"
    lines = [f"run {outcome['run_id']}: {verdict} ({outcome['checked']} stored results re-hashed)"]
    lines += [f"  {c['step']:>3}  {c['action']:<18} {c['result']:<9} {c['detail']}" for c in outcome["steps"]]
    return "\n".join(lines)


def render_actions(listing: list[dict[str, Any]]) -> str:
    lines = []
    for entry in listing:
        inputs = ", ".join(f"{arg}: {kind}" for arg, kind in entry["inputs"].items())
        params = ", ".join(f"{name}={prop.get('default')!r}" for name, prop in entry["params_schema"].get("properties", {}).items())
        lines.append(f"{entry['action']}({inputs}) -> {entry['output']}    [{params}]    {entry['module']}")
        lines.append(f"    {entry['description']}")
        lines.append(f"    preconditions: {'; '.join(entry['preconditions']) or 'none'}")
        lines.append(f"    effects: {'; '.join(entry['effects'])}")
    return "\n".join(lines)


def render_sweep(report: dict[str, Any]) -> str:
    from rlam_prefect.planning.sweep import point_text

    """The forks as a table: grid point, run id, status, executed/cached and the numeric metrics."""
    forks = report["forks"]
    metric_names = list(dict.fromkeys(k for f in forks for k, v in f["metrics"].items() if isinstance(v, float)))
    point_width = max([len("grid point"), *(len(point_text(f["point"])) for f in forks)])
    header = f"sweep {report['sweep_id']}  {report['status']}  forks of {report['parent_run_id']} at step {report['fork_step']} on {report['cluster']}"
    lines = [header, f"  {'grid point':<{point_width}}  {'fork run':<12}  {'status':<12} {'exec':>4} {'cache':>5}" + "".join(f"  {m:>{max(8, len(m))}}" for m in metric_names)]
    for f in forks:
        cells = "".join(f"  {_metric(f['metrics'].get(m)):>{max(8, len(m))}}" for m in metric_names)
        lines.append(f"  {point_text(f['point']):<{point_width}}  {f['run_id']:<12}  {f['status']:<12} {f['executed'] or 0:>4} {f['cached'] or 0:>5}{cells}")
        if f.get("error"):
            lines.append(f"      error: {f['error']}")
    return "\n".join(lines)


def _metric(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_planner_check(outcome: dict[str, Any]) -> str:
    decision = outcome.get("decision") or {}
    params = json.dumps(decision.get("params") or {}, sort_keys=True)
    lines = [
        f"planner   {outcome['model']}",
        f"endpoint  {outcome['endpoint'] or '(the provider default)'}",
        f"latency   {outcome['latency_s']:.3f} s" if outcome.get("latency_s") is not None else "latency   -",
    ]
    if outcome["ok"]:
        lines.append(f"decision  {decision['action']} {params}" + (f"  ({decision['reason']})" if decision.get("reason") else ""))
    else:
        lines.append(f"error     {outcome['error']}")
    return "\n".join(lines)
