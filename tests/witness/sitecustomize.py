"""The execution witness: counts action-body calls from outside rlam_prefect, in every test subprocess.

Put on PYTHONPATH (the pytest plugin ``tests.witness.plugin`` does it for the whole session), this
module is imported by Python's ``site`` at start-up of every interpreter the tests start: the
``rlam`` CLI, the warm executor it spawns (and the children it forks), Prefect workers and the flow
runs they start, Dask workers. It installs a profile function (``sys.setprofile`` and
``threading.setprofile``) that sees every Python function *call*; when the called function is an
action body, it appends one line ``pid<TAB>name<TAB>time`` to the file named by RLAM_TEST_WITNESS
(read at each call, so a long-lived executor writes where the current command's test says).

An action body is a function defined in a file under one of the RLAM_TEST_WITNESS_ROOTS
directories whose ``def`` carries a decorator named ``action`` or ``step`` (``@rlam.action``,
``@rlam.step``), found by parsing that file's source here: nothing from rlam_prefect, Prefect or
any cache is consulted, so a step served from a cache leaves no line and an executed one always does.

Overhead: the hook is installed only in processes started with RLAM_TEST_WITNESS set (the tests that
count executions) and in rlam's warm executor (a later command handed to it may name a witness file),
never in the Prefect API server (it runs no action). Its first check is a dict
lookup on the code object's file name (a string whose hash is cached), so a call outside the watched
files costs one Python call and one lookup; that still makes call-heavy Python code (imports of
Prefect and litellm) several times slower in a profiled process, which is why it is opt-in.
A long-lived process (the warm executor) keeps the hook it started with and reads the file name at
each call, so its forked children write where the current command's test says.
"""

from __future__ import annotations

import ast
import os
import sys
import threading
import time

FILE_ENV = "RLAM_TEST_WITNESS"
ROOTS_ENV = "RLAM_TEST_WITNESS_ROOTS"
_DECORATORS = ("action", "step")

_by_file: dict[str, dict[str, str] | None] = {}  # co_filename -> {function name: label} or None (not watched)
_roots: tuple[str, ...] = ()


def _decorated(path: str) -> dict[str, str] | None:
    """Names of the functions in ``path`` decorated with @action/@step (None: not a watched file)."""
    real = os.path.realpath(path)
    if not any(real.startswith(root) for root in _roots):
        return None
    try:
        with open(real, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), real)
    except (OSError, SyntaxError, ValueError):
        return None
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                if name in _DECORATORS:
                    names[node.name] = node.name
    return names or None


def _profile(frame, event, arg):  # type: ignore[no-untyped-def]
    if event != "call":
        return
    code = frame.f_code
    filename = code.co_filename
    try:
        names = _by_file[filename]
    except KeyError:
        names = _by_file[filename] = _decorated(filename)
    if names is None:
        return
    label = names.get(code.co_name)
    if label is None:
        return
    target = os.environ.get(FILE_ENV)
    if not target:
        return
    line = f"{os.getpid()}\t{label}\t{time.time():.6f}\n".encode()
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one small O_APPEND write: whole lines, whatever the process or thread
    finally:
        os.close(fd)


def _is_prefect_server() -> bool:
    argv = list(getattr(sys, "orig_argv", []))
    return "prefect" in argv and "server" in argv


def _is_warm_executor() -> bool:
    """rlam's warm executor serves later commands, which may name a witness file its start did not."""
    return "rlam_prefect.cli.executor_entry" in getattr(sys, "orig_argv", [])


def install() -> None:
    global _roots
    roots = [r for r in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if r]
    if not roots or _is_prefect_server() or not (os.environ.get(FILE_ENV) or _is_warm_executor()):
        return  # a process started without a witness file pays nothing
    _roots = tuple(os.path.join(os.path.realpath(r), "") for r in roots)
    sys.setprofile(_profile)
    threading.setprofile(_profile)


if __name__ == "sitecustomize":  # loaded by site at start-up (imported as tests.witness.sitecustomize: constants only)
    install()
