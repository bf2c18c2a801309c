"""R-LAM on an ordinary Prefect flow: ``@rlam.track`` on the flow, ``@rlam.step`` on its tasks. No LLM.

Each call of a step task inside a tracked flow run is one trace step, numbered in call order (a
``.map`` over n items takes n consecutive numbers, in item order, whatever order the threads run
in). Its key is the one key computation (``core/keys.py``) over the task's name, the code version
of its function (helpers included, ``core/code_version.py``), the content hash of every argument
and the environment. A cached result is verified against the digest indexed when it was written
before Prefect may serve it; an executed one is indexed after the flow body ends. The run, its
steps and results are the same typed trace records as an R-LAM run, so ``rlam show``, ``lineage``,
``diff``, ``verify``, ``replay`` and ``fork`` read them.

A replay calls the flow again with its recorded parameters: every step must be served from the
verified cache, and a step that would execute fails with ``ReplayMismatchError`` instead. A fork
re-runs the flow with steps before K served likewise and ``overrides`` ({task: {param: value}})
applied to the calls numbered K and later; content addressing then re-executes exactly the steps
whose keys changed.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import inspect
import json
import os
import socket
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect import Task
from prefect.cache_policies import CachePolicy
from prefect.utilities.annotations import unmapped

from rlam_prefect.actions.files import is_file_annotation
from rlam_prefect.core.code_version import code_version
from rlam_prefect.core.environment import environment, environment_hash, runtime_versions
from rlam_prefect.core.errors import ReplayMismatchError, RLamError, StoredResultError, UsageError, one_line
from rlam_prefect.core.files import file_digest
from rlam_prefect.core.hashing import canonical_json, content_hash
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.core.keys import cache_key
from rlam_prefect.core.version import __version__
from rlam_prefect.execution.locks import key_lock
from rlam_prefect.execution.tasks import result_storage
from rlam_prefect.record.compare import outcome
from rlam_prefect.record.records import ResultRecord, RunEvent, StepRecord
from rlam_prefect.record.results import ResultGuard
from rlam_prefect.record.store import TraceStore, utcnow

PIPELINE = "flow"
RLAM_PARAMETERS = ("rlam_run_id", "rlam_replay_of", "rlam_fork_of", "rlam_fork_step", "rlam_overrides")
_CURRENT: contextvars.ContextVar[TrackedRun | None] = contextvars.ContextVar("rlam_tracked_run", default=None)
_THREAD = threading.local()  # the step number of the task run executing in this thread


@dataclass
class TrackedRun:
    home: HomeLayout
    run_id: str
    mode: str  # run | replay | fork
    flow_name: str
    entrypoint: str
    parameters: dict[str, Any]
    parent_run_id: str | None = None
    fork_step: int | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    parent_steps: dict[int, dict[str, Any]] = field(default_factory=dict)
    flow_thread: int = field(default_factory=threading.get_ident)
    rows: dict[int, StepRecord] = field(default_factory=dict)
    records: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    executed: dict[int, str] = field(default_factory=dict)  # step -> output hash
    refused: dict[int, RLamError] = field(default_factory=dict)
    failed: dict[int, BaseException] = field(default_factory=dict)
    futures: list[Any] = field(default_factory=list)
    step_by_task_run: dict[Any, int] = field(default_factory=dict)  # every step's Prefect task run id (data edges)
    _counter: int = 0
    _by_task_run: dict[Any, int] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.store = TraceStore(self.home)
        self.guard = ResultGuard(self.home)
        self.started_at = utcnow()

    def take(self, n: int = 1) -> int:
        """The next ``n`` step numbers (called in the flow's own thread, in program order): the first of them."""
        with self._cond:
            first = self._counter + 1
            self._counter += n
            return first

    def register(self, task_run_id: Any, step: int) -> None:
        with self._cond:
            self._by_task_run[task_run_id] = step
            self._cond.notify_all()

    def step_of(self, task_run_id: Any) -> int:
        with self._cond:
            if not self._cond.wait_for(lambda: task_run_id in self._by_task_run, timeout=60):
                raise RuntimeError("a step task was started outside @rlam.step's call, submit or map")
            return self._by_task_run[task_run_id]

    def must_be_cached(self, step: int) -> bool:
        return self.mode == "replay" or (self.mode == "fork" and step < (self.fork_step or 0))

    def overrides_for(self, task: str, step: int) -> dict[str, Any]:
        if self.mode != "fork" or step < (self.fork_step or 0):
            return {}
        return dict(self.overrides.get(task, {}))

    # ---- the run's rows ----------------------------------------------------------------

    def event(self, name: str, status: str, error: str | None = None) -> None:
        row = RunEvent(
            run_id=self.run_id, event=name, pipeline=PIPELINE, mode=self.mode, parent_run_id=self.parent_run_id,
            fork_step=self.fork_step, overrides=canonical_json(self.overrides), planner=f"flow:{self.flow_name}",
            planner_options=canonical_json({"entrypoint": self.entrypoint, "parameters": self.parameters}),
            injected_failures="[]", status=status, started_at=self.started_at, env_hash=environment_hash(),
            environment=canonical_json({**environment(), "runtime": runtime_versions()}), action_modules=json.dumps([self.entrypoint]),
            rlam_version=__version__, hostname=socket.gethostname(), pid=os.getpid(),
        )
        if name == "end":
            steps = [self.rows[k] for k in sorted(self.rows)]
            row.update(
                ended_at=utcnow(), n_steps=len(steps), executed=sum(r.status == "executed" for r in steps),
                cached=sum(r.status == "cached" for r in steps), metrics="{}", error_message=error, llm_calls=0,
                identical=self.identical(steps) if self.mode == "replay" else None,
            )
        self.store.append_run_event(row)

    def identical(self, steps: list[StepRecord]) -> bool:
        original = [self.parent_steps[k] for k in sorted(self.parent_steps)]
        return len(steps) == len(original) and all(outcome(a.to_row()) == outcome(b) for a, b in zip(steps, original))

    def record_steps(self) -> str | None:
        """Write every step row in step order (indexing executed results); the first failure, if any."""
        first_error = None
        for step in sorted(self.rows):
            row = self.rows[step]
            error = self.refused.get(step) or self.failed.get(step)
            record = self.records.get(step)
            if error is not None:
                row.update(status="failed", error_type=type(error).__name__, error_message=one_line(error))
            elif step in self.executed:
                row.update(status="executed", output_hash=self.executed[step])
                try:
                    self._index(step, row)
                except StoredResultError as exc:  # its result could not be read back: failed, nothing indexed
                    row.update(status="failed", error_type=type(exc).__name__, error_message=one_line(exc))
            elif record is not None:
                row.update(status="cached", output_hash=record["output_hash"], result_digest=record["result_digest"])
            else:
                row.update(status="failed", error_type="NotRun", error_message="the task run ended without running or being served")
            if row.status == "failed" and first_error is None:
                first_error = f"step {step} {row.action}: {row.error_message}"
            self.store.append_step(row)
        return first_error

    def _index(self, step: int, row: StepRecord) -> None:
        """Index the result an executed step stored, by the digest of the bytes it wrote."""
        assert row.cache_key is not None
        if self.guard.has_data(row.cache_key):
            digest, size = self.guard.file_digest(row.cache_key, f"step {step} {row.action}")
            self.store.put_result_record(ResultRecord(
                cache_key=row.cache_key, action=row.action, output_hash=row.output_hash, output_kind=row.output_kind,
                result_digest=digest, result_bytes=size, run_id=self.run_id, step=step, created_at=utcnow(),
            ))
            row.result_digest = digest


class ContentPolicy(CachePolicy):
    """``rlam.CONTENT``: the content key of a step task's call inside an ``@rlam.track`` flow (else no cache)."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        run = _CURRENT.get()
        if run is None:
            return None
        pending = getattr(_THREAD, "pending", None)  # set by a direct call in this thread: the call runs inline
        step = pending if pending else run.step_of(task_ctx.task_run.id)
        _THREAD.step = step
        task = task_ctx.task
        fn = getattr(task, "_rlam_fn", task.fn)
        row = StepRecord(run_id=run.run_id, step=step, action=task.name, started_at=utcnow(), reason=f"flow {run.flow_name}",
                         prefect_task_run_id=str(task_ctx.task_run.id))
        run.rows[step] = row
        run.step_by_task_run[task_ctx.task_run.id] = step
        upstream = {name: sorted(run.step_by_task_run[i.id] for i in found if getattr(i, "id", None) in run.step_by_task_run)
                    for name, found in (task_ctx.task_run.task_inputs or {}).items() if name in inputs}
        if any(upstream.values()):
            row.inputs_from = canonical_json({k: v for k, v in upstream.items() if v})
        try:
            hashes = {name: content_hash(value) for name, value in inputs.items()}
        except Exception as exc:  # an argument with no canonical content: the step fails, nothing is cached under a wrong key
            run.refused[step] = UsageError(f"step {step} {task.name}: argument has no canonical content ({one_line(exc)})")
            return None
        version = "sha256:" + code_version(fn, module_names=False)  # the same file as a script or loaded by rlam replay
        env = environment_hash()
        try:  # arguments annotated rlam.DataFile: the file's bytes are part of the key, as for an action
            files = {name: file_digest(str(inputs[name])) for name in _file_arguments(fn) if inputs.get(name)}
        except RLamError as exc:
            run.refused[step] = exc
            return None
        if files:
            row.files_read = canonical_json({name: found.to_dict() for name, found in files.items()})
        key = cache_key(task.name, version, {}, hashes, env, {name: found.digest for name, found in files.items()})
        shown = {k: v if _plain(v) else f"<{hashes[k][:19]}>" for k, v in inputs.items()}
        row.update(params=canonical_json(shown), input_hashes=canonical_json(hashes), cache_key=key, code_version=version, env_hash=env,
                   output_kind=getattr(inspect.signature(fn).return_annotation, "__name__", None))
        with key_lock(run.home, key):
            record = run.store.result_record(key)
            if record is not None:
                try:
                    run.guard.verify(key, record, f"step {step} {task.name}")
                except StoredResultError as exc:
                    run.refused[step] = exc
                    return None  # not served; the step body refuses to run (see _body)
            elif run.must_be_cached(step):
                original = run.parent_steps.get(step)
                why = "it was never recorded" if original is None else "its key moved since run " + str(run.parent_run_id) + " recorded it (code, arguments or environment changed)"
                run.refused[step] = ReplayMismatchError(f"step {step} {task.name}: no cached result for its key; {why}; fork from this step to re-execute")
            else:
                run.guard.quarantine_orphan(key)
        run.records[step] = record
        return key


CONTENT = ContentPolicy()


@functools.cache
def _file_arguments(fn: Callable[..., Any]) -> tuple[str, ...]:
    hints = typing.get_type_hints(fn, include_extras=True)
    return tuple(name for name in inspect.signature(fn).parameters if is_file_annotation(hints.get(name)))


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str)) and len(str(value)) <= 200


def _body(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """The task's function as a step: refuses to run when it must be served, records what it computed."""

    @functools.wraps(fn)
    def run_step(*args: Any, **kwargs: Any) -> Any:
        run = _CURRENT.get()
        if run is None:
            return fn(*args, **kwargs)
        step = _THREAD.step
        refused = run.refused.get(step)
        if refused is not None:
            raise refused
        try:
            value = fn(*args, **kwargs)
            run.executed[step] = content_hash(value)
        except BaseException as exc:
            run.failed[step] = exc
            raise
        return value

    return run_step


class StepTask(Task):  # type: ignore[type-arg]  # Task is generic over the user's signature
    """A Prefect task whose calls inside an ``@rlam.track`` flow are numbered, keyed by content and recorded."""

    _rlam_configured: dict[str, Any]
    _rlam_fn: Callable[..., Any]

    def _configured(self, run: TrackedRun) -> Task:  # type: ignore[type-arg]
        ready = self._rlam_configured.get(str(run.home.root))
        if ready is None:
            ready = Task.with_options(self, cache_policy=ContentPolicy(key_storage=result_storage(run.home, "keys")), persist_result=True,
                                      result_storage=result_storage(run.home, "data"), result_serializer="pickle", cache_result_in_memory=False, retries=0)
            ready.__class__ = Task
            ready.fn = _body(self._rlam_fn, self.name)
            ready._rlam_fn = self._rlam_fn  # type: ignore[attr-defined]
            self._rlam_configured[str(run.home.root)] = ready
        return ready

    def _bound(self, run: TrackedRun, step: int, args: tuple[Any, ...], kwargs: dict[str, Any], mapped: bool = False) -> dict[str, Any]:
        arguments = dict(inspect.signature(self._rlam_fn).bind_partial(*args, **kwargs).arguments)
        for param, value in run.overrides_for(self.name, step).items():
            if param not in inspect.signature(self._rlam_fn).parameters:
                raise UsageError(f"--set {self.name}.{param}: task {self.name} has no parameter {param!r}")
            arguments[param] = unmapped(value) if mapped else value
        return arguments

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        run = _CURRENT.get()
        if run is None:
            return super().__call__(*args, **kwargs)
        step = run.take()
        arguments = self._bound(run, step, args, kwargs)
        _THREAD.pending = step
        try:
            return self._configured(run)(**arguments)
        finally:
            _THREAD.pending = None

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        run = _CURRENT.get()
        if run is None:
            return super().submit(*args, **kwargs)
        step = run.take()
        future = self._configured(run).submit(**self._bound(run, step, args, kwargs))
        run.register(future.task_run_id, step)
        run.futures.append(future)
        return future

    def map(self, *args: Any, **kwargs: Any) -> Any:
        run = _CURRENT.get()
        if run is None:
            return super().map(*args, **kwargs)
        with run._cond:  # numbers are taken after Prefect knows the length; no other call can interleave in the flow's thread
            first = run._counter + 1
        futures = self._configured(run).map(**self._bound(run, first, args, kwargs, mapped=True))
        start = run.take(len(futures))
        for offset, future in enumerate(futures):
            run.register(future.task_run_id, start + offset)
            run.futures.append(future)
        return futures


def step(task: Task) -> StepTask:  # type: ignore[type-arg]
    """``@rlam.step`` over a ``@task``: its calls in an ``@rlam.track`` flow become recorded, content-keyed steps."""
    if not isinstance(task, Task):
        raise TypeError("@rlam.step goes on a Prefect task: put it above @task")
    if inspect.iscoroutinefunction(task.fn):
        raise TypeError(f"@rlam.step: task {task.name} is async; only sync tasks are supported")
    tracked: StepTask = copy.copy(task)  # type: ignore[assignment]  # the class is swapped on the next line
    tracked.__class__ = StepTask
    tracked._rlam_fn = task.fn
    tracked._rlam_configured = {}
    return tracked
