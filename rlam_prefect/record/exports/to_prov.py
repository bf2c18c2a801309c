"""W3C PROV (PROV-JSON) of one run, built with the ``prov`` package.

Artifacts are entities named by their content hash; each step is an activity that used its input
artifacts and generated its output, which was derived from them; the run is an activity that
started its steps. The rlam-prefect software and the planner (model and endpoint) are software
agents; each planner decision is an entity attributed to the planner: the ``prov:Plan`` that
rlam-prefect followed in the step it chose, or a rejected decision that started no action. A cached step used a result that an earlier execution generated:
that execution is named with its times, started by its own run, and generated the output from the
same inputs, so every output derives from its inputs whether the run computed it or not. A replay
or a fork was informed by its parent run. Failed steps are activities with no output and their error.

Every ``prov:type`` is a qualified name (``prov:SoftwareAgent``, ``rlam:Step``...), every relation
names records declared in the document, and identifiers come from run ids, step numbers and
hashes only (``ids``): recorded text (action names, reasons, replies) appears only as literals.
"""

from __future__ import annotations

import json
from typing import Any, cast

from prov.constants import PROV
from prov.model import PROV_LABEL, PROV_ROLE, PROV_TYPE, Namespace, ProvActivity, ProvAgent, ProvDocument, ProvEntity

from rlam_prefect.record.exports.ids import segment
from rlam_prefect.record.exports.record import Origin, RunRecord, StepRecord

RLAM_NS = "https://w3id.org/rlam-prefect/terms#"
RLAM = Namespace("rlam", RLAM_NS)


def build_prov(record: RunRecord) -> ProvDocument:
    doc = ProvDocument()
    doc.add_namespace(RLAM)
    for prefix in ("run", "step", "artifact", "decision", "agent"):
        doc.add_namespace(prefix, f"urn:rlam:{prefix}:")
    run = record.run
    env = record.environment
    software = doc.agent(
        "agent:rlam-prefect",
        {
            PROV_TYPE: PROV["SoftwareAgent"],
            PROV_LABEL: "rlam-prefect",
            RLAM["version"]: str(run.get("rlam_version") or ""),
            RLAM["python"]: str(env.get("python") or ""),
            RLAM["packages"]: json.dumps(env.get("packages") or {}, sort_keys=True),
            RLAM["runtime"]: json.dumps(env.get("runtime") or {}, sort_keys=True),
            RLAM["env_hash"]: str(run.get("env_hash") or ""),
        },
    )
    planner = _planner(doc, record) if record.uses_planner else None
    run_activity = _run_activity(doc, run, record)
    doc.wasAssociatedWith(run_activity, software)
    if planner is not None:
        doc.wasAssociatedWith(run_activity, planner)
    parent = record.parent
    if parent is not None:
        parent_activity = _run_activity(doc, parent, None)
        label = f"{run['mode']} of {parent['run_id']}" + (f" from step {run['fork_step']}" if run.get("fork_step") else "")
        doc.wasInformedBy(run_activity, parent_activity, other_attributes={PROV_LABEL: label, PROV_TYPE: RLAM[str(run["mode"]).title()]})
    known: set[str] = set()
    for step in record.steps:
        _add_step(doc, record, step, run_activity, software, planner, known)
    for decision in record.decisions:
        if decision["step"] not in {s.number for s in record.steps}:  # a stop, or a call after the last step
            _decision(doc, record, decision, planner)
    return doc


def _planner(doc: ProvDocument, record: RunRecord) -> ProvAgent:
    model = str(record.run["planner"])
    attributes: dict[Any, Any] = {PROV_TYPE: PROV["SoftwareAgent"], PROV_LABEL: f"planner {model}", RLAM["model"]: model, RLAM["planner_options"]: record.run.get("planner_options") or "{}"}
    if record.planner_endpoint:
        attributes[RLAM["endpoint"]] = record.planner_endpoint
    return doc.agent(f"agent:planner-{segment(model)}", attributes)


def _run_activity(doc: ProvDocument, run: dict[str, Any], record: RunRecord | None) -> ProvActivity:
    """A run as an activity with its times; the exported run carries its full record."""
    identifier = f"run:{run['run_id']}"
    existing = doc.get_record(identifier)
    if existing:
        return cast(ProvActivity, existing[0])  # declared by this module, as an activity
    attributes: dict[Any, Any] = {PROV_TYPE: RLAM["Run"], PROV_LABEL: f"{run['mode']} {run['run_id']}", RLAM["mode"]: run["mode"], RLAM["status"]: run["status"]}
    if record is not None:
        attributes.update(
            {
                RLAM["overrides"]: run.get("overrides") or "{}",
                RLAM["metrics"]: run.get("metrics") or "{}",
                RLAM["prefect_flow_run_id"]: str(run.get("prefect_flow_run_id") or ""),
                RLAM["trace"]: record.trace_files("steps"),
            }
        )
        if record.error:
            attributes[RLAM["error"]] = record.error
    return doc.activity(identifier, run["started_at"], run.get("ended_at"), attributes)


