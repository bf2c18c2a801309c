"""The execution witness's pytest side: every subprocess of the session loads ``sitecustomize.py``.

At configure time this directory goes first on PYTHONPATH and the watched roots (the seed's
``tasks/`` and ``examples/``) into RLAM_TEST_WITNESS_ROOTS, so every interpreter the tests start
(the ``rlam`` CLI, the warm executor and its children, Prefect workers and their flow runs, Dask
workers) can profile action-body calls. It does so when started with RLAM_TEST_WITNESS naming a
file: the ``witness`` fixture sets it for one test; a module-scoped fixture passes
``Witness(path).env`` as extra environment instead. A test that asserts "0 executed" pairs it with
a positive count in the same setting (the first run, the worker, the executor), so a witness that
was not installed fails the test instead of passing it.

The pytest process itself is not profiled: tests that count executions run the code under test
in a subprocess.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.witness.sitecustomize import FILE_ENV, ROOTS_ENV

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WATCHED = (ROOT / "tasks", ROOT / "examples")


def pytest_configure(config: pytest.Config) -> None:
    paths = [str(HERE), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(HERE))]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    roots = [str(r) for r in WATCHED] + [r for r in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if r and r not in map(str, WATCHED)]
    os.environ[ROOTS_ENV] = os.pathsep.join(roots)


@dataclass(frozen=True)
class Witness:
    """The lines the profiled processes appended: one per action-body call."""

    path: Path

    @property
    def env(self) -> dict[str, str]:
        return {FILE_ENV: str(self.path)}

    def records(self) -> list[tuple[int, str]]:
        """(pid, action) per call, in the order written."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        rows = [line.split("\t") for line in text.splitlines()]
        return [(int(pid), name) for pid, name, _ in rows]

    def calls(self, since: int = 0) -> list[str]:
        """The action names called, in order, from record ``since`` on (a ``mark()``)."""
        return [name for _, name in self.records()[since:]]

    def mark(self) -> int:
        return len(self.records())

    def counts(self, since: int = 0) -> Counter[str]:
        return Counter(self.calls(since))


@pytest.fixture
def witness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Witness:
    """A fresh witness file for this test, named in the environment every subprocess inherits."""
    seen = Witness(tmp_path / "witness.log")
    monkeypatch.setenv(FILE_ENV, str(seen.path))
    return seen
