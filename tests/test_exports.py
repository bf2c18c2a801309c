"""`rlam export`: W3C PROV, RO-Crate (Workflow Run Crate) and OpenLineage, each read back by its own library."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from openlineage.client.event_v2 import RunState
from prov.model import PROV_TYPE, ProvActivity, ProvAgent, ProvDocument, ProvEntity, ProvGeneration
from rocrate.rocrate import ROCrate

from rlam_prefect.record.exports.to_openlineage import read_events, run_uuid
from tests.conftest import Workspace


@pytest.fixture(scope="module")
def recorded(prefect_api_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A failed run (step 4 fails) and a planner-driven fork of it from step 4 (steps 1-3 cached)."""
    from rlam_prefect.core.home import HomeLayout

    space = Workspace(HomeLayout(tmp_path_factory.mktemp("exports") / "rlam-home"))
    failed = space.rlam_json("run", "--planner", "fixed", "--inject-failure", "train_model")
    assert failed["status"] == "failed"
    fork = space.rlam_json("fork", failed["run_id"], "--step", "4", "--planner", "rlam/heuristic", "--set", "train_model.C=0.5")
    assert fork["status"] == "completed" and fork["cached"] == 3
    return {"space": space, "failed": failed, "fork": fork, "out": tmp_path_factory.mktemp("exported")}


def _export(recorded: dict[str, Any], run: str, fmt: str, name: str) -> Path:
    out = recorded["out"] / name
    result = recorded["space"].rlam("export", recorded[run]["run_id"], "--format", fmt, "--out", str(out), "--json")
    assert result.code == 0, result.stderr
    assert Path(result.json["path"]) == out
    return out


def _ref(value: Any) -> str:
    """An RO-Crate reference as read back: an entity, a {"@id": ...} or the id itself."""
    if isinstance(value, str):
        return value
    return value.id if hasattr(value, "id") else value["@id"]


def _attr(record: Any, name: str) -> Any:
    values = [v for k, v in record.attributes if k.localpart == name]
    return values[0] if values else None


def test_prov_export_reads_back_with_hashes_failures_and_cache_origins(recorded: dict[str, Any]) -> None:
    fork, failed = recorded["fork"], recorded["failed"]
    doc = ProvDocument.deserialize(source=str(_export(recorded, "fork", "prov", "fork.prov.json")), format="json")
    activities = {str(a.identifier): a for a in doc.get_records(ProvActivity)}
    entities = {str(e.identifier): e for e in doc.get_records(ProvEntity)}
    agents = {str(a.identifier) for a in doc.get_records(ProvAgent)}
    assert {"agent:rlam-prefect", "agent:planner-rlam-heuristic"} <= agents
    for step in fork["steps"]:
        activity = activities[f"step:{fork['run_id']}-{step['step']}"]
        assert _attr(activity, "status") == step["status"] and _attr(activity, "action") == step["action"]
        entity = entities[f"artifact:{step['output_hash'].replace(':', '-')}"]
        assert _attr(entity, "content_hash") == step["output_hash"]
    generated_by = {str(g.get_attribute("prov:entity").pop()): str(g.get_attribute("prov:activity").pop()) for g in doc.get_records(ProvGeneration)}
    # a cached output names the execution in the parent run that computed it; an executed one, its own step
    first = fork["steps"][0]
    assert generated_by[f"artifact:{first['output_hash'].replace(':', '-')}"] == f"step:{failed['run_id']}-1"
    fourth = fork["steps"][3]
    assert generated_by[f"artifact:{fourth['output_hash'].replace(':', '-')}"] == f"step:{fork['run_id']}-4"
    planned = [e for e in doc.get_records(ProvEntity) if str(e.get_attribute(PROV_TYPE).pop()) == "prov:Plan"]
    assert len(planned) == len(fork["steps"]) - 3  # one planner decision per step decided after the fork point

    failed_doc = ProvDocument.deserialize(source=str(_export(recorded, "failed", "prov", "failed.prov.json")), format="json")
    step4 = {str(a.identifier): a for a in failed_doc.get_records(ProvActivity)}[f"step:{failed['run_id']}-4"]
    assert _attr(step4, "status") == "failed" and "InjectedFailure" in _attr(step4, "error")