def _add_step(doc: ProvDocument, record: RunRecord, step: StepRecord, run_activity: ProvActivity, software: ProvAgent, planner: ProvAgent | None, known: set[str]) -> None:
    row = step.row
    attributes: dict[Any, Any] = {
        PROV_TYPE: RLAM["RejectedDecision"] if step.rejected_decision else RLAM["Step"],
        PROV_LABEL: f"rejected decision #{step.number}" if step.rejected_decision else f"{step.action} #{step.number}",
        RLAM["step"]: step.number,
        RLAM["status"]: step.status,
    }
    if step.rejected_decision:
        attributes[RLAM["claimed_action"]] = step.action  # what the reply named: text, not an action
    else:
        attributes[RLAM["action"]] = step.action
        attributes[RLAM["params"]] = row.get("params") or "{}"
    for column in ("cache_key", "code_version", "env_hash", "prefect_task_run_id", "reason"):
        if row.get(column):
            attributes[RLAM[column]] = str(row[column])
    if step.error:
        attributes[RLAM["error"]] = step.error
    activity = doc.activity(f"step:{record.run_id}-{step.number}", step.started, step.ended, attributes)
    doc.wasStartedBy(activity, starter=run_activity, time=step.started)
    plan = _decision(doc, record, step.decision, planner) if step.decision is not None else None
    if plan is not None and step.rejected_decision:
        doc.wasGeneratedBy(plan, activity, step.ended)  # the rejection is this activity's only outcome
        plan = None
    # rlam-prefect ran the step following the planner's decision, which is attributed to the planner.
    # One association per step: PROV-O readers pair a plan with the wrong agent when an activity has two.
    doc.wasAssociatedWith(activity, software, plan)
    inputs = []
    for argument, digest in step.inputs.items():
        entity = _artifact(doc, digest, None, known)
        doc.used(activity, entity, step.started, other_attributes={PROV_ROLE: RLAM[segment(argument)]})
        inputs.append(entity)
    if not row.get("output_hash"):
        return
    output = _artifact(doc, row["output_hash"], row, known)
    producer, generated = activity, step.ended
    if step.computed_elsewhere and step.origin is not None:
        producer, generated = _origin_activity(doc, step.origin, software), step.origin.ended
        doc.used(activity, output, step.started, other_attributes={PROV_ROLE: RLAM["cached_result"]})
    doc.wasGeneratedBy(output, producer, generated)
    for entity in inputs:
        doc.wasDerivedFrom(output, entity, producer)


def _origin_activity(doc: ProvDocument, origin: Origin, software: ProvAgent) -> ProvActivity:
    """The earlier execution that computed a cached output, with its times, started by its own run."""
    identifier = f"step:{origin.run_id}-{origin.number}"
    existing = doc.get_record(identifier)
    if existing:
        return cast(ProvActivity, existing[0])  # declared by this module, as an activity
    row = origin.step
    attributes: dict[Any, Any] = {PROV_TYPE: RLAM["Step"], PROV_LABEL: f"{row['action']} #{origin.number} of run {origin.run_id}", RLAM["action"]: str(row["action"]), RLAM["step"]: origin.number, RLAM["status"]: str(row["status"])}
    for column in ("cache_key", "code_version", "env_hash"):
        if row.get(column):
            attributes[RLAM[column]] = str(row[column])
    activity = doc.activity(identifier, origin.started, origin.ended, attributes)
    doc.wasStartedBy(activity, starter=_run_activity(doc, origin.run, None), time=origin.started)
    doc.wasAssociatedWith(activity, software)
    return activity


def _decision(doc: ProvDocument, record: RunRecord, decision: dict[str, Any], planner: ProvAgent | None) -> ProvEntity:
    """One planner call: the plan of the step it chose, a rejected reply, or the stop that ended the run."""
    valid = bool(decision.get("valid"))
    stop = valid and decision.get("action") == "stop"
    kind = PROV["Plan"] if valid and not stop else RLAM["StopDecision"] if stop else RLAM["RejectedDecision"]
    attributes: dict[Any, Any] = {
        PROV_TYPE: kind,
        PROV_LABEL: f"planner decision #{decision['step']}",
        RLAM["model"]: str(decision.get("model") or ""),
        RLAM["valid"]: valid,
        RLAM["prompt_hash"]: str(decision.get("prompt_hash") or ""),
        RLAM["reply"]: str(decision.get("raw_reply") or ""),
        RLAM["reason"]: str(decision.get("reason") or ""),
    }
    if decision.get("endpoint"):
        attributes[RLAM["endpoint"]] = str(decision["endpoint"])
    if decision.get("action"):
        attributes[RLAM["action" if valid else "claimed_action"]] = str(decision["action"])
    if decision.get("rejection_reason"):
        attributes[RLAM["rejection_reason"]] = str(decision["rejection_reason"])
    plan = doc.entity(f"decision:{record.run_id}-{decision['step']}", attributes)
    if planner is not None:
        doc.wasAttributedTo(plan, planner)
    return plan


def _artifact(doc: ProvDocument, digest: str, row: dict[str, Any] | None, known: set[str]) -> Any:
    identifier = f"artifact:{segment(digest.replace(':', '-'))}"
    if identifier in known:
        entity = doc.get_record(identifier)[0]
    else:
        known.add(identifier)
        entity = doc.entity(identifier, {PROV_TYPE: RLAM["Artifact"], RLAM["content_hash"]: digest})
    if row is not None and not entity.get_attribute(RLAM["kind"]):
        entity.add_attributes({PROV_LABEL: str(row.get("output_kind") or "artifact"), RLAM["kind"]: str(row.get("output_kind") or "")})
        if row.get("summary"):
            entity.add_attributes({RLAM["summary"]: row["summary"]})
    return entity
