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
    run.add_argument("--pipeline", choices=("rlam", "script"), default="rlam")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="ACTION.PARAM=VALUE")
    run.add_argument("--json", action="store_true")

    replay = sub.add_parser("replay", help="re-run a recorded run entirely from the verified cache")
    replay.add_argument("run_id")
    replay.add_argument("--json", action="store_true")

    fork = sub.add_parser("fork", help="reuse steps before K, re-execute from K with changed parameters")
    fork.add_argument("run_id")
    fork.add_argument("--step", type=int, required=True, metavar="K")
    fork.add_argument("--set", dest="overrides", action="append", default=[], metavar="ACTION.PARAM=VALUE")
    fork.add_argument("--json", action="store_true")

    runs = sub.add_parser("runs", help="list recorded runs, newest first")
    runs.add_argument("--limit", type=int, default=None)
    runs.add_argument("--json", action="store_true")

    show = sub.add_parser("show", help="one run's steps, hashes and metrics")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")

    server = sub.add_parser("server", help="this RLAM_HOME's local Prefect server (started on first use)")
    server.add_argument("action", choices=("status", "start", "stop"))
    server.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return _dispatch(args)
    except RLamError as exc:
        print(f"rlam: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rlam: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    from rlam_prefect.trace import TraceStore

    home = Home.from_env()
    store = TraceStore(home)
    if args.command == "runs":
        from rlam_prefect.report import render_runs, runs_table

        rows = runs_table(store, args.limit)
        _emit(rows, args.json, render_runs)
        return 0
    if args.command == "server":
        return _server_command(home, args)
    if args.command == "show":
        from rlam_prefect.report import render_run, run_report

        report = run_report(store, store.resolve_run_id(args.run_id))
        _emit(report, args.json, render_run)
        return 0
    from rlam_prefect.planning import parse_overrides, prepare_plan

    overrides = parse_overrides(getattr(args, "overrides", []))
    if args.command == "run" and args.pipeline == "script":
        from flows.script_pipeline import run_script

        prepare_plan(store, overrides=overrides)  # same validation of --set as every pipeline
        report = run_script(overrides)
        _emit(report, args.json, _render_script)
        return 0 if report["status"] == "completed" else 1
    if args.command == "run":
        plan = prepare_plan(store, overrides=overrides)
    elif args.command == "replay":
        plan = prepare_plan(store, replay_of=args.run_id)
    else:
        plan = prepare_plan(store, fork_of=args.run_id, fork_step=args.step, overrides=overrides)
    if not args.json and sys.stderr.isatty():
        _show_progress(plan.run_id, plan.mode)
    from rlam_prefect.runner import execute

    report = execute(plan, home)
    from rlam_prefect.report import render_run

    _emit(report, args.json, render_run)
    return 0 if report["status"] == "completed" else 1


def _server_command(home: Home, args: argparse.Namespace) -> int:
    from rlam_prefect import server

    if os.environ.get("PREFECT_API_URL"):
        print(f"PREFECT_API_URL is set ({os.environ['PREFECT_API_URL']}): rlam uses that server and starts none")
        return 0
    if args.action == "start":
        server.ensure_server(home)
    elif args.action == "stop":
        stopped = server.stop(home)
        if not args.json:
            print("stopped" if stopped else f"no local server recorded for {home.root}")
        if not args.json:
            return 0
    info = server.status(home)
    _emit(info, args.json, lambda i: f"{'running' if i['running'] else 'not running'}: {i.get('url', '-')} (RLAM_HOME {i['home']}, log {server.log_path(home)})")
    return 0


def _show_progress(run_id: str, mode: str) -> None:
    from rlam_prefect.engine import add_step_listener
    from rlam_prefect.report import render_step

    print(f"{mode} {run_id}: starting Prefect flow run...", file=sys.stderr, flush=True)
    add_step_listener(lambda row: print(render_step(row), file=sys.stderr, flush=True))


def _render_script(report: dict[str, Any]) -> str:
    from rlam_prefect.report import render_step

    lines = [f"script pipeline  {report['status']}  (no cache, no trace)", *(render_step(s) for s in report["steps"])]
    if report["metrics"]:
        lines.append("  metrics: " + ", ".join(f"{k}={v}" for k, v in report["metrics"].items()))
    return "\n".join(lines)


def _emit(payload: Any, as_json: bool, render: Any) -> None:
    print(json.dumps(payload, indent=2, default=str) if as_json else render(payload))


if __name__ == "__main__":
    sys.exit(main())
