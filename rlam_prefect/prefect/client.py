"""One synchronous Prefect API client for the whole of a flow run, instead of one per lookup.

Prefect 3.8 resolves a task's result and key storage on every task run through
``get_client(sync_client=True)``. Inside an async flow there is no sync client context, so
each call builds a new client (about 20 ms here): two per action step, more than all of the
R-LAM layer's own work per step. Entering a ``SyncClientContext`` makes those calls reuse one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def shared_sync_client() -> Iterator[None]:
    from prefect.context import SyncClientContext

    with SyncClientContext.get_or_create():
        yield
