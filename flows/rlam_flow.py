"""The R-LAM flow: ask for the next decision, execute it through the R-LAM layer, repeat.

One flow run per R-LAM run; each action is a task run named after it. Replay and fork are the
same flow with ``replay_of`` or ``fork_of`` + ``fork_step``, so they can be launched from the
Prefect UI's custom-run form as well as from ``rlam``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from rlam_prefect.engine import RunSession
from rlam_prefect.errors import RLamError
from rlam_prefect.home import Home
from rlam_prefect.planning import FIXED_PLANNER, prepare_plan
from rlam_prefect.trace import TraceStore


@flow(name="rlam", persist_result=False, log_prints=True)
def rlam_flow(
    run_id: str | None = None,
    planner: str = FIXED_PLANNER,
    overrides: dict[str, dict[str, Any]] | None = None,
    replay_of: str | None = None,
    fork_of: str | None = None,
    fork_step: int | None = None,
) -> dict[str, Any]:
    home = Home.from_env()
    plan = prepare_plan(
        TraceStore(home),
        run_id=run_id,
        planner=planner,
        overrides=overrides,
        replay_of=replay_of,
        fork_of=fork_of,
        fork_step=fork_step,
    )
    session = RunSession(home, plan, flow_run.get_id())
    session.start()
    try:
        while (decision := session.next_decision()) is not None:
            session.execute(decision)
    except BaseException as exc:  # recorded, then re-raised: the run must not look completed
        session.finish(error=f"{type(exc).__name__}: {exc}")
        raise
    summary = session.finish()
    if summary["status"] != "completed":
        raise RunFailed(f"run {plan.run_id} {summary['status']}: see `rlam show {plan.run_id}`")
    return {"run_id": plan.run_id, "status": summary["status"]}


class RunFailed(RLamError):
    """Marks the Prefect flow run failed when the R-LAM run failed (the trace says why)."""

    exit_code = 1
