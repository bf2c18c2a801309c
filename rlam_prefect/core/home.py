"""RLAM_HOME: the directory of a machine's state; traces and results there too unless RLAM_STORE_URL moves them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rlam_prefect.core.storage import STORE_ENV, SharedStore, parse_store

HOME_ENV = "RLAM_HOME"
DEFAULT_HOME = ".rlam"


@dataclass(frozen=True)
class HomeLayout:
    root: Path
    store_url: str | None = field(default_factory=lambda: os.environ.get(STORE_ENV) or None)

    @classmethod
    def from_env(cls) -> HomeLayout:
        return cls(Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve())

    @property
    def shared(self) -> SharedStore | None:
        """The object store holding traces and results (RLAM_STORE_URL=s3://...), None when they are local files."""
        located = parse_store(self.store_url) if self.store_url else None
        return located if isinstance(located, SharedStore) else None

    @property
    def data_root(self) -> Path:
        """The local directory of traces and results: RLAM_HOME, or RLAM_STORE_URL=file://... (unused when ``shared``)."""
        located = parse_store(self.store_url) if self.store_url else None
        return located if isinstance(located, Path) else self.root

    @property
    def traces(self) -> Path:
        return self.data_root / "traces"

    @property
    def results(self) -> Path:
        """Prefect result storage: ``data/<cache key>`` holds a result, ``keys/<cache key>`` its metadata."""
        return self.data_root / "results"

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
