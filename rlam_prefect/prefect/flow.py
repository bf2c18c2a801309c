"""The R-LAM flow: ask for the next decision, execute it through the R-LAM layer, repeat.

A thin adapter: its flat parameters (what the Prefect UI's custom-run form fills) become one typed
request (``planning/requests.py``), validated into a plan that ``RunSession`` executes.

One flow run per R-LAM run; each action is a task run named after it. Replay and fork are the
same flow with ``replay_of`` or ``fork_of`` + ``fork_step``, so they can be launched from the
Prefect UI's custom-run form as well as from ``rlam``.

The flow is declared ``async`` although its body is synchronous: Prefect 3.8's sync engine joins
its heartbeat thread at exit, which sleeps in 1 s slices, so every sync flow run pays up to 1 s
(measured: 1.08 s vs 0.16 s for a one-task flow). Steps run one at a time either way.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import State, flow
from prefect.runtime import flow_run
from prefect.states import Failed

from rlam_prefect.core.errors import PrefectAPIError, RLamError, one_line
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.execution.run_log import RunLog
from rlam_prefect.execution.session import RunSession
from rlam_prefect.planning.plan import prepare_plan
from rlam_prefect.planning.requests import request_from_parameters
from rlam_prefect.prefect.artifacts import flow_run_name, name_flow_run, publish_run_artifacts, run_tags
from rlam_prefect.prefect.client import quieten_prefect_workers, shared_sync_client
from rlam_prefect.record.store import TraceStore


@flow(name="rlam", persist_result=False, flow_run_name=flow_run_name)
async def rlam_flow(
    run_id: str | None = None,
    planner: str | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    max_steps: int | None = None,
    target_accuracy: float | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    goal: str | None = None,
    replay_of: str | None = None,
    fork_of: str | None = None,
    fork_step: int | None = None,
    pin_decisions: bool = False,
    inject_failures: list[str] | None = None,
    policy: dict[str, Any] | str | None = None,
    approve: list[str] | None = None,
    approval_timeout: int | None = None,
) -> dict[str, Any] | State:
    """Plan and execute one R-LAM run; or replay (replay_of) or fork (fork_of + fork_step) a recorded one.

    Every parameter is optional: leave them all empty for a new run with the default planner. The
    descriptions below are what the Prefect UI's custom-run form shows under each field.

    Args:
        run_id: Id for the new run (12 hex characters); empty: a fresh one.
        planner: Decision source: fixed (the seed's order, no LLM), rlam/heuristic (offline default) or any litellm model string. Empty: a fork keeps its parent's planner.
        temperature: Planner sampling temperature. Empty: 0, or the parent's in a fork.
        seed: Planner seed, where the provider accepts one. Empty: 0, or the parent's in a fork.
        max_steps: Step budget. Empty: 12, or the parent's in a fork.
        target_accuracy: Older spelling of goal accuracy>=VALUE. Empty: see goal.
        overrides: Parameters to pin, as JSON {"action": {"param": value}}, e.g. {"train_model": {"C": 0.1}}. In a fork they apply from fork_step on.
        goal: What the planner works towards, METRIC>=NUMBER or METRIC<=NUMBER over the evaluation's metrics, e.g. accuracy>=0.97. Empty: accuracy>=0.97, or the parent's in a fork.
        replay_of: Run id (or an unambiguous prefix) to replay: every step from the verified cache, nothing executed. Set nothing else with it.
        fork_of: Run id (or an unambiguous prefix) to fork: its steps before fork_step are reused from the cache, never executed.
        fork_step: With fork_of: the first step to decide and execute again (1 re-does everything).
        pin_decisions: With fork_of: keep the parent's plan from fork_step (with the overrides) instead of asking the planner.
        inject_failures: Actions whose first execution fails on purpose (experiments), e.g. ["train_model"].
        policy: Execution policy: a path to a YAML or JSON file on the machine running the flow, or its rules as JSON. Empty: $RLAM_POLICY, else a replayed or forked run's own.
        approve: Actions (or "all") pre-approved where the policy requires approval; any other gated step pauses this flow run until someone resumes it.
        approval_timeout: Seconds a step paused for approval waits for a decision. Empty: 3600.
    """
    with shared_sync_client():  # one API client for every task run's storage lookups (see prefect_client.py)
        home = HomeLayout.from_env()
        try:
            request = request_from_parameters(
                run_id=run_id, planner=planner, temperature=temperature, seed=seed, max_steps=max_steps,
                target_accuracy=target_accuracy, goal=goal, overrides=overrides, replay_of=replay_of, fork_of=fork_of,
                fork_step=fork_step, pin_decisions=pin_decisions, inject_failures=inject_failures, policy=policy,
                approve=approve, approval_timeout=approval_timeout,
            )
            plan = prepare_plan(TraceStore(home), request)
        except RLamError as exc:
            # bad input (the UI's form, `prefect deployment run`): one line in the state and the logs, no traceback, no work
            line = f"{type(exc).__name__}: {one_line(exc)}"
            RunLog(flow_run.get_id()).flow(f"refused before any work: {line}", logging.ERROR)
            return Failed(message=line, data=exc)
        name_flow_run(f"{plan.mode}-{plan.run_id}", run_tags(plan.mode, plan.parent_run_id))  # a deployment run starts with a random name
        session = RunSession(home, plan, flow_run.get_id())
        session.start()
        try:
            while (decision := session.next_decision()) is not None:
                _require_api(plan.run_id, len(session.history) + 1)
                session.execute(decision)
        except BaseException as exc:  # recorded, then re-raised: the run must not look completed
            session.finish(error=f"{type(exc).__name__}: {exc}")
            if isinstance(exc, Exception) and not isinstance(exc, PrefectAPIError):  # no API, no artifacts
                try:
                    await publish_run_artifacts(session.store, plan.run_id)
                except Exception as publish_error:  # the run's own failure stays the one raised
                    exc.add_note(f"publishing the run's artifacts failed too: {publish_error}")
            raise
        summary = session.finish()
        await publish_run_artifacts(session.store, plan.run_id)  # steps, lineage and metrics on the flow run page
        if summary["status"] != "completed":
            # a failed run is an outcome, not a crash: mark the flow run failed without a traceback
            return Failed(message=f"run {plan.run_id} {summary['status']}: see `rlam show {plan.run_id}`")
        return {"run_id": plan.run_id, "status": summary["status"]}


def _require_api(run_id: str, step: int) -> None:
    """Stop before step ``step`` when the Prefect API is gone (its client's own retries included).

    Prefect keeps running a flow's tasks after its server died and only its state updates fail, so
    without this check the run would go on unobserved and end in a connection traceback. Stopping
    here records the run as failed after the steps that finished, which a fork resumes.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    problem = get_client(sync_client=True).api_healthcheck()
    if problem is not None:
        quieten_prefect_workers()
        raise PrefectAPIError(  # worded as runner.py words a failure it catches, plus the step
            f"the Prefect API failed during the run ({one_line(problem).split(' - ')[0]}) at {PREFECT_API_URL.value()}, before step {step} of run {run_id}; "
            f"the steps completed before it are kept: fork from the first missing step once it is back: `rlam fork {run_id} --step {step}`"
        )
