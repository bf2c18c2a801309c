"""The embedded default's Prefect server process: Prefect's own ``prefect server start``, tuned for a laptop.

The supervisor (``server.py``) runs ``python -m rlam_prefect.local.prefect_server --host H --port P``. It is
Prefect's server, started by Prefect's CLI, with two changes made before it starts, both to how often an idle
server wakes up (issue 20: an idle embedded server used 1.6-1.8 % of a core, measured in bench/RESULTS_startup.md):

- Prefect's background-task worker (docket) looks for due tasks every 2 s instead of every 0.25 s
  (``DOCKET_POLL``). Its tasks are the periodic services (vacuum, pause expirations, recent deployments), which
  run every 5 s or more, so they start up to 2 s later; a task added for now is still read at once (the worker
  blocks on the stream it is added to).
- burner-redis, the in-memory Redis the worker uses without a Redis server, waits for pub/sub messages by
  parking a thread in 0.1 s slices, ten thread hand-overs a second for the worker's cancellation listener.
  Here its queue wakes the event loop when a message arrives, so an idle wait costs nothing and a message is
  read as soon as it is put; the caller's timeout is kept exactly.

Both are applied only to the versions they were checked against (``TUNED_FOR``); with others the server runs as
Prefect ships it and says so on stderr (the server log), so nothing changes silently.

``--register-blocks`` instead registers Prefect's block types in ``$PREFECT_HOME``'s database and exits: the
database template is built with it (``template.py``), so a seeded home's server need not register them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import queue
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

DOCKET_POLL = datetime.timedelta(seconds=2)
TUNED_FOR = {"pydocket": "0.27.", "burner-redis": "0.1."}  # version prefixes these changes were measured with


def untuned() -> list[str]:
    """The packages whose installed version the tuning was not checked against (then none of it is applied)."""
    return [name for name, prefix in TUNED_FOR.items() if not metadata.version(name).startswith(prefix)]


def tune() -> bool:
    """Apply both changes before Prefect's server imports its worker; False (and a line on stderr) when skipped."""
    skipped = untuned()
    if skipped:
        versions = ", ".join(f"{name} {metadata.version(name)}" for name in skipped)
        print(f"rlam: {versions} not checked for the idle tuning; Prefect's server runs untuned", file=sys.stderr)
        return False
    _slow_docket_polling()
    _wake_on_pubsub_messages()
    return True


def _slow_docket_polling() -> None:
    from docket import Worker
    from prefect.server.api import background_workers

    # only the worker Prefect's server creates: background_workers looks up ``Worker`` when it starts one
    slower = functools.partial(Worker, minimum_check_interval=DOCKET_POLL, scheduling_resolution=DOCKET_POLL)
    setattr(background_workers, "Worker", slower)  # noqa: B010 (mypy: the module does not export the name)


class WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """burner-redis's message queue that also wakes the event loop of the reader waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.wake: Callable[[], None] | None = None

    def _put(self, item: Any) -> None:  # called under the queue's lock by put and put_nowait, from any thread
        super()._put(item)
        if self.wake is not None:
            with contextlib.suppress(RuntimeError):  # the reader's loop closed: it reads nothing more
                self.wake()


async def _queue_get(self: Any, timeout: float | None) -> Any:
    """One message, or None after ``timeout`` seconds (None: wait for ever, 0: do not wait), without a thread."""
    messages: WakingQueue = self._queue
    loop = asyncio.get_running_loop()
    arrived = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(arrived.set)

    messages.wake = wake
    deadline = None if timeout is None else loop.time() + timeout
    try:
        while True:
            with contextlib.suppress(queue.Empty):
                return messages.get_nowait()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # not wait_for: no task made per wait
                    await arrived.wait()
            arrived.clear()
    finally:
        messages.wake = None


def _wake_on_pubsub_messages() -> None:
    from burner_redis.pubsub import PubSub

    original_init = PubSub.__init__

    @functools.wraps(original_init)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._queue = WakingQueue()  # before its listener starts: the listener is handed this queue

    PubSub.__init__ = init
    PubSub._queue_get = _queue_get


async def _register_blocks() -> None:
    from prefect.server.database import provide_database_interface
    from prefect.server.models.block_registration import run_block_auto_registration

    async with await provide_database_interface().session() as session:  # as Prefect's server does at start-up
        await run_block_auto_registration(session=session)  # it begins and commits its own transactions


def register_blocks() -> None:
    """Register Prefect's block types (and installed collections') in the database of ``$PREFECT_HOME``.

    The template database is built with them (``template.py``), so a home seeded from it need not register them
    at every server start: that imports every installed collection and writes 30-odd block schemas, about
    1.5 s of a new server's 5.5 s here."""
    import prefect.plugins

    prefect.plugins.load_prefect_collections()  # their block types join the registry, as at server start-up
    asyncio.run(_register_blocks())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rlam_prefect.local.prefect_server")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--register-blocks", action="store_true", help="register block types in $PREFECT_HOME's database, then exit")
    options = parser.parse_args(argv)
    if options.register_blocks:
        register_blocks()
        return
    if options.host is None or options.port is None:
        parser.error("--host and --port are required to start the server")
    tune()
    from prefect.cli import app

    sys.argv = ["prefect", "server", "start", "--host", options.host, "--port", str(options.port)]
    app()


if __name__ == "__main__":
    main()
