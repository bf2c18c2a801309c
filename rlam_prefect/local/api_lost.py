"""A command that lost its Prefect API half-way: one line and exit 6 instead of a connection traceback.

Prefect keeps running a flow after its server died; only its API calls fail, each after the client's
own retries (``PREFECT_CLIENT_MAX_RETRIES``). The flow stops itself before its next step
(``prefect/flow.py``), but the flow engine's last state update then fails too, and that connection
error is what reaches the caller, with rlam's own error as its context. This finds rlam's error
(or words the bare connection error), and quietens Prefect's background workers, which would otherwise
print one error per queued event or log while the process exits.
"""

from __future__ import annotations

import os
import sys

from rlam_prefect.core.errors import BackendUnavailableError, RLamError, one_line
from rlam_prefect.prefect.client import quieten_prefect_workers


def as_backend_error(exc: BaseException) -> RLamError | None:
    """The user-facing error when ``exc`` means the Prefect API is gone, else None (a bug: let it raise)."""
    chain = _chain(exc)
    found: RLamError | None = next((e for e in chain if isinstance(e, BackendUnavailableError)), None)
    httpx = sys.modules.get("httpx")  # not imported: cannot be an API connection error
    if found is None and httpx is not None:
        lost = next((e for e in chain if isinstance(e, httpx.TransportError)), None)
        if lost is not None:
            url = os.environ.get("PREFECT_API_URL", "(not set)")
            found = BackendUnavailableError(
                f"the Prefect API at {url} stopped answering ({type(lost).__name__}: {one_line(lost, 120)}); "
                "what was recorded before is kept: see `rlam runs`"
            )
    if found is not None:
        quieten_prefect_workers()
    return found


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
