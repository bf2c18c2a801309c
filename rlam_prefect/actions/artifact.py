"""What an action task returns: the value plus the content hash it was produced with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, eq=False)
class Artifact:
    kind: str
    value: Any
    content_hash: str

    def __repr__(self) -> str:  # shown in the Prefect UI and logs: keep it short
        return f"Artifact({self.kind}, {self.content_hash[:19]})"

    def summary(self) -> dict[str, Any]:
        describe = getattr(self.value, "summary", None)
        return describe() if callable(describe) else {}
