"""The sweep flow: one Dask task per grid point, each running one fork as an ``rlam`` subflow run.

In the Prefect UI a sweep is one ``sweep`` flow run whose task runs (``fork <grid point>``) each
hold the fork's own ``rlam`` flow run (``fork-<run_id>``) with its action task runs, exactly as
``rlam fork`` would create it. Orchestration only: validation lives in ``rlam_prefect.planning.sweep``.

Imported only by ``rlam sweep`` (it imports dask/distributed through prefect-dask).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import State, flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed
from prefect.transactions import CommitMode, transaction
from prefect_dask.task_runners import DaskTaskRunner

from rlam_prefect.core.errors import UsageError
from rlam_prefect.core.home import HOME_ENV, HomeLayout


def task_runner(address: str | None, n_workers: int) -> DaskTaskRunner:
    """The scheduler at ``address``, or a local cluster of single-threaded worker processes.

    One thread per worker: a fork counts its planner calls per process, so two forks must not
    share a worker process at the same time.
    """
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    )


@task(name="fork", cache_policy=NO_CACHE, persist_result=False, retries=0)
async def run_fork(home: str, run_id: str, params: dict[str, Any]) -> dict[str, Any] | State:
    """Run one validated fork as its own ``rlam`` flow run, inside this (Dask worker's) task run."""
    _use_home(HomeLayout(Path(home)))
    from rlam_prefect.prefect.flow import rlam_flow

    # A flow called inside a task run inherits the task's transaction, and Prefect then defers every
    # nested result write to that transaction's commit, after the fork has ended. The engine digests
    # each result file as soon as its step ends, so the fork's steps must commit as they finish,
    # exactly as in a top-level `rlam fork`.
    with transaction(commit_mode=CommitMode.EAGER):
        state = await rlam_flow(**params, return_state=True)
    if not state.is_completed():
        return Failed(message=f"fork {run_id} ended {state.name}: {state.message}")
    return {"run_id": run_id, "state": state.name}


@flow(name="sweep", persist_result=False)
def sweep_flow(home: str, forks: list[dict[str, Any]]) -> list[dict[str, Any]] | State:
    """Submit every fork at once to the task runner; wait for all; report each one's final state.

    forks: [{"label": grid point, "run_id": fork run id, "params": the rlam flow's parameters}].
    """
    futures = [
        run_fork.with_options(task_run_name=f"fork {fork['label']}").submit(home=home, run_id=fork["run_id"], params=fork["params"])
        for fork in forks
    ]
    outcomes = []
    for fork, future in zip(forks, futures):
        future.wait()
        state = future.state
        outcomes.append({"run_id": fork["run_id"], "state": state.name, "message": None if state.is_completed() else state.message})
    failed = [o for o in outcomes if o["state"] != "Completed"]
    if failed:
        return Failed(message=f"{len(failed)} of {len(outcomes)} forks did not complete: " + "; ".join(o["message"] or o["state"] for o in failed), data=outcomes)
    return outcomes


def _use_home(home: HomeLayout) -> None:
    """Point this worker process at the sweep's RLAM_HOME; refuse a worker set up for another one."""
    current = os.environ.get(HOME_ENV)
    if current is None:
        os.environ[HOME_ENV] = str(home.root)
    elif HomeLayout.from_env().root != home.root:
        raise UsageError(f"this Dask worker has {HOME_ENV}={current}, not the sweep's {home.root}; start workers with the same {HOME_ENV}")
