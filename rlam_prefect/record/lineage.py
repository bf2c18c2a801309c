"""``rlam lineage``: a run's DAG with its fork ancestry, as a terminal tree, Mermaid or DOT.

Edges are rebuilt from the trace alone: a step consumed the artifact whose content hash is in
its ``input_hashes``, produced by the latest earlier step with that output hash. Planner
decisions hang off the steps they chose; reused steps name the run they came from.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from rlam_prefect.core.errors import UsageError
from rlam_prefect.record.store import TraceStore


def build_lineage(store: TraceStore, run_id: str) -> dict[str, Any]:
    run = store.run(run_id)
    steps = store.steps(run_id)
    decisions = {d["step"]: d for d in store.decisions(run_id) if d.get("valid")}
    ancestry = [{k: parent[k] for k in ("run_id", "mode", "planner", "status")} for parent in ancestors(store, run)]
    nodes, edges = [], []
    for step in steps:
        sources = producers(steps, step)
        reused_from = run["parent_run_id"] if run["mode"] in ("replay", "fork") and step["status"] == "cached" and (run["mode"] == "replay" or step["step"] < (run["fork_step"] or 0)) else None
        decision = decisions.get(step["step"])
        nodes.append(
            {
                "step": step["step"],
                "action": step["action"],
                "status": step["status"],
                "output_hash": step["output_hash"],
                "reused_from": reused_from,
                "decision": {"model": decision["model"], "reason": decision["reason"]} if decision else None,
                "error": f"{step['error_type']}: {step['error_message']}" if step.get("error_type") else None,
                "recovers_step": step.get("recovers_step"),
            }
        )
        edges += [{"from": source, "to": step["step"], "input": name} for name, source in sources.items()]
    return {
        "run_id": run_id,
        "mode": run["mode"],
        "planner": run["planner"],
        "parent_run_id": run["parent_run_id"],
        "fork_step": run["fork_step"],
        "overrides": json.loads(run["overrides"] or "{}"),
        "ancestry": ancestry,
        "steps": nodes,
        "edges": edges,
    }


def ancestors(store: TraceStore, run: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs a replay or fork descends from: parent, grandparent, ..."""
    found = []
    while run.get("parent_run_id"):
        run = store.run(run["parent_run_id"])
        found.append(run)
    return found


def producers(steps: list[dict[str, Any]], step: dict[str, Any]) -> dict[str, int]:
    if step.get("inputs_from"):  # recorded from Prefect's own task inputs (a tracked flow): exact, not matched by value
        recorded: dict[str, list[int]] = json.loads(step["inputs_from"])
        return {(name if len(sources) == 1 else f"{name}[{i}]"): source for name, sources in recorded.items() for i, source in enumerate(sources)}
    found = {}
    for name, digest in json.loads(step.get("input_hashes") or "{}").items():
        for earlier in reversed(steps[: step["step"] - 1]):
            if earlier.get("output_hash") == digest:
                found[name] = earlier["step"]
                break
    return found


def render_tree(lineage: dict[str, Any]) -> str:
    header = f"run {lineage['run_id']}  {lineage['mode']}  planner {lineage['planner']}"
    if lineage["parent_run_id"]:
        relation = "replay of" if lineage["mode"] == "replay" else f"fork at step {lineage['fork_step']} of"
        header += f"  ({relation} {lineage['parent_run_id']})"
    lines = [header]
    for depth, ancestor in enumerate(lineage["ancestry"], start=1):
        lines.append(f"{'   ' * (depth - 1)}└─ {ancestor['run_id']}  {ancestor['mode']}  {ancestor['status']}")
    if lineage["overrides"]:
        lines.append("overrides: " + ", ".join(f"{a}.{p}={v!r}" for a, ps in lineage["overrides"].items() for p, v in ps.items()))
    incoming: dict[int, list[str]] = {}
    for edge in lineage["edges"]:
        incoming.setdefault(edge["to"], []).append(f"{edge['input']}@{edge['from']}")
    for node in lineage["steps"]:
        line = f"  {node['step']:>3} {node['action']:<18} {node['status']:<9} {str(node['output_hash'] or '')[7:19]:<12}"
        if incoming.get(node["step"]):
            line += " <- " + ", ".join(incoming[node["step"]])
        if node["reused_from"]:
            line += f"  [reused from {node['reused_from']}]"
        if node["decision"]:
            line += f"  [{node['decision']['model']}: {node['decision']['reason']}]"
        if node["error"]:
            line += f"  [{node['error']}]"
        if node["recovers_step"]:
            line += f"  [recovers step {node['recovers_step']}]"
        lines.append(line)
    return "\n".join(lines)


def render_mermaid(lineage: dict[str, Any]) -> str:
    lines = ["flowchart TD"]
    for node in lineage["steps"]:
        lines.append(f'  s{node["step"]}["{node["step"]}. {node["action"]}<br/>{node["status"]} {str(node["output_hash"] or "")[7:19]}"]')
        if node["decision"]:
            lines.append(f'  d{node["step"]}{{{{"plan {node["step"]}: {node["decision"]["model"]}"}}}} -.-> s{node["step"]}')
    lines += [f'  s{e["from"]} -->|{e["input"]}| s{e["to"]}' for e in lineage["edges"]]
    lines += [f'  s{n["recovers_step"]} -.->|recovered by| s{n["step"]}' for n in lineage["steps"] if n["recovers_step"]]
    if lineage["parent_run_id"]:
        lines.append(f'  p["{lineage["mode"]} of {lineage["parent_run_id"]}"] -.->|steps before {lineage["fork_step"] or "all"}| s1')
    return "\n".join(lines)


def render_dot(lineage: dict[str, Any]) -> str:
    lines = [f'digraph "{lineage["run_id"]}" {{', "  rankdir=TB;", "  node [shape=box, fontname=Helvetica];"]
    for node in lineage["steps"]:
        color = {"executed": "black", "cached": "blue", "failed": "red", "rejected": "orange"}.get(node["status"], "gray")
        lines.append(f'  s{node["step"]} [label="{node["step"]}. {node["action"]}\\n{node["status"]} {str(node["output_hash"] or "")[7:19]}", color={color}];')
        if node["decision"]:
            lines.append(f'  d{node["step"]} [label="plan {node["step"]}\\n{node["decision"]["model"]}", shape=diamond];')
            lines.append(f"  d{node['step']} -> s{node['step']} [style=dashed];")
    lines += [f'  s{e["from"]} -> s{e["to"]} [label="{e["input"]}"];' for e in lineage["edges"]]
    lines += [f'  s{n["recovers_step"]} -> s{n["step"]} [label="recovered by", style=dotted, color=red];' for n in lineage["steps"] if n["recovers_step"]]
    if lineage["parent_run_id"]:
        lines.append(f'  parent [label="{lineage["mode"]} of {lineage["parent_run_id"]}", shape=folder];')
        lines.append("  parent -> s1 [style=dotted];")
    lines.append("}")
    return "\n".join(lines)


def write_png(dot_source: str, output: Path) -> Path:
    dot = shutil.which("dot")
    if dot is None:
        raise UsageError("a PNG needs Graphviz's `dot` on PATH (e.g. apt-get install graphviz); --format dot prints the source")
    subprocess.run([dot, "-Tpng", "-o", str(output)], input=dot_source.encode(), check=True, capture_output=True)
    return output
