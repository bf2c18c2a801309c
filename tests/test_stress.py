"""Code versions and content hashes under many threads at once: 0 errors, identical results.

CPython 3.11's AST constructor can raise ``SystemError: AST constructor recursion depth mismatch``
when threads parse at once (python/cpython#106905); rlam parses source only in
``core/code_version.py``, under one lock, memoised per function. Here 12 threads recompute every
seed action's code version (every 5th time with the memo cleared, so it really parses), hash
artifacts (arrays, frames, a fitted model) and data files (the stat cache cleared, so bytes are read
again), while 2 more threads call ``ast.parse`` on their own, unlocked, as other code in a user's
process may. ``RLAM_STRESS_ITERATIONS`` (per thread, default 60) makes it a soak.
"""

from __future__ import annotations

import ast
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlam_prefect.actions.registry import default_registry
from rlam_prefect.core import code_version as cv
from rlam_prefect.core.files import clear_stat_cache, file_digest
from rlam_prefect.core.hashing import content_hash

WORKERS = 12
PARSERS = 2
ITERATIONS = int(os.environ.get("RLAM_STRESS_ITERATIONS") or 60)
DATA = Path(__file__).parent / "data"


def _artifacts() -> dict[str, Any]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    return {
        "array": np.arange(10_000, dtype=np.float64).reshape(100, 100),
        "fortran": np.asfortranarray(np.arange(600.0).reshape(20, 30)),
        "frame": pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(label=y),
        "model": LogisticRegression(max_iter=500).fit(X, y),
        "nested": {"params": {"C": 0.5, "penalty": "l2"}, "values": [1, 2.5, "x", None, (3, 4)]},
    }


def _versions(reparse: str | None = None) -> dict[str, str]:
    """Every seed action's code version; ``reparse``: that action's memo is cleared first, so it is parsed again."""
    specs = default_registry().all()
    if reparse is not None:
        cv._code_version.cache_clear()  # the memo is one cache: the others are parsed again too, on demand
        specs[reparse].code_version  # noqa: B018
    return {name: spec.code_version for name, spec in specs.items()}


def _files() -> list[Path]:
    return sorted(p for p in DATA.rglob("*") if p.is_file())


def test_threads_compute_code_versions_and_hashes_identically_while_others_parse() -> None:
    import tasks  # noqa: F401  (registers the seed's actions)

    artifacts, files = _artifacts(), _files()
    assert files and len(default_registry().all()) >= 5
    expected = {"versions": _versions(), "hashes": {k: content_hash(v) for k, v in artifacts.items()}, "files": {str(p): file_digest(p).digest for p in files}}
    sources = [p.read_text() for p in sorted((Path(cv.__file__).parents[1] / "record").glob("*.py"))]
    errors: list[str] = []
    mismatches: list[str] = []
    done = Counter[str]()
    lock = threading.Lock()
    start = threading.Barrier(WORKERS + PARSERS)
    working = threading.Event()

    def worker(index: int) -> None:
        start.wait()
        for i in range(ITERATIONS):
            kind = ("versions", "hashes", "files")[(index + i) % 3]
            try:
                if kind == "versions":  # every 5th time parsed again, else the memo under the lock
                    names = sorted(expected["versions"])
                    got = _versions(names[i % len(names)] if i % 5 == 0 else None)
                elif kind == "hashes":
                    got = {k: content_hash(v) for k, v in artifacts.items()}
                else:
                    clear_stat_cache()
                    got = {str(p): file_digest(p).digest for p in files}
            except Exception as exc:  # counted and shown: the assertion below fails on any
                with lock:
                    errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                continue
            with lock:
                done[kind] += 1
                if got != expected[kind]:
                    mismatches.append(kind)

    class Finalised:  # cyclic garbage with a finaliser: a collection then runs Python code, as in a real process
        def __init__(self) -> None:
            self.cycle = self

        def __del__(self) -> None:
            pass

    def parser() -> None:
        start.wait()
        while not working.is_set():
            _garbage = [Finalised() for _ in range(200)]
            for source in sources:
                try:
                    ast.parse(source)
                    with lock:
                        done["foreign ast.parse"] += 1
                except SystemError as exc:  # the interpreter's own hazard, outside rlam: counted, reported
                    with lock:
                        done[f"foreign SystemError: {exc}"] += 1
                time.sleep(0.001)  # a parse holds the GIL throughout: leave the workers room to run

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    parsers = [threading.Thread(target=parser) for _ in range(PARSERS)]
    for t in threads + parsers:
        t.start()
    for t in threads:
        t.join()
    working.set()
    for t in parsers:
        t.join()
    print(f"\nstress: {dict(done)}")
    assert errors == [], errors[:5]
    assert mismatches == []
    assert sum(done[k] for k in ("versions", "hashes", "files")) == WORKERS * ITERATIONS
