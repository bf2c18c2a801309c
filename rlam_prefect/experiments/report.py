"""The experiments' results as a table, markdown, CSV, JSON and a chart (matplotlib, Agg)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

PIPELINES = ("script", "lam", "rlam")
LABELS = {"script": "Script", "lam": "Naive LAM", "rlam": "R-LAM"}


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 3) if den else None


def comparison_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric; each cell keeps its value, numerator, denominator and a short reason."""
    s = results["settings"]
    rows: list[dict[str, Any]] = []

    def add(metric: str, cells: dict[str, dict[str, Any]]) -> None:
        rows.append({"metric": metric, **{p: cells[p] for p in PIPELINES}})

    m = results["pipelines"]
    control = f"LLM-driven ({s['planner']}, temperature {s['temperature']})"
    add("control", {"script": {"text": "hard-coded order"}, "lam": {"text": control}, "rlam": {"text": control}})
    add("reproducibility success", {p: _cell(m[p]["reproduction"]["equal"], m[p]["reproduction"]["compared"], "re-runs" if p != "rlam" else "replays") for p in PIPELINES})
    add("trace completeness", {p: _cell(m[p]["trace_completeness"]["complete_rows"], m[p]["trace_completeness"]["actions_ran"], "actions") for p in PIPELINES})
    add("failure visibility", {p: _cell(m[p]["failure_visibility"]["visible"], m[p]["failure_visibility"]["injected"], "injected") for p in PIPELINES})
    for what in ("replay", "fork"):
        add(what, {p: _attempt_cell(m[p][what]) for p in PIPELINES})
    add("LLM calls during replay", {p: {"value": m[p]["llm_calls_during_replay"], "text": "-" if m[p]["llm_calls_during_replay"] is None else str(m[p]["llm_calls_during_replay"])} for p in PIPELINES})
    add("median time per run (s)", {p: {"value": m[p]["median_run_s"], "text": f"{m[p]['median_run_s']:.2f}"} for p in PIPELINES})
    return rows


def _cell(num: int, den: int, unit: str) -> dict[str, Any]:
    value = _ratio(num, den)
    return {"value": value, "numerator": num, "denominator": den, "text": f"{value:.2f} ({num}/{den} {unit})" if value is not None else f"- (0 {unit})"}


def _attempt_cell(a: dict[str, Any]) -> dict[str, Any]:
    value = _ratio(a["succeeded"], a["tried"])
    text = f"{a['succeeded']}/{a['tried']} succeeded"
    if a["why_not"]:
        text += ": " + "; ".join(a["why_not"])
    return {"value": value, "numerator": a["succeeded"], "denominator": a["tried"], "text": text}


# ---- outputs ---------------------------------------------------------------------------------


def render_markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [
        "# rlam experiments: Script vs Naive LAM vs R-LAM, measured",
        "",
        f"- Date (UTC): {results['date_utc']}; RLAM_HOME of the runs: `{results['rlam_home']}`",
        f"- Repeats: {s['repeats']}; planner {s['planner']} at temperature {s['temperature']}, run i with seed {s['base_seed']}+i",
        f"- Processes run: {len(results['invocations'])} (each a fresh `rlam` command, handed to the home's warm executor when one runs)",
        "",
        "| | " + " | ".join(LABELS[p] for p in PIPELINES) + " |",
        "|---|" + "---|" * len(PIPELINES),
    ]
    for row in results["table"]:
        lines.append(f"| {row['metric']} | " + " | ".join(str(row[p]["text"]).replace("|", "/") for p in PIPELINES) + " |")
    lines += ["", "Definitions: see docs/experiments.md.", ""]
    return "\n".join(lines)


def write_outputs(results: dict[str, Any], out: Path) -> dict[str, str]:
    files = {"markdown": out / "experiments.md", "csv": out / "experiments.csv", "json": out / "experiments.json", "png": out / "experiments.png"}
    files["markdown"].write_text(render_markdown(results))
    with open(files["csv"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["metric", "pipeline", "value", "numerator", "denominator", "text"])
        for row in results["table"]:
            for p in PIPELINES:
                cell = row[p]
                writer.writerow([row["metric"], p, cell.get("value"), cell.get("numerator"), cell.get("denominator"), cell["text"]])
    write_chart(results["table"], files["png"])
    names = {k: str(v) for k, v in files.items()}
    files["json"].write_text(json.dumps({**results, "files": names}, indent=2, default=str))
    return names


def write_chart(table: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars of the ratio metrics (0..1) per pipeline; matplotlib is imported only here."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [row for row in table if row["metric"] in ("reproducibility success", "trace completeness", "failure visibility", "replay", "fork")]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(PIPELINES)
    for j, p in enumerate(PIPELINES):
        values = [row[p].get("value") or 0.0 for row in metrics]
        bars = ax.bar([i + j * width for i in range(len(metrics))], values, width, label=LABELS[p])
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7)
    ax.set_xticks([i + width for i in range(len(metrics))], [row["metric"] for row in metrics], fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("share (measured)")
    ax.set_title("Script vs Naive LAM vs R-LAM")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_summary(results: dict[str, Any]) -> str:
    """What the terminal shows: the table and where the files are."""
    files = "\n".join(f"  {kind}: {path}" for kind, path in results["files"].items())
    return render_markdown(results) + "\nwritten:\n" + files
