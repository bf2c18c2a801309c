"""The planner's goal, a run parameter: a metric, a direction and a threshold (``accuracy>=0.97``, ``rmse<=0.5``).

The metric is any numeric entry of the summary a metrics artifact returns (the last step whose output
type's name ends in ``Metrics``, e.g. the seed's ``Metrics`` or a user's ``RegressionMetrics``).
``>=`` means higher is better, ``<=`` lower is better.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rlam_prefect.core.errors import UsageError

DEFAULT_GOAL = "accuracy>=0.97"
_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(>=|<=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Goal:
    metric: str
    direction: str  # ">=" (maximise) or "<=" (minimise)
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Goal:
        match = _PATTERN.match(text or "")
        if match is None:
            raise UsageError(f"goal {text!r} is not METRIC>=NUMBER or METRIC<=NUMBER (e.g. accuracy>=0.97, rmse<=0.5)")
        return cls(match.group(1), match.group(2), float(match.group(3)))

    @property
    def text(self) -> str:
        return f"{self.metric}{self.direction}{self.threshold:g}"

    def met(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        return value >= self.threshold if self.direction == ">=" else value <= self.threshold

    def to_prompt(self) -> dict[str, Any]:
        better = "higher" if self.direction == ">=" else "lower"
        return {
            "metric": self.metric,
            "direction": "maximize" if self.direction == ">=" else "minimize",
            "threshold": self.threshold,
            "target": self.threshold,
            "text": f"Reach {self.metric} {self.direction} {self.threshold:g} ({better} is better) on held-out data, as the "
            "evaluation step's output reports it. If it is not reached, try other models or parameters within the step budget, then stop.",
        }


def goal_of_options(goal: str | None, target_accuracy: float | None) -> str:
    """The goal text from a ``goal`` and the older ``target_accuracy`` setting (both given is an error)."""
    if goal is not None and target_accuracy is not None:
        raise UsageError("give either a goal or a target accuracy, not both")
    if target_accuracy is not None:
        if not 0.0 <= target_accuracy <= 1.0:
            raise UsageError(f"target accuracy {target_accuracy} is out of range 0..1")
        return Goal("accuracy", ">=", float(target_accuracy)).text
    return Goal.parse(goal).text if goal is not None else DEFAULT_GOAL
