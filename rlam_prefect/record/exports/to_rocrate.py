"""An RO-Crate of one run following the Workflow Run Crate profiles, built with ``rocrate``.

Conforms to the Process, Workflow and Provenance Run Crate profiles (0.5): the R-LAM flow is the
main workflow; the run is a CreateAction of it; every step is a CreateAction of its action (a
SoftwareApplication whose version is the action's code version), with the input artifacts and
parameters as objects and the output artifact as result, CompletedActionStatus or
FailedActionStatus with its error. ControlActions tie each step to its HowToStep and an
OrganizeAction names the engine. The run's own trace rows travel inside the crate as Parquet, so
the crate is a self-contained record a reviewer can query.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rocrate.model.computerlanguage import ComputerLanguage
from rocrate.model.contextentity import ContextEntity
from rocrate.rocrate import ROCrate

from rlam_prefect.record.exports.record import RunRecord, StepRecord, iso
from rlam_prefect.record.schema import TABLES

PROFILES = ("process", "workflow", "provenance")
PROFILE_VERSION = "0.5"
COMPLETED = {"@id": "http://schema.org/CompletedActionStatus"}
FAILED = {"@id": "http://schema.org/FailedActionStatus"}


def write_crate(record: RunRecord, out: Path) -> Path:
    """Write the crate to ``out`` (a directory, or a ``.zip`` file)."""
    with tempfile.TemporaryDirectory(prefix="rlam-crate-") as scratch:
        crate = _build(record, Path(scratch))
        if out.suffix == ".zip":
            crate.write_zip(out)
        else:
            crate.write(out)
    return out


def _build(record: RunRecord, scratch: Path) -> ROCrate:
    run = record.run
    crate = ROCrate()
    crate.name = f"R-LAM {run['mode']} {record.run_id}"
    crate.description = f"An LLM-planned workflow run recorded by rlam-prefect: {len(record.steps)} steps, status {run['status']}."
    crate.root_dataset["datePublished"] = iso(dt.datetime.now(dt.UTC))
    crate.root_dataset["license"] = "MIT"
    for profile in PROFILES:
        entity = crate.add(ContextEntity(crate, f"https://w3id.org/ro/wfrun/{profile}/{PROFILE_VERSION}", properties={"@type": "CreativeWork", "name": f"{profile.title()} Run Crate", "version": PROFILE_VERSION}))
        crate.root_dataset.append_to("conformsTo", entity)

    prefect = crate.add(ComputerLanguage(crate, "#prefect", properties={"name": "Prefect", "url": {"@id": "https://www.prefect.io/"}, "version": record.runtime_version("prefect")}))
    workflow = crate.add_workflow(_flow_source(), "flows/rlam_flow.py", main=True, lang=prefect, properties={"name": "rlam flow", "description": "Ask the planner for the next typed action, execute it through the R-LAM layer, repeat."})
    engine = crate.add(ContextEntity(crate, "#rlam-prefect", properties={"@type": "SoftwareApplication", "name": "rlam-prefect", "version": str(run.get("rlam_version") or "")}))
    agent = None
    if run.get("planner") and run["planner"] != "fixed":
        agent = crate.add(ContextEntity(crate, "#planner", properties={"@type": "SoftwareApplication", "name": f"planner {run['planner']}", "description": run.get("planner_options") or "{}"}))

    tools: dict[tuple[str, str], Any] = {}
    artifacts: dict[str, Any] = {}
    controls, step_actions = [], []
    for step in record.steps:
        tool = _tool(crate, tools, step, workflow)
        howto = crate.add(ContextEntity(crate, f"#howto-{step.number}", properties={"@type": "HowToStep", "position": str(step.number), "name": f"{step.action} #{step.number}", "workExample": {"@id": tool.id}}))
        workflow.append_to("step", howto)
        action = _step_action(crate, record, step, tool, artifacts)
        if agent is not None and step.decision is not None:
            action["agent"] = agent
        step_actions.append(action)
        controls.append(crate.add(ContextEntity(crate, f"#control-{step.number}", properties={"@type": "ControlAction", "name": f"orchestrate {step.action} #{step.number}", "instrument": {"@id": howto.id}, "object": {"@id": action.id}})))

    trace_files = [_trace_file(crate, record, scratch, table) for table in TABLES if table != "results"]
    run_objects = [_value(crate, f"#param-{name}", name, value) for name, value in _run_parameters(record).items()]
    results = [artifacts[h] for h in _final_outputs(record) if h in artifacts] + trace_files
    run_action = crate.add_action(
        workflow,
        identifier=f"#run-{record.run_id}",
        object=run_objects,
        result=results,
        properties={
            "@type": "CreateAction",
            "name": f"{run['mode']} {record.run_id}",
            "startTime": iso(run["started_at"]),
            "endTime": iso(record.ended) if record.ended else None,
            "actionStatus": COMPLETED if run["status"] == "completed" else FAILED,
            "description": f"metrics: {run.get('metrics') or '{}'}",
            **({"error": run["error_message"]} if run.get("error_message") else {}),
            **({"isBasedOn": {"@id": f"#run-{run['parent_run_id']}"}} if run.get("parent_run_id") else {}),
        },
    )
    if run.get("parent_run_id"):
        crate.add(ContextEntity(crate, f"#run-{run['parent_run_id']}", properties={"@type": "CreateAction", "name": f"parent run {run['parent_run_id']}", "instrument": {"@id": workflow.id}}))
    crate.root_dataset.append_to("mentions", run_action)
    crate.add(ContextEntity(crate, "#organize", properties={"@type": "OrganizeAction", "name": "rlam-prefect engine orchestration", "instrument": {"@id": engine.id}, "object": [{"@id": c.id} for c in controls], "result": {"@id": run_action.id}}))
    return crate


def _tool(crate: ROCrate, tools: dict[tuple[str, str], Any], step: StepRecord, workflow: Any) -> Any:
    version = str(step.row.get("code_version") or "unknown")
    key = (step.action, version)
    if key not in tools:
        ident = f"#action-{step.action}-{version.split(':')[-1][:12]}"
        tools[key] = crate.add(ContextEntity(crate, ident, properties={"@type": "SoftwareApplication", "name": step.action, "softwareVersion": version}))
        workflow.append_to("hasPart", tools[key])
    return tools[key]


def _step_action(crate: ROCrate, record: RunRecord, step: StepRecord, tool: Any, artifacts: dict[str, Any]) -> Any:
    row = step.row
    objects = [_artifact(crate, artifacts, digest, None) for digest in step.inputs.values()]
    objects += [_value(crate, f"#step-{step.number}-param-{name}", name, value) for name, value in step.params.items()]
    result = [_artifact(crate, artifacts, row["output_hash"], row)] if row.get("output_hash") else []
    served = "served from the verified cache" if step.status == "cached" else step.status
    properties: dict[str, Any] = {
        "@type": "CreateAction",
        "name": f"{step.action} #{step.number} ({served})",
        "startTime": iso(step.started),
        "endTime": iso(step.ended),
        "actionStatus": FAILED if step.status in ("failed", "rejected") else COMPLETED,
        "description": f"status {step.status}; cache key {row.get('cache_key') or '-'}; environment {row.get('env_hash') or '-'}",
    }
    if step.error:
        properties["error"] = step.error
    if row.get("prefect_task_run_id"):
        properties["identifier"] = f"prefect-task-run:{row['prefect_task_run_id']}"
    return crate.add_action(tool, identifier=f"#step-{step.number}", object=objects, result=result, properties=properties)


def _artifact(crate: ROCrate, artifacts: dict[str, Any], digest: str, row: dict[str, Any] | None) -> Any:
    entity = artifacts.get(digest)
    if entity is None:
        properties = {"@type": "PropertyValue", "name": "artifact", "value": digest, "propertyID": "sha256 content hash"}
        entity = artifacts[digest] = crate.add(ContextEntity(crate, f"#artifact-{digest.split(':')[-1][:16]}", properties=properties))
    if row is not None:
        entity["name"] = str(row.get("output_kind") or "artifact")
        if row.get("summary"):
            entity["description"] = row["summary"]
    return entity


def _value(crate: ROCrate, ident: str, name: str, value: Any) -> Any:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return crate.add(ContextEntity(crate, ident, properties={"@type": "PropertyValue", "name": name, "value": text}))


def _trace_file(crate: ROCrate, record: RunRecord, scratch: Path, table: str) -> Any:
    rows = {"runs": record.run_events, "steps": [s.row for s in record.steps], "decisions": record.decisions}[table]
    path = scratch / f"{table}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=TABLES[table]), path)
    return crate.add_file(path, f"trace/{table}.parquet", properties={"name": f"{table} trace rows of run {record.run_id}", "encodingFormat": "application/vnd.apache.parquet"})


def _run_parameters(record: RunRecord) -> dict[str, Any]:
    run = record.run
    parameters = {"planner": run.get("planner"), "planner_options": json.loads(run.get("planner_options") or "{}"), "overrides": record.overrides}
    if run.get("parent_run_id"):
        parameters["replay_of" if run["mode"] == "replay" else "fork_of"] = run["parent_run_id"]
    if run.get("fork_step"):
        parameters["fork_step"] = run["fork_step"]
    return parameters


def _final_outputs(record: RunRecord) -> list[str]:
    latest: dict[str, str] = {}
    for step in record.steps:
        if step.row.get("output_hash"):
            latest[str(step.row.get("output_kind"))] = step.row["output_hash"]
    return list(latest.values())


def _flow_source() -> str:
    spec = importlib.util.find_spec("rlam_prefect.prefect.flow")  # found, not imported: importing it would load Prefect
    if spec is None or spec.origin is None:
        raise FileNotFoundError("flows/rlam_flow.py is not importable from this environment")
    return spec.origin
