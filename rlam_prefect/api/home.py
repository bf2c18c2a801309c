"""``rlam.Home``: a handle on one RLAM_HOME with typed queries over its trace.

Reading never imports Prefect, litellm or scikit-learn: a notebook can list and inspect runs as
cheaply as ``rlam runs`` does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rlam_prefect.api.results import RunResult, RunSummary
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.record.store import TraceStore

PathLike = str | os.PathLike[str]


class Home:
    """One RLAM_HOME: traces, results and (on the embedded default) its local Prefect server's data."""

    def __init__(self, path: PathLike | None = None) -> None:
        self.layout = HomeLayout(Path(path).expanduser().resolve()) if path is not None else HomeLayout.from_env()
        self.store = TraceStore(self.layout)

    @property
    def path(self) -> Path:
        return self.layout.root

    def __repr__(self) -> str:
        return f"Home({str(self.path)!r})"

    def resolve(self, run_ref: str) -> str:
        """The full run id for an id or a unique prefix (UnknownRunError otherwise)."""
        return self.store.resolve_run_id(run_ref)

    def runs(self, limit: int | None = None) -> list[RunSummary]:
        """Recorded runs, newest first."""
        from rlam_prefect.record.report import runs_table

        return [RunSummary.from_row(row) for row in runs_table(self.store, limit)]

    def run(self, run_ref: str) -> RunResult:
        """One run as ``rlam show`` reports it."""
        from rlam_prefect.record.report import run_report

        return RunResult.from_report(run_report(self.store, self.resolve(run_ref)))

    def steps(self, run_ref: str) -> list[dict[str, Any]]:
        """A run's step rows exactly as the trace table holds them (every column of docs/trace-schema.md)."""
        return self.store.steps(self.resolve(run_ref))

    def decisions(self, run_ref: str) -> list[dict[str, Any]]:
        """A run's planner calls as the decisions table holds them."""
        return self.store.decisions(self.resolve(run_ref))

    def lineage(self, run_ref: str) -> dict[str, Any]:
        """The run's DAG, fork ancestry and planner decisions (``rlam lineage --json``)."""
        from rlam_prefect.record.lineage import build_lineage

        return build_lineage(self.store, self.resolve(run_ref))


def open_home(path: PathLike | Home | None = None) -> Home:
    """A handle on ``path`` (default: $RLAM_HOME, else ./.rlam)."""
    return path if isinstance(path, Home) else Home(path)
