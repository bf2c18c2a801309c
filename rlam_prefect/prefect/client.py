"""One synchronous Prefect API client for the whole of a flow run, instead of one per lookup.

Prefect 3.8 resolves a task's result and key storage on every task run through
``get_client(sync_client=True)``. Inside an async flow there is no sync client context, so
each call builds a new client (about 20 ms here): two per action step, more than all of the
R-LAM layer's own work per step. Entering a ``SyncClientContext`` makes those calls reuse one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def shared_sync_client() -> Iterator[None]:
    from prefect.context import SyncClientContext

    with SyncClientContext.get_or_create():
        yield


def quieten_prefect_workers() -> None:
    """Once the API is known gone: Prefect's log and event workers would print one error per queued item.

    They drain against the dead API while the process exits, each item after the client's retries;
    the caller reports the loss itself, in one line.
    """
    logging.getLogger("prefect._internal.concurrency").disabled = True
    logging.raiseExceptions = False  # Prefect's API log worker prints "--- Error logging to API ---" only when set
