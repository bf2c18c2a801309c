"""An RO-Crate of one run following the Workflow Run Crate profiles, built with ``rocrate``.

The crate is RO-Crate 1.1, the version the Process, Workflow and Provenance Run Crate 0.5
profiles and Workflow RO-Crate 1.0 are defined on, and declares all four. The R-LAM flow is the
main workflow (its source travels in the crate); the run is a CreateAction of it; every step is a
CreateAction of its action (a SoftwareApplication at the action's code version), with its input
artifacts and parameters as objects, its output artifact as result, CompletedActionStatus or
FailedActionStatus with its error, and the person who ran it as agent. A cached step is based on
(``isBasedOn``) the earlier CreateAction that computed its output, with that execution's times;
a replay or fork is based on its parent run's CreateAction. ControlActions tie each step to its
HowToStep and an OrganizeAction names the engine. Every planner call is a ChooseAction of the
planner (model and endpoint): the plan of the step it chose, or a rejected reply, which is never
made a tool or a step. The run's own trace rows travel inside the crate as Parquet, so the crate
is a self-contained record a reviewer can query.

Who ran and who publishes: ``RLAM_EXPORT_AUTHOR`` and ``RLAM_EXPORT_PUBLISHER`` (``Name`` or
``Name <https://orcid.org/...>``); rlam records no names, so without them the crate says so.
``RLAM_EXPORT_LICENSE`` (an SPDX id, default MIT) is the license the crate is published under.

Identifiers are rlam ids, step numbers and hashes, or percent-encoded names (``ids``): text a
planner produced never becomes an ``@id`` as is.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rocrate.model.computationalworkflow import ComputationalWorkflow
from rocrate.model.computerlanguage import ComputerLanguage
from rocrate.model.contextentity import ContextEntity
from rocrate.rocrate import ROCrate

from rlam_prefect.record.exports.ids import PRODUCER, action_iri, segment, short_hash
from rlam_prefect.record.exports.record import Origin, RunRecord, StepRecord, final_outputs, iso
from rlam_prefect.record.schema import TABLES

CRATE_VERSION = "1.1"
PROFILE_VERSION = "0.5"
PROFILES = {"process": "Process Run Crate", "workflow": "Workflow Run Crate", "provenance": "Provenance Run Crate"}
WORKFLOW_RO_CRATE = "https://w3id.org/workflowhub/workflow-ro-crate/1.0"
BIOSCHEMAS_WORKFLOW = "https://bioschemas.org/profiles/ComputationalWorkflow/1.0-RELEASE"
COMPLETED = "http://schema.org/CompletedActionStatus"
FAILED = "http://schema.org/FailedActionStatus"
WORKFLOW_PATH = "workflow/rlam_flow.py"
_NAMED = re.compile(r"^\s*(?P<name>[^<>]+?)\s*(?:<(?P<id>https?://[^\s<>]+)>)?\s*$")


def profile_ids() -> list[str]:
    """Every profile the crate declares (the root's ``conformsTo``)."""
    return [f"https://w3id.org/ro/wfrun/{p}/{PROFILE_VERSION}" for p in PROFILES] + [WORKFLOW_RO_CRATE]


def write_crate(record: RunRecord, out: Path) -> Path:
    """Write the crate to ``out`` (a directory, or a ``.zip`` file)."""
    with tempfile.TemporaryDirectory(prefix="rlam-crate-") as scratch:
        crate = _Builder(record, Path(scratch)).build()
        if out.suffix == ".zip":
            crate.write_zip(out)
        else:
            crate.write(out)
    return out


def _ref(entity: Any) -> dict[str, str]:
    return {"@id": entity if isinstance(entity, str) else entity.id}


def _one_or_many(values: list[Any]) -> Any:
    """A single value unless there are several (RO-Crate: no singleton arrays)."""
    refs = [_ref(v) for v in values]
    return refs[0] if len(refs) == 1 else refs


class _Builder:
    def __init__(self, record: RunRecord, scratch: Path) -> None:
        self.record = record
        self.scratch = scratch
        self.crate = ROCrate(version=CRATE_VERSION)
        self.tools: dict[tuple[str, str], Any] = {}
        self.artifacts: dict[str, Any] = {}
        self.mentions: list[Any] = []

    def build(self) -> ROCrate:
        record, crate = self.record, self.crate
        run = record.run
        crate.name = f"R-LAM {run['mode']} {record.run_id}"
        crate.description = f"An LLM-planned workflow run recorded by rlam-prefect: {len(record.steps)} steps, status {run['status']}."
        crate.root_dataset["datePublished"] = iso(dt.datetime.now(dt.UTC))
        crate.root_dataset["license"] = _ref(self._license())
        self.operator = self._person()
        crate.root_dataset["author"] = _ref(self.operator)
        crate.root_dataset["publisher"] = _ref(self._publisher())
        crate.root_dataset["conformsTo"] = [_ref(self._profile(pid, name)) for pid, name in zip(profile_ids(), [*PROFILES.values(), "Workflow RO-Crate"], strict=True)]
        self._readme()

        self.engine = crate.add(ContextEntity(crate, PRODUCER, properties={"@type": "SoftwareApplication", "name": "rlam-prefect", "version": str(run.get("rlam_version") or "unknown"), "url": PRODUCER}))
        prefect = crate.add(ContextEntity(crate, "https://www.prefect.io/", properties={"@type": "SoftwareApplication", "name": "Prefect", "version": record.runtime_version("prefect"), "url": "https://www.prefect.io/"}))
        self.engine["softwareRequirements"] = _ref(prefect)
        self.workflow = self._workflow()
        self.planner = self._planner() if record.uses_planner else None

        controls = []
        step_actions: dict[int, Any] = {}
        for step in record.steps:
            if step.rejected_decision:
                continue  # a reply that named no valid action: a rejected ChooseAction below, not a tool
            tool = self._tool(step.action, step.row.get("code_version"))
            howto = crate.add(ContextEntity(crate, f"#howto-{step.number}", properties={"@type": "HowToStep", "position": str(step.number), "name": f"{step.action} #{step.number}", "workExample": _ref(tool)}))
            self.workflow.append_to("step", howto)
            action = step_actions[step.number] = self._step_action(step, tool)
            controls.append(self._mention(ContextEntity(crate, f"#control-{step.number}", properties={"@type": "ControlAction", "name": f"orchestrate {step.action} #{step.number}", "instrument": _ref(howto), "object": _ref(action), "actionStatus": action["actionStatus"]})))
        for decision in record.decisions:
            self._decision(decision, step_actions.get(decision["step"]))

        trace_files = [self._trace_file(table) for table in TABLES if table != "results"]
        run_action = self._run_action(run, record, trace_files)
        if record.parent is not None:
            run_action["isBasedOn"] = _ref(self._run_action(record.parent, None, []))
        self._mention(
            ContextEntity(
                crate,
                "#organize",
                properties={"@type": "OrganizeAction", "name": "rlam-prefect engine orchestration", "instrument": _ref(self.engine), "object": _one_or_many(controls), "result": _ref(run_action), "agent": _ref(self.operator)} if controls else {"@type": "OrganizeAction", "name": "rlam-prefect engine orchestration", "instrument": _ref(self.engine), "result": _ref(run_action), "agent": _ref(self.operator)},
            )
        )
        crate.root_dataset["mentions"] = _one_or_many(self.mentions)
        return crate

    # ---- who, what license, which profiles -----------------------------------------------

    def _license(self) -> Any:
        spdx = (os.environ.get("RLAM_EXPORT_LICENSE") or "MIT").strip()
        return self.crate.add(ContextEntity(self.crate, f"https://spdx.org/licenses/{segment(spdx)}", properties={"@type": "CreativeWork", "name": f"{spdx} license", "identifier": spdx, "description": f"This crate is published under the {spdx} license (SPDX identifier {spdx})."}))

    def _named(self, variable: str, kind: str) -> Any | None:
        """The Person or Organization named by ``variable`` (``Name`` or ``Name <https://...>``), if set."""
        match = _NAMED.match(os.environ.get(variable) or "")
        if not match:
            return None
        url = match.group("id")
        properties = {"@type": kind, "name": match.group("name")}
        if url:
            properties["url"] = url
        return self.crate.add(ContextEntity(self.crate, url or f"#{kind.lower()}-{short_hash(match.group('name'))}", properties=properties))

    def _person(self) -> Any:
        person = self._named("RLAM_EXPORT_AUTHOR", "Person")
        if person is None:
            host = str(self.record.run.get("hostname") or "an unrecorded host")
            description = f"The person who started this run on {host}. rlam records no names; set RLAM_EXPORT_AUTHOR when exporting to name them."
            person = self.crate.add(ContextEntity(self.crate, "#operator", properties={"@type": "Person", "name": f"operator of {host}", "description": description}))
        return person

    def _publisher(self) -> Any:
        publisher = self._named("RLAM_EXPORT_PUBLISHER", "Organization")
        if publisher is None:
            description = "Whoever publishes this crate. rlam records no names; set RLAM_EXPORT_PUBLISHER when exporting to name them."
            return self.crate.add(ContextEntity(self.crate, "#publisher", properties={"@type": "Organization", "name": "unnamed publisher", "description": description}))
        if os.environ.get("RLAM_EXPORT_AUTHOR"):
            self.operator["affiliation"] = _ref(publisher)  # both named by whoever exports: the author publishes through it
        return publisher

    def _profile(self, identifier: str, name: str) -> Any:
        version = identifier.rsplit("/", 1)[-1]
        return self.crate.add(ContextEntity(self.crate, identifier, properties={"@type": "CreativeWork", "name": f"{name} {version}", "version": version}))

    def _readme(self) -> None:
        record = self.record
        lines = [
            f"# R-LAM {record.run['mode']} {record.run_id}",
            "",
            f"A Workflow Run RO-Crate written by rlam-prefect {record.run.get('rlam_version') or ''}: {len(record.steps)} steps, status {record.run['status']}.",
            "`ro-crate-metadata.json` describes every step, its inputs, parameters and output, and the planner's decisions;",
            "`trace/*.parquet` holds the run's rows of the rlam trace tables; `workflow/rlam_flow.py` is the flow that ran.",
            "",
        ]
        path = self.scratch / "README.md"
        path.write_text("\n".join(lines), encoding="utf-8")
        self.crate.add_file(path, "README.md", properties={"name": "README", "description": "What this crate holds.", "about": _ref(self.crate.root_dataset), "encodingFormat": "text/markdown"}, record_size=True)

    # ---- software ------------------------------------------------------------------------

    def _workflow(self) -> Any:
        record, crate = self.record, self.crate
        python = str(record.environment.get("python") or "unknown")
        lang = crate.add(ComputerLanguage(crate, "https://www.python.org/", properties={"name": "Python", "url": "https://www.python.org/", "version": python}))
        source = Path(str(resources.files("rlam_prefect").joinpath("prefect", "flow.py")))
        workflow = crate.add_workflow(
            source,
            WORKFLOW_PATH,
            main=True,
            lang=lang,
            cls=ComputationalWorkflow,
            record_size=True,
            properties={
                "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],  # HowTo: it lists its steps (Provenance Run Crate)
                "name": "rlam flow",
                "description": "Ask the planner for the next typed action, execute it through the R-LAM layer (content-addressed cache, verified results, Parquet trace), repeat. Runs on Prefect.",
                "version": str(record.run.get("rlam_version") or "unknown"),
                "url": PRODUCER,
                "encodingFormat": "text/x-python",
                "conformsTo": _ref(BIOSCHEMAS_WORKFLOW),
            },
        )
        crate.add(ContextEntity(crate, BIOSCHEMAS_WORKFLOW, properties={"@type": "CreativeWork", "name": "Bioschemas ComputationalWorkflow profile 1.0-RELEASE", "version": "1.0-RELEASE"}))
        return workflow

    def _planner(self) -> Any:
        model = str(self.record.run["planner"])
        endpoint = self.record.planner_endpoint
        identifier = f"{PRODUCER}/planner/{segment(model)}"
        properties = {"@type": "SoftwareApplication", "name": f"planner {model}", "softwareVersion": model, "url": endpoint if endpoint and endpoint.startswith(("http://", "https://")) else identifier}
        properties["description"] = f"The planner: litellm model {model}, answering from {endpoint or 'its provider default endpoint'}; options {self.record.run.get('planner_options') or '{}'}."
        return self.crate.add(ContextEntity(self.crate, identifier, properties=properties))

    def _tool(self, action: str, code_version: str | None) -> Any:
        version = str(code_version or "unknown")
        key = (action, version)
        if key not in self.tools:
            identifier = action_iri(action, code_version)
            self.tools[key] = self.crate.add(ContextEntity(self.crate, identifier, properties={"@type": "SoftwareApplication", "name": action, "softwareVersion": version, "url": identifier}))
            self.workflow.append_to("hasPart", self.tools[key])
        return self.tools[key]

    # ---- actions -------------------------------------------------------------------------

    def _mention(self, entity: Any) -> Any:
        entity = self.crate.add(entity)
        self.mentions.append(entity)
        return entity

    def _step_action(self, step: StepRecord, tool: Any) -> Any:
        row = step.row
        objects = [self._artifact(digest, None) for digest in step.inputs.values()]
        objects += [self._value(f"#step-{step.number}-param-{segment(name)}", name, value) for name, value in step.params.items()]
        served = "served from the verified cache" if step.status == "cached" else step.status
        failed = step.status in ("failed", "rejected")
        properties: dict[str, Any] = {
            "@type": "CreateAction" if row.get("output_hash") else "ActivateAction",  # no output: the tool ran (or was refused) and made nothing
            "name": f"{step.action} #{step.number} ({served})",
            "instrument": _ref(tool),
            "startTime": iso(step.started),
            "endTime": iso(step.ended),
            "actionStatus": FAILED if failed else COMPLETED,
            "agent": _ref(self.operator),
            "description": f"status {step.status}; cache key {row.get('cache_key') or '-'}; environment {row.get('env_hash') or '-'}",
        }
        if objects:
            properties["object"] = _one_or_many(objects)
        if row.get("output_hash"):
            properties["result"] = _ref(self._artifact(row["output_hash"], row))
        if failed and step.error:
            properties["error"] = step.error
        if row.get("prefect_task_run_id"):
            properties["identifier"] = f"prefect-task-run:{row['prefect_task_run_id']}"
        if step.computed_elsewhere and step.origin is not None:
            origin = self._origin_action(step, step.origin)
            properties["isBasedOn"] = _ref(origin)
            properties["description"] += f"; output computed by run {step.origin.run_id} step {step.origin.number}"
        return self._mention(ContextEntity(self.crate, f"#step-{step.number}", properties=properties))

    def _origin_action(self, step: StepRecord, origin: Origin) -> Any:
        """The earlier execution that computed a cached step's output, as the CreateAction it was."""
        identifier = f"#run-{origin.run_id}-step-{origin.number}"
        existing = self.crate.get(identifier)
        if existing is not None:
            return existing
        row = origin.step
        objects = [self._artifact(digest, None) for digest in json.loads(row.get("input_hashes") or "{}").values()]
        properties: dict[str, Any] = {
            "@type": "CreateAction",
            "name": f"{row['action']} #{origin.number} of run {origin.run_id} ({row['status']})",
            "instrument": _ref(self._tool(str(row["action"]), row.get("code_version"))),
            "startTime": iso(origin.started),
            "endTime": iso(origin.ended),
            "actionStatus": COMPLETED,
            "agent": _ref(self.operator),
            "result": _ref(self._artifact(row["output_hash"], row)),
            "description": f"the execution that computed the output step {step.number} reused; cache key {row.get('cache_key') or '-'}",
        }
        if objects:
            properties["object"] = _one_or_many(objects)
        return self._mention(ContextEntity(self.crate, identifier, properties=properties))

    def _run_action(self, run: dict[str, Any], record: RunRecord | None, trace_files: list[Any]) -> Any:
        """The run as a CreateAction of the workflow; ``record`` None: a parent run, from its runs row."""
        identifier = f"#run-{run['run_id']}"
        existing = self.crate.get(identifier)
        if existing is not None:
            return existing
        if record is not None:
            outputs = final_outputs(record)
            objects = [self._value(f"#param-{name}", name, value) for name, value in _run_parameters(record).items()]
            error = record.error
            ended = record.ended or max((s.ended for s in record.steps), default=run["started_at"])
            description = f"{run['mode']} {run['run_id']}; metrics: {run.get('metrics') or '{}'}"
        else:
            outputs, objects, error = self.record.parent_outputs, [], run.get("error_message")
            ended = run.get("ended_at") or run["started_at"]
            description = f"the parent run of this {self.record.run['mode']}; metrics: {run.get('metrics') or '{}'}"
        results = [self._artifact(digest, None) for digest in outputs] + trace_files
        failed = run["status"] != "completed"
        properties: dict[str, Any] = {
            "@type": "CreateAction",
            "name": f"{run['mode']} {run['run_id']}",
            "instrument": _ref(self.workflow),
            "startTime": iso(run["started_at"]),
            "endTime": iso(ended),
            "actionStatus": FAILED if failed else COMPLETED,
            "agent": _ref(self.operator),
            "description": description,
        }
        if objects:
            properties["object"] = _one_or_many(objects)
        if results:
            properties["result"] = _one_or_many(results)
        if failed:
            properties["error"] = error or f"the run ended {run['status']}"
        return self._mention(ContextEntity(self.crate, identifier, properties=properties))

    def _decision(self, decision: dict[str, Any], chosen: Any) -> None:
        """A planner call as a ChooseAction of the planner: what it chose, or why its reply was rejected."""
        valid = bool(decision.get("valid"))
        recorded = decision["recorded_at"]
        started = recorded - dt.timedelta(seconds=float(decision.get("latency_s") or 0.0))
        properties: dict[str, Any] = {
            "@type": "ChooseAction",
            "name": f"planner decision #{decision['step']}" + ("" if valid else " (rejected)"),
            "startTime": iso(started),
            "endTime": iso(recorded),
            "actionStatus": COMPLETED if valid else FAILED,
            "description": f"{'chose ' + str(decision.get('action')) if valid else 'rejected reply'}; model {decision.get('model')}; endpoint {decision.get('endpoint') or '-'}; prompt {decision.get('prompt_hash') or '-'}; reason: {decision.get('reason') or '-'}",
        }
        if self.planner is not None:
            properties["instrument"] = _ref(self.planner)
        if not valid:
            properties["error"] = str(decision.get("rejection_reason") or "rejected")
        elif chosen is not None:
            properties["result"] = _ref(chosen)
        self._mention(ContextEntity(self.crate, f"#decision-{decision['step']}-{short_hash(str(decision.get('prompt_hash')), str(recorded))}", properties=properties))

    # ---- data ----------------------------------------------------------------------------

    def _artifact(self, digest: str, row: dict[str, Any] | None) -> Any:
        entity = self.artifacts.get(digest)
        if entity is None:
            properties = {"@type": "PropertyValue", "name": "artifact", "value": digest, "propertyID": "https://w3id.org/rlam-prefect/terms#content_hash"}
            entity = self.artifacts[digest] = self.crate.add(ContextEntity(self.crate, f"#artifact-{segment(digest.split(':')[-1][:16])}", properties=properties))
        if row is not None:
            entity["name"] = str(row.get("output_kind") or "artifact")
            if row.get("summary"):
                entity["description"] = row["summary"]
        return entity

    def _value(self, ident: str, name: str, value: Any) -> Any:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return self.crate.add(ContextEntity(self.crate, ident, properties={"@type": "PropertyValue", "name": name, "value": text}))

    def _trace_file(self, table: str) -> Any:
        record = self.record
        rows = {"runs": record.run_events, "steps": [s.row for s in record.steps], "decisions": record.decisions}[table]
        path = self.scratch / f"{table}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=TABLES[table]), path)
        return self.crate.add_file(
            path,
            f"trace/{table}.parquet",
            record_size=True,
            properties={"name": f"{table} trace rows of run {record.run_id}", "description": f"The run's rows of the rlam `{table}` trace table (Parquet, schema as in rlam_prefect/record/schema.py).", "encodingFormat": "application/vnd.apache.parquet"},
        )


def _run_parameters(record: RunRecord) -> dict[str, Any]:
    run = record.run
    parameters = {"planner": run.get("planner"), "planner_options": json.loads(run.get("planner_options") or "{}"), "overrides": record.overrides}
    if record.planner_endpoint:
        parameters["planner_endpoint"] = record.planner_endpoint
    if run.get("parent_run_id"):
        parameters["replay_of" if run["mode"] == "replay" else "fork_of"] = run["parent_run_id"]
    if run.get("fork_step"):
        parameters["fork_step"] = run["fork_step"]
    return parameters
