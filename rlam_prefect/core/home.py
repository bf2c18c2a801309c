"""RLAM_HOME: the one directory that holds every piece of state (traces, results, Prefect's)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "RLAM_HOME"
DEFAULT_HOME = ".rlam"


@dataclass(frozen=True)
class HomeLayout:
    root: Path

    @classmethod
    def from_env(cls) -> HomeLayout:
        return cls(Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve())

    @property
    def traces(self) -> Path:
        return self.root / "traces"

    @property
    def results(self) -> Path:
        """Prefect result storage: ``data/<cache key>`` holds a result, ``keys/<cache key>`` its metadata."""
        return self.root / "results"

    @property
    def result_data(self) -> Path:
        return self.results / "data"

    @property
    def result_keys(self) -> Path:
        return self.results / "keys"

    @property
    def quarantine(self) -> Path:
        return self.results / "quarantine"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def prefect(self) -> Path:
        return self.root / "prefect"
