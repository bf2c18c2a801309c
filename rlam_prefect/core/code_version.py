"""Code version of an action: its own source plus every project helper it reaches.

Hashing only a function's own source misses edits in the helpers it calls; hashing whole
modules invalidates on edits that cannot matter. We hash the normalised AST (comments,
formatting and docstrings dropped) of the function and, transitively, of every project
function, class or action it names. Library code is covered by the environment fingerprint, and
rlam-prefect's own modules count as library wherever it is installed (editable or not): the
decorator that registers an action does not change what the action computes.

Parsing is serialised under one lock and memoised per function: CPython 3.11's AST constructor can
fail spuriously when threads parse at once (python/cpython#106905), so ``load_action_modules``
computes every action's version right after importing it, before any task thread starts.
"""

from __future__ import annotations

import ast
import functools
import gc
import inspect
import sys
import sysconfig
import textwrap
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rlam_prefect.core.hashing import sha256_hex

_LIBRARY_ROOTS = tuple(
    str(Path(p).resolve())
    for key in ("stdlib", "platstdlib", "purelib", "platlib")
    if (p := sysconfig.get_paths().get(key))
)


_LIBRARY_PACKAGE = str(Path(__file__).resolve().parents[1])  # rlam_prefect/ itself
_PARSE_LOCK = threading.Lock()
_PARSE_ATTEMPTS = 5  # parses of one source on CPython's spurious error (_parsing)
_T = TypeVar("_T")


def code_version(fn: Any, *, module_names: bool = True) -> str:
    """Digest of the normalised source closure of ``fn`` (memoised per object, computed under a lock).

    ``module_names=False`` leaves the modules' names out (qualified names and code only): a flow file run
    as a script (``__main__``) and the same file loaded again by ``rlam replay`` then agree.
    """
    with _PARSE_LOCK:
        return _code_version(fn, module_names)


@functools.cache
def _code_version(fn: Any, module_names: bool = True) -> str:
    parts: list[bytes] = []
    seen: set[int] = set()
    queue: list[Any] = [fn]
    while queue:
        obj = queue.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        tree = _normalised_tree(obj)
        parts.append((f"{obj.__module__}.{obj.__qualname__}" if module_names else obj.__qualname__).encode())
        parts.append(ast.dump(tree, annotate_fields=False, include_attributes=False).encode())
        queue.extend(_project_references(obj, tree))
    return sha256_hex(*sorted(parts))


def is_project_module(module: types.ModuleType | None) -> bool:
    """True for modules of this checkout or a user's own code; false for stdlib and installed libraries."""
    if module is None:
        return False
    file = getattr(module, "__file__", None)
    if not file:
        return False
    resolved = str(Path(file).resolve())
    return not resolved.startswith(_LIBRARY_ROOTS) and not resolved.startswith(_LIBRARY_PACKAGE + "/")


def _normalised_tree(obj: Any) -> ast.AST:
    source = textwrap.dedent(_parsing(inspect.getsource, obj))  # inspect parses a class's whole module
    tree: ast.Module = _parsing(ast.parse, source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _parsing(parse: Callable[[Any], _T], arg: Any) -> _T:
    """``parse(arg)`` with the garbage collector paused (the caller holds the lock), repeated on CPython's spurious error.

    The lock keeps rlam's own parses apart, but code outside rlam may parse in another thread. CPython
    3.11 keeps the AST constructor's depth counter per interpreter and each parse resets it at its
    start, so a parse that another thread's parse overlaps fails with ``SystemError: AST constructor
    recursion depth mismatch`` (python/cpython#106905). Pausing the collector removes the commonest
    switch (finalisers run by a collection) but not all: tests/test_stress.py still saw about 1 failure
    in 240. Parsing one source is deterministic, so that error, and only that one, is answered by
    parsing the same source again (a few times): the result is the one a clean parse gives. Both
    ``ast.parse`` and ``inspect.getsource`` go through here (for a class, inspect parses its module).
    """
    attempt = 1
    while True:
        paused = gc.isenabled()
        gc.disable()
        try:
            return parse(arg)
        except SystemError as exc:
            if not str(exc).startswith("AST constructor recursion depth mismatch") or attempt == _PARSE_ATTEMPTS:
                raise
            attempt += 1
        finally:
            if paused:
                gc.enable()


def _project_references(obj: Any, tree: ast.AST) -> list[Any]:
    module = sys.modules.get(obj.__module__)
    if module is None:
        return []
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
    namespaces: list[dict[str, Any]] = [vars(module)]
    # `helpers.fn` style access: look the attribute names up in referenced project modules too
    for name in names:
        value = vars(module).get(name)
        if isinstance(value, types.ModuleType) and is_project_module(value):
            namespaces.append(vars(value))
    found: list[Any] = []
    for namespace in namespaces:
        for name in names:
            value = namespace.get(name)
            value = getattr(value, "fn", value)  # an action spec names the function it wraps
            if _is_project_code(value) and value is not obj:
                found.append(value)
    return found


def _is_project_code(value: Any) -> bool:
    if not isinstance(value, (types.FunctionType, type)):
        return False
    return is_project_module(sys.modules.get(getattr(value, "__module__", "") or ""))
