"""Human approval gates: a person approves, rejects or edits a step before it runs.

Who answers, in this order: a pre-approval (``rlam run --approve ACTION|all``, flow parameter
``approve``); a terminal prompt, when the CLI runs on a tty; otherwise the flow run pauses in
Prefect (``pause_flow_run`` with the typed form below) until someone resumes it from the UI or with
``resume_flow_run(flow_run_id, run_input={...})``. Replay never asks: recorded approvals are reused.
"""

from __future__ import annotations

import contextlib
import contextvars
import getpass
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

APPROVE_ALL = "all"
DEFAULT_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Approval:
    approved: bool
    params: dict[str, Any]  # what to run with: the proposal, or the reviewer's edit of it
    reviewer: str | None
    via: str  # flag | tty | ui
    note: str | None = None

    def edits(self, proposed: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters the reviewer changed, with their new values."""
        return {k: v for k, v in self.params.items() if proposed.get(k, object()) != v or k not in proposed}

    def row(self, proposed: Mapping[str, Any]) -> dict[str, Any]:
        """The step row's approval columns."""
        from rlam_prefect.core.hashing import canonical_json

        edits = self.edits(proposed)
        return {
            "approval": "approved" if self.approved else "rejected",
            "approved_by": self.reviewer,
            "approval_via": self.via,
            "approval_edits": canonical_json(edits) if edits else None,
            "approval_note": self.note,
        }


# A terminal prompt the CLI installs when it runs on a tty: (step, action, params) -> Approval.
# A context variable, like the step listeners: it follows the call into the flow run and ends with it.
TerminalPrompt = Callable[[int, str, dict[str, Any]], Approval]
_terminal: contextvars.ContextVar[TerminalPrompt | None] = contextvars.ContextVar("rlam_terminal_prompt", default=None)


@contextlib.contextmanager
def terminal_prompt_installed(prompt: TerminalPrompt) -> Iterator[None]:
    """Inside this block a step the policy gates is decided at ``prompt`` instead of pausing for the Prefect UI."""
    token = _terminal.set(prompt)
    try:
        yield
    finally:
        _terminal.reset(token)


def ask(step: int, action: str, params: dict[str, Any], pre_approved: tuple[str, ...], timeout_s: int) -> Approval:
    """Get a decision on running ``action`` with ``params`` as step ``step``."""
    if APPROVE_ALL in pre_approved or action in pre_approved:
        return Approval(True, dict(params), _user(), "flag", "pre-approved (--approve / approve parameter)")
    prompt = _terminal.get()
    if prompt is not None:
        return prompt(step, action, dict(params))
    return _ask_in_prefect(step, action, params, timeout_s)


def _ask_in_prefect(step: int, action: str, params: dict[str, Any], timeout_s: int) -> Approval:
    """Pause this flow run with a typed form and wait until someone resumes it."""
    from prefect.context import FlowRunContext
    from prefect.flow_runs import apause_flow_run
    from prefect.input import RunInput
    from prefect.settings import PREFECT_UI_URL
    from prefect.utilities.asyncutils import run_coro_as_sync
    from pydantic import Field

    class ApprovalInput(RunInput):
        """Approve or reject an R-LAM step; edit its parameters to run it with other values."""

        approve: bool = Field(True, description="true: run the step; false: reject it (the planner is told)")
        params: dict[str, Any] = Field(default_factory=dict, description="the parameters to run it with")
        reviewer: str = Field("", description="who decides (recorded with the step)")
        note: str = Field("", description="why (optional, recorded)")

    context = FlowRunContext.get()
    flow_run_id = context.flow_run.id if context and context.flow_run else None
    form = ApprovalInput.with_initial_data(
        description=f"Step {step}: **{action}** needs approval. Proposed parameters: `{params}`",
        params=dict(params),
    )
    ui = PREFECT_UI_URL.value()
    where = f"{ui}/runs/flow-run/{flow_run_id}" if ui else f"flow run {flow_run_id}"
    print(f"step {step} {action} waits for approval: resume {where} (form: approve, params, reviewer)", file=sys.stderr, flush=True)
    if flow_run_id is not None:
        from rlam_prefect.execution.run_log import RunLog

        RunLog(str(flow_run_id)).flow(f"step {step} {action} waits for approval: Resume this flow run (approve, params, reviewer, note)")
    # The flow is async with a synchronous body: pause through Prefect's async implementation on its
    # run-sync loop (the sync variant saves the form through an async-dispatched call and loses it).
    reply = run_coro_as_sync(apause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=2, key=f"approval-step-{step}"))
    assert reply is not None
    return Approval(bool(reply.approve), dict(reply.params), reply.reviewer.strip() or None, "ui", reply.note.strip() or None)


def terminal_prompt(step: int, action: str, params: dict[str, Any]) -> Approval:
    """Ask on the terminal: approve, reject, or edit parameters as PARAM=VALUE lines."""
    import json

    out = sys.stderr
    print(f"step {step} {action} needs approval; parameters: {json.dumps(params, sort_keys=True)}", file=out, flush=True)
    while True:
        print("approve? [y]es / [n]o / [e]dit: ", end="", file=out, flush=True)
        raw = sys.stdin.readline()
        if not raw:  # end of input: nobody approved
            return Approval(False, params, _user(), "tty", "no answer (end of input)")
        answer = raw.strip().lower()
        if answer in ("y", "yes"):
            return Approval(True, params, _user(), "tty")
        if answer in ("n", "no"):
            print("why (optional): ", end="", file=out, flush=True)
            return Approval(False, params, _user(), "tty", sys.stdin.readline().strip() or None)
        if answer in ("e", "edit"):
            edited = dict(params)
            while True:
                print("PARAM=VALUE (empty line: done): ", end="", file=out, flush=True)
                line = sys.stdin.readline().strip()
                if not line:
                    break
                name, sep, raw = line.partition("=")
                if not sep or name.strip() not in params:
                    print(f"  expected one of {', '.join(sorted(params))} as PARAM=VALUE", file=out, flush=True)
                    continue
                try:
                    edited[name.strip()] = json.loads(raw)
                except json.JSONDecodeError:
                    edited[name.strip()] = raw.strip()
            return Approval(True, edited, _user(), "tty")


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:
        return None
