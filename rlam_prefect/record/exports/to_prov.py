"""W3C PROV (PROV-JSON) of one run, built with the ``prov`` package.

Artifacts are entities named by their content hash; each step is an activity that used its
input artifacts and generated its output; the run is an activity that started its steps. The
rlam-prefect software and the planner model are agents; each planner decision is the plan
(``prov:Plan``) of the step it chose. A cached step used a result that another activity
generated, and that activity (in this run or an earlier one) is named, so a reviewer can follow
every output back to the execution that computed it. Failed steps are activities with no output
and their error.
"""

from __future__ import annotations

import json
from typing import Any

from prov.model import PROV_LABEL, PROV_TYPE, ProvActivity, ProvDocument, QualifiedNameCandidate

from rlam_prefect.record.exports.record import RunRecord, StepRecord

RLAM_NS = "https://w3id.org/rlam-prefect/terms#"


def build_prov(record: RunRecord) -> ProvDocument:
    doc = ProvDocument()
    doc.add_namespace("rlam", RLAM_NS)
    doc.add_namespace("run", "urn:rlam:run:")
    doc.add_namespace("step", "urn:rlam:step:")
    doc.add_namespace("artifact", "urn:rlam:artifact:")
    doc.add_namespace("decision", "urn:rlam:decision:")
    doc.add_namespace("agent", "urn:rlam:agent:")
    run = record.run
    env = record.environment
    software = doc.agent(
        "agent:rlam-prefect",
        {
            PROV_TYPE: "prov:SoftwareAgent",
            PROV_LABEL: "rlam-prefect",
            "rlam:version": str(run.get("rlam_version") or ""),
            "rlam:python": str(env.get("python") or ""),
            "rlam:packages": json.dumps(env.get("packages") or {}, sort_keys=True),
            "rlam:runtime": json.dumps(env.get("runtime") or {}, sort_keys=True),
            "rlam:env_hash": str(run.get("env_hash") or ""),
        },
    )
    planner = None
    if run.get("planner") and run["planner"] != "fixed":
        planner = doc.agent(
            f"agent:planner-{_local(run['planner'])}",
            {PROV_TYPE: "prov:SoftwareAgent", PROV_LABEL: f"planner {run['planner']}", "rlam:model": run["planner"], "rlam:planner_options": run.get("planner_options") or "{}"},
        )
    run_activity = doc.activity(
        f"run:{record.run_id}",
        run["started_at"],
        record.ended,
        {
            PROV_TYPE: "rlam:Run",
            PROV_LABEL: f"{run['mode']} {record.run_id}",
            "rlam:mode": run["mode"],
            "rlam:status": run["status"],
            "rlam:overrides": run.get("overrides") or "{}",
            "rlam:metrics": run.get("metrics") or "{}",
            "rlam:prefect_flow_run_id": str(run.get("prefect_flow_run_id") or ""),
            "rlam:trace": record.trace_files("steps"),
        },
    )
    doc.wasAssociatedWith(run_activity, software)
    for parent in record.ancestry[:1]:
        parent_activity = doc.activity(f"run:{parent['run_id']}", parent["started_at"], parent.get("ended_at"), {PROV_TYPE: "rlam:Run", "rlam:mode": parent["mode"]})
        doc.wasInformedBy(run_activity, parent_activity, other_attributes={PROV_LABEL: f"{run['mode']} of {parent['run_id']}" + (f" from step {run['fork_step']}" if run.get("fork_step") else "")})
    known: set[str] = set()
    for step in record.steps:
        _add_step(doc, record, step, run_activity, software, planner, known)
    return doc


def _add_step(doc: ProvDocument, record: RunRecord, step: StepRecord, run_activity: ProvActivity, software: Any, planner: Any, known: set[str]) -> None:
    row = step.row
    attributes: dict[QualifiedNameCandidate, Any] = {
        PROV_TYPE: "rlam:Step",
        PROV_LABEL: f"{step.action} #{step.number}",
        "rlam:action": step.action,
        "rlam:step": step.number,
        "rlam:status": step.status,
        "rlam:params": row.get("params") or "{}",
    }
    for column in ("cache_key", "code_version", "env_hash", "prefect_task_run_id", "reason"):
        if row.get(column):
            attributes[f"rlam:{column}"] = str(row[column])
    if step.error:
        attributes["rlam:error"] = step.error
    activity = doc.activity(f"step:{record.run_id}-{step.number}", step.started, step.ended, attributes)
    doc.wasStartedBy(activity, starter=run_activity, time=step.started)
    plan = None
    if step.decision is not None:
        decision = step.decision
        plan = doc.entity(
            f"decision:{record.run_id}-{step.number}",
            {PROV_TYPE: "prov:Plan", "rlam:model": decision["model"], "rlam:prompt_hash": str(decision.get("prompt_hash") or ""), "rlam:reply": str(decision.get("raw_reply") or ""), "rlam:reason": str(decision.get("reason") or "")},
        )
        if planner is not None:
            doc.wasAttributedTo(plan, planner)
    doc.wasAssociatedWith(activity, planner or software, plan)
    if planner is not None:
        doc.wasAssociatedWith(activity, software)
    inputs = []
    for argument, digest in step.inputs.items():
        entity = _artifact(doc, digest, None, known)
        doc.used(activity, entity, other_attributes={"prov:role": f"rlam:{argument}"})
        inputs.append(entity)
    if not row.get("output_hash"):
        return
    output = _artifact(doc, row["output_hash"], row, known)
    if step.computed_elsewhere and step.origin is not None and (step.origin["run_id"], step.origin["step"]) != (record.run_id, step.number):
        origin = step.origin
        producer = doc.activity(f"step:{origin['run_id']}-{origin['step']}", other_attributes={PROV_TYPE: "rlam:Step", "rlam:action": origin["action"], "rlam:cache_key": origin["cache_key"]})
        doc.wasGeneratedBy(output, producer, origin.get("created_at"))
        doc.used(activity, output, other_attributes={"prov:role": "rlam:cached_result"})
    else:
        doc.wasGeneratedBy(output, activity, step.ended)
        for entity in inputs:
            doc.wasDerivedFrom(output, entity, activity)


def _artifact(doc: ProvDocument, digest: str, row: dict[str, Any] | None, known: set[str]) -> Any:
    identifier = f"artifact:{digest.replace(':', '-')}"
    if identifier in known:
        return identifier
    known.add(identifier)
    attributes: dict[QualifiedNameCandidate, Any] = {PROV_TYPE: "rlam:Artifact", "rlam:content_hash": digest}
    if row is not None:
        attributes[PROV_LABEL] = str(row.get("output_kind") or "artifact")
        attributes["rlam:kind"] = str(row.get("output_kind") or "")
        if row.get("summary"):
            attributes["rlam:summary"] = row["summary"]
    return doc.entity(identifier, attributes)


def _local(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)
