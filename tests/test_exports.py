"""`rlam export`, checked as a curator or a lineage platform would: with each standard's own validator, offline.

Five recorded runs (a run, a planner-driven fork of it, a replay of it, a run with a failed step, and
a run whose planner proposed an action name full of punctuation) are exported in every format and
checked with:

- RO-Crate: ``rocrate-validator`` (roc-validator) at REQUIRED and RECOMMENDED for every profile the
  crate declares, offline, the JSON-LD context served from ``tests/vendor/ro-crate`` through the
  validator's own HTTP cache;
- OpenLineage: the official JSON schemas (core and facets) of the OpenLineage spec, plus the
  schemas rlam-prefect ships for its own facets, with ``jsonschema`` and format checks;
- PROV: PROV-JSON read back by ``prov``, converted to PROV-N and to PROV-O (RDF) and read back,
  every ``prov:type`` a qualified name and every relation's ends declared.

Then each run's lineage is followed through all three formats.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from openlineage.client.event_v2 import RunState
from prov.model import PROV_TYPE, ProvActivity, ProvAgent, ProvDocument, ProvElement, ProvEntity, ProvRelation, QualifiedName
from rocrate.rocrate import ROCrate

from rlam_prefect.record.exports.to_openlineage import facet_schemas, read_events, run_uuid, step_uuid
from tests.conftest import ROOT, Workspace, untraced
from tests.llm_server import LLMServer

VENDOR = ROOT / "tests" / "vendor"
CONTEXTS = {"https://w3id.org/ro/crate/1.1/context": VENDOR / "ro-crate" / "1.1" / "context.jsonld"}
AUTHOR = "Ada Lovelace <https://orcid.org/0000-0002-1825-0097>"
PUBLISHER = "Analytical Engines Ltd <https://ror.org/05dxps055>"
IDENTITY = {"RLAM_EXPORT_AUTHOR": AUTHOR, "RLAM_EXPORT_PUBLISHER": PUBLISHER}
# an action name a planner made up: every character JSON-LD, IRIs, PROV-N or a job name treats specially
PUNCT_ACTION = '"><x y=\'#@id\'/../a b?c:d%zz\\ü{}|^`;,[*]'
PUNCT_REASON = 'because "</script><b>" & {"@id": "#step-1"} ../../etc/passwd'
# the planner's endpoint (tests/llm_server.py) as a user might set it, credentials in the URL: never recorded
ENDPOINT_WITH_SECRETS = "http://planner-user:s3cret-pass@127.0.0.1:{port}/v1?api_key=abc123#frag"
KINDS = ("run", "fork", "replay", "failed", "punct")


# ---- recorded runs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(prefect_api_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from rlam_prefect.core.home import HomeLayout

    space = Workspace(HomeLayout(tmp_path_factory.mktemp("exports") / "rlam-home"))
    run = space.rlam_json("run", "--planner", "fixed")
    assert run["status"] == "completed"
    fork = space.rlam_json("fork", run["run_id"], "--step", "4", "--planner", "rlam/heuristic", "--set", "train_model.C=0.3")
    assert fork["status"] == "completed" and fork["cached"] == 3
    replay = space.rlam_json("replay", run["run_id"])
    assert replay["status"] == "completed" and replay["cached"] == len(run["steps"])
    failed = space.rlam_json("run", "--planner", "fixed", "--inject-failure", "train_model")
    assert failed["status"] == "failed" and failed["steps"][3]["status"] == "failed"
    replies = [
        json.dumps({"action": PUNCT_ACTION, "reason": PUNCT_REASON}),
        json.dumps({"action": "load_dataset", "params": {"name": "iris"}, "reason": PUNCT_REASON}),
        *(json.dumps({"action": a, "reason": "next"}) for a in ("analyze_data", "preprocess_data", "train_model", "evaluate_model", "stop")),
    ]
    server = LLMServer().start()
    try:
        server.script(*replies)
        port = server.url.split(":")[2].split("/")[0]
        env = {**server.env(), "OPENAI_API_BASE": ENDPOINT_WITH_SECRETS.format(port=port)}
        result = space.rlam("run", "--planner", "openai/gpt-4o-mini", "--json", extra_env=env)
        assert result.code == 0, result.stderr
        assert server.count == len(replies)
    finally:
        server.stop()
    punct = result.json
    assert punct["steps"][0]["status"] == "rejected" and punct["rejected"] == 1 and punct["status"] == "completed"
    return {"space": space, "run": run, "fork": fork, "replay": replay, "failed": failed, "punct": punct, "out": tmp_path_factory.mktemp("exported"), "done": {}, "endpoint": f"http://127.0.0.1:{port}/v1"}


def _export(recorded: dict[str, Any], kind: str, fmt: str, name: str | None = None, env: dict[str, str] | None = None) -> Path:
    """Export once per (kind, format, name); the CLI as a user runs it."""
    suffix = {"prov": ".prov.json", "ro-crate": "-crate", "openlineage": ".openlineage.jsonl"}[fmt]
    name = name or f"{kind}{suffix}"
    if name in recorded["done"]:
        return recorded["done"][name]
    out = recorded["out"] / name
    result = recorded["space"].rlam("export", recorded[kind]["run_id"], "--format", fmt, "--out", str(out), "--json", extra_env=IDENTITY if env is None else env)
    assert result.code == 0, result.stderr
    assert Path(result.json["path"]) == out
    recorded["done"][name] = out
    return out


# ---- RO-Crate: roc-validator, offline ----------------------------------------------------


@pytest.fixture(scope="module")
def validator(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """rocrate-validator in offline mode, its HTTP cache holding the vendored JSON-LD context (and nothing else)."""
    import requests
    from requests.adapters import HTTPAdapter
    from requests_cache import CachedSession
    from rocrate_validator import services
    from urllib3 import HTTPResponse

    class VendoredFiles(HTTPAdapter):
        """Answers the context URLs from tests/vendor; any other URL is an error (no network)."""

        def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            body = CONTEXTS[str(request.url)].read_bytes()
            headers = {"Content-Type": "application/ld+json", "Content-Length": str(len(body))}
            raw = HTTPResponse(body=io.BytesIO(body), headers=headers, status=200, preload_content=False, request_url=request.url, decode_content=False)
            return self.build_response(request, raw)

    cache = tmp_path_factory.mktemp("rocrate-validator") / "http_cache"
    with CachedSession(cache_name=str(cache), backend="sqlite", expire_after=-1, allowable_methods=("GET",), allowable_codes=(200,)) as session:
        session.mount("https://", VendoredFiles())
        for url in CONTEXTS:
            assert session.get(url).status_code == 200
    profiles = {p.uri: p.identifier for p in services.get_profiles()}
    return {"cache": str(cache), "profiles": profiles}


def _rocrate_issues(validator: dict[str, Any], crate: Path, profile: str, level: str) -> list[tuple[str, str, str]]:
    from rocrate_validator import services
    from rocrate_validator.models import ValidationSettings

    settings = ValidationSettings(rocrate_uri=str(crate), profile_identifier=profile, requirement_severity=level, offline=True, cache_path=validator["cache"])
    with untraced():
        result = services.validate(settings)
    # a check the validator could not run (e.g. a context missing from the cache) would otherwise pass silently
    assert result.skipped_checks_count == 0, [(d.identifier, d.message) for d in result.skipped_check_details]
    return [(i.severity.name, i.check.identifier, str(i.violatingPropertyValue or i.violatingEntity or "")) for i in result.get_issues()]


def _declared_profiles(crate: Path, validator: dict[str, Any]) -> list[str]:
    """Every profile the crate claims (root and metadata descriptor), as validator identifiers."""
    graph = {e["@id"]: e for e in json.loads((crate / "ro-crate-metadata.json").read_text())["@graph"]}
    claimed = [ref["@id"] for key in ("./", "ro-crate-metadata.json") for ref in _as_list(graph[key]["conformsTo"])]
    unknown = [uri for uri in claimed if uri not in validator["profiles"]]
    assert not unknown, f"profiles the validator does not know, so cannot check: {unknown}"
    return sorted({validator["profiles"][uri] for uri in claimed})


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _main_workflow_id_check(issue: tuple[str, str, str], crate: Path) -> bool:
    """The one RECOMMENDED finding no crate with its workflow inside can avoid (see docs/exports.md).

    process-run-crate-0.5_5.1 wants every SoftwareSourceCode/ComputationalWorkflow to have an absolute
    http(s) @id, while Workflow RO-Crate wants the main workflow to be a file in the crate, whose @id
    is a relative path. Only that entity, the crate's own workflow file, is let through.
    """
    return issue[:2] == ("RECOMMENDED", "process-run-crate-0.5_5.1") and issue[2] == (crate / "workflow" / "rlam_flow.py").resolve().as_uri()


@pytest.mark.parametrize("kind", KINDS)
def test_ro_crate_passes_roc_validator_for_every_declared_profile(recorded: dict[str, Any], validator: dict[str, Any], kind: str) -> None:
    crate = _export(recorded, kind, "ro-crate")
    profiles = _declared_profiles(crate, validator)
    assert profiles == ["process-run-crate-0.5", "provenance-run-crate-0.5", "ro-crate-1.1", "workflow-ro-crate-1.0", "workflow-run-crate-0.5"]
    for profile in profiles:
        found = _rocrate_issues(validator, crate, profile, "RECOMMENDED")  # REQUIRED checks run at RECOMMENDED too
        assert [i for i in found if i[0] == "REQUIRED"] == [], profile
        assert [i for i in found if not _main_workflow_id_check(i, crate)] == [], profile
        inherits_process = profile in ("process-run-crate-0.5", "workflow-run-crate-0.5", "provenance-run-crate-0.5")
        assert len(found) == (2 if inherits_process else 0), (profile, found)  # the workflow file, typed SoftwareSourceCode and ComputationalWorkflow


def test_ro_crate_without_named_people_passes_required_and_says_who_is_missing(recorded: dict[str, Any], validator: dict[str, Any]) -> None:
    """rlam records no names: unset, the crate says so, and only the checks about naming people fail."""
    crate = _export(recorded, "run", "ro-crate", "anonymous-crate", env={"RLAM_EXPORT_AUTHOR": "", "RLAM_EXPORT_PUBLISHER": ""})
    issues = _rocrate_issues(validator, crate, "provenance-run-crate-0.5", "RECOMMENDED")  # REQUIRED checks included
    assert [i for i in issues if i[0] == "REQUIRED"] == []
    found = {i[1] for i in issues if not _main_workflow_id_check(i, crate)}
    assert found == {"ro-crate-1.1_30.2", "ro-crate-1.1_30.3", "ro-crate-1.1_31.2"}  # author affiliation (x2), publisher url
    graph = {e["@id"]: e for e in json.loads((crate / "ro-crate-metadata.json").read_text())["@graph"]}
    assert graph["#operator"]["@type"] == "Person" and "RLAM_EXPORT_AUTHOR" in graph["#operator"]["description"]


def test_the_validator_really_is_offline_and_strict(recorded: dict[str, Any], validator: dict[str, Any], tmp_path: Path) -> None:
    """A crate whose context is not in the cache cannot pass: checks are skipped, never silently green."""
    from rocrate_validator import services
    from rocrate_validator.models import ValidationSettings

    crate = tmp_path / "crate"
    crate.mkdir()
    metadata = json.loads((_export(recorded, "run", "ro-crate") / "ro-crate-metadata.json").read_text())
    metadata["@context"] = "https://w3id.org/ro/crate/1.2/context"  # not vendored
    (crate / "ro-crate-metadata.json").write_text(json.dumps(metadata))
    result = services.validate(ValidationSettings(rocrate_uri=str(crate), profile_identifier="ro-crate-1.1", offline=True, cache_path=validator["cache"]))
    assert result.skipped_checks_count > 0 or not result.passed()


# ---- OpenLineage: the official JSON schemas ----------------------------------------------


def _openlineage_spec() -> Path:
    """The OpenLineage spec folder (OpenLineage.json and facets/), Apache-2.0, with its LICENSE and NOTICE."""
    for candidate in (os.environ.get("RLAM_OPENLINEAGE_SPEC"), VENDOR / "openlineage" / "spec"):
        if candidate and (Path(candidate) / "OpenLineage.json").is_file():
            return Path(candidate)
    # Committed under tests/vendor/openlineage (its README says from where): a missing copy is a broken
    # checkout, and a validation that silently skips would pass CI without checking anything
    pytest.fail(
        "the OpenLineage JSON schemas are missing: tests/vendor/openlineage/spec should hold OpenLineage.json and "
        "facets/*.json (see tests/vendor/openlineage/README.md), or point RLAM_OPENLINEAGE_SPEC at a spec/ folder"
    )


@pytest.fixture(scope="module")
def openlineage_schemas() -> Any:
    from jsonschema import FormatChecker
    from referencing import Registry, Resource

    spec = _openlineage_spec()
    files = [spec / "OpenLineage.json", *sorted((spec / "facets").glob("*.json")), *facet_schemas().values()]
    resources = []
    for path in files:
        document = json.loads(path.read_text(encoding="utf-8"))
        resources.append((document["$id"], Resource.from_contents(document)))
    checker = FormatChecker()
    assert {"uuid", "date-time", "uri"} <= set(checker.checkers), "format checks need rfc3339-validator and rfc3986-validator"
    return {"registry": Registry().with_resources(resources), "checker": checker}


def _schema_errors(schemas: dict[str, Any], reference: str, instance: Any) -> list[str]:
    from jsonschema import Draft202012Validator

    document = reference.partition("#")[0]
    if document not in schemas["registry"]:
        return [f"schema {reference} is not available"]
    validator = Draft202012Validator({"$ref": reference}, registry=schemas["registry"], format_checker=schemas["checker"])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(instance)]


def _facets(event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [(f"run.{n}", f) for n, f in event["run"].get("facets", {}).items()] + [(f"job.{n}", f) for n, f in event["job"].get("facets", {}).items()]
    for side in ("inputs", "outputs"):
        found += [(f"{side}.{d['name']}.{n}", f) for d in event.get(side, []) for n, f in d.get("facets", {}).items()]
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_openlineage_events_pass_the_official_schemas(recorded: dict[str, Any], openlineage_schemas: dict[str, Any], kind: str) -> None:
    lines = _export(recorded, kind, "openlineage").read_text(encoding="utf-8").splitlines()
    assert lines
    errors = []
    for number, line in enumerate(lines, 1):
        event = json.loads(line)
        errors += [f"event {number}: {e}" for e in _schema_errors(openlineage_schemas, event["schemaURL"], event)]
        assert event["schemaURL"].startswith("https://openlineage.io/spec/2-0-2/OpenLineage.json#")
        for where, facet in _facets(event):
            errors += [f"event {number} {where}: {e}" for e in _schema_errors(openlineage_schemas, facet["_schemaURL"], facet)]
    assert errors == []


def test_our_facet_schemas_ship_at_the_url_path_they_declare_and_are_strict(openlineage_schemas: dict[str, Any]) -> None:
    for url, path in facet_schemas().items():
        assert path.is_file() and json.loads(path.read_text())["$id"] == url
        assert Path(*url.split("/")[-4:]) == Path(*path.parts[-4:])  # .../spec/facets/1-0-0/<Name>.json
    step = "https://w3id.org/rlam-prefect/spec/facets/1-0-0/RlamStepRunFacet.json#/$defs/RlamStepRunFacet"
    base = {"_producer": "https://w3id.org/rlam-prefect", "_schemaURL": step, "status": "executed", "step": 1}
    assert _schema_errors(openlineage_schemas, step, base) == []
    assert _schema_errors(openlineage_schemas, step, {**base, "unknownField": 1}) != []  # drift is caught
    assert _schema_errors(openlineage_schemas, step, {**base, "status": "made-up"}) != []
    assert _schema_errors(openlineage_schemas, step, {k: v for k, v in base.items() if k != "_producer"}) != []


# ---- PROV: read back, PROV-N, PROV-O -----------------------------------------------------


def _prov(recorded: dict[str, Any], kind: str) -> ProvDocument:
    return ProvDocument.deserialize(source=str(_export(recorded, kind, "prov")), format="json")


@pytest.mark.parametrize("kind", KINDS)
def test_prov_reads_back_and_converts_to_prov_n_and_prov_o(recorded: dict[str, Any], kind: str) -> None:
    import rdflib
    from rdflib.namespace import RDF

    path = _export(recorded, kind, "prov")
    doc = ProvDocument.deserialize(source=str(path), format="json")
    records = list(doc.get_records())
    assert records
    declared = {r.identifier for r in doc.get_records(ProvElement)}
    for record in records:
        for value in record.get_attribute(PROV_TYPE):
            assert isinstance(value, QualifiedName), (record.identifier, value)
        if isinstance(record, ProvRelation):
            ends = [v for k, v in record.formal_attributes if v is not None and isinstance(v, QualifiedName) and k.localpart not in ("generation", "usage")]
            assert ends and all(end in declared for end in ends), record
    provn = doc.get_provn()
    assert "prov:type='prov:SoftwareAgent'" in provn and 'prov:type="' not in provn  # qualified names, not strings
    turtle = doc.serialize(format="rdf", rdf_format="turtle")
    graph = rdflib.Graph().parse(data=turtle, format="turtle")
    prov_o = rdflib.Namespace("http://www.w3.org/ns/prov#")
    rlam = rdflib.Namespace("https://w3id.org/rlam-prefect/terms#")
    assert (rdflib.URIRef("urn:rlam:agent:rlam-prefect"), RDF.type, prov_o.SoftwareAgent) in graph
    assert (rdflib.URIRef(f"urn:rlam:run:{recorded[kind]['run_id']}"), RDF.type, rlam.Run) in graph
    back = ProvDocument.deserialize(content=turtle, format="rdf", rdf_format="turtle")
    assert back == doc  # PROV-O loses nothing: every record and attribute reads back
    assert recorded["space"].home.root.as_posix() not in path.read_text()  # no local absolute path


# ---- lineage, followed through all three formats -----------------------------------------


def _attr(record: Any, name: str) -> Any:
    values = [v for k, v in record.attributes if k.localpart == name]
    return values[0] if values else None


def _relations(doc: ProvDocument, kind: type, first: str, second: str) -> set[tuple[str, str]]:
    return {(str(r.get_attribute(first).pop()), str(r.get_attribute(second).pop())) for r in doc.get_records(kind) if r.get_attribute(second)}


def _graph(crate: Path) -> dict[str, dict[str, Any]]:
    return {e["@id"]: e for e in json.loads((crate / "ro-crate-metadata.json").read_text())["@graph"]}


def _events(recorded: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _export(recorded, kind, "openlineage").read_text().splitlines()]


def _artifact(digest: str) -> str:
    return f"artifact:{digest.replace(':', '-')}"


def test_a_replay_links_every_cached_output_to_the_run_and_step_that_computed_it(recorded: dict[str, Any]) -> None:
    from prov.model import ProvCommunication, ProvDerivation, ProvGeneration, ProvStart

    run, replay = recorded["run"], recorded["replay"]
    doc = _prov(recorded, "replay")
    generated = _relations(doc, ProvGeneration, "prov:entity", "prov:activity")
    derived = _relations(doc, ProvDerivation, "prov:generatedEntity", "prov:usedEntity")
    started = _relations(doc, ProvStart, "prov:activity", "prov:starter")
    activities = {str(a.identifier): a for a in doc.get_records(ProvActivity)}
    for original, step in zip(run["steps"], replay["steps"], strict=True):
        assert step["status"] == "cached" and step["output_hash"] == original["output_hash"]
        producer = f"step:{run['run_id']}-{original['step']}"
        assert (_artifact(step["output_hash"]), producer) in generated
        assert (producer, f"run:{run['run_id']}") in started
        assert activities[producer].get_startTime() is not None and activities[producer].get_endTime() is not None
    # a fully cached run still derives every output from its inputs
    for step in replay["steps"][1:]:
        assert any(gen == _artifact(step["output_hash"]) for gen, _ in derived)
    assert (f"run:{replay['run_id']}", f"run:{run['run_id']}") in _relations(doc, ProvCommunication, "prov:informed", "prov:informant")

    graph = _graph(_export(recorded, "replay", "ro-crate"))
    run_action = graph[f"#run-{replay['run_id']}"]
    assert run_action["isBasedOn"] == {"@id": f"#run-{run['run_id']}"} and graph[f"#run-{run['run_id']}"]["@type"] == "CreateAction"
    for step in replay["steps"]:
        origin = graph[graph[f"#step-{step['step']}"]["isBasedOn"]["@id"]]
        assert origin["@id"] == f"#run-{run['run_id']}-step-{step['step']}" and origin["result"] == graph[f"#step-{step['step']}"]["result"]
        assert origin["startTime"] and origin["endTime"]

    events = _events(recorded, "replay")
    assert events[0]["run"]["facets"]["parent"]["run"]["runId"] == run_uuid("run", run["run_id"])
    terminal = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] != "rlam"]
    for event, original in zip(terminal, run["steps"], strict=True):
        computed = event["run"]["facets"]["rlam_step"]["computedBy"]
        assert (computed["rlamRunId"], computed["step"], computed["runId"]) == (run["run_id"], original["step"], step_uuid(run["run_id"], original["step"]))
        assert [d["name"] for d in event["outputs"]] == [original["output_hash"]]


def test_a_fork_links_to_its_parent_and_records_the_planner(recorded: dict[str, Any]) -> None:
    from prov.model import ProvAssociation, ProvAttribution

    run, fork = recorded["run"], recorded["fork"]
    events = _events(recorded, "fork")
    start = events[0]["run"]["facets"]
    assert start["parent"]["run"]["runId"] == run_uuid("run", run["run_id"]) and start["parent"]["root"]["run"]["runId"] == run_uuid("run", run["run_id"])
    assert (start["rlam_run"]["parentRlamRunId"], start["rlam_run"]["forkStep"], start["rlam_run"]["mode"]) == (run["run_id"], 4, "fork")
    assert start["rlam_run"]["planner"] == "rlam/heuristic" and start["rlam_run"]["plannerEndpoint"] == "in-process"
    decided = [e["run"]["facets"]["rlam_step"]["decision"] for e in events[1:-1] if e["run"]["facets"]["rlam_step"]["step"] >= 4]
    assert decided and all(d["model"] == "rlam/heuristic" and d["endpoint"] == "in-process" and d["valid"] for d in decided)
    steps = [e for e in events[1:-1] if e["eventType"] == "START"]
    assert all(e["run"]["facets"]["parent"]["run"]["runId"] == run_uuid("run", fork["run_id"]) for e in steps)

    graph = _graph(_export(recorded, "fork", "ro-crate"))
    assert graph[f"#run-{fork['run_id']}"]["isBasedOn"] == {"@id": f"#run-{run['run_id']}"}
    assert [graph[f"#step-{n}"].get("isBasedOn") for n in (1, 2, 3)] == [{"@id": f"#run-{run['run_id']}-step-{n}"} for n in (1, 2, 3)]
    assert "isBasedOn" not in graph["#step-4"]
    chosen = [e for e in graph.values() if e["@type"] == "ChooseAction"]
    assert chosen and all(e["instrument"] == {"@id": "https://w3id.org/rlam-prefect/planner/rlam%2Fheuristic"} for e in chosen)
    assert {e.get("result", {}).get("@id") for e in chosen} >= {"#step-4", "#step-5"}

    doc = _prov(recorded, "fork")
    plans = [e for e in doc.get_records(ProvEntity) if e.get_attribute(PROV_TYPE) == {doc.valid_qualified_name("prov:Plan")}]
    assert len(plans) == len(fork["steps"]) - 3  # one planner decision per step decided after the fork point
    attributed = _relations(doc, ProvAttribution, "prov:entity", "prov:agent")
    assert {(str(p.identifier), "agent:planner-rlam%2Fheuristic") for p in plans} <= attributed
    followed = {(str(a.get_attribute("prov:activity").pop()), str(a.get_attribute("prov:plan").pop())) for a in doc.get_records(ProvAssociation) if a.get_attribute("prov:plan")}
    assert followed == {(f"step:{fork['run_id']}-{n}", f"decision:{fork['run_id']}-{n}") for n in (4, 5)}
    assert "agent:planner-rlam%2Fheuristic" in {str(a.identifier) for a in doc.get_records(ProvAgent)}


def test_a_failed_run_carries_its_error_in_every_format(recorded: dict[str, Any]) -> None:
    failed = recorded["failed"]
    events = _events(recorded, "failed")
    assert events[-1]["eventType"] == "FAIL" and "InjectedFailure" in events[-1]["run"]["facets"]["errorMessage"]["message"]
    step4 = [e for e in events if e["job"]["name"] == "rlam.train_model" and e["eventType"] == "FAIL"]
    assert len(step4) == 1 and "InjectedFailure" in step4[0]["run"]["facets"]["errorMessage"]["message"]

    crate = _export(recorded, "failed", "ro-crate")
    graph = _graph(crate)
    run_action, step_action = graph[f"#run-{failed['run_id']}"], graph["#step-4"]
    assert run_action["actionStatus"] == step_action["actionStatus"] == "http://schema.org/FailedActionStatus"
    assert "InjectedFailure" in run_action["error"] and "InjectedFailure" in step_action["error"] and step_action["@type"] == "ActivateAction"
    assert all(graph[f"#step-{n}"]["actionStatus"] == "http://schema.org/CompletedActionStatus" and "error" not in graph[f"#step-{n}"] for n in (1, 2, 3))
    rows = pq.read_table(crate / "trace" / "steps.parquet").to_pylist()
    assert [(r["step"], r["status"], r["output_hash"]) for r in rows] == [(s["step"], s["status"], s["output_hash"]) for s in failed["steps"]]

    doc = _prov(recorded, "failed")
    activities = {str(a.identifier): a for a in doc.get_records(ProvActivity)}
    assert _attr(activities[f"step:{failed['run_id']}-4"], "status") == "failed" and "InjectedFailure" in _attr(activities[f"step:{failed['run_id']}-4"], "error")
    assert "InjectedFailure" in _attr(activities[f"run:{failed['run_id']}"], "error")


_IRI_REF = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")  # RFC 3986 characters only (no space, quote, <, >, \, ^, `, {, |, })


def test_a_made_up_action_name_is_text_never_an_identifier_and_no_tool(recorded: dict[str, Any]) -> None:
    import rdflib

    punct = recorded["punct"]
    crate = _export(recorded, "punct", "ro-crate")
    raw = json.loads((crate / "ro-crate-metadata.json").read_text())["@graph"]
    graph = {e["@id"]: e for e in raw}
    assert all(_IRI_REF.match(ident) for ident in graph), [i for i in graph if not _IRI_REF.match(i)]
    # JSON-LD processing keeps every entity (an invalid @id would be dropped silently); the context inline, offline
    document = json.loads((crate / "ro-crate-metadata.json").read_text())
    document["@context"] = json.loads(CONTEXTS[document["@context"]].read_text())["@context"]
    rdf = rdflib.Graph().parse(data=json.dumps(document), format="json-ld", base=crate.resolve().as_uri() + "/")
    assert len({s for s in rdf.subjects(rdflib.RDF.type, None)}) == len(raw)
    tools = [e for e in raw if e["@type"] == "SoftwareApplication" and "/action/" in e["@id"]]
    assert sorted(t["name"] for t in tools) == sorted({s["action"] for s in punct["steps"][1:]})  # the rejected reply made no tool
    assert "#step-1" not in graph and "#howto-1" not in graph and "#control-1" not in graph
    rejected = [e for e in raw if e["@type"] == "ChooseAction" and e["actionStatus"] == "http://schema.org/FailedActionStatus"]
    assert len(rejected) == 1 and "unknown action" in rejected[0]["error"]
    planner = graph["https://w3id.org/rlam-prefect/planner/openai%2Fgpt-4o-mini"]
    assert planner["url"] == recorded["endpoint"]

    events = _events(recorded, "punct")
    names = {e["job"]["name"] for e in events}
    assert all(re.fullmatch(r"[A-Za-z0-9._~%-]+", n) for n in names), names
    rejected_events = [e for e in events if e["run"]["facets"].get("rlam_step", {}).get("step") == 1]
    assert {e["job"]["name"] for e in rejected_events} == {"rlam.plan"} and rejected_events[-1]["eventType"] == "ABORT"
    assert rejected_events[-1]["run"]["facets"]["rlam_step"]["claimedAction"] == PUNCT_ACTION
    assert events[0]["run"]["facets"]["rlam_run"]["plannerEndpoint"] == recorded["endpoint"]

    doc = _prov(recorded, "punct")
    identifiers = [str(r.identifier) for r in doc.get_records(ProvElement)]
    assert all(_IRI_REF.match(i) for i in identifiers), identifiers
    claimed = [_attr(r, "claimed_action") for r in doc.get_records() if _attr(r, "claimed_action")]
    assert PUNCT_ACTION in claimed  # kept, as a literal
    assert doc.get_provn()  # PROV-N escapes the literal text

    for path in (crate / "ro-crate-metadata.json", _export(recorded, "punct", "openlineage"), _export(recorded, "punct", "prov")):
        text = path.read_text()
        assert "s3cret-pass" not in text and "abc123" not in text and "planner-user" not in text, path


def test_the_planner_endpoint_is_recorded_without_credentials(recorded: dict[str, Any]) -> None:
    from rlam_prefect.record.store import TraceStore

    decisions = TraceStore(recorded["space"].home).decisions(recorded["punct"]["run_id"])
    assert [d["endpoint"] for d in decisions] == [recorded["endpoint"]] * len(decisions)
    assert [d["valid"] for d in decisions][:2] == [False, True] and decisions[0]["action"] == PUNCT_ACTION[:60]
    fork_decisions = TraceStore(recorded["space"].home).decisions(recorded["fork"]["run_id"])
    assert fork_decisions and {d["endpoint"] for d in fork_decisions} == {"in-process"}


def test_an_empty_table_exists_with_its_schema_from_the_first_run(prefect_api_url: str, tmp_path: Path) -> None:
    """The README's DuckDB queries work on a home where no planner was ever called."""
    import duckdb

    from rlam_prefect.core.home import HomeLayout
    from rlam_prefect.record.schema import TABLES

    space = Workspace(HomeLayout(tmp_path / "rlam-home"))
    assert space.rlam_json("run", "--planner", "fixed")["status"] == "completed"
    decisions = space.home.root / "traces" / "decisions"
    assert [p.name for p in decisions.iterdir()] == ["_schema.parquet"]
    query = f"select * from read_parquet('{decisions.as_posix()}/**/*.parquet')"
    assert duckdb.sql(f"select count(*) from ({query})").fetchall() == [(0,)]
    assert duckdb.sql(query).columns == TABLES["decisions"].names
    for table, schema in TABLES.items():  # a fresh home: every table got its schema file on the first write
        assert pq.read_schema(space.home.root / "traces" / table / "_schema.parquet") == schema
    steps = f"select * from read_parquet('{(space.home.root / 'traces' / 'steps').as_posix()}/**/*.parquet')"
    assert duckdb.sql(f"select count(*) from ({steps})").fetchall() == [(5,)]  # the schema file adds no row


