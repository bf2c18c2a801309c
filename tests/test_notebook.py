"""The committed notebook, executed by nbclient in a real Jupyter kernel (its event loop is running)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "notebook" / "rlam-tour.ipynb"


def test_the_notebook_runs_replays_forks_queries_and_draws_the_lineage(prefect_api_url, workspace):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # committed without outputs
    env_before = dict(os.environ)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute(env={**os.environ, "RLAM_HOME": str(workspace.home.root)})  # the kernel inherits PREFECT_API_URL: the session server
    assert dict(os.environ) == env_before
    text = "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", []) if output.get("output_type") == "stream"
    )
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    assert "identical True executed 0 llm_calls 0" in text
    assert "(4, 'train_model', 'executed')" in text and "(1, 'load_dataset', 'cached')" in text
    assert "[reused from" in text and "<- dataset@1" in text
    assert "('cached'," in text and "('executed', 7)" in text  # DuckDB over the trace: 5 + 2 executed, 5 + 3 cached
    assert len(list((workspace.home.root / "traces" / "runs").iterdir())) == 3  # the run, its replay and its fork
