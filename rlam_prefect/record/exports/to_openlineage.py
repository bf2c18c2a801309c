"""OpenLineage run events of one run, built with ``openlineage-python``.

The R-LAM run is a job run of ``rlam`` with START and a terminal event (COMPLETE, or FAIL with an
``errorMessage`` facet naming the failed step). Every step is a job run of its action
(``rlam.train_model``) with START and a terminal event (COMPLETE, FAIL with the error, or ABORT for
a precondition, policy or approval refusal), the artifacts it consumed as inputs and the one it
produced as output, and a ``parent`` facet naming the R-LAM run. A planner reply that named no
valid action is not a step of any action: it is a run of the planner's job ``rlam.plan`` that
ABORTs with the rejection as ``errorMessage``. A replay or fork carries a ``parent`` facet naming
the run it was made from (``root``: the first run of the chain), so lineage backends show the tree.

Datasets are named by content hash, so a backend joins runs that shared an artifact; a cached
step outputs the same dataset as the execution that computed it, and its ``rlam_step`` facet
names that execution (``computedBy``). The planner's model, endpoint and decision are in the
``rlam_step`` and ``rlam_run`` facets, whose JSON schemas ship with rlam-prefect at the URL path
their ``_schemaURL`` declares (``facet_schemas()``).

OpenLineage run ids must be UUIDs: they are derived from the rlam ids (UUIDv5), so exporting the
same run twice gives the same events. Job names never carry recorded text as is (``ids.segment``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.generated.base import RunFacet
from openlineage.client.generated.dataset_version_dataset import DatasetVersionDatasetFacet
from openlineage.client.generated.error_message_run import ErrorMessageRunFacet
from openlineage.client.generated.job_type_job import JobTypeJobFacet
from openlineage.client.generated.parent_run import Job as ParentJob
from openlineage.client.generated.parent_run import ParentRunFacet, Root, RootJob, RootRun
from openlineage.client.generated.parent_run import Run as ParentRun
from openlineage.client.generated.processing_engine_run import ProcessingEngineRunFacet
from openlineage.client.serde import Serde

from rlam_prefect.record.exports.ids import PRODUCER, segment
from rlam_prefect.record.exports.record import RunRecord, StepRecord, iso

JOB_NAMESPACE = "rlam-prefect"
DATASET_NAMESPACE = "rlam-artifact"
RUN_JOB = "rlam"
PLAN_JOB = "rlam.plan"  # the planner's own job: a rejected reply is a run of it, not of an action
FACET_VERSION = "1-0-0"
STEP_FACET_SCHEMA = f"{PRODUCER}/spec/facets/{FACET_VERSION}/RlamStepRunFacet.json"
RUN_FACET_SCHEMA = f"{PRODUCER}/spec/facets/{FACET_VERSION}/RlamRunRunFacet.json"


@attr.define
class RlamStepRunFacet(RunFacet):
    """What makes the step reproducible (the content key and its parts), how it was served, who chose it."""

    status: str
    step: int
    params: str | None = None
    claimedAction: str | None = None  # a rejected reply: the action it named, as text
    cacheKey: str | None = None
    codeVersion: str | None = None
    envHash: str | None = None
    prefectTaskRunId: str | None = None
    computedBy: dict[str, Any] | None = None  # the execution behind a cached output
    decision: dict[str, Any] | None = None  # the planner call that chose this step, or was rejected here
    _additional_skip_redact: ClassVar[list[str]] = ["cacheKey", "codeVersion", "envHash"]

    @staticmethod
    def _get_schema() -> str:
        return f"{STEP_FACET_SCHEMA}#/$defs/RlamStepRunFacet"


@attr.define
class RlamRunRunFacet(RunFacet):
    """The R-LAM run: its rlam id, mode, parent and the planner (model and endpoint) that drove it."""

    rlamRunId: str
    mode: str
    status: str
    planner: str | None = None
    plannerEndpoint: str | None = None
    parentRlamRunId: str | None = None
    forkStep: int | None = None
    overrides: str | None = None
    metrics: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return f"{RUN_FACET_SCHEMA}#/$defs/RlamRunRunFacet"


def facet_schemas() -> dict[str, Path]:
    """The JSON schemas of rlam's custom facets, by the URL their ``_schemaURL`` declares (package data)."""
    found = {}
    for url in (STEP_FACET_SCHEMA, RUN_FACET_SCHEMA):
        relative = url.removeprefix(PRODUCER + "/")
        found[url] = Path(str(resources.files("rlam_prefect.record.exports").joinpath(relative)))
    return found


