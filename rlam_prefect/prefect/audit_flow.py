"""The scheduled reproducibility audit: replay recent runs as child flow runs; fail if one diverges.

Orchestration only: which runs to replay and how to judge a replay live in
``rlam_prefect/audit.py``. Each replay is an ``rlam`` child flow run, so its steps show in the
UI like any replay. Declared ``async`` for the same reason as ``flows/rlam_flow.py``.
"""

from __future__ import annotations

from typing import Any

from prefect import State, flow
from prefect.states import Failed

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.planning.plan import new_run_id
from rlam_prefect.prefect.artifacts import publish_audit_artifact
from rlam_prefect.prefect.flow import rlam_flow
from rlam_prefect.record.audit import judge_replay, select_runs, summarize
from rlam_prefect.record.store import TraceStore


@flow(name="rlam-audit", persist_result=False)
async def audit_flow(limit: int = 5, max_age_hours: float | None = None) -> dict[str, Any] | State:
    """Replay the newest ``limit`` completed runs and forks (started within ``max_age_hours``, if given).

    Fails, naming every diverging step and why, when a replay is not identical to its original
    (a cached result missing or altered, the code or the environment changed).
    """
    store = TraceStore(HomeLayout.from_env())
    verdicts = []
    for run_id in select_runs(store, limit, max_age_hours):
        replay_id = new_run_id()
        state = await rlam_flow(replay_of=run_id, run_id=replay_id, return_state=True)
        verdicts.append(judge_replay(store, run_id, replay_id, state.message))
    audit = summarize(verdicts)
    publish_audit_artifact(audit)
    if not audit["ok"]:
        return Failed(message=audit["message"][:2000])
    return audit
