"""Which Prefect API a process talks to. Must run before ``import prefect``.

With ``PREFECT_API_URL`` set, the user's server is used as it is and nothing is started.
Otherwise this home's local server is used, started on first use (see ``server.py``), so
two homes never share state and nothing is written outside ``$RLAM_HOME``.
"""

from __future__ import annotations

import os
import sys

from rlam_prefect.home import Home

_QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # failed task runs keep their tracebacks in the Prefect API and UI; the terminal shows rlam's one-line steps
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}


def configure(home: Home) -> str:
    """Point this process's Prefect client at the right API; returns its URL."""
    for name, value in _QUIET_DEFAULTS.items():
        os.environ.setdefault(name, value)
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    if "prefect" in sys.modules:
        raise RuntimeError("Prefect was imported before its API was configured; call configure() first")
    from rlam_prefect.server import ensure_server

    url = ensure_server(home)
    os.environ["PREFECT_HOME"] = str(home.prefect)
    os.environ["PREFECT_API_URL"] = url
    return url
