"""``python -m rlam_prefect.cli.executor_entry --home DIR``: a home's warm executor, serving ``rlam``.

The executor (``local/executor.py``) preloads Prefect and the project and forks a child per
command; what a child runs is the CLI, which lives a layer above it, so the CLI hands itself in here.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rlam_prefect.cli.main import main
from rlam_prefect.core.home import HomeLayout
from rlam_prefect.local.executor import run_executor
from rlam_prefect.local.server import DEFAULT_IDLE_MINUTES, IDLE_ENV


def _child(argv: list[str]) -> int:
    return main(argv, executor_child=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m rlam_prefect.cli.executor_entry")
    parser.add_argument("--home", required=True)
    parser.add_argument("--planner", action="store_true", help="import litellm while the server starts (the first command needs it)")
    options = parser.parse_args()
    idle = float(os.environ.get(IDLE_ENV) or DEFAULT_IDLE_MINUTES)
    code = run_executor(HomeLayout(Path(options.home)), idle, _child, planner=options.planner)
    sys.stdout.flush()
    # the executor itself ran no flow (its forked children did and drained their own work), so Prefect's
    # exit handlers have nothing to send; run, they wait seconds on a server that is stopping with it
    os._exit(code)
