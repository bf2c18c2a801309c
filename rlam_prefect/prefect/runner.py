"""Run a validated plan as one Prefect flow run and report it from the trace.

Which Prefect API the process talks to is decided before this is called (``local/backend.py``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from typing import Any

from rlam_prefect.core.errors import PrefectAPIError, RLamError, UnknownRunError, one_line
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.planning.plan import RunPlan
from rlam_prefect.record.report import run_report
from rlam_prefect.record.store import TraceStore


def flow_parameters(plan: RunPlan) -> dict[str, Any]:
    """The flow's parameters for a validated plan (a replay takes its planner from the trace)."""
    params: dict[str, Any] = {
        "run_id": plan.run_id,
        "overrides": plan.overrides or None,
        "replay_of": plan.parent_run_id if plan.mode == "replay" else None,
        "fork_of": plan.parent_run_id if plan.mode == "fork" else None,
        "fork_step": plan.fork_step,
        "pin_decisions": plan.pin_decisions,
        "inject_failures": list(plan.inject_failures) or None,
        "policy": plan.policy.to_dict() if plan.policy else None,
        "approve": list(plan.pre_approved) or None,
        "approval_timeout": plan.approval_timeout,
    }
    if plan.mode != "replay":
        options = plan.planner
        params.update(
            planner=options.model,
            temperature=options.temperature,
            seed=options.seed,
            max_steps=options.max_steps,
            goal=options.goal,
        )
    return params


def call_flow(params: dict[str, Any]) -> Any:
    """The rlam flow run for ``params``, as its final state; one sync API client serves the whole call.

    Called from plain code, the flow runs on a fresh event loop. Called where a loop already runs
    (Jupyter, an async caller, an async Prefect flow), it runs on a fresh loop in a worker thread
    with a copy of the caller's context, so inside a user's own Prefect flow it is still a subflow.
    Prefect builds a new sync client (about 20 ms) for each storage lookup it makes outside a
    client context, two of them before the flow body starts (see ``client.py``).
    """
    import httpx
    from prefect import tags

    from rlam_prefect.prefect.artifacts import run_tags
    from rlam_prefect.prefect.client import quieten_prefect_workers, shared_sync_client
    from rlam_prefect.prefect.flow import rlam_flow

    mode = "replay" if params.get("replay_of") else "fork" if params.get("fork_of") else "run"
    labels = run_tags(mode, params.get("replay_of") or params.get("fork_of"))  # set when the flow run is created

    def run() -> Any:
        with shared_sync_client(), tags(*labels):
            try:
                return asyncio.run(rlam_flow(**params, return_state=True))  # type: ignore[arg-type]  # an async flow (see flow.py): calling it returns a coroutine, which prefect types as Awaitable
            except httpx.HTTPError as exc:  # the server, or the database behind it, went away mid-run
                quieten_prefect_workers()
                stopped = _stopped_before_a_step(exc)
                if stopped is not None:  # the flow stopped itself (flow.py): its line names the step to fork from
                    raise stopped from None
                raise PrefectAPIError(
                    f"the Prefect API failed during the run ({one_line(exc).split(' - ')[0]}); the steps completed before it are kept: "
                    "fork from the first missing step once it is back"
                ) from exc

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlam-flow") as pool:
        return pool.submit(context.run, run).result()


def _stopped_before_a_step(exc: BaseException) -> PrefectAPIError | None:
    """The flow's own PrefectAPIError when Prefect's failed final state update was raised while handling it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, PrefectAPIError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def report_of(plan: RunPlan, home: HomeLayout, state: Any) -> dict[str, Any]:
    """The run's report from the trace (the record), or the error that stopped it before it was recorded."""
    try:
        return run_report(TraceStore(home), plan.run_id)
    except UnknownRunError:
        error = state.result(raise_on_failure=False)
        if isinstance(error, BaseException):
            raise error from None  # it failed before recording anything: a user error or a bug
        raise RLamError(f"flow run ended {state.name} before run {plan.run_id} was recorded") from None
