"""Where a project's actions come from: ``[tool.rlam]`` in its pyproject.toml, then RLAM_ACTIONS.

``rlam`` looks for the nearest pyproject.toml at or above the working directory that has a
``[tool.rlam]`` table (the way Prefect resolves entrypoints against the working directory)::

    [tool.rlam]
    actions = ["tasks"]          # modules whose import registers the actions
    order = ["load", "train"]    # the fixed planner's order (default: registration order)

The project's root goes on ``sys.path`` so its modules import without being installed. The
same mechanism serves this repository's seed workflow and a user's own project; a run records
the modules it loaded, so a replay imports exactly those.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rlam_prefect.actions.registry import default_registry
from rlam_prefect.core.errors import UnknownActionError, UsageError

ACTION_MODULES_ENV = "RLAM_ACTIONS"


@dataclass(frozen=True)
class Project:
    root: Path | None  # the directory of the pyproject.toml that declared [tool.rlam]
    actions: tuple[str, ...] = ()
    order: tuple[str, ...] = ()

    def module_paths(self) -> list[Path]:
        """Source directories or files of the declared action modules (for staleness checks)."""
        if self.root is None:
            return []
        found = []
        for module in self.actions:
            base = self.root.joinpath(*module.split("."))
            found += [p for p in (base, base.with_suffix(".py")) if p.exists()]
        return found


def find_project(start: Path | None = None) -> Project:
    """The project at or above ``start`` (default: the working directory); an empty one if none."""
    return _find_project(Path(start or os.getcwd()).resolve())


@functools.lru_cache(maxsize=16)
def _find_project(start: Path) -> Project:
    for directory in (start, *start.parents):
        pyproject = directory / "pyproject.toml"
        if not pyproject.is_file():
            continue
        try:
            config = tomllib.loads(pyproject.read_text()).get("tool", {}).get("rlam")
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read {pyproject}: {exc}") from None
        if config is None:
            continue
        return Project(directory, _names(config, "actions", pyproject), _names(config, "order", pyproject))
    return Project(None)


def _names(config: dict[str, object], key: str, where: Path) -> tuple[str, ...]:
    value = config.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise UsageError(f"{where}: [tool.rlam] {key} must be a list of names")
    return tuple(v.strip() for v in value)


def load_action_modules(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Import the project's action modules, those in RLAM_ACTIONS, and ``extra``; their names, in order."""
    project = find_project()
    from_env = [m.strip() for m in os.environ.get(ACTION_MODULES_ENV, "").split(",") if m.strip()]
    modules = tuple(dict.fromkeys([*project.actions, *from_env, *extra]))
    if not modules:
        raise UsageError(
            f"no actions: no pyproject.toml with [tool.rlam] actions = [...] at or above {os.getcwd()}, "
            f"and {ACTION_MODULES_ENV} is not set"
        )
    add_project_to_path()
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UnknownActionError(f"cannot import action module {module!r}: {exc}") from None
    for spec in default_registry().all().values():
        spec.code_version  # noqa: B018 - parsed now, once, before any task thread could parse at the same time
    return modules


def add_project_to_path() -> None:
    """Put the project's root and the working directory on ``sys.path``: a project's own modules import
    without being installed, when its actions load and when a stored result of one of its types is unpickled
    (``rlam verify``; ``python -m`` had the working directory there already, the ``rlam`` script has not)."""
    project = find_project()
    for root in (str(project.root) if project.root else None, os.getcwd()):
        if root and root not in sys.path:
            sys.path.append(root)


def fixed_order() -> tuple[str, ...]:
    """The fixed planner's order: the project's ``order``, else every registered action in turn."""
    return find_project().order or default_registry().names()