def test_ro_crate_follows_workflow_run_crate_and_marks_failures(recorded: dict[str, Any]) -> None:
    failed = recorded["failed"]
    crate = ROCrate(str(_export(recorded, "failed", "ro-crate", "failed-crate")))
    profiles = {entity.id for entity in crate.root_dataset["conformsTo"]}
    assert {f"https://w3id.org/ro/wfrun/{p}/0.5" for p in ("process", "workflow", "provenance")} <= profiles
    assert crate.mainEntity.id == "flows/rlam_flow.py"
    actions = {a.id: a for a in crate.get_by_type("CreateAction")}
    run_action = actions[f"#run-{failed['run_id']}"]
    assert run_action["instrument"].id == crate.mainEntity.id and _ref(run_action["actionStatus"]).endswith("FailedActionStatus")
    steps = [actions[f"#step-{s['step']}"] for s in failed["steps"]]
    assert [a["instrument"]["name"] for a in steps] == [s["action"] for s in failed["steps"]]
    assert all(_ref(a["actionStatus"]).endswith("CompletedActionStatus") for a in steps[:3])
    assert _ref(steps[3]["actionStatus"]).endswith("FailedActionStatus") and "InjectedFailure" in steps[3]["error"]
    outputs = [a["result"][0]["value"] if isinstance(a["result"], list) else a["result"]["value"] for a in steps[:3]]
    assert outputs == [s["output_hash"] for s in failed["steps"][:3]]
    assert len(crate.get_by_type("ControlAction")) == len(failed["steps"]) == len(crate.get_by_type("HowToStep"))
    rows = pq.read_table(Path(crate.source) / "trace" / "steps.parquet").to_pylist()
    assert [(r["step"], r["status"], r["output_hash"]) for r in rows] == [(s["step"], s["status"], s["output_hash"]) for s in failed["steps"]]


def test_ro_crate_zip(recorded: dict[str, Any]) -> None:
    crate = ROCrate(str(_export(recorded, "fork", "ro-crate", "fork-crate.zip")))
    assert len(crate.get_by_type("CreateAction")) >= len(recorded["fork"]["steps"]) + 1


def test_openlineage_events_per_step_read_back(recorded: dict[str, Any]) -> None:
    failed = recorded["failed"]
    path = _export(recorded, "failed", "openlineage", "failed.openlineage.jsonl")
    events = read_events(path)
    assert len(events) == 2 + 2 * len(failed["steps"])
    assert (events[0].eventType, events[0].job.name) == (RunState.START, "rlam")
    assert (events[-1].eventType, events[-1].run.runId) == (RunState.FAIL, run_uuid("run", failed["run_id"]))
    terminal = [e for e in events[1:-1] if e.eventType != RunState.START]
    assert [e.job.name for e in terminal] == [f"rlam.{s['action']}" for s in failed["steps"]]
    assert [e.eventType for e in terminal] == [RunState.COMPLETE] * 3 + [RunState.FAIL]
    assert "InjectedFailure" in terminal[3].run.facets["errorMessage"].message
    assert [e.outputs[0].name for e in terminal[:3]] == [s["output_hash"] for s in failed["steps"][:3]]
    assert terminal[2].inputs and {d.name for d in terminal[2].inputs} <= {s["output_hash"] for s in failed["steps"][:2]}
    assert all(e.run.facets["parent"].run.runId == events[0].run.runId for e in terminal)
    assert terminal[0].run.facets["rlam_step"].cacheKey == failed["steps"][0]["cache_key"]
    # deterministic: exporting again gives the same bytes
    again = _export(recorded, "failed", "openlineage", "again.openlineage.jsonl")
    assert again.read_bytes() == path.read_bytes()


def test_export_bad_input_is_one_line_and_writes_nothing(recorded: dict[str, Any]) -> None:
    space, out = recorded["space"], recorded["out"]
    run_id = recorded["failed"]["run_id"]
    existing = out / "taken.json"
    existing.write_text("{}")
    before = sorted(p.name for p in out.iterdir())
    for args in (
        ("export", run_id, "--format", "prov", "--out", str(existing)),
        ("export", "nosuchrun", "--format", "prov", "--out", str(out / "x.json")),
        ("export", run_id, "--format", "rdf"),
        ("export", run_id, "--format", "openlineage", "--out", str(out / "missing-dir" / "x.jsonl")),
    ):
        result = space.rlam(*args)
        assert result.code == 2, (args, result.stderr)
        assert result.stderr.startswith("rlam") and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == before
    assert json.loads(existing.read_text()) == {}
