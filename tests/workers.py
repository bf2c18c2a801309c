"""Prefect process workers started by tests (deployments, the PostgreSQL cluster)."""

from __future__ import annotations

import signal
import subprocess


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """A background ``prefect worker`` needs TERM, then INT, to stop."""
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGINT, 15.0)):
        if worker.poll() is not None:
            return
        worker.send_signal(sig)
        try:
            worker.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    if worker.poll() is None:
        worker.kill()
        worker.wait()
