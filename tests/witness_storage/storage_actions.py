"""Test-only actions for tests/test_shared_storage.py: every body appends one line to a witness file.

The witness is the file named by RLAM_TEST_WITNESS, written by the action body itself, outside the
library: a line per real execution (``action<TAB>params<TAB>pid``), never written when a step is
served from the cache. ``RLAM_TEST_BARRIER=N`` makes a body wait (up to 240 s: a loaded machine may start the other worker
late, and a barrier that gave up would let it find the key indexed) until N bodies with the same
action and params have started, so two workers are made to compute one key at the same time.
``RLAM_TEST_SCALE_SLEEP`` slows ``scale`` without changing its key. ``draw`` is nondeterministic on purpose: two computations of its key differ.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from rlam_prefect import action


@dataclass(frozen=True)
class Numbers:
    values: tuple[float, ...]


@dataclass(frozen=True)
class Scaled:
    values: tuple[float, ...]


@dataclass(frozen=True)
class Total:
    value: float


class MakeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(5, ge=1, le=1000)


class ScaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: float = 2.0


class DrawParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(3, ge=1, le=100)


class TotalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _witness(name: str, params: BaseModel) -> None:
    path = os.environ.get("RLAM_TEST_WITNESS")
    if not path:
        return
    line = f"{name}\t{json.dumps(params.model_dump(), sort_keys=True)}\t{os.getpid()}\n"
    with open(path, "a") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    wanted = int(os.environ.get("RLAM_TEST_BARRIER") or 0)
    deadline = time.monotonic() + 240
    while wanted and time.monotonic() < deadline:
        with open(path) as handle:
            if sum(entry.split("\t")[:2] == line.split("\t")[:2] for entry in handle) >= wanted:
                return
        time.sleep(0.05)


@action
def make_numbers(params: MakeParams) -> Numbers:
    """The numbers 0..n-1."""
    _witness("make_numbers", params)
    return Numbers(tuple(float(i) for i in range(params.n)))


@action
def scale(numbers: Numbers, params: ScaleParams) -> Scaled:
    """Each number times a factor; RLAM_TEST_SCALE_SLEEP seconds long (a step to kill mid-way, same key)."""
    _witness("scale", params)
    time.sleep(float(os.environ.get("RLAM_TEST_SCALE_SLEEP") or 0))
    return Scaled(tuple(v * params.factor for v in numbers.values))


@action
def draw(numbers: Numbers, params: DrawParams) -> Scaled:
    """Nondeterministic on purpose: random numbers, different at every execution."""
    _witness("draw", params)
    return Scaled(tuple(random.random() for _ in range(params.n)))


@action
def total(scaled: Scaled, params: TotalParams) -> Total:
    """The sum."""
    _witness("total", params)
    return Total(sum(scaled.values))
