"""The ``rlam`` command line: every command and option (docs/cli.md documents them).

Parse errors leave through the same path as every other user error: one line, exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from rlam_prefect.core.errors import UsageError
from rlam_prefect.core.version import __version__


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, like every other user error
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rlam", description="Reproducible LLM-driven workflows on Prefect.")
    parser.add_argument("--version", action="version", version=f"rlam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the workflow (R-LAM by default)")
    run.add_argument("--pipeline", choices=("rlam", "lam", "script"), default="rlam",
                     help="rlam: planned, cached, traced (default); lam: planned, executed directly; script: fixed order")
    _planner_arguments(run)
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="ACTION.PARAM=VALUE")
    run.add_argument("--inject-failure", dest="inject", action="append", default=[], metavar="ACTION",
                     help="make the first execution of ACTION fail (experiments)")
    _policy_arguments(run)
    run.add_argument("--json", action="store_true")

    replay = sub.add_parser("replay", help="re-run a recorded run entirely from the verified cache")
    replay.add_argument("run_id")
    replay.add_argument("--policy", default=None, metavar="FILE", help="report whether the run's policy differs from this one (default: $RLAM_POLICY, else the run's own)")
    replay.add_argument("--json", action="store_true")

    fork = sub.add_parser("fork", help="reuse steps before K, re-execute from K with changed parameters")
    fork.add_argument("run_id")
    fork.add_argument("--step", type=int, required=True, metavar="K")
    fork.add_argument("--set", dest="overrides", action="append", default=[], metavar="ACTION.PARAM=VALUE")
    fork.add_argument("--pin-decisions", action="store_true", help="keep the parent's plan (with the overrides) instead of asking the planner")
    _planner_arguments(fork, default_note="the parent's")
    fork.add_argument("--inject-failure", dest="inject", action="append", default=[], metavar="ACTION")
    _policy_arguments(fork)
    fork.add_argument("--json", action="store_true")

    sweep = sub.add_parser("sweep", help="one fork from step K per grid point, in parallel on a Dask cluster")
    sweep.add_argument("run_id")
    sweep.add_argument("--step", type=int, required=True, metavar="K")
    sweep.add_argument("--grid", action="append", default=[], metavar="ACTION.PARAM=V1,V2,...", help="repeat for a cartesian product")
    sweep.add_argument("--workers", type=int, default=None, metavar="N", help="local Dask worker processes (default: one per fork, at most the CPU count)")
    sweep.add_argument("--address", default=None, metavar="SCHEDULER", help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    sweep.add_argument("--pin-decisions", action="store_true", help="keep the parent's plan in every fork")
    sweep.add_argument("--json", action="store_true")

    runs = sub.add_parser("runs", help="list recorded runs, newest first")
    runs.add_argument("--limit", type=int, default=None)
    runs.add_argument("--json", action="store_true")

    show = sub.add_parser("show", help="one run's steps, hashes and metrics")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")

    lineage = sub.add_parser("lineage", help="a run's DAG with its fork ancestry and planner decisions")
    lineage.add_argument("run_id")
    lineage.add_argument("--format", choices=("tree", "mermaid", "dot"), default="tree")
    lineage.add_argument("--png", type=Path, default=None, metavar="FILE", help="also render a PNG (needs Graphviz)")
    lineage.add_argument("--json", action="store_true")

    explain = sub.add_parser("explain", help="why a step was served from the cache or executed")
    explain.add_argument("run_id")
    explain.add_argument("--step", type=int, required=True, metavar="K")
    explain.add_argument("--json", action="store_true")

    diff = sub.add_parser("diff", help="where two runs first diverge, why, and their metric deltas")
    diff.add_argument("run_a")
    diff.add_argument("run_b")
    diff.add_argument("--json", action="store_true")

    export = sub.add_parser("export", help="a run as W3C PROV, an RO-Crate (Workflow Run Crate) or OpenLineage events")
    export.add_argument("run_id")
    export.add_argument("--format", required=True, choices=("prov", "ro-crate", "openlineage"))
    export.add_argument("--out", type=Path, default=None, metavar="PATH", help="file, directory or .zip (ro-crate); default RUN_ID.prov.json, RUN_ID-ro-crate/, RUN_ID.openlineage.jsonl")
    export.add_argument("--json", action="store_true")

    verify = sub.add_parser("verify", help="re-hash every stored result of a run against its trace")
    verify.add_argument("run_id")
    verify.add_argument("--json", action="store_true")

    actions = sub.add_parser("actions", help="the action space: inputs, output and parameter schema of each action")
    actions.add_argument("--json", action="store_true")

    compact = sub.add_parser("compact", help="copy finished runs' events into one new segment file so listing runs stays fast (removes nothing)")
    compact.add_argument("--json", action="store_true")

    experiments = sub.add_parser("experiments", help="measure Script vs Naive LAM vs R-LAM: reproducibility, trace, failures, replay, fork")
    experiments.add_argument("--repeats", type=int, default=3, metavar="N", help="runs per pipeline (default 3)")
    experiments.add_argument("--planner", default="rlam/heuristic", metavar="MODEL", help="planner of the LLM pipelines (default rlam/heuristic)")
    experiments.add_argument("--temperature", type=float, default=1.0, help="planner temperature of the LLM pipelines (default 1.0)")
    experiments.add_argument("--seed", type=int, default=0, help="planner seed of the first run; run i uses SEED+i (default 0)")
    experiments.add_argument("--out", type=Path, default=None, metavar="DIR", help="new directory for the results and the runs' RLAM_HOME (default rlam-experiments-<UTC time>)")
    experiments.add_argument("--json", action="store_true")

    server = sub.add_parser("server", help="this RLAM_HOME's local Prefect server (started on first use)")
    server.add_argument("action", choices=("status", "start", "stop"))
    server.add_argument("--json", action="store_true")

    planner = sub.add_parser("planner", help="check the planner's model path: one call, its latency and the parsed decision")
    planner.add_argument("action", choices=("check",))
    planner.add_argument("--planner", default=None, metavar="MODEL", help="a litellm model, e.g. openai/gpt-4o-mini (default: $RLAM_PLANNER or rlam/heuristic)")
    planner.add_argument("--planner-api-base", default=None, metavar="URL", help="the endpoint to call (default: litellm's, e.g. $OPENAI_API_BASE); no credentials in the URL")
    planner.add_argument("--goal", default=None, metavar="METRIC>=X", help="the goal shown to the planner (default accuracy>=0.97)")
    planner.add_argument("--json", action="store_true")

    ui = sub.add_parser("ui", help="the Prefect UI address: the dashboard, or one run's flow run page")
    ui.add_argument("run_id", nargs="?", default=None)
    ui.add_argument("--open", action="store_true", help="also open it in a web browser")
    ui.add_argument("--json", action="store_true")
    return parser


def _planner_arguments(parser: argparse.ArgumentParser, default_note: str = "$RLAM_PLANNER or rlam/heuristic") -> None:
    parser.add_argument("--planner", default=None, metavar="MODEL", help=f"fixed, rlam/heuristic or a litellm model (default: {default_note})")
    parser.add_argument("--temperature", type=float, default=None, help="planner sampling temperature (default 0)")
    parser.add_argument("--seed", type=int, default=None, help="planner seed where the provider accepts one (default 0)")
    parser.add_argument("--max-steps", type=int, default=None, help="step budget (default 12)")
    parser.add_argument("--goal", default=None, metavar="METRIC>=X", help="what the planner works towards: METRIC>=NUMBER or METRIC<=NUMBER over the evaluation's metrics (default accuracy>=0.97)")
    parser.add_argument("--target", dest="target_accuracy", type=float, default=None, help="shorthand for --goal accuracy>=TARGET")


def _policy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default=None, metavar="FILE", help="execution policy, YAML or JSON (default: $RLAM_POLICY; a fork: its parent's)")
    parser.add_argument("--approve", action="append", default=[], metavar="ACTION",
                        help="pre-approve ACTION (or all) where the policy requires approval")
    parser.add_argument("--approval-timeout", type=int, default=None, metavar="SECONDS",
                        help="how long a step paused for approval in Prefect waits (default 3600)")
