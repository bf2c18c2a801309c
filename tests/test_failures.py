"""Failures are trace rows and clear errors; nothing recorded is lost, rewritten or silently recomputed."""

from __future__ import annotations

import copy

import pytest


@pytest.fixture
def original(recorded_workspace, recorded_run):
    """A completed run in this test's own home: a copy of the one recorded per worker (tests/conftest.py)."""
    report = copy.deepcopy(recorded_run.report)
    assert report["status"] == "completed"
    return report


def _result_file(workspace, report, step):
    return workspace.home.result_data / report["steps"][step - 1]["cache_key"]


@pytest.mark.parametrize("damage", ["corrupt", "delete"])
def test_a_damaged_cached_result_fails_the_replay_naming_the_step(workspace, original, damage):
    path = _result_file(workspace, original, 4)
    if damage == "corrupt":
        path.write_bytes(path.read_bytes()[:-8] + b"tampered")
    else:
        path.unlink()
    results_before = workspace.snapshot("results")
    result = workspace.rlam("replay", original["run_id"], "--json")
    assert result.code != 0
    replay = result.json
    assert replay["identical"] is False and replay["executed"] == 0
    failed = [s for s in replay["steps"] if s["status"] == "failed"]
    assert [s["step"] for s in failed] == [4]
    assert failed[0]["error_type"] == "StoredResultError"
    assert "step 4 train_model" in failed[0]["error_message"]
    assert workspace.snapshot("results") == results_before  # the damaged file was not rewritten
    # A fresh run of the same work hits the same key: it must refuse too, not recompute silently.
    rerun = workspace.rlam("run", "--planner", "fixed", "--json")
    assert rerun.code != 0 and rerun.json["steps"][3]["error_type"] == "StoredResultError"
    assert workspace.snapshot("results") == results_before


def test_an_action_failure_is_a_recorded_row_not_a_retry(workspace):
    # every breast-cancer feature has variance below 1e9, so preprocessing has nothing left to use
    result = workspace.rlam("run", "--planner", "fixed", "--set", "analyze_data.variance_threshold=1e9", "--json")
    assert result.code == 1
    report = result.json
    assert report["status"] == "failed"
    assert [s["status"] for s in report["steps"]] == ["executed", "executed", "failed"]
    failed = report["steps"][2]
    assert failed["error_type"] == "ValueError" and "every feature is flagged" in failed["error_message"]
    assert failed["prefect_task_run_id"]
    shown = workspace.rlam_json("show", report["run_id"])
    assert shown["status"] == "failed" and shown["steps"][2]["status"] == "failed"
    # the replay reproduces the failure from the trace without executing anything
    replay = workspace.rlam_json("replay", report["run_id"])
    assert replay["identical"] is True and replay["executed"] == 0
    assert replay["steps"][2]["status"] == "failed"


def test_an_unindexed_result_file_is_quarantined_not_served(workspace, original):
    """A crash between Prefect's write and our index leaves a file nothing vouches for."""
    fork = workspace.rlam_json("fork", original["run_id"], "--step", "4", "--set", "train_model.C=0.5")
    key = fork["steps"][3]["cache_key"]
    index = workspace.home.traces / "results" / key[:2] / f"{key}.parquet"
    index.unlink()  # simulate the crash: result stored, never indexed
    again = workspace.rlam_json("fork", original["run_id"], "--step", "4", "--set", "train_model.C=0.5")
    assert again["steps"][3]["status"] == "executed"
    quarantined = list(workspace.home.quarantine.glob(f"{key}-*/*"))
    assert sorted(p.name for p in quarantined) == ["data", "keys"]


