"""The action registry: named actions in registration order, as an object rather than a module global.

``@action`` fills the process-wide default registry, which is what a project's action modules do
when they are imported; a test or an embedding application can hold its own ``ActionRegistry``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlam_prefect.core.errors import UnknownActionError

if TYPE_CHECKING:
    from rlam_prefect.actions.spec import ActionSpec


class ActionRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, ActionSpec] = {}

    def add(self, spec: ActionSpec) -> ActionSpec:
        """Register ``spec``; the same function registered again (a module re-imported) is a no-op."""
        existing = self._specs.get(spec.name)
        if existing is not None and (existing.module, existing.fn.__qualname__) != (spec.module, spec.fn.__qualname__):
            raise ValueError(f"action {spec.name!r} is already registered by {existing.module}")
        self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> ActionSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs)) or "none"
            raise UnknownActionError(f"unknown action {name!r} (known: {known})") from None

    def all(self) -> dict[str, ActionSpec]:
        return dict(self._specs)

    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)


_DEFAULT = ActionRegistry()


def default_registry() -> ActionRegistry:
    return _DEFAULT


def get_action(name: str) -> ActionSpec:
    return _DEFAULT.get(name)


def registered_actions() -> dict[str, ActionSpec]:
    return _DEFAULT.all()
