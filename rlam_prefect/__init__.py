"""R-LAM on Prefect: typed actions as Prefect tasks, keyed by content, recorded in Parquet; replay and fork.

``import rlam_prefect as rlam`` is cheap: every public name is loaded on first use (as Prefect's own
``__init__`` does), so listing runs never imports Prefect, litellm or scikit-learn.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from rlam_prefect.core.version import __version__

# public name -> module that defines it
_PUBLIC_API: dict[str, str] = {
    # verbs
    "run": "rlam_prefect.api.verbs",
    "replay": "rlam_prefect.api.verbs",
    "fork": "rlam_prefect.api.verbs",
    "sweep": "rlam_prefect.api.verbs",
    "verify": "rlam_prefect.api.verbs",
    "diff": "rlam_prefect.api.verbs",
    "explain": "rlam_prefect.api.verbs",
    "export": "rlam_prefect.api.verbs",
    # the home and typed results
    "Home": "rlam_prefect.api.home",
    "open_home": "rlam_prefect.api.home",
    "RunResult": "rlam_prefect.api.results",
    "StepResult": "rlam_prefect.api.results",
    "RunSummary": "rlam_prefect.api.results",
    "VerifyResult": "rlam_prefect.api.results",
    "DiffResult": "rlam_prefect.api.results",
    "Explanation": "rlam_prefect.api.results",
    "SweepResult": "rlam_prefect.api.results",
    # defining actions
    "action": "rlam_prefect.actions.spec",
    "ActionSpec": "rlam_prefect.actions.spec",
    "NoParams": "rlam_prefect.actions.spec",
    "Precondition": "rlam_prefect.actions.conditions",
    "Effect": "rlam_prefect.actions.conditions",
    "ActionRegistry": "rlam_prefect.actions.registry",
    "DataFile": "rlam_prefect.actions.files",
    "content_hash": "rlam_prefect.core.hashing",
    "register_hasher": "rlam_prefect.core.hashing",
    "hasher": "rlam_prefect.core.hashing",
    # the Prefect flows a project deploys (prefect.yaml entrypoints re-export these)
    "rlam_flow": "rlam_prefect.prefect.flow",
    "audit_flow": "rlam_prefect.prefect.audit_flow",
    # R-LAM on your own Prefect flow: @rlam.track on the flow, @rlam.step on its tasks
    "track": "rlam_prefect.prefect.track_flow",
    "step": "rlam_prefect.prefect.tracked",
    "CONTENT": "rlam_prefect.prefect.tracked",
    # errors
    "RLamError": "rlam_prefect.core.errors",
    "UsageError": "rlam_prefect.core.errors",
    "UnknownRunError": "rlam_prefect.core.errors",
    "UnknownActionError": "rlam_prefect.core.errors",
    "InvalidParamsError": "rlam_prefect.core.errors",
    "TraceCorruptError": "rlam_prefect.core.errors",
    "StoredResultError": "rlam_prefect.core.errors",
    "ReplayMismatchError": "rlam_prefect.core.errors",
    "ActionContractError": "rlam_prefect.core.errors",
    "DataFileError": "rlam_prefect.core.errors",
    "UnhashableValueError": "rlam_prefect.core.hashing",
}

# spelled out, not derived from _PUBLIC_API: type checkers read only a literal __all__ (test_architecture checks the two agree)
__all__ = [
    "__version__",
    "run",
    "replay",
    "fork",
    "sweep",
    "verify",
    "diff",
    "explain",
    "export",
    "Home",
    "open_home",
    "RunResult",
    "StepResult",
    "RunSummary",
    "VerifyResult",
    "DiffResult",
    "Explanation",
    "SweepResult",
    "action",
    "ActionSpec",
    "NoParams",
    "Precondition",
    "Effect",
    "ActionRegistry",
    "DataFile",
    "content_hash",
    "register_hasher",
    "hasher",
    "rlam_flow",
    "audit_flow",
    "track",
    "step",
    "CONTENT",
    "RLamError",
    "UsageError",
    "UnknownRunError",
    "UnknownActionError",
    "InvalidParamsError",
    "TraceCorruptError",
    "StoredResultError",
    "ReplayMismatchError",
    "ActionContractError",
    "DataFileError",
    "UnhashableValueError",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC_API.get(name)
    if module is None:
        raise AttributeError(f"module 'rlam_prefect' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from rlam_prefect.actions.conditions import Effect, Precondition
    from rlam_prefect.actions.files import DataFile
    from rlam_prefect.actions.registry import ActionRegistry
    from rlam_prefect.actions.spec import ActionSpec, NoParams, action
    from rlam_prefect.api.home import Home, open_home
    from rlam_prefect.api.results import DiffResult, Explanation, RunResult, RunSummary, StepResult, SweepResult, VerifyResult
    from rlam_prefect.api.verbs import diff, explain, export, fork, replay, run, sweep, verify
    from rlam_prefect.core.errors import (
        ActionContractError,
        DataFileError,
        InvalidParamsError,
        ReplayMismatchError,
        RLamError,
        StoredResultError,
        TraceCorruptError,
        UnknownActionError,
        UnknownRunError,
        UsageError,
    )
    from rlam_prefect.core.hashing import UnhashableValueError, content_hash, hasher, register_hasher
    from rlam_prefect.prefect.audit_flow import audit_flow
    from rlam_prefect.prefect.flow import rlam_flow
    from rlam_prefect.prefect.track_flow import track
    from rlam_prefect.prefect.tracked import CONTENT, step
