"""``rlam``: run, replay, fork and inspect R-LAM runs.

Fast paths stay fast: listing and showing runs never import Prefect; only commands that
execute a flow do. Every user error leaves through one place: one line on stderr, non-zero exit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlam_prefect.cli.parser import build_parser
from rlam_prefect.core.errors import RLamError, UsageError, storage_error
from rlam_prefect.core.home import HomeLayout


def main(argv: Sequence[str] | None = None, executor_child: bool = False) -> int:
    try:
        environ = dict(os.environ)  # before backend.configure points it at the managed server
        argv = list(sys.argv[1:] if argv is None else argv)
        args = build_parser().parse_args(argv)
        # run, replay and fork are served by a home's warm executor when one is up (run --pipeline script|lam too,
        # so that the three pipelines are timed alike); only flow commands may start the server and the executor
        served = args.command in ("run", "replay", "fork") and not executor_child
        warm = served and _flow_command(args)
        if served:
            from rlam_prefect.local import executor_client as executor
            from rlam_prefect.local import server

            home = HomeLayout.from_env()
            state = server.read_state(home)
            code = executor.hand_over(home, argv, server_launched=state is not None, planner=_asks_planner(args))  # None: here
            if code is not None:
                return code
            if warm and not (state and not state.get("starting") and server.healthy(state["url"])):
                code = _first_command(home, args, argv, environ)
                if code is not None:
                    return code
        code = _dispatch(args)
        if warm and "prefect" in sys.modules:  # it ran a flow, so the server is up: warm up for next time
            executor.spawn(HomeLayout.from_env(), environ, planner=_asks_planner(args))
        return code
    except RLamError as exc:
        print(f"rlam: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except OSError as exc:  # a full or read-only RLAM_HOME
        storage = storage_error(exc)
        if storage is None:
            raise
        print(f"rlam: error: {storage}", file=sys.stderr)
        return storage.exit_code
    except KeyboardInterrupt:
        print("rlam: interrupted", file=sys.stderr)
        return 130


def _first_command(home: HomeLayout, args: argparse.Namespace, argv: list[str], environ: dict[str, str]) -> int | None:
    """A home whose server is not up: start the executor and the server at once, and run the command in the executor.

    Prefect's server takes seconds to import and start; the executor imports Prefect, the flow, the actions
    and scikit-learn meanwhile, on the other core. The command then runs in a child of the executor, which
    is warm for the next command. Only for ``rlam run`` in a project with actions (replay and fork need a
    recorded run, so their home's server ran before): a mistyped command must not leave a server behind.
    None: run it in this process (no executor, or it did not come up)."""
    from rlam_prefect.actions.project import ACTION_MODULES_ENV, find_project
    from rlam_prefect.local import executor_client as executor
    from rlam_prefect.local import server

    if args.command != "run":
        executor.spawn(home, environ, planner=_asks_planner(args))  # the executor loads while this command runs here
        return None
    if not (find_project().actions or os.environ.get(ACTION_MODULES_ENV)):
        return None  # it fails on its missing actions: no executor waiting for a server that never comes
    loading = executor.spawn(home, environ, planner=_asks_planner(args))  # litellm too, while the server starts
    if loading is None:
        return None
    if not environ.get("PREFECT_API_URL"):
        server.launch(home)
    return executor.hand_over(home, argv, server_launched=True, loading=loading, planner=_asks_planner(args))


def _flow_command(args: argparse.Namespace) -> bool:
    """Commands that run a Prefect flow: the ones a warm executor (executor.py) can take over."""
    return args.command in ("replay", "fork") or (args.command == "run" and args.pipeline == "rlam")


def _asks_planner(args: argparse.Namespace) -> bool:
    """The command may ask a litellm planner: a run with one, or a fork (it re-plans with its parent's planner)."""
    from rlam_prefect.planning.names import uses_litellm

    if args.command == "run":
        return args.pipeline != "script" and uses_litellm(args.planner)
    return bool(args.command == "fork")


COMPACT_HINT_RUNS = 2000  # about 2.5 s of reading two small files per run on the reference machine


def _dispatch(args: argparse.Namespace) -> int:
    """One handler per command, each a thin call into the public API (``rlam_prefect.api``)."""
    import rlam_prefect as rlam

    home = rlam.open_home()
    handler = _HANDLERS.get(args.command, _flow)
    return handler(rlam, home, args)


def _runs(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    from rlam_prefect.cli.render import render_runs

    rows = [dataclasses.asdict(r) for r in home.runs(args.limit)]
    _emit(rows, args.json, render_runs)
    if home.store.uncompacted_runs >= COMPACT_HINT_RUNS:
        print(f"rlam: {home.store.uncompacted_runs:,} runs were read from their own files; `rlam compact` makes listing them faster", file=sys.stderr)
    return 0


def _show(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    from rlam_prefect.cli.render import render_run
    from rlam_prefect.local.ui import find_ui

    report = home.run(args.run_id).as_dict()
    ui = find_ui(home.layout) if report.get("prefect_flow_run_id") else None
    report.update(prefect_ui_url=ui.flow_run(report["prefect_flow_run_id"]) if ui else None, prefect_ui_running=bool(ui and ui.running))
    _emit(report, args.json, render_run)
    return 0


def _ui(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    """The UI address (this home's local server is started if needed): the dashboard or one run's page."""
    from rlam_prefect.local.ui import find_ui

    flow_run_id = run_id = None
    if args.run_id is not None:
        run_id = home.resolve(args.run_id)
        flow_run_id = home.run(run_id).prefect_flow_run_id
        if not flow_run_id:
            raise UsageError(f"run {run_id} has no Prefect flow run recorded")
    ui = find_ui(home.layout, start=True)
    assert ui is not None
    url = ui.flow_run(flow_run_id) if flow_run_id else ui.dashboard()
    if args.open:
        import webbrowser

        if not webbrowser.open(url):
            raise UsageError(f"no web browser could be started to open {url}")
    _emit({"url": url, "ui_url": ui.url, "run_id": run_id, "prefect_flow_run_id": flow_run_id, "source": ui.source}, args.json, lambda r: r["url"])
    return 0


def _lineage(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    from rlam_prefect.record import lineage as lineage_view

    graph = home.lineage(args.run_id)
    if args.png is not None:
        lineage_view.write_png(lineage_view.render_dot(graph), args.png)
    render = {"tree": lineage_view.render_tree, "mermaid": lineage_view.render_mermaid, "dot": lineage_view.render_dot}[args.format]
    _emit(graph, args.json, render)
    return 0


def _explain(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    outcome = rlam.explain(args.run_id, args.step, home=home).as_dict()
    _emit(outcome, args.json, lambda o: f"step {o['step']} {o['action']} ({o['status']}): {o['verdict']}: {o['explanation']}")
    return 0


def _diff(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    from rlam_prefect.cli.render import render_diff

    _emit(rlam.diff(args.run_a, args.run_b, home=home).as_dict(), args.json, render_diff)
    return 0


def _export(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    run_id = home.resolve(args.run_id)
    path = rlam.export(run_id, args.format, args.out, home=home)
    _emit({"run_id": run_id, "format": args.format, "path": str(path)}, args.json, lambda e: f"{e['format']} export of run {e['run_id']} written to {e['path']}")
    return 0


def _verify(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    from rlam_prefect.cli.render import render_verify

    outcome = rlam.verify(args.run_id, home=home)
    _emit(outcome.as_dict(), args.json, render_verify)
    return 0 if outcome.intact else 4


def _actions(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    from rlam_prefect.actions.project import load_action_modules
    from rlam_prefect.actions.registry import registered_actions
    from rlam_prefect.cli.render import render_actions

    load_action_modules()
    listing = [
        {"action": s.name, "module": s.module, "inputs": s.input_kinds, "output": s.output_kind, "description": s.description, "params_schema": s.params_schema(),
         "preconditions": [c.name for c in s.preconditions], "effects": [e.name for e in s.effects]}
        for s in registered_actions().values()
    ]
    _emit(listing, args.json, render_actions)
    return 0


def _compact(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    outcome = home.store.compact()
    _emit(outcome, args.json, lambda o: f"compacted {o['runs']} finished runs ({o['rows']} rows) into {o['segment']}" if o["segment"] else f"nothing to compact ({o['already_compacted']} runs already in segments)")
    return 0


def _experiments(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    from rlam_prefect.experiments import run as experiments

    out = args.out or Path(f"rlam-experiments-{experiments.utc_stamp()}")
    settings = experiments.Settings(repeats=args.repeats, planner=args.planner, temperature=args.temperature, base_seed=args.seed, out=out)
    from rlam_prefect.experiments.report import render_summary

    _emit(experiments.run_experiments(settings), args.json, render_summary)
    return 0


def _sweep(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    from rlam_prefect.api.verbs import sweep_specs
    from rlam_prefect.cli.render import render_sweep

    outcome = sweep_specs(args.run_id, step=args.step, grid_specs=args.grid, pin_decisions=args.pin_decisions, workers=args.workers, address=args.address, home=home)
    _emit(outcome.as_dict(), args.json, render_sweep)
    return 0 if outcome.ok else 1


def _planner(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    """``rlam planner check``: exit 0 when the model answered with a valid decision, 1 when not (one line why)."""
    from rlam_prefect.cli.render import render_planner_check
    from rlam_prefect.planning.check import check_planner

    outcome = check_planner(args.planner, args.planner_api_base, args.goal)
    if outcome.ok or args.json:
        _emit(outcome.as_dict(), args.json, render_planner_check)
    else:
        print(f"rlam: error: planner {outcome.model} at {outcome.endpoint or 'its default endpoint'}: {outcome.error}", file=sys.stderr)
    return 0 if outcome.ok else 1


def _server(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    return _server_command(home.layout, args)


def _flow(rlam: Any, home: Any, args: argparse.Namespace) -> int:
    """``run`` (R-LAM, or the untraced script/lam baselines), ``replay`` and ``fork``."""
    import logging

    from rlam_prefect.cli.render import render_run, render_step
    from rlam_prefect.planning.plan import new_run_id, parse_overrides

    # Prefect's API log worker writes "--- Error logging to API ---" and a message without a newline to
    # stderr when the API is unreachable, and only when this is set; the command reports a lost API itself, in one line
    logging.raiseExceptions = False
    overrides = parse_overrides(getattr(args, "overrides", []))
    planner = {k: getattr(args, k, None) for k in ("planner", "temperature", "seed", "max_steps", "target_accuracy", "goal")}
    if args.command == "run" and args.pipeline in ("script", "lam"):
        return _untraced(args, overrides, planner)
    governance = {"policy": args.policy, "approve": getattr(args, "approve", []), "approval_timeout": getattr(args, "approval_timeout", None)}
    progress = not args.json and sys.stderr.isatty()
    run_id = new_run_id()
    on_step = (lambda row: print(render_step(row), file=sys.stderr, flush=True)) if progress else None
    if progress:
        print(f"{args.command} {run_id}: starting Prefect flow run...", file=sys.stderr, flush=True)
    common = {"home": home, "on_step": on_step}
    with _approvals_at_the_terminal():
        result = _run_flow_command(rlam, args, overrides, planner, governance, run_id, common)
    _emit(result.as_dict(), args.json, lambda r: render_run(r, with_steps=not progress))  # steps already shown live
    return 0 if result.ok else 1


def _approvals_at_the_terminal() -> Any:
    """On a tty a step the policy gates asks here; without one it pauses for the Prefect UI."""
    import contextlib

    if not sys.stdin.isatty():
        return contextlib.nullcontext()
    from rlam_prefect.execution.approval import terminal_prompt, terminal_prompt_installed

    return terminal_prompt_installed(terminal_prompt)


def _run_flow_command(rlam: Any, args: argparse.Namespace, overrides: Any, planner: dict[str, Any], governance: dict[str, Any], run_id: str, common: dict[str, Any]) -> Any:
    if args.command == "run":
        result = rlam.run(overrides=overrides, inject_failures=args.inject, run_id=run_id, **planner, **governance, **common)
    elif args.command == "replay":
        result = rlam.replay(args.run_id, policy=args.policy, new_run_id=run_id, **common)
    else:
        result = rlam.fork(args.run_id, step=args.step, overrides=overrides, pin_decisions=args.pin_decisions,
                           inject_failures=args.inject, new_run_id=run_id, **planner, **governance, **common)
    return result


def _untraced(args: argparse.Namespace, overrides: dict[str, dict[str, Any]], planner: dict[str, Any]) -> int:
    """The Script and Naive LAM baselines: the same actions and planner, no cache, no trace."""
    from rlam_prefect.cli.render import render_untraced
    from rlam_prefect.execution.direct import run_naive_lam, run_script
    from rlam_prefect.planning.plan import prepare_plan
    from rlam_prefect.planning.requests import PlannerSettings, RunRequest
    from rlam_prefect.record.store import TraceStore

    if args.policy or args.approve:
        raise UsageError(f"--policy and --approve govern the rlam pipeline; the {args.pipeline} pipeline has no engine to enforce them")
    if args.pipeline == "script":
        planner["planner"] = "fixed"
    settings = PlannerSettings(planner["planner"], planner["temperature"], planner["seed"], planner["max_steps"], planner["target_accuracy"], planner["goal"])
    plan = prepare_plan(TraceStore(HomeLayout.from_env()), RunRequest(settings, overrides, tuple(args.inject)))
    report = run_script(plan.overrides, plan.inject_failures) if args.pipeline == "script" else run_naive_lam(plan)
    _emit(report, args.json, render_untraced)
    return 0 if report["status"] == "completed" else 1


_HANDLERS = {
    "runs": _runs, "show": _show, "lineage": _lineage, "explain": _explain, "diff": _diff, "export": _export,
    "verify": _verify, "actions": _actions, "compact": _compact, "experiments": _experiments, "sweep": _sweep,
    "server": _server, "ui": _ui, "planner": _planner,
}


def _server_command(home: HomeLayout, args: argparse.Namespace) -> int:
    from rlam_prefect.local import server

    if os.environ.get("PREFECT_API_URL"):
        from rlam_prefect.local import executor_client as executor
        from rlam_prefect.local.ui import find_ui

        if args.action == "stop":
            executor.stop(home)  # only started there with RLAM_EXECUTOR=on
        elif args.action == "start":
            executor.wait_ready(home, executor.spawn(home, dict(os.environ), planner=True))  # with RLAM_EXECUTOR=on
        api, ui = os.environ["PREFECT_API_URL"], find_ui(home)
        assert ui is not None
        info = {"url": api, "ui_url": ui.url, "running": server.healthy(api.rstrip("/")), "home": str(home.root), "source": "PREFECT_API_URL"}
        _emit(info, args.json, lambda i: f"PREFECT_API_URL is set ({i['url']}): rlam uses that server and starts none\nui: {i['ui_url']}")
        return 0
    if args.action == "start":
        from rlam_prefect.local import executor_client as executor

        # it imports everything while the server starts, litellm too (the default planner is a litellm model),
        # so the first command after `server start` is served warm like the later ones
        loading = executor.spawn(home, dict(os.environ), planner=True)
        try:
            server.ensure_server(home)
        except BaseException:
            if loading is not None:  # it would wait for a server that never comes
                loading.terminate()
            raise
        executor.wait_ready(home, loading)
    elif args.action == "stop":
        stopped = server.stop(home)
        if not args.json:
            print("stopped" if stopped else f"no local server recorded for {home.root}")
        if not args.json:
            return 0
    from rlam_prefect.local import executor_client as executor

    info = {**server.status(home), "executor": executor.status(home)}
    _emit(info, args.json, lambda i: f"{'running' if i['running'] else 'not running'}: {i.get('url', '-')} (RLAM_HOME {i['home']}, log {server.log_path(home)})"
          + (f"\nui: {i['ui_url']}" if i["running"] else "")
          + f"\nexecutor: {'running, pid ' + str(i['executor']['pid']) if i['executor']['running'] else 'not running'} (log {executor.log_path(home)})")
    return 0


def _emit(payload: Any, as_json: bool, render: Any) -> None:
    print(json.dumps(payload, indent=2, default=str) if as_json else render(payload))


if __name__ == "__main__":
    sys.exit(main())
