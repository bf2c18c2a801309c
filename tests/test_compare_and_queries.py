"""rlam diff, rlam explain, and the DuckDB queries of docs/querying.md, on real runs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import duckdb
import pytest

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.record.compare import key_differences
from tests.conftest import Workspace

README = Path(__file__).resolve().parents[1] / "docs" / "querying.md"


@pytest.fixture(scope="module")
def recorded_runs(prefect_api_url, tmp_path_factory):
    """The four runs, recorded once for the module in a home of their own (read-only: tests get a copy)."""
    space = Workspace(HomeLayout(tmp_path_factory.mktemp("compare") / "rlam-home"))
    a = space.rlam_json("run", "--planner", "fixed")
    b = space.rlam_json("fork", a["run_id"], "--step", "4", "--set", "train_model.C=0.5")
    c = space.rlam_json("fork", a["run_id"], "--step", "3", "--set", "preprocess_data.test_size=0.3")
    failed = space.rlam("run", "--planner", "fixed", "--set", "analyze_data.variance_threshold=1e9", "--json").json
    return space.home, {"a": a, "b": b, "c": c, "failed": failed}


@pytest.fixture
def runs(workspace, recorded_runs):
    home, reports = recorded_runs
    workspace.copy_from(home)  # this test's own copy: the diff and lineage tests add runs to it
    return copy.deepcopy(reports)


def test_diff_names_the_first_divergence_its_cause_and_the_metric_deltas(workspace, runs):
    a, c = runs["a"], runs["c"]
    diff = workspace.rlam_json("diff", a["run_id"], c["run_id"])
    assert diff["identical"] is False and diff["first_divergence"]["step"] == 3
    [cause] = diff["first_divergence"]["causes"]
    assert cause["part"] == "params" and cause["changed"] == {"test_size": [0.2, 0.3]}
    assert [s["same"] for s in diff["steps"]] == [True, True, False, False, False]
    assert diff["metrics"]["n_test"] == {"a": 114, "b": 171, "delta": 57}
    replay = workspace.rlam_json("replay", a["run_id"])
    same = workspace.rlam_json("diff", a["run_id"], replay["run_id"])
    assert same["identical"] is True and same["first_divergence"] is None
    human = workspace.rlam("diff", a["run_id"], c["run_id"])
    assert "first divergence at step 3" in human.stdout and "cause: params: test_size 0.2 -> 0.3" in human.stdout


def test_explain_says_why_each_step_was_a_hit_or_a_miss(workspace, runs):
    a, b, failed = runs["a"], runs["b"], runs["failed"]
    first = workspace.rlam_json("explain", a["run_id"], "--step", "1")
    assert first["verdict"] == "miss" and "first load_dataset" in first["explanation"]
    hit = workspace.rlam_json("explain", b["run_id"], "--step", "2")
    assert hit["verdict"] == "hit" and hit["computed_by"] == {"run_id": a["run_id"], "step": 2}
    params = workspace.rlam_json("explain", b["run_id"], "--step", "4")
    assert params["nearest"] == {"run_id": a["run_id"], "step": 4}
    assert [d["part"] for d in params["differences"]] == ["params"] and "C 1.0 -> 0.5" in params["explanation"]
    downstream = workspace.rlam_json("explain", b["run_id"], "--step", "5")
    assert [d["part"] for d in downstream["differences"]] == ["input artifacts"]
    assert "model from step 4 train_model" in downstream["explanation"]
    failure = workspace.rlam_json("explain", failed["run_id"], "--step", "3")
    assert failure["verdict"] == "failed" and "every feature is flagged" in failure["explanation"]
    bad = workspace.rlam("explain", a["run_id"], "--step", "9")
    assert bad.code == 2 and "out of range" in bad.stderr


def test_key_differences_name_code_environment_and_decisions():
    base = {"action": "train_model", "params": '{"C": 1.0}', "input_hashes": '{"split": "sha256:aa"}', "code_version": "sha256:c1", "env_hash": "sha256:e1"}
    assert key_differences(base, dict(base)) == []
    moved = key_differences({**base, "code_version": "sha256:c2", "env_hash": "sha256:e2"}, base)
    assert [d["part"] for d in moved] == ["code version", "environment"]
    assert [d["part"] for d in key_differences({**base, "action": "evaluate_model"}, base)] == ["planner decision"]


def _readme_queries() -> dict[str, str]:
    return dict(re.findall(r"<!-- query: ([\w-]+) -->\n```sql\n(.*?)```", README.read_text(), flags=re.S))


def test_the_readme_queries_run_on_real_traces(workspace, runs):
    queries = _readme_queries()
    assert set(queries) == {"low-c", "failures", "cache-savings"}
    traces = str(workspace.home.traces)

    def run(name: str) -> list[tuple]:
        return duckdb.sql(queries[name].replace(".rlam/traces", traces)).fetchall()

    low_c = run("low-c")
    assert [(row[0], row[1]) for row in low_c] == [(runs["b"]["run_id"], 0.5)]
    assert low_c[0][2] == pytest.approx(runs["b"]["metrics"]["accuracy"])
    failures = run("failures")
    assert [(row[0], row[1], row[2], row[4]) for row in failures] == [(runs["failed"]["run_id"], 3, "preprocess_data", "ValueError")]
    savings = {(row[0], row[1]): row[2] for row in run("cache-savings")}
    assert savings[("load_dataset", "executed")] == 1 and savings[("load_dataset", "cached")] == 3


def test_lineage_shows_data_edges_fork_ancestry_decisions_and_recovery(workspace, runs):
    import shutil

    c = runs["c"]
    tree = workspace.rlam("lineage", c["run_id"])
    assert tree.code == 0
    assert f"fork at step 3 of {runs['a']['run_id']}" in tree.stdout and f"└─ {runs['a']['run_id']}  run" in tree.stdout
    assert "<- analysis@2, dataset@1" in tree.stdout
    assert tree.stdout.count(f"[reused from {runs['a']['run_id']}]") == 2  # steps 1-2 came from the parent
    graph = workspace.rlam_json("lineage", c["run_id"])
    assert {(e["from"], e["to"], e["input"]) for e in graph["edges"]} == {
        (1, 2, "dataset"), (1, 3, "dataset"), (2, 3, "analysis"), (3, 4, "split"), (3, 5, "split"), (4, 5, "model"),
    }
    mermaid = workspace.rlam("lineage", c["run_id"], "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart TD") and "s3 -->|split| s4" in mermaid

    planned = workspace.rlam_json("run", "--inject-failure", "train_model")
    dot = workspace.rlam("lineage", planned["run_id"], "--format", "dot").stdout
    assert dot.startswith(f'digraph "{planned["run_id"]}"') and "d4 -> s4 [style=dashed]" in dot
    assert 's4 -> s5 [label="recovered by"' in dot
    png = workspace.home.root / "lineage.png"
    result = workspace.rlam("lineage", planned["run_id"], "--png", str(png))
    if shutil.which("dot"):
        assert result.code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert result.code == 2 and "Graphviz" in result.stderr and not png.exists()
