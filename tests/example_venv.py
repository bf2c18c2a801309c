"""The example project's fresh virtual environment (tests/test_example_project.py), installed in the background.

Installing examples/wine-knn with pip into a new venv takes about a minute of one core, and its test then waits
for it. So as soon as the run knows that test is selected (the xdist controller once a worker has collected it,
or the single pytest process after collection), the install starts at the lowest CPU priority (nice 19) and uses
what the other tests leave idle; the test's fixture (``example_venv``) waits for it. What is installed, and how, is
the same as a user's ``pip install -e examples/wine-knn`` in a new venv: the test still proves the project
installs alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "examples" / "wine-knn"
MODULE = "tests/test_example_project.py"
DIR_ENV = "RLAM_TEST_EXAMPLE_VENV"  # set by the process that starts the install, inherited by xdist workers
SKIP_ENV = "RLAM_SKIP_EXAMPLE"
INSTALL_TIMEOUT_S = 1500.0
_started: list[subprocess.Popen[bytes]] = []


def _paths(root: Path) -> tuple[Path, Path, Path]:
    """The venv, the install's log, and the file holding its exit code once it ended."""
    return root / "venv", root / "install.log", root / "install.rc"


def start(root: Path) -> subprocess.Popen[bytes]:
    """Create the venv and pip-install the example into it, in the background at nice 19."""
    venv, log, rc = _paths(root)
    # --no-compile: what is installed is the same; Python compiles only what it imports, on first import
    # (measured here: 58.6 s of install against 81.7 s, 57 s of CPU against 80 s)
    script = (
        f'"{sys.executable}" -m venv "{venv}" && "{venv}/bin/pip" install -q --no-compile -c "{ROOT}/constraints.txt" -e "{PROJECT}";'
        f' echo $? > "{rc}.tmp" && mv "{rc}.tmp" "{rc}"'
    )
    with open(log, "wb") as out:
        return subprocess.Popen(["bash", "-c", script], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(19))


def wait(root: Path) -> Path:
    """The installed venv; the test fails with pip's own words if the install failed or took too long."""
    venv, log, rc = _paths(root)
    deadline = time.monotonic() + INSTALL_TIMEOUT_S
    while not rc.exists():
        assert time.monotonic() < deadline, f"the example's install did not end in {INSTALL_TIMEOUT_S:.0f} s: {log.read_text()[-3000:]}"
        time.sleep(0.5)
    assert rc.read_text().strip() == "0", log.read_text()[-3000:]
    return venv


def _begin(nodeids: list[str]) -> None:
    """Start the install once, if the example's test was collected and not skipped on purpose."""
    if _started or os.environ.get(SKIP_ENV) == "1" or not any(n.startswith(MODULE) for n in nodeids):
        return
    _started.append(start(Path(os.environ[DIR_ENV])))


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist: workers inherit the path
        os.environ[DIR_ENV] = tempfile.mkdtemp(prefix="rlam-example-venv-")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    _begin(ids)


def pytest_collection_finish(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # without xdist this process collects and runs everything
        _begin([item.nodeid for item in session.items])


def pytest_unconfigure(config: pytest.Config) -> None:
    for process in _started:
        if process.poll() is None:  # the run ended first (interrupted, or the test was not reached)
            process.kill()
            process.wait()
    if hasattr(config, "workerinput"):
        return
    root = os.environ.pop(DIR_ENV, None)
    if root:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def example_venv() -> Path:
    """The example's venv, once the background install ended (started now if no hook started it: its log is
    created before ``start`` returns, so a worker never starts a second one)."""
    root = Path(os.environ[DIR_ENV])
    if not _paths(root)[1].exists():
        _started.append(start(root))
    return wait(root)
