"""Which Prefect API a process talks to. Must run before ``import prefect``.

With ``PREFECT_API_URL`` set, the user's server is used as it is and nothing is started.
Otherwise this home's local server is used, started on first use (see ``server.py``), so
two homes never share state and nothing is written outside ``$RLAM_HOME``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from rlam_prefect.core.home import HOME_ENV, HomeLayout

QUIET_DEFAULTS = {  # set by configure() unless the user set them: Prefect reads them at import
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # failed task runs keep their tracebacks in the Prefect API and UI; the terminal shows rlam's one-line steps
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}


def configure(home: HomeLayout, preload: Callable[[], object] | None = None) -> str:
    """Point this process's Prefect client at the right API; returns its URL once the server answers.

    The server's address is known as soon as it is launched, so while a new server starts (seconds)
    this process imports what it will need (``preload``, by default Prefect's engines and the flow)
    instead of waiting idle."""
    for name, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(name, value)
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    if "prefect" in sys.modules:
        raise RuntimeError("Prefect was imported before its API was configured; call configure() first")
    from rlam_prefect.local import server

    url = server.launch(home)
    os.environ["PREFECT_HOME"] = str(home.prefect)
    os.environ["PREFECT_API_URL"] = url
    if (server.read_state(home) or {}).get("starting"):
        (preload or import_flow_engine)()
    server.wait_ready(home, url)
    return url


def import_flow_engine() -> None:
    """What every flow command imports: Prefect's engines and rlam's flow (after the API is configured)."""
    import prefect.flow_engine
    import prefect.task_engine  # noqa: F401

    import rlam_prefect.prefect.flow  # noqa: F401


@contextlib.contextmanager
def use_home(home: HomeLayout) -> Iterator[None]:
    """For one API call: RLAM_HOME is ``home`` and Prefect talks to the right API.

    Before Prefect is imported that is ``configure``. Inside a running Prefect flow (an R-LAM run
    called from a user's own flow) the caller's API is used, so the run is a subflow of theirs.
    With Prefect already imported and no API set (a notebook that imported it first), this home's
    server is started and Prefect's settings point at it for the call.
    """
    previous = os.environ.get(HOME_ENV)
    os.environ[HOME_ENV] = str(home.root)
    try:
        with _prefect_api(home):
            yield
    finally:
        if previous is None:
            os.environ.pop(HOME_ENV, None)
        else:
            os.environ[HOME_ENV] = previous


@contextlib.contextmanager
def _prefect_api(home: HomeLayout) -> Iterator[None]:
    if "prefect" not in sys.modules or os.environ.get("PREFECT_API_URL"):
        configure(home)
        yield
        return
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, get_current_settings, temporary_settings

    if FlowRunContext.get() is not None or get_current_settings().api.url:
        yield
        return
    from rlam_prefect.local.server import ensure_server

    for name, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(name, value)
    url = ensure_server(home)
    with temporary_settings({PREFECT_API_URL: url, PREFECT_HOME: str(home.prefect)}):
        yield
