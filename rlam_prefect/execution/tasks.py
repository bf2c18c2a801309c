"""Each registered action as a Prefect task with the content-addressed cache and result storage."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE

from rlam_prefect.actions.artifact import Artifact
from rlam_prefect.actions.registry import get_action
from rlam_prefect.actions.spec import ActionSpec
from rlam_prefect.core.errors import ReplayMismatchError
from rlam_prefect.core.hashing import content_hash
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.execution.cache_policy import ActionCachePolicy
from rlam_prefect.planning.llm import LLMReply, complete

_TASKS: dict[tuple[str, str, str], Task[..., Any]] = {}


def action_task(spec: ActionSpec, home: HomeLayout) -> Task[..., Artifact]:
    """The Prefect task of ``spec`` storing results under ``home`` (built once per process)."""
    cache_id = (spec.name, spec.code_version, f"{home.root}|{home.store_url}")
    task = _TASKS.get(cache_id)
    if task is None:
        task = Task(
            fn=_make_runner(spec.name),
            name=spec.name,
            description=spec.description,
            task_run_name=f"{spec.name} #{{step}}",
            cache_policy=ActionCachePolicy(key_storage=result_storage(home, "keys")),
            persist_result=True,
            result_storage=result_storage(home, "data"),
            result_serializer="pickle",
            cache_result_in_memory=False,
            retries=0,
        )
        _TASKS[cache_id] = task
    return task


def result_storage(home: HomeLayout, part: str) -> Any:
    """Where Prefect persists results (``data``) and their metadata (``keys``): a local Path, or for
    RLAM_STORE_URL=s3://... a ``RemoteFileSystem`` block on the same fsspec URL.

    Prefect only takes a block saved on its server; it is saved once per process under a name made
    of the URL (no credentials in it: s3fs reads them from the worker's environment)."""
    shared = home.shared
    if shared is None:
        return home.result_data if part == "data" else home.result_keys
    return _saved_block(f"{shared.url}/results/{part}")


@functools.cache
def _saved_block(basepath: str) -> Any:
    from prefect.filesystems import RemoteFileSystem

    block = RemoteFileSystem(basepath=basepath)
    block.save(f"rlam-{_block_name(basepath)}", overwrite=True, _sync=True)  # type: ignore[call-arg]  # async_dispatch takes _sync
    return block


def _block_name(basepath: str) -> str:
    """A block name for a storage URL: readable tail plus a digest (block names: lowercase, digits, dashes)."""
    return f"{basepath.rsplit('/', 1)[-1]}-{hashlib.sha256(basepath.encode()).hexdigest()[:16]}"


class InjectedFailure(RuntimeError):
    """A failure made on purpose (experiments, tests): it fails a real task run like any other error."""


def plan_task() -> Task[..., LLMReply]:
    """Each planner call as its own task run, so decisions show in the run graph; never cached."""
    task = _TASKS.get(("plan", "", ""))
    if task is None:
        task = Task(
            fn=_call_planner,
            name="plan",
            task_run_name="plan #{step}",
            cache_policy=NO_CACHE,
            persist_result=False,
            retries=0,
        )
        _TASKS[("plan", "", "")] = task
    return task


def _call_planner(step: int, model: str, messages: list[dict[str, str]], temperature: float, seed: int | None) -> LLMReply:
    return complete(model, messages, temperature=temperature, seed=seed)


def _make_runner(action_name: str) -> Any:
    def run_action(
        step: int, params: dict[str, Any], inputs: dict[str, Artifact], expect_cached: bool, inject_failure: bool = False
    ) -> Artifact:
        if inject_failure:
            raise InjectedFailure(f"injected failure in {action_name} (step {step})")
        if expect_cached:
            # Only reached when Prefect did not serve the verified result: never execute instead.
            raise ReplayMismatchError(
                f"step {step} {action_name}: the verified cached result was not served by Prefect; nothing was executed"
            )
        spec = get_action(action_name)
        value = spec.run({name: artifact.value for name, artifact in inputs.items()}, params)
        return Artifact(spec.output_kind, value, content_hash(value))

    run_action.__name__ = action_name
    run_action.__qualname__ = action_name
    return run_action
