"""The execution witness itself (tests/witness): it must see executions, or every "0 executed" it backs is empty.

The witness counts action-body calls from outside rlam_prefect (a profile hook loaded by
``sitecustomize`` in every test subprocess). Here it must see all five bodies of a first run, in
order and in the ``rlam`` process that ran them; a blind witness fails this test.
"""

from __future__ import annotations

import os

SEED_ORDER = ["load_dataset", "analyze_data", "preprocess_data", "train_model", "evaluate_model"]


def test_the_witness_sees_each_execution_of_a_first_run_and_none_of_a_cached_run(workspace, witness):
    first = workspace.rlam_json("run", "--planner", "fixed")
    assert first["executed"] == 5
    records = witness.records()
    assert [name for _, name in records] == SEED_ORDER  # N = 5 > 0: the witness is not blind
    pids = {pid for pid, _ in records}
    assert len(pids) == 1 and os.getpid() not in pids  # the rlam subprocess ran them, not pytest
    seen = witness.mark()
    again = workspace.rlam_json("run", "--planner", "fixed")  # the same content: every step from the cache
    assert again["cached"] == 5 and witness.calls(since=seen) == []
    changed = workspace.rlam_json("run", "--planner", "fixed", "--set", "evaluate_model.f1_average=micro")
    assert changed["executed"] == 1 and witness.calls(since=seen) == ["evaluate_model"]
