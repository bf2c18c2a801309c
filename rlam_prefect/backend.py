"""Which Prefect API a process talks to. Must run before ``import prefect``.

With ``PREFECT_API_URL`` set, the user's server is used as it is. Otherwise Prefect's embedded
(ephemeral) server runs on a database inside ``$RLAM_HOME/prefect``, so two homes never share
state and nothing is written outside the home.
"""

from __future__ import annotations

import os
import sys

from rlam_prefect.home import Home

_QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}


def configure(home: Home) -> None:
    if "prefect" in sys.modules and not os.environ.get("PREFECT_API_URL"):
        current = os.environ.get("PREFECT_HOME")
        if current and os.path.realpath(current) != str(home.prefect):
            raise RuntimeError("Prefect was imported before its home was set; configure() must run first")
    for name, value in _QUIET_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if not os.environ.get("PREFECT_API_URL"):
        home.prefect.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home.prefect)
