"""Code versions move with edits that matter (the action or a helper it calls), not with cosmetic ones."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from rlam_prefect.core.code_version import code_version

BASE = '''
import json


def helper(x):
    return x + 1


def action_fn(x):
    """Docstring."""
    return json.dumps(helper(x) * 2)
'''


@pytest.fixture
def version_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write the probe module with the given source, (re)import it, return action_fn's code version."""
    monkeypatch.syspath_prepend(str(tmp_path))
    name = "rlam_code_version_probe"

    def version(source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        sys.modules.pop(name, None)
        module = importlib.import_module(name)
        return code_version(module.action_fn)

    yield version
    sys.modules.pop(name, None)


def test_cosmetic_edits_keep_the_version(version_of):
    before = version_of(BASE)
    cosmetic = BASE.replace('"""Docstring."""', '"""Reworded."""').replace("return x + 1", "return (x +   1)  # note")
    assert version_of(cosmetic) == before


def test_editing_the_action_changes_the_version(version_of):
    assert version_of(BASE.replace("* 2", "* 3")) != version_of(BASE)


def test_editing_a_helper_it_calls_changes_the_version(version_of):
    assert version_of(BASE.replace("return x + 1", "return x + 2")) != version_of(BASE)


def test_unrelated_code_in_the_module_does_not_count(version_of):
    assert version_of(BASE + "\n\ndef unrelated():\n    return 42\n") == version_of(BASE)


def test_real_actions_have_distinct_versions():
    import tasks  # noqa: F401
    from rlam_prefect.actions.registry import registered_actions

    versions = {name: spec.code_version for name, spec in registered_actions().items()}
    assert len(set(versions.values())) == len(versions)


def test_a_parse_failed_by_cpythons_thread_hazard_is_parsed_again_and_any_other_error_is_raised(monkeypatch) -> None:
    import ast
    import gc

    from rlam_prefect.core import code_version as cv

    real, calls = ast.parse, []

    def flaky(source: str) -> ast.Module:  # what python/cpython#106905 raises when another thread's parse overlaps
        calls.append(source)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=48, after=17)")
        return real(source)

    monkeypatch.setattr(ast, "parse", flaky)
    assert ast.dump(cv._parsing(ast.parse, "x = 1\n")) == ast.dump(real("x = 1\n")) and len(calls) == 2

    def broken(source: str) -> ast.Module:
        raise SystemError("some other interpreter error")

    monkeypatch.setattr(ast, "parse", broken)
    with pytest.raises(SystemError, match="some other"):
        cv._parsing(ast.parse, "x = 1\n")
    monkeypatch.setattr(ast, "parse", lambda source: (_ for _ in ()).throw(SystemError("AST constructor recursion depth mismatch (before=1, after=2)")))
    with pytest.raises(SystemError, match="depth mismatch"):  # never retried for ever
        cv._parsing(ast.parse, "x = 1\n")
    assert gc.isenabled()  # the collector is resumed after every attempt
