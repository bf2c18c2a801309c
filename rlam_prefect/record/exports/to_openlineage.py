"""OpenLineage run events of one run, built with ``openlineage-python``.

The R-LAM run is the parent job run (``rlam``); every step is a job run of its action
(``rlam.train_model``) with START and a terminal event (COMPLETE, FAIL with the error, or ABORT
for a rejected decision), the artifacts it consumed as inputs and the one it produced as output.
Datasets are named by content hash, so a lineage backend joins runs that shared an artifact.
OpenLineage run ids must be UUIDs: they are derived from the rlam ids (UUIDv5), so exporting the
same run twice gives the same events.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.generated.base import RunFacet
from openlineage.client.generated.dataset_version_dataset import DatasetVersionDatasetFacet
from openlineage.client.generated.error_message_run import ErrorMessageRunFacet
from openlineage.client.generated.job_type_job import JobTypeJobFacet
from openlineage.client.generated.parent_run import Job as ParentJob
from openlineage.client.generated.parent_run import ParentRunFacet
from openlineage.client.generated.parent_run import Run as ParentRun
from openlineage.client.generated.processing_engine_run import ProcessingEngineRunFacet
from openlineage.client.serde import Serde

from rlam_prefect.record.exports.record import RunRecord, StepRecord, iso

JOB_NAMESPACE = "rlam-prefect"
DATASET_NAMESPACE = "rlam-artifact"
PRODUCER = "https://w3id.org/rlam-prefect"
FACET_SCHEMA = "https://w3id.org/rlam-prefect/spec/RlamStepRunFacet.json"


@attr.define
class RlamStepRunFacet(RunFacet):
    """What makes the step reproducible: the content key and its parts, and how it was served."""

    status: str
    step: int
    params: str
    cacheKey: str | None = None
    codeVersion: str | None = None
    envHash: str | None = None
    prefectTaskRunId: str | None = None
    _additional_skip_redact: ClassVar[list[str]] = ["cacheKey", "codeVersion", "envHash"]

    @staticmethod
    def _get_schema() -> str:
        return FACET_SCHEMA


def run_uuid(kind: str, ident: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:rlam:{kind}:{ident}"))


def build_events(record: RunRecord) -> list[RunEvent]:
    run = record.run
    engine = ProcessingEngineRunFacet(version=record.runtime_version("prefect"), name="prefect", openlineageAdapterVersion=str(run.get("rlam_version") or ""), producer=PRODUCER)
    parent_id = run_uuid("run", record.run_id)
    parent_job = Job(namespace=JOB_NAMESPACE, name="rlam", facets={"jobType": JobTypeJobFacet(processingType="BATCH", integration="RLAM_PREFECT", jobType="FLOW", producer=PRODUCER)})
    events = [RunEvent(eventType=RunState.START, eventTime=iso(run["started_at"]), run=Run(runId=parent_id, facets={"processing_engine": engine}), job=parent_job, producer=PRODUCER)]
    parent_facet = ParentRunFacet(run=ParentRun(runId=parent_id), job=ParentJob(namespace=JOB_NAMESPACE, name="rlam"), producer=PRODUCER)
    for step in record.steps:
        events += _step_events(record, step, parent_facet)
    terminal = RunState.COMPLETE if run["status"] == "completed" else RunState.FAIL if run["status"] == "failed" else RunState.ABORT
    facets: dict[str, Any] = {"processing_engine": engine}
    if run.get("error_message"):
        facets["errorMessage"] = ErrorMessageRunFacet(message=run["error_message"], programmingLanguage="python", producer=PRODUCER)
    end = record.ended or max((s.ended for s in record.steps), default=run["started_at"])
    events.append(RunEvent(eventType=terminal, eventTime=iso(end), run=Run(runId=parent_id, facets=facets), job=parent_job, producer=PRODUCER))
    return events


def _step_events(record: RunRecord, step: StepRecord, parent: ParentRunFacet) -> list[RunEvent]:
    row = step.row
    job = Job(namespace=JOB_NAMESPACE, name=f"rlam.{step.action}", facets={"jobType": JobTypeJobFacet(processingType="BATCH", integration="RLAM_PREFECT", jobType="TASK", producer=PRODUCER)})
    details = RlamStepRunFacet(
        status=step.status,
        step=step.number,
        params=row.get("params") or "{}",
        cacheKey=row.get("cache_key"),
        codeVersion=row.get("code_version"),
        envHash=row.get("env_hash"),
        prefectTaskRunId=row.get("prefect_task_run_id"),
        producer=PRODUCER,
    )
    run_id = run_uuid("step", f"{record.run_id}-{step.number}")
    inputs = [InputDataset(namespace=DATASET_NAMESPACE, name=digest, facets={"version": DatasetVersionDatasetFacet(datasetVersion=digest, producer=PRODUCER)}) for digest in step.inputs.values()]
    outputs = []
    if row.get("output_hash"):
        digest = row["output_hash"]
        outputs.append(OutputDataset(namespace=DATASET_NAMESPACE, name=digest, facets={"version": DatasetVersionDatasetFacet(datasetVersion=digest, producer=PRODUCER)}))
    start = RunEvent(eventType=RunState.START, eventTime=iso(step.started), run=Run(runId=run_id, facets={"parent": parent, "rlam_step": details}), job=job, inputs=inputs, producer=PRODUCER)
    facets: dict[str, Any] = {"parent": parent, "rlam_step": details}
    if step.status == "failed":
        state = RunState.FAIL
    elif step.status == "rejected":
        state = RunState.ABORT
    else:
        state = RunState.COMPLETE
    if step.error:
        facets["errorMessage"] = ErrorMessageRunFacet(message=step.error, programmingLanguage="python", producer=PRODUCER)
    end = RunEvent(eventType=state, eventTime=iso(step.ended), run=Run(runId=run_id, facets=facets), job=job, inputs=inputs, outputs=outputs, producer=PRODUCER)
    return [start, end]


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
        return ParentRunFacet(run=ParentRun(runId=fields["run"]["runId"]), job=ParentJob(**fields["job"]))
    if name == "errorMessage":
        return ErrorMessageRunFacet(**fields)
    if name == "processing_engine":
        return ProcessingEngineRunFacet(**fields)
    if name == "rlam_step":
        return RlamStepRunFacet(**fields)
    return fields