BAD_INPUTS = [
    (["replay", "nosuchrun"], "unknown run"),
    (["fork", "{run}", "--step", "9"], "out of range"),
    (["fork", "{run}", "--step", "0"], "out of range"),
    (["fork", "{run}"], "--step"),
    (["fork", "{run}", "--step", "2", "--set", "nosuch.C=1"], "unknown action"),
    (["fork", "{run}", "--step", "2", "--set", "train_model.gamma=1"], "unknown parameter"),
    (["fork", "{run}", "--step", "2", "--set", "train_model.C=-1"], "greater than 0"),
    (["fork", "{run}", "--step", "2", "--set", "train_model.C=abc"], "C:"),
    (["fork", "{run}", "--step", "2", "--set", "train_modelC=1"], "ACTION.PARAM=VALUE"),
    (["fork", "{run}", "--step", "5", "--set", "train_model.C=2"], "does not run at or after"),
    (["run", "--set", "load_dataset.name=mnist"], "name:"),
    (["run", "--pipeline", "nope"], "invalid choice"),
    (["replay", "{run}", "--set", "x.y=1"], "unrecognized arguments"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_non_zero_and_writes_nothing(workspace, original, argv, message):
    before = workspace.snapshot()
    result = workspace.rlam(*[a.replace("{run}", original["run_id"]) for a in argv])
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlam: error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert workspace.snapshot() == before


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_trace_file_is_one_line_exit_3_and_left_alone(workspace, original, damage):
    path = sorted((workspace.home.traces / "steps" / original["run_id"]).glob("*.parquet"))[2]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 10)
    before = workspace.snapshot()
    for argv in (("show", original["run_id"]), ("replay", original["run_id"]), ("fork", original["run_id"], "--step", "2")):
        result = workspace.rlam(*argv)
        assert result.code == 3, (argv, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and "cannot be read" in lines[0], result.stderr
    assert workspace.snapshot() == before


def test_bad_flow_parameters_fail_the_flow_run_before_any_work(workspace, original):
    """What a mistyped fork in the Prefect UI form gets: a failed flow run with the reason, nothing written."""
    import asyncio

    from rlam_prefect.prefect.flow import rlam_flow

    before = workspace.snapshot()
    cases = [
        ({"fork_step": 2}, "fork_step needs fork_of"),
        ({"fork_of": original["run_id"], "fork_step": 99}, "out of range"),
        ({"fork_of": "nosuchrun", "fork_step": 1}, "unknown run"),
        ({"fork_of": original["run_id"], "fork_step": 2, "overrides": {"train_model": {"C": -1}}}, "greater than 0"),
        ({"replay_of": original["run_id"], "overrides": {"train_model": {"C": 2}}}, "a replay takes no overrides"),
    ]
    for params, message in cases:
        state = asyncio.run(rlam_flow(**params, return_state=True))
        assert state.is_failed(), params
        assert message in str(state.result(raise_on_failure=False)), (params, state.message)
    assert workspace.snapshot() == before


def test_a_result_replaced_while_it_is_read_is_a_named_step_failure(tmp_path, monkeypatch):
    """s3fs raises FileExpired (an OSError) when another writer replaces an object under a read: that is
    a StoredResultError naming the step, which the run records as a failed row (not a crash of the run)."""
    import io

    from rlam_prefect.core.errors import StoredResultError
    from rlam_prefect.core.home import HomeLayout
    from rlam_prefect.record.results import ResultGuard

    monkeypatch.delenv("RLAM_STORE_URL", raising=False)
    guard = ResultGuard(HomeLayout(tmp_path / "home"))
    path = guard.data_path("k" * 64)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * (1 << 20))

    class Replaced(io.BytesIO):
        def read(self, *args):
            raise OSError(16, "The remote file corresponding to filename was modified")

    monkeypatch.setattr(guard.io, "open_read", lambda p: Replaced())
    with pytest.raises(StoredResultError, match=r"^step 3 draw: its stored result .* could not be read \(OSError: .*modified\); another worker"):
        guard.file_digest("k" * 64, "step 3 draw")


def test_an_unexpected_error_in_a_step_is_its_failed_row_and_fails_the_run(workspace, monkeypatch):
    """Not an RLamError (a bug, a broken machine): the step is still a trace row, and the run fails naming it."""
    import rlam_prefect as rlam
    from rlam_prefect.record.store import TraceStore

    def broken(self, record):
        raise RuntimeError("index write exploded")

    monkeypatch.setattr(TraceStore, "put_result_record", broken)
    result = rlam.run(planner="fixed", home=workspace.home.root)  # a failed run is an outcome, not an exception
    assert result.status == "failed" and result.error_message == "RuntimeError: index write exploded"
    store = TraceStore(workspace.home)
    [run] = store.runs()
    assert run["status"] == "failed" and "RuntimeError: index write exploded" in run["error_message"]
    [step] = store.steps(run["run_id"])  # the first step's result could not be indexed; nothing ran after it
    assert (step["step"], step["action"], step["status"], step["error_type"], step["error_message"]) == (1, "load_dataset", "failed", "RuntimeError", "index write exploded")
