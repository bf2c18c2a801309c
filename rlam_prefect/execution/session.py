"""The R-LAM execution engine: one step at a time through the verified cache and the trace.

For each decision: validate it, bind inputs by artifact kind, compute the content key, and
under that key's lock either prove the stored result is the recorded one (then let Prefect
serve it) or let Prefect execute and persist it (then index its digest). Every outcome,
failures included, becomes one trace row. Nothing is retried or recomputed behind the user's back.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from rlam_prefect.actions.artifact import Artifact
from rlam_prefect.actions.files import check_files_unchanged, declared_files
from rlam_prefect.actions.registry import get_action
from rlam_prefect.core.environment import environment, environment_hash, runtime_versions
from rlam_prefect.core.errors import DataFileError, ReplayMismatchError, RLamError, StorageError, StoredResultError, one_line
from rlam_prefect.core.hashing import canonical_json, content_hash
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.core.keys import cache_key
from rlam_prefect.core.storage import LOCK_ENV, unshared_lock_warning
from rlam_prefect.core.version import __version__
from rlam_prefect.execution import approval as approval_gate
from rlam_prefect.execution import run_log
from rlam_prefect.execution.locks import key_lock, warn_if_unshared
from rlam_prefect.planning.llm import LLMReply, calls_so_far
from rlam_prefect.planning.plan import RunPlan
from rlam_prefect.planning.policy import file_choice_violation
from rlam_prefect.planning.sources import Decision
from rlam_prefect.record.compare import key_differences, outcome, run_metrics
from rlam_prefect.record.records import DecisionRecord, ResultRecord, RunEvent, StepRecord
from rlam_prefect.record.results import ResultGuard
from rlam_prefect.record.store import TraceStore, utcnow

APPROVAL_COLUMNS = ("approval", "approved_by", "approval_via", "approval_edits", "approval_note")
StepListener = Callable[[dict[str, Any]], None]
_listeners: contextvars.ContextVar[tuple[StepListener, ...]] = contextvars.ContextVar("rlam_step_listeners", default=())


@contextlib.contextmanager
def step_listener(listener: StepListener) -> Iterator[None]:
    """Call ``listener`` with every step row recorded inside this block (the CLI's progress display).

    A context variable, not a module list: it follows the call into the flow run (same thread or the
    worker thread ``prefect/runner.py`` uses under a running loop) and ends with the block.
    """
    token = _listeners.set((*_listeners.get(), listener))
    try:
        yield
    finally:
        _listeners.reset(token)


class RunSession:
    def __init__(self, home: HomeLayout, plan: RunPlan, prefect_flow_run_id: str | None) -> None:
        self.home = home
        self.plan = plan
        self.store = TraceStore(home)
        self.guard = ResultGuard(home)
        self.flow_run_id = prefect_flow_run_id
        self.history: list[dict[str, Any]] = []
        self.artifacts: dict[str, Artifact] = {}  # latest artifact of each kind
        self.started_at = utcnow()
        self.source = plan.decisions(self._call_planner)
        self.injected: set[str] = set()
        self.llm_calls_before = calls_so_far()
        self.log = run_log.RunLog(prefect_flow_run_id)  # the Prefect UI's Logs tab
        self.computed_by: dict[int, tuple[str, int]] = {}  # step served from the cache -> (run, step) that computed it

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        warn_if_unshared(self.home)
        self.store.append_run_event(self._run_row("start", "running"))
        parent = self.store.run(self.plan.parent_run_id).get("prefect_flow_run_id") if self.plan.parent_run_id else None
        self.log.flow(run_log.start_line(self.plan, run_log.flow_run_page(parent)))

    def next_decision(self) -> Decision | None:
        decision = self.source.next_decision(self.history)
        if decision is None and self.source.stop_record is not None:
            self.store.append_decision(DecisionRecord(**{**self.source.stop_record, "run_id": self.plan.run_id}))  # why the run ended
            self.log.flow(f"planner ({self.plan.planner.model}) stopped" + (f": {self.source.stop_record.get('reason')}" if self.source.stop_record.get("reason") else ""))
        return decision

    def finish(self, error: str | None = None) -> dict[str, Any]:
        error = error or self.source.failure
        row = self._run_row("end", "failed" if error or self._failed() else "completed", error)
        self.store.append_run_event(row)
        recorded = row.to_row()
        self.log.flow(run_log.outcome_line(self.plan, recorded, self.history), logging.INFO if recorded["status"] == "completed" else logging.ERROR)
        return recorded

    def _failed(self) -> bool:
        if self.plan.mode == "replay":
            return not self._identical()  # a replay succeeds when it proves the recorded run, failures included
        return bool(self.history) and self.history[-1]["status"] in ("failed", "rejected")

    # ---- one step ------------------------------------------------------------------------

    def execute(self, decision: Decision) -> dict[str, Any]:
        step = len(self.history) + 1
        started = utcnow()
        clock = time.perf_counter()
        row = StepRecord(
            run_id=self.plan.run_id, step=step, action=decision.action, params=canonical_json(decision.params),
            started_at=started, reason=decision.reason, recovers_step=decision.recovers_step,
        )
        if not decision.expect_cached and decision.rejection is None:
            self.log.decision(step, decision.action, decision.params, decision.reason, self.plan.planner.model)
        if decision.rejection is not None:
            row.update(action=decision.action or "(invalid)", params=None, status="rejected", error_type="InvalidDecision", error_message=decision.rejection)
            return self._record(row, clock, decision)
        original = decision.original
        if decision.expect_cached and original is not None:
            row.update(**{k: original.get(k) for k in APPROVAL_COLUMNS})  # recorded approvals are reused, never asked again
        if decision.expect_cached and original is not None and original["status"] in ("failed", "rejected"):
            # A recorded failure is part of the run: carried into the replay, never re-executed.
            row.update(**{k: original[k] for k in ("params", "input_hashes", "cache_key", "code_version", "env_hash", "status", "error_type", "error_message")})
            row.error_message = f"{original['error_message']} (recorded in run {original['run_id']}, not re-executed)"
            return self._record(row, clock, decision)
        if not decision.expect_cached:
            refused = self._govern(decision, step, row)
            if refused is not None:
                row.update(status="rejected", error_type=refused[0], error_message=refused[1])
                if decision.record is not None:  # the reply parsed, but could not be acted on
                    decision.record.update(valid=False, rejection_reason=refused[1])
                return self._record(row, clock, decision)
        try:
            self._run_step(decision, step, row)
        except RLamError as exc:
            row.update(status="failed", error_type=type(exc).__name__, error_message=str(exc))
        except Exception as exc:  # a bug or a broken machine: the step's row says which, then the run fails with it
            row.update(status="failed", error_type=type(exc).__name__, error_message=one_line(exc))
            self._record(row, clock, decision)
            raise
        return self._record(row, clock, decision)

    def _govern(self, decision: Decision, step: int, row: StepRecord) -> tuple[str, str] | None:
        """Policy rules and the approval gate for a new decision: (error_type, message) if refused.

        An approved edit replaces ``decision.params``; the edit is checked like any other decision.
        """
        policy = self.plan.policy
        if policy is None and decision.record is None:
            return None
        try:
            spec = get_action(decision.action)
            params = spec.validate_params(decision.params)
        except RLamError:
            return None  # invalid params fail the step where they always have (_run_step)
        if decision.record is not None and spec.file_params:  # a planner's decision: a data file is the user's choice
            broken = file_choice_violation(policy, spec.name, declared_files(spec.params_model, params), self._user_files(spec))
            if broken:
                return "PolicyViolation", f"policy rule {broken}"
        if policy is None:
            return None
        broken = policy.violation(decision.action, params, self.history)
        if broken:
            return "PolicyViolation", f"policy rule {broken}"
        if not policy.needs_approval(decision.action):
            return None
        approval = approval_gate.ask(step, decision.action, params, self.plan.pre_approved, self.plan.approval_timeout)
        row.update(**approval.row(params))
        who = f" by {approval.reviewer}" if approval.reviewer else ""
        if not approval.approved:
            note = f": {approval.note}" if approval.note else ""
            return "ApprovalRejected", f"{decision.action} was rejected{who} ({approval.via}){note}"
        try:
            edited = get_action(decision.action).validate_params(approval.params)
        except RLamError as exc:
            return "ApprovalRejected", f"the parameters approved{who} are invalid: {exc}"
        broken = policy.violation(decision.action, edited, self.history)
        if broken:
            return "PolicyViolation", f"the parameters approved{who} break policy rule {broken}"
        decision.params = edited
        row.params = canonical_json(edited)
        return None

    def _user_files(self, spec: Any) -> dict[str, set[str]]:
        """Per file parameter of ``spec``: the paths the user chose (pins, defaults, the forked run's steps)."""
        given: dict[str, set[str]] = {}
        pinned = self.plan.overrides.get(spec.name, {})
        defaults = spec.params_model.model_fields
        for param in spec.file_params:
            values = {str(v) for v in (pinned.get(param), defaults[param].default) if v}
            values |= {str(json.loads(s["params"]).get(param)) for s in self.plan.parent_steps if s["action"] == spec.name and s.get("params")}
            given[param] = values
        return given

    def _run_step(self, decision: Decision, step: int, row: StepRecord) -> None:
        spec = get_action(decision.action)
        params = spec.validate_params(decision.params)
        inputs = {arg: self.artifacts[kind] for arg, kind in spec.input_kinds.items() if kind in self.artifacts}
        env_hash = environment_hash(spec.packages)
        input_hashes = {arg: artifact.content_hash for arg, artifact in inputs.items()}
        row.update(params=canonical_json(params), input_hashes=canonical_json(input_hashes), code_version=spec.code_version, env_hash=env_hash, output_kind=spec.output_kind)
        files = spec.file_digests(params)  # a missing, unreadable or empty file fails the step here, before Prefect
        if files:
            row.files_read = canonical_json({name: found.to_dict() for name, found in files.items()})
            if decision.expect_cached:
                check_files_unchanged(files, decision.original, f"step {step} {spec.name}")
        key = cache_key(spec.name, spec.code_version, params, input_hashes, env_hash, {name: found.digest for name, found in files.items()})
        row.cache_key = key
        unmet = spec.unmet_inputs(self.artifacts)
        if unmet:
            row.update(status="rejected", error_type="PreconditionFailed", error_message=unmet)
            return
        what = f"step {step} {spec.name}"
        # an injected failure fails the step whether or not a result is cached (experiments rely on it)
        inject = not decision.expect_cached and spec.name in self.plan.inject_failures and spec.name not in self.injected
        with key_lock(self.home, key):
            record = None if inject else self.store.result_record(key)
            if inject:
                self.injected.add(spec.name)
            elif record is not None:
                self.guard.verify(key, record, what)
                self.computed_by[step] = (record["run_id"], int(record["step"]))
            elif decision.expect_cached:
                raise ReplayMismatchError(f"{what}: no cached result for its key; {self._why_no_cache(decision.original, row)}")
            else:
                moved = self.guard.quarantine_orphan(key)
                if moved is not None:
                    row.reason = f"{row.reason}; an unindexed result file for this key was moved to {moved}".lstrip("; ")
            task = _action_task(spec, self.home)
            state = task(
                step=step,
                params=params,
                inputs=inputs,
                expect_cached=record is not None,
                inject_failure=inject,
                return_state=True,
                wait_for=decision.upstream or None,
            )
            row.prefect_task_run_id = str(state.state_details.task_run_id) if state.state_details else None
            if state.is_failed() or state.is_crashed():
                exc = state.result(raise_on_failure=False, _sync=True)  # the flow is async: force the sync path
                if isinstance(exc, RLamError):
                    raise exc
                row.update(status="failed", error_type=type(exc).__name__, error_message=one_line(exc))
                return
            artifact: Artifact = state.result(_sync=True)
            if record is not None:
                if state.name != "Cached":
                    raise ReplayMismatchError(f"{what}: Prefect reported {state.name!r} instead of serving the cached result")
                recomputed = content_hash(artifact.value)
                if recomputed != record["output_hash"]:
                    raise StoredResultError(f"{what}: cached result hashes to {recomputed[:19]}, recorded {record['output_hash'][:19]}")
                row.status = "cached"
            else:
                row.status = "executed"
                if files and spec.file_digests(params) != files:
                    raise DataFileError(f"{what}: {', '.join(f.path for f in files.values())} changed while the step read it; its result was not indexed, run again")
                if not self.guard.io.exists(self.guard.key_path(key)):  # Prefect logs a failed result write and goes on; never index a torn file
                    raise StorageError(f"{what}: its result was not stored in {self.guard.location(key)} ({self._why_missing()}); it was not indexed")
                digest, size = self.guard.file_digest(key, what)
                indexed = self.store.put_result_record(
                    ResultRecord(
                        cache_key=key, action=spec.name, output_hash=artifact.content_hash, output_kind=artifact.kind,
                        result_digest=digest, result_bytes=size, run_id=self.plan.run_id, step=step, created_at=utcnow(),
                    )
                )
                if not indexed:
                    digest = self._duplicate(key, artifact, what)
            row.update(output_hash=artifact.content_hash, summary=canonical_json(artifact.summary()), result_digest=record["result_digest"] if record else digest)
            unmet = spec.unmet_effect(artifact.kind, artifact.value)
            if unmet:  # the result stays indexed (it is what the code computed); the run may not build on it
                row.update(status="failed", error_type="EffectFailed", error_message=unmet)
                return
            self.artifacts[artifact.kind] = artifact

    def _why_missing(self) -> str:
        """Why a result Prefect just wrote is gone: a failed write, or (without a shared lock) another worker's orphan check."""
        if unshared_lock_warning(self.home.shared) is not None:
            return f"without {LOCK_ENV} another worker checking the same key may have moved it aside as unindexed; run again, or set {LOCK_ENV}"
        return "see the Prefect log above: a full disk?"

    def _duplicate(self, key: str, artifact: Artifact, what: str) -> str:
        """Another worker indexed this key while we computed it (no shared lock): same output accepted, different refused."""
        first = self.store.result_record(key)
        if first is None or first["output_hash"] != artifact.content_hash:
            found = first["output_hash"][:19] if first else "nothing"
            raise StoredResultError(
                f"{what}: key {key[:16]} was computed twice without a shared lock and the results differ (this run {artifact.content_hash[:19]}, "
                f"run {first['run_id'] if first else '?'} indexed {found} first); refused, not served — set RLAM_LOCK_URL"
            )
        self.computed_by[len(self.history) + 1] = (first["run_id"], int(first["step"]))
        return str(first["result_digest"])

    def _record(self, row: StepRecord, clock: float, decision: Decision) -> dict[str, Any]:
        row.duration_s = time.perf_counter() - clock
        self.store.append_step(row)
        if decision.record is not None:
            self.store.append_decision(DecisionRecord(**{**decision.record, "run_id": self.plan.run_id, "step": row.step}))
        recorded = row.to_row()
        self.history.append(recorded)
        self.log.step(recorded, self.computed_by.get(recorded["step"]))
        for listener in _listeners.get():
            listener(recorded)
        return recorded

    # ---- run rows ------------------------------------------------------------------------

    def _run_row(self, event: str, status: str, error: str | None = None) -> RunEvent:
        plan = self.plan
        values: dict[str, Any] = {
            "run_id": plan.run_id,
            "event": event,
            "prefect_flow_run_id": self.flow_run_id,
            "pipeline": "rlam",
            "mode": plan.mode,
            "parent_run_id": plan.parent_run_id,
            "fork_step": plan.fork_step,
            "overrides": canonical_json(plan.overrides),
            "planner": plan.planner.model,
            "planner_options": plan.planner.to_json(),
            "injected_failures": json.dumps(list(plan.inject_failures)),
            "status": status,
            "started_at": self.started_at,
            "env_hash": environment_hash(),
            "environment": canonical_json({**environment(), "runtime": runtime_versions()}),
            "action_modules": json.dumps(list(plan.action_modules)),
            "rlam_version": __version__,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "policy_hash": plan.policy.hash if plan.policy else None,
            "policy": plan.policy.to_json() if plan.policy else None,
        }
        row = RunEvent(**values)
        if event == "end":
            row.update(
                ended_at=utcnow(),
                n_steps=len(self.history),
                executed=sum(r["status"] == "executed" for r in self.history),
                cached=sum(r["status"] == "cached" for r in self.history),
                identical=self._identical() if plan.mode == "replay" else None,
                metrics=canonical_json(self._metrics()),
                error_message=error,
                llm_calls=calls_so_far() - self.llm_calls_before,
            )
        return row

    def _call_planner(self, messages: list[dict[str, str]], step: int) -> tuple[Any, list[Any]]:
        from prefect import State
        from prefect.utilities.annotations import quote

        from rlam_prefect.execution.tasks import plan_task

        # return_state=True returns the task run's State: prefect's Task[..., T] overload without it claims T
        state = cast("State[LLMReply]", plan_task()(step=step, model=self.plan.planner.model, messages=quote(messages), temperature=self.plan.planner.temperature, seed=self.plan.planner.seed, return_state=True))
        return state.result(_sync=True), [state]  # type: ignore[call-overload]  # async_dispatch takes _sync; prefect's overloads omit it

    def _metrics(self) -> dict[str, Any]:
        return run_metrics(self.history)

    def _why_no_cache(self, original: dict[str, Any] | None, row: StepRecord) -> str:
        recorded_by = self.store.run(original["run_id"]).get("rlam_version") if original else None
        return _why_no_cache(original, row.to_row(), recorded_by)

    def _identical(self) -> bool:
        original = self.plan.parent_steps
        return len(original) == len(self.history) and all(outcome(a) == outcome(b) for a, b in zip(self.history, original))


def _action_task(spec: Any, home: HomeLayout) -> Any:
    from rlam_prefect.execution.tasks import action_task

    return action_task(spec, home)


def _why_no_cache(original: dict[str, Any] | None, row: dict[str, Any], recorded_by: str | None) -> str:
    """Name the key part that moved since the recorded step, so a failed replay explains itself."""
    if original is None:
        return "it was never computed"
    changed = key_differences(row, original)
    if changed:
        parts = "; ".join(f"{d['part']}: {d['detail']}" for d in changed)
        if any(d["part"] == "code version" for d in changed) and (recorded_by or "").startswith("0.1."):
            parts += (f" (run {original['run_id']} was recorded by rlam-prefect {recorded_by}, whose code versions also hashed"
                      " rlam-prefect's own source; fork it from step 1 with --pin-decisions to re-derive it under this version, and `rlam diff` the two)")
        return f"{parts} changed since run {original['run_id']} recorded it; fork from this step to re-execute"
    return f"the result recorded by run {original['run_id']} is not indexed in this RLAM_HOME"
