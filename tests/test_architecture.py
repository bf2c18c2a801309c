"""The architecture as written down: layer contracts, no cycles, cheap imports, one schema source."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("prefect", "litellm", "sklearn")


def test_the_import_contracts_hold():
    result = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_no_import_cycle_between_modules_of_the_library():
    import grimp

    graph = grimp.build_graph("rlam_prefect", exclude_type_checking_imports=True)
    cycles = [
        (module, importer)
        for module in graph.modules
        for importer in graph.find_modules_that_directly_import(module)
        if graph.chain_exists(importer=module, imported=importer)
    ]
    assert not cycles, cycles[:5]


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "rlam_prefect").rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


@pytest.mark.parametrize("argv", [["--help"], ["runs"], ["--version"]])
def test_fast_commands_never_import_prefect_litellm_or_sklearn(argv, tmp_path):
    code = (
        "import sys; from rlam_prefect.cli.main import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"import json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)"
    )
    env = {"PATH": "/usr/bin:/bin", "RLAM_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, env=env)
    assert json.loads(result.stderr.strip().splitlines()[-1]) == [], result.stderr


def test_the_public_api_is_lazy_and_complete():
    code = (
        "import sys, rlam_prefect as rlam\n"
        "loaded = [m for m in ('prefect', 'litellm', 'sklearn', 'pyarrow') if m in sys.modules]\n"
        "missing = [n for n in rlam.__all__ if getattr(rlam, n, None) is None]\n"
        "print(loaded, missing)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "[] []", result.stdout + result.stderr


def test_all_is_the_public_api_spelled_out():
    import rlam_prefect as rlam

    assert rlam.__all__ == ["__version__", *rlam._PUBLIC_API]  # literal for type checkers, so kept in step by hand


def test_the_installed_distribution_puts_no_tasks_or_flows_on_sys_path():
    import importlib.metadata

    top_level = {Path(f.name).parts[0] for f in importlib.metadata.files("rlam-prefect") or []}
    assert "tasks" not in top_level and "flows" not in top_level


def test_the_trace_schema_reference_is_generated_from_the_records():
    from rlam_prefect.record.schema import render_reference

    committed = (ROOT / "docs" / "trace-schema.md").read_text()
    assert committed == render_reference(), "regenerate: python -m rlam_prefect.record.schema > docs/trace-schema.md"


def test_a_typo_in_a_record_column_fails_instead_of_vanishing(tmp_path):
    from rlam_prefect.core.home import HomeLayout
    from rlam_prefect.record.records import StepRecord
    from rlam_prefect.record.store import TraceStore

    with pytest.raises(AttributeError, match="no column stauts"):
        StepRecord(run_id="r", step=1).update(stauts="executed")
    with pytest.raises(TypeError, match="not a StepRecord"):
        TraceStore(HomeLayout(tmp_path)).append_step({"run_id": "r", "step": 1, "stauts": "executed"})
    assert not (tmp_path / "traces").exists()
