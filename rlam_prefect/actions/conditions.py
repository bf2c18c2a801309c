"""Declared preconditions and effects of an action (the R-LAM paper's action schema).

A precondition must hold before the engine dispatches an action: by default one per input
("a Split exists"), named in words by the action's author ("a preprocessed split exists"),
optionally with a check over the input values. An effect must hold after it ran: by default
"produces a <Kind>", plus any declared checks over the output value. The names are what the
planner's prompt, ``rlam actions`` and a violated step's error message show.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Precondition:
    name: str  # human-readable: what must hold before the action runs
    needs: tuple[str, ...] = ()  # artifact kinds an earlier step must have produced
    check: Callable[..., bool] | None = None  # called with the input values by argument name

    def violated(self, available: Mapping[str, Any], inputs: Mapping[str, Any]) -> str | None:
        """Why this precondition does not hold (None when it does)."""
        missing = [kind for kind in self.needs if kind not in available]
        if missing:
            return f"no earlier step produced {', '.join(missing)}"
        check = self.check  # a local: the lambda sees it narrowed
        if check is not None and not _holds(lambda: check(**inputs)):
            return "its check is false for the current inputs"
        return None


@dataclass(frozen=True)
class Effect:
    name: str  # human-readable: what holds after the action ran
    kind: str | None = None  # the declared output kind (the default effect)
    check: Callable[[Any], bool] | None = None  # called with the output value

    def violated(self, kind: str | None, value: Any) -> str | None:
        if self.kind is not None and kind != self.kind:
            return f"the output is {kind or 'missing'}, declared {self.kind}"
        check = self.check  # a local: the lambda sees it narrowed
        if check is not None and not _holds(lambda: check(value)):
            return "its check is false for the output"
        return None


def _holds(evaluate: Callable[[], Any]) -> bool:
    try:
        return bool(evaluate())
    except Exception:
        return False


def default_preconditions(input_kinds: Mapping[str, str], named: Mapping[str, str]) -> tuple[Precondition, ...]:
    """One precondition per input artifact, named by the author (``requires=``) or by its kind."""
    unknown = set(named) - set(input_kinds)
    if unknown:
        raise TypeError(f"requires= names {', '.join(sorted(unknown))}, which are not inputs")
    return tuple(Precondition(named.get(arg) or f"a {kind} exists", (kind,)) for arg, kind in input_kinds.items())
