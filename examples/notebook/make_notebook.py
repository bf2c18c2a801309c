"""Writes rlam-tour.ipynb (without outputs): python examples/notebook/make_notebook.py, from the repository root."""

import nbformat as nbf

cells = [
    nbf.v4.new_markdown_cell("""# R-LAM in a notebook: run, replay, fork, query, lineage

Run from the repository root (its `pyproject.toml` declares the seed's actions in `[tool.rlam]`), with
`RLAM_HOME` pointing where the trace should go (default `./.rlam`). The verbs work inside Jupyter's
already running event loop: each call runs its Prefect flow on a worker thread with its own loop."""),
    nbf.v4.new_code_cell("""import asyncio
import json

import rlam_prefect as rlam

asyncio.get_running_loop()  # Jupyter's loop is running: the calls below must work anyway
home = rlam.open_home()
print("trace in", home.path)"""),
    nbf.v4.new_markdown_cell("## A run (the fixed order, no LLM)"),
    nbf.v4.new_code_cell("""run = rlam.run(planner="fixed", overrides={"load_dataset": {"name": "iris"}})
print(run.run_id, run.status, "executed", run.executed, "cached", run.cached)
print("metrics", run.metrics)
for s in run.steps:
    print(s.step, s.action, s.status, s.output_hash[:19])"""),
    nbf.v4.new_markdown_cell("## Replay: every step from the verified cache, nothing executed"),
    nbf.v4.new_code_cell("""replay = rlam.replay(run.run_id)
print("identical", replay.identical, "executed", replay.executed, "llm_calls", replay.llm_calls)
assert replay.identical and replay.executed == 0"""),
    nbf.v4.new_markdown_cell("## Fork at step 4 with another regularisation strength"),
    nbf.v4.new_code_cell("""fork = rlam.fork(run.run_id, step=4, overrides={"train_model": {"C": 0.3}})
print(fork.run_id, "fork of", fork.parent_run_id, "at step", fork.fork_step)
print([(s.step, s.action, s.status) for s in fork.steps])
print("accuracy", run.metrics["accuracy"], "->", fork.metrics["accuracy"])"""),
    nbf.v4.new_markdown_cell("## The trace is plain Parquet: query it with DuckDB"),
    nbf.v4.new_code_cell("""import duckdb

steps = f"{home.path}/traces/steps/**/*.parquet"
table = duckdb.sql(f\"\"\"
    select run_id, step, action, status, substr(output_hash, 8, 12) as output
    from read_parquet('{steps}', union_by_name = true)
    order by run_id, step
\"\"\").fetchall()
for row in table:
    print(*row)
statuses = duckdb.sql(f"select status, count(*) from read_parquet('{steps}', union_by_name = true) group by status order by status").fetchall()
print(statuses)"""),
    nbf.v4.new_markdown_cell("## Lineage of the fork: data edges and what was reused from its parent"),
    nbf.v4.new_code_cell("""lineage = home.lineage(fork.run_id)
print("fork of", lineage["parent_run_id"], "at step", lineage["fork_step"], "overrides", json.dumps(lineage["overrides"]))
for node in lineage["steps"]:
    inputs = [f"{e['input']}@{e['from']}" for e in lineage["edges"] if e["to"] == node["step"]]
    reused = f"  [reused from {node['reused_from']}]" if node["reused_from"] else ""
    print(node["step"], node["action"], node["status"], "<-", ", ".join(inputs) or "-", reused)"""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
nbf.write(nb, "examples/notebook/rlam-tour.ipynb")
