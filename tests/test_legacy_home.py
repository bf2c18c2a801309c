"""A home written by rlam-prefect 0.1.0 (tests/fixtures/home-0.1.0) stays readable and re-derivable.

Its runs list, show, verify (every stored result re-hashed and unpickled), lineage, diff and
export with today's code. A replay fails loudly and names why: 0.1.0's code versions also hashed
rlam-prefect's own source, so no 0.1.0 key can be proven current. A fork from step 1 re-derives the
run under today's code (--pin-decisions: the recorded plan and parameters) and reproduces every recorded output hash. Nothing in the copy is rewritten.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import rlam_prefect as rlam

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "home-0.1.0"
RUN, REPLAY, FORK, FAILED = "7acfaff0184b", "f4c4e6d10dbc", "b2b12973ff66", "c9fa9cfdf785"


@pytest.fixture
def legacy(workspace):
    shutil.copytree(FIXTURE / "traces", workspace.home.root / "traces")
    shutil.copytree(FIXTURE / "results", workspace.home.root / "results")
    return workspace


def test_a_0_1_0_home_reads_verifies_and_exports(legacy, tmp_path):
    home = rlam.open_home(legacy.home.root)
    runs = {r.run_id: r for r in home.runs()}
    assert {RUN, REPLAY, FORK, FAILED} <= set(runs)
    assert (runs[REPLAY].mode, runs[FORK].mode, runs[FAILED].status) == ("replay", "fork", "failed")
    run = home.run(RUN)
    assert run.ok and run.executed == 5 and len({s.output_hash for s in run.steps}) == 5
    assert home.run(REPLAY).identical is True
    for run_id in (RUN, FORK):
        verified = rlam.verify(run_id, home=home)
        assert verified.intact and verified.checked == 5, verified.as_dict()
    assert [s["step"] for s in home.lineage(FORK)["steps"]] == [1, 2, 3, 4, 5]
    assert rlam.diff(RUN, REPLAY, home=home).identical
    assert rlam.export(FORK, "prov", tmp_path / "fork.prov.json", home=home).exists()
    shown = legacy.rlam("show", RUN)
    assert shown.code == 0 and "completed" in shown.stdout


def test_a_0_1_0_run_is_re_derived_by_a_fork_not_replayed_unverified(legacy, monkeypatch):
    # The fixture was recorded where OpenBLAS ran its Haswell kernels. On an AVX-512 machine it picks
    # SkylakeX, and the logistic regression's fitted bytes differ in their last bits (train_model's
    # hash 69a93a811e44 instead of 69e16c096396, measured 2026-12-06): same kernels, same outputs.
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    before = legacy.snapshot("traces", "results")
    replay = legacy.rlam("replay", RUN)
    assert replay.code == 1
    assert "recorded by rlam-prefect 0.1.0" in replay.stdout + replay.stderr
    assert "fork it from step 1 with --pin-decisions" in replay.stdout + replay.stderr
    fork = legacy.rlam_json("fork", RUN, "--step", "1", "--pin-decisions")  # the recorded plan and params, re-executed
    recorded = [s["output_hash"] for s in rlam.open_home(legacy.home.root).steps(RUN)]
    assert fork["status"] == "completed" and fork["executed"] == 5
    assert [s["output_hash"] for s in fork["steps"]] == recorded  # the same outputs, now under today's keys
    after = legacy.snapshot("traces", "results")
    assert all(after[path] == digest for path, digest in before.items())  # nothing recorded was rewritten
    again = legacy.rlam_json("replay", fork["run_id"])
    assert again["identical"] and again["executed"] == 0