# ---- the libraries read their own formats back; bad input ---------------------------------


def test_each_library_reads_its_format_back(recorded: dict[str, Any]) -> None:
    failed = recorded["failed"]
    crate = ROCrate(str(_export(recorded, "failed", "ro-crate")))
    assert crate.mainEntity.id == "workflow/rlam_flow.py" and crate.version == "1.1"
    assert len(crate.get_by_type("ControlAction")) == len(failed["steps"]) == len(crate.get_by_type("HowToStep"))
    zipped = ROCrate(str(_export(recorded, "fork", "ro-crate", "fork-crate.zip")))
    assert len(zipped.get_by_type("CreateAction")) >= len(recorded["fork"]["steps"]) + 1

    path = _export(recorded, "failed", "openlineage")
    events = read_events(path)
    assert len(events) == 2 + 2 * len(failed["steps"])
    assert (events[0].eventType, events[0].job.name) == (RunState.START, "rlam")
    assert (events[-1].eventType, events[-1].run.runId) == (RunState.FAIL, run_uuid("run", failed["run_id"]))
    terminal = [e for e in events[1:-1] if e.eventType != RunState.START]
    assert [e.job.name for e in terminal] == [f"rlam.{s['action']}" for s in failed["steps"]]
    assert terminal[0].run.facets["rlam_step"].cacheKey == failed["steps"][0]["cache_key"]
    again = _export(recorded, "failed", "openlineage", "again.openlineage.jsonl")
    assert again.read_bytes() == path.read_bytes()  # deterministic


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
