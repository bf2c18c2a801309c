"""``rlam``: run, replay, fork and inspect R-LAM runs.

Fast paths stay fast: listing and showing runs never import Prefect; only commands that
execute a flow do. Every user error leaves through one place: one line on stderr, non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from rlam_prefect.errors import RLamError, UsageError
from rlam_prefect.home import Home


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, like every other user error
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rlam", description="Reproducible LLM-driven workflows on Prefect.")
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
    return parser


def _planner_arguments(parser: argparse.ArgumentParser, default_note: str = "$RLAM_PLANNER or rlam/heuristic") -> None:
    parser.add_argument("--planner", default=None, metavar="MODEL", help=f"fixed, rlam/heuristic or a litellm model (default: {default_note})")
    parser.add_argument("--temperature", type=float, default=None, help="planner sampling temperature (default 0)")
    parser.add_argument("--seed", type=int, default=None, help="planner seed where the provider accepts one (default 0)")
    parser.add_argument("--max-steps", type=int, default=None, help="step budget (default 12)")
    parser.add_argument("--target", dest="target_accuracy", type=float, default=None, help="accuracy goal the planner works towards (default 0.97)")


def _policy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default=None, metavar="FILE", help="execution policy, YAML or JSON (default: $RLAM_POLICY; a fork: its parent's)")
    parser.add_argument("--approve", action="append", default=[], metavar="ACTION",
                        help="pre-approve ACTION (or all) where the policy requires approval")
    parser.add_argument("--approval-timeout", type=int, default=None, metavar="SECONDS",
                        help="how long a step paused for approval in Prefect waits (default 3600)")


def main(argv: Sequence[str] | None = None, executor_child: bool = False) -> int:
    try:
        environ = dict(os.environ)  # before backend.configure points it at the managed server
        argv = list(sys.argv[1:] if argv is None else argv)
        args = build_parser().parse_args(argv)
        warm = _flow_command(args) and not executor_child
        if warm:
            from rlam_prefect import executor

            code = executor.hand_over(Home.from_env(), argv)  # None: run it here
            if code is not None:
                return code
        code = _dispatch(args)
        if warm and "prefect" in sys.modules:  # it ran a flow, so the server is up: warm up for next time
            executor.spawn(Home.from_env(), environ)
        return code
    except RLamError as exc:
        print(f"rlam: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rlam: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


def _flow_command(args: argparse.Namespace) -> bool:
    """Commands that run a Prefect flow: the ones a warm executor (executor.py) can take over."""
    return args.command in ("replay", "fork") or (args.command == "run" and args.pipeline == "rlam")


COMPACT_HINT_RUNS = 2000  # about 2.5 s of reading two small files per run on the reference machine


def _dispatch(args: argparse.Namespace) -> int:
    from rlam_prefect.trace import TraceStore

    home = Home.from_env()
    store = TraceStore(home)
    if args.command == "runs":
        from rlam_prefect.report import render_runs, runs_table

        rows = runs_table(store, args.limit)
        _emit(rows, args.json, render_runs)
        if store.uncompacted_runs >= COMPACT_HINT_RUNS:
            print(f"rlam: {store.uncompacted_runs:,} runs were read from their own files; `rlam compact` makes listing them faster", file=sys.stderr)
        return 0
    if args.command == "server":
        return _server_command(home, args)
    if args.command == "lineage":
        from rlam_prefect import lineage as lineage_view

        graph = lineage_view.build_lineage(store, store.resolve_run_id(args.run_id))
        if args.png is not None:
            lineage_view.write_png(lineage_view.render_dot(graph), args.png)
        render = {"tree": lineage_view.render_tree, "mermaid": lineage_view.render_mermaid, "dot": lineage_view.render_dot}[args.format]
        _emit(graph, args.json, render)
        return 0
    if args.command == "explain":
        from rlam_prefect.compare import explain_step

        outcome = explain_step(store, store.resolve_run_id(args.run_id), args.step)
        _emit(outcome, args.json, lambda o: f"step {o['step']} {o['action']} ({o['status']}): {o['verdict']}: {o['explanation']}")
        return 0
    if args.command == "diff":
        from rlam_prefect.compare import diff_runs

        outcome = diff_runs(store, store.resolve_run_id(args.run_a), store.resolve_run_id(args.run_b))
        _emit(outcome, args.json, _render_diff)
        return 0
    if args.command == "export":
        from rlam_prefect.exports import export_run

        run_id = store.resolve_run_id(args.run_id)
        path = export_run(store, run_id, args.format, args.out)
        _emit({"run_id": run_id, "format": args.format, "path": str(path)}, args.json, lambda e: f"{e['format']} export of run {e['run_id']} written to {e['path']}")
        return 0
    if args.command == "verify":
        from rlam_prefect.verify import verify_run

        outcome = verify_run(home, store.resolve_run_id(args.run_id))
        _emit(outcome, args.json, _render_verify)
        return 0 if outcome["intact"] else 4
    if args.command == "actions":
        from rlam_prefect.actions import load_action_modules, registered_actions

        load_action_modules()
        specs = registered_actions()
        listing = [
            {"action": s.name, "module": s.module, "inputs": s.input_kinds, "output": s.output_kind, "description": s.description, "params_schema": s.params_schema(),
             "preconditions": [c.name for c in s.preconditions], "effects": [e.name for e in s.effects]}
            for s in specs.values()
        ]
        _emit(listing, args.json, _render_actions)
        return 0
    if args.command == "compact":
        outcome = store.compact()
        _emit(outcome, args.json, lambda o: f"compacted {o['runs']} finished runs ({o['rows']} rows) into {o['segment']}" if o["segment"] else f"nothing to compact ({o['already_compacted']} runs already in segments)")
        return 0
    if args.command == "experiments":
        from rlam_prefect import experiments

        out = args.out or Path(f"rlam-experiments-{experiments.utc_stamp()}")
        settings = experiments.Settings(repeats=args.repeats, planner=args.planner, temperature=args.temperature, base_seed=args.seed, out=out)
        _emit(experiments.run_experiments(settings), args.json, experiments.render_summary)
        return 0
    if args.command == "show":
        from rlam_prefect.report import render_run, run_report

        report = run_report(store, store.resolve_run_id(args.run_id))
        _emit(report, args.json, render_run)
        return 0
    if args.command == "sweep":
        from rlam_prefect import sweep

        plan = sweep.plan_sweep(store, args.run_id, args.step, args.grid, pin_decisions=args.pin_decisions)
        outcome = sweep.run_sweep(plan, home, workers=args.workers, address=args.address)
        _emit(outcome, args.json, sweep.render_sweep)
        return 0 if outcome["status"] == "completed" else 1
    from rlam_prefect.planning import parse_overrides, prepare_plan

    overrides = parse_overrides(getattr(args, "overrides", []))
    planner_options = {
        k: getattr(args, k, None) for k in ("planner", "temperature", "seed", "max_steps", "target_accuracy")
    }
    if args.command == "run" and args.pipeline in ("script", "lam") and (args.policy or args.approve):
        raise UsageError(f"--policy and --approve govern the rlam pipeline; the {args.pipeline} pipeline has no engine to enforce them")
    if args.command == "run" and args.pipeline in ("script", "lam"):
        if args.pipeline == "script":
            planner_options["planner"] = "fixed"
        plan = prepare_plan(store, overrides=overrides, inject_failures=args.inject, **planner_options)
        report = _run_untraced(plan, args.pipeline)
        _emit(report, args.json, _render_untraced)
        return 0 if report["status"] == "completed" else 1
    governance = {"policy": args.policy, "approve": getattr(args, "approve", []), "approval_timeout": getattr(args, "approval_timeout", None)}
    if args.command == "run":
        plan = prepare_plan(store, overrides=overrides, inject_failures=args.inject, **planner_options, **governance)
    elif args.command == "replay":
        plan = prepare_plan(store, replay_of=args.run_id, **governance)
    else:
        plan = prepare_plan(
            store, fork_of=args.run_id, fork_step=args.step, overrides=overrides,
            pin_decisions=args.pin_decisions, inject_failures=args.inject, **planner_options, **governance,
        )
    if plan.policy is not None and plan.policy.require_approval and sys.stdin.isatty():
        from rlam_prefect.approval import set_terminal_prompt, terminal_prompt

        set_terminal_prompt(terminal_prompt)  # without a tty, a gated step pauses for the Prefect UI
    progress = not args.json and sys.stderr.isatty()
    if progress:
        _show_progress(plan.run_id, plan.mode)
    from rlam_prefect.runner import execute

    report = execute(plan, home)
    from rlam_prefect.report import render_run

    _emit(report, args.json, lambda r: render_run(r, with_steps=not progress))  # steps already shown live
    return 0 if report["status"] == "completed" else 1


def _server_command(home: Home, args: argparse.Namespace) -> int:
    from rlam_prefect import server

    if os.environ.get("PREFECT_API_URL"):
        if args.action == "stop":
            from rlam_prefect import executor

            executor.stop(home)  # only started there with RLAM_EXECUTOR=on
        print(f"PREFECT_API_URL is set ({os.environ['PREFECT_API_URL']}): rlam uses that server and starts none")
        return 0
    if args.action == "start":
        from rlam_prefect import executor

        server.ensure_server(home)
        executor.spawn(home, dict(os.environ))  # warm for the first command too (in the background)
    elif args.action == "stop":
        stopped = server.stop(home)
        if not args.json:
            print("stopped" if stopped else f"no local server recorded for {home.root}")
        if not args.json:
            return 0
    from rlam_prefect import executor

    info = {**server.status(home), "executor": executor.status(home)}
    _emit(info, args.json, lambda i: f"{'running' if i['running'] else 'not running'}: {i.get('url', '-')} (RLAM_HOME {i['home']}, log {server.log_path(home)})"
          + f"\nexecutor: {'running, pid ' + str(i['executor']['pid']) if i['executor']['running'] else 'not running'} (log {executor.log_path(home)})")
    return 0


def _show_progress(run_id: str, mode: str) -> None:
    from rlam_prefect.engine import add_step_listener
    from rlam_prefect.report import render_step

    print(f"{mode} {run_id}: starting Prefect flow run...", file=sys.stderr, flush=True)
    add_step_listener(lambda row: print(render_step(row), file=sys.stderr, flush=True))


def _run_untraced(plan: Any, pipeline: str) -> dict[str, Any]:
    if pipeline == "script":
        from flows.script_pipeline import run_script

        return run_script(plan.overrides, plan.inject_failures)
    from flows.lam_pipeline import run_naive_lam

    return run_naive_lam(plan)


def _render_untraced(report: dict[str, Any]) -> str:
    from rlam_prefect.report import render_step

    title = f"{report['pipeline']} pipeline  {report['status']}  (no cache, no trace)"
    lines = [title, *(render_step(s) for s in report["steps"])]
    lines.append(f"  executed {report['executed']}, llm calls {report['llm_calls']}")
    if report["metrics"]:
        lines.append("  metrics: " + ", ".join(f"{k}={v}" for k, v in report["metrics"].items()))
    return "\n".join(lines)


def _render_diff(outcome: dict[str, Any]) -> str:
    lines = [f"{outcome['run_a']} vs {outcome['run_b']}: " + ("identical" if outcome["identical"] else f"first divergence at step {outcome['first_divergence']['step']}")]
    for entry in outcome["steps"]:
        a, b = entry["a"] or {}, entry["b"] or {}
        mark = " " if entry["same"] else "*"
        lines.append(f" {mark}{entry['step']:>3}  {a.get('action', '-'):<18} {str(a.get('output_hash'))[7:19]:<12}  {b.get('action', '-'):<18} {str(b.get('output_hash'))[7:19]}")
    if outcome["first_divergence"]:
        lines += [f"  cause: {c['part']}: {c['detail']}" for c in outcome["first_divergence"]["causes"]]
    deltas = [f"{name} {m['a']} -> {m['b']} ({m['delta']:+})" for name, m in outcome["metrics"].items() if m["delta"]]
    if deltas:
        lines.append("  metrics: " + ", ".join(deltas))
    return "\n".join(lines)


def _render_verify(outcome: dict[str, Any]) -> str:
    verdict = "intact" if outcome["intact"] else f"NOT intact: {outcome['problems']} problem(s)"
    lines = [f"run {outcome['run_id']}: {verdict} ({outcome['checked']} stored results re-hashed)"]
    lines += [f"  {c['step']:>3}  {c['action']:<18} {c['result']:<9} {c['detail']}" for c in outcome["steps"]]
    return "\n".join(lines)


def _render_actions(listing: list[dict[str, Any]]) -> str:
    lines = []
    for entry in listing:
        inputs = ", ".join(f"{arg}: {kind}" for arg, kind in entry["inputs"].items())
        params = ", ".join(f"{name}={prop.get('default')!r}" for name, prop in entry["params_schema"].get("properties", {}).items())
        lines.append(f"{entry['action']}({inputs}) -> {entry['output']}    [{params}]    {entry['module']}")
        lines.append(f"    {entry['description']}")
        lines.append(f"    preconditions: {'; '.join(entry['preconditions']) or 'none'}")
        lines.append(f"    effects: {'; '.join(entry['effects'])}")
    return "\n".join(lines)


def _emit(payload: Any, as_json: bool, render: Any) -> None:
    print(json.dumps(payload, indent=2, default=str) if as_json else render(payload))


if __name__ == "__main__":
    sys.exit(main())
