"""Test-only actions for tests/test_failure_paths.py: a three-step pipeline whose middle step can wait on a file.

``RLAM_TEST_BARRIER=PATH``: ``hold`` creates ``PATH.reached`` and then waits until ``PATH`` exists, so a
test can do something (kill the Prefect server) while a step is in flight. ``RLAM_TEST_EXECUTIONS=PATH``:
every action body appends its name to PATH, a witness of executions kept outside rlam_prefect.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

import rlam_prefect as rlam


@dataclass(frozen=True)
class Count:
    value: int

    def summary(self) -> dict[str, Any]:
        return {"value": self.value}


class StartParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: int = 1


def _executed(name: str) -> None:
    witness = os.environ.get("RLAM_TEST_EXECUTIONS")
    if witness:
        with open(witness, "a") as handle:
            handle.write(f"{name}\n")


@rlam.action(produces="a count exists")
def begin(params: StartParams) -> Count:
    """The first step: a count."""
    _executed("begin")
    return Count(params.start)


@rlam.action(requires={"count": "a count exists"}, produces="the count passed the barrier")
def hold(count: Count) -> Count:
    """The middle step: waits on the barrier file when one is set."""
    _executed("hold")
    gate = os.environ.get("RLAM_TEST_BARRIER")
    if gate:
        Path(f"{gate}.reached").touch()
        deadline = time.monotonic() + 120
        while not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return Count(count.value + 1)


@rlam.action(requires={"count": "the count passed the barrier"}, produces="a total exists")
def finish(count: Count) -> Count:
    """The last step."""
    _executed("finish")
    return Count(count.value * 10)