def run_uuid(kind: str, ident: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:rlam:{kind}:{ident}"))


def step_uuid(run_id: str, step: int) -> str:
    return run_uuid("step", f"{run_id}-{step}")


def build_events(record: RunRecord) -> list[RunEvent]:
    run = record.run
    engine = ProcessingEngineRunFacet(version=record.runtime_version("prefect"), name="prefect", openlineageAdapterVersion=str(run.get("rlam_version") or ""), producer=PRODUCER)
    run_id = run_uuid("run", record.run_id)
    job = Job(namespace=JOB_NAMESPACE, name=RUN_JOB, facets={"jobType": _job_type("FLOW")})
    details = RlamRunRunFacet(
        rlamRunId=record.run_id,
        mode=str(run["mode"]),
        status=str(run["status"]),
        planner=run.get("planner"),
        plannerEndpoint=record.planner_endpoint,
        parentRlamRunId=run.get("parent_run_id"),
        forkStep=run.get("fork_step"),
        overrides=run.get("overrides") or None,
        metrics=run.get("metrics") or None,
        producer=PRODUCER,
    )
    facets: dict[str, Any] = {"processing_engine": engine, "rlam_run": details}
    if record.parent is not None:
        facets["parent"] = _parent_facet(run_uuid("run", record.parent["run_id"]), record)
    events = [RunEvent(eventType=RunState.START, eventTime=iso(run["started_at"]), run=Run(runId=run_id, facets=dict(facets)), job=job, producer=PRODUCER)]
    step_parent = _parent_facet(run_id, record)
    for step in record.steps:
        events += _step_events(record, step, step_parent)
    terminal = RunState.COMPLETE if run["status"] == "completed" else RunState.FAIL if run["status"] in ("failed", "incomplete") else RunState.ABORT
    end_facets = dict(facets)
    if terminal != RunState.COMPLETE and record.error:
        end_facets["errorMessage"] = ErrorMessageRunFacet(message=record.error, programmingLanguage="python", producer=PRODUCER)
    end = record.ended or max((s.ended for s in record.steps), default=run["started_at"])
    events.append(RunEvent(eventType=terminal, eventTime=iso(end), run=Run(runId=run_id, facets=end_facets), job=job, producer=PRODUCER))
    return events


def _job_type(kind: str) -> JobTypeJobFacet:
    return JobTypeJobFacet(processingType="BATCH", integration="RLAM_PREFECT", jobType=kind, producer=PRODUCER)


def _parent_facet(parent_run_id: str, record: RunRecord) -> ParentRunFacet:
    """``parent``: the run that spawned this one (the R-LAM run for a step, the parent run for a replay or fork)."""
    root = Root(run=RootRun(runId=run_uuid("run", record.root["run_id"])), job=RootJob(namespace=JOB_NAMESPACE, name=RUN_JOB))
    return ParentRunFacet(run=ParentRun(runId=parent_run_id), job=ParentJob(namespace=JOB_NAMESPACE, name=RUN_JOB), root=root, producer=PRODUCER)


def step_job_name(step: StepRecord) -> str:
    """``rlam.<action>`` with the action name percent-encoded; the planner's job for a rejected reply."""
    return PLAN_JOB if step.rejected_decision else f"{RUN_JOB}.{segment(step.action)}"


def _step_events(record: RunRecord, step: StepRecord, parent: ParentRunFacet) -> list[RunEvent]:
    row = step.row
    job = Job(namespace=JOB_NAMESPACE, name=step_job_name(step), facets={"jobType": _job_type("TASK")})
    details = RlamStepRunFacet(
        status=step.status,
        step=step.number,
        params=None if step.rejected_decision else row.get("params") or "{}",
        claimedAction=step.action if step.rejected_decision else None,
        cacheKey=row.get("cache_key"),
        codeVersion=row.get("code_version"),
        envHash=row.get("env_hash"),
        prefectTaskRunId=row.get("prefect_task_run_id"),
        computedBy=_computed_by(step),
        decision=_decision(step.decision),
        producer=PRODUCER,
    )
    run_id = step_uuid(record.run_id, step.number)
    inputs = [InputDataset(namespace=DATASET_NAMESPACE, name=digest, facets={"version": _version(digest)}) for digest in step.inputs.values()]
    outputs = [OutputDataset(namespace=DATASET_NAMESPACE, name=row["output_hash"], facets={"version": _version(row["output_hash"])})] if row.get("output_hash") else []
    start = RunEvent(eventType=RunState.START, eventTime=iso(step.started), run=Run(runId=run_id, facets={"parent": parent, "rlam_step": details}), job=job, inputs=inputs, producer=PRODUCER)
    facets: dict[str, Any] = {"parent": parent, "rlam_step": details}
    state = {"failed": RunState.FAIL, "rejected": RunState.ABORT}.get(step.status, RunState.COMPLETE)
    if step.error:
        facets["errorMessage"] = ErrorMessageRunFacet(message=step.error, programmingLanguage="python", producer=PRODUCER)
    end = RunEvent(eventType=state, eventTime=iso(step.ended), run=Run(runId=run_id, facets=facets), job=job, inputs=inputs, outputs=outputs, producer=PRODUCER)
    return [start, end]


def _version(digest: str) -> DatasetVersionDatasetFacet:
    return DatasetVersionDatasetFacet(datasetVersion=digest, producer=PRODUCER)


def _computed_by(step: StepRecord) -> dict[str, Any] | None:
    if not step.computed_elsewhere or step.origin is None:
        return None
    origin = step.origin
    return {
        "runId": step_uuid(origin.run_id, origin.number),
        "job": {"namespace": JOB_NAMESPACE, "name": f"{RUN_JOB}.{segment(str(origin.step['action']))}"},
        "rlamRunId": origin.run_id,
        "step": origin.number,
        "startTime": iso(origin.started),
        "endTime": iso(origin.ended),
    }


def _decision(decision: dict[str, Any] | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    found = {
        "model": decision.get("model"),
        "endpoint": decision.get("endpoint"),
        "promptHash": decision.get("prompt_hash"),
        "valid": bool(decision.get("valid")),
        "reason": decision.get("reason") or None,
        "rejectionReason": decision.get("rejection_reason") or None,
    }
    return {k: v for k, v in found.items() if v is not None}


def write_events(events: Iterable[RunEvent], path: Path) -> None:
    """One event per line (the layout of OpenLineage's file transport), in event order."""
    path.write_text("".join(Serde.to_json(event) + "\n" for event in events), encoding="utf-8")


def read_events(path: Path) -> list[RunEvent]:
    """Rebuild the events with the library's classes, so its validators check what we wrote."""
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        data = json.loads(line)
        run = data["run"]
        facets = run.get("facets", {})
        events.append(
            RunEvent(
                eventType=RunState(data["eventType"]),
                eventTime=data["eventTime"],
                run=Run(runId=run["runId"], facets={name: _facet(name, value) for name, value in facets.items()}),
                job=Job(namespace=data["job"]["namespace"], name=data["job"]["name"]),
                inputs=[InputDataset(namespace=d["namespace"], name=d["name"]) for d in data.get("inputs", [])],
                outputs=[OutputDataset(namespace=d["namespace"], name=d["name"]) for d in data.get("outputs", [])],
                producer=data["producer"],
            )
        )
    return events


def _facet(name: str, value: dict[str, Any]) -> Any:
    fields = {k: v for k, v in value.items() if not k.startswith("_")}
    if name == "parent":
        root = fields.get("root")
        return ParentRunFacet(
            run=ParentRun(runId=fields["run"]["runId"]),
            job=ParentJob(**fields["job"]),
            root=Root(run=RootRun(runId=root["run"]["runId"]), job=RootJob(**root["job"])) if root else None,
        )
    if name == "errorMessage":
        return ErrorMessageRunFacet(**fields)
    if name == "processing_engine":
        return ProcessingEngineRunFacet(**fields)
    if name == "rlam_step":
        return RlamStepRunFacet(**fields)
    if name == "rlam_run":
        return RlamRunRunFacet(**fields)
    return fields
