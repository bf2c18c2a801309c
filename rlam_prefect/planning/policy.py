"""Execution policies: what a run may do, read from a YAML or JSON file and checked before dispatch.

A policy narrows the action space; it never widens it. Its rules: ``allowed_actions``, ``params``
(bounds tighter than an action's schema: ``min``, ``max``, ``choices``), ``max_steps``,
``max_retrains`` (how often the retrain action may run again after its first success),
``require_approval`` (actions a person must approve) and ``file_roots`` (the directories or URL
prefixes such as ``s3://bucket/data/`` from which a planner may choose a data file itself; without
it a data file is the user's choice only). A decision that breaks a rule becomes a
recorded ``rejected`` step naming it. The policy's content hash is recorded with every run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlam_prefect.core.errors import UsageError

POLICY_ENV = "RLAM_POLICY"
RULES = ("allowed_actions", "params", "max_steps", "max_retrains", "retrain_action", "require_approval", "file_roots")
BOUNDS = ("min", "max", "choices")
SUCCEEDED = ("executed", "cached")


@dataclass(frozen=True)
class Policy:
    allowed_actions: tuple[str, ...] | None = None  # None: every registered action
    params: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # action -> param -> bounds
    max_steps: int | None = None
    max_retrains: int | None = None
    retrain_action: str = "train_model"
    require_approval: tuple[str, ...] = ()  # action names, or "all"
    file_roots: tuple[str, ...] = ()  # directories / URL prefixes a planner may pick data files from

    @classmethod
    def from_mapping(cls, data: Any, source: str = "policy") -> Policy:
        """Validate a parsed policy; every mistake is one UsageError line naming ``source`` and the rule."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise UsageError(f"{source}: a policy must be a mapping of rules, not {type(data).__name__}")
        unknown = sorted(set(data) - set(RULES))
        if unknown:
            raise UsageError(f"{source}: unknown rule {unknown[0]!r} (rules: {', '.join(RULES)})")
        from rlam_prefect.actions.registry import registered_actions

        known = registered_actions()
        allowed = data.get("allowed_actions")
        if allowed is not None:
            allowed = tuple(sorted(set(_names(allowed, "allowed_actions", source, known))))
        approval = tuple(sorted(set(_names(data.get("require_approval") or [], "require_approval", source, known, allow_all=True))))
        retrain = data.get("retrain_action", "train_model")
        if not isinstance(retrain, str) or retrain not in known:
            raise UsageError(f"{source}: retrain_action {retrain!r} is not a known action")
        params = _bounds(data.get("params") or {}, source, known)
        roots = data.get("file_roots") or []
        if isinstance(roots, str):
            roots = [roots]
        if not isinstance(roots, list) or not all(isinstance(r, str) and r.strip() for r in roots):
            raise UsageError(f"{source}: file_roots must be a list of directories or URL prefixes")
        return cls(
            allowed_actions=allowed,
            params=params,
            max_steps=_count(data.get("max_steps"), "max_steps", source, minimum=1),
            max_retrains=_count(data.get("max_retrains"), "max_retrains", source, minimum=0),
            retrain_action=retrain,
            require_approval=approval,
            file_roots=tuple(sorted({_root(r) for r in roots})),
        )

    @classmethod
    def from_json(cls, text: str | None) -> Policy | None:
        return cls.from_mapping(json.loads(text), "recorded policy") if text else None

    def to_dict(self) -> dict[str, Any]:
        """The canonical form: what is hashed, recorded, passed to the flow and shown to the planner."""
        data: dict[str, Any] = {
            "allowed_actions": list(self.allowed_actions) if self.allowed_actions is not None else None,
            "params": self.params,
            "max_steps": self.max_steps,
            "max_retrains": self.max_retrains,
            "retrain_action": self.retrain_action,
            "require_approval": list(self.require_approval),
        }
        if self.file_roots:  # absent when unused: policies recorded before the rule existed keep their hash
            data["file_roots"] = list(self.file_roots)
        return data

    def to_json(self) -> str:
        from rlam_prefect.core.hashing import canonical_json

        return canonical_json(self.to_dict())

    @property
    def hash(self) -> str:
        from rlam_prefect.core.hashing import content_hash

        return content_hash(self.to_json())

    def needs_approval(self, action: str) -> bool:
        return "all" in self.require_approval or action in self.require_approval

    def violation(self, action: str, params: Mapping[str, Any], history: list[dict[str, Any]]) -> str | None:
        """The rule this decision breaks, in one line, or None. ``history`` is the run's steps so far."""
        step = len(history) + 1
        if self.max_steps is not None and step > self.max_steps:
            return f"max_steps: step {step} is beyond the policy's limit of {self.max_steps} steps"
        if self.allowed_actions is not None and action not in self.allowed_actions:
            return f"allowed_actions: {action} is not allowed (allowed: {', '.join(self.allowed_actions) or 'none'})"
        for param, bounds in self.params.get(action, {}).items():
            broken = _outside(params.get(param), bounds)
            if broken:
                return f"params.{action}.{param}: {broken}"
        if self.max_retrains is not None and action == self.retrain_action:
            done = sum(1 for row in history if row["action"] == action and row["status"] in SUCCEEDED)
            if done > self.max_retrains:
                return f"max_retrains: {action} already ran {done} times; the policy allows {self.max_retrains} retrain(s)"
        return None


def file_choice_violation(
    policy: Policy | None, action: str, chosen: Mapping[str, str], user_given: Mapping[str, set[str]]
) -> str | None:
    """The rule a planner breaks by choosing data file ``chosen`` ({param: path}) itself, or None.

    A path the user gave (a pin, the action's default, or a path of the run being forked) is the
    user's choice; any other path must lie under one of the policy's ``file_roots``.
    """
    for param, path in chosen.items():
        if path in user_given.get(param, set()):
            continue
        roots = policy.file_roots if policy else ()
        if any(_within(path, root) for root in roots):
            continue
        where = f"under file_roots ({', '.join(roots)})" if roots else "and the policy names no file_roots"
        return (
            f"file_roots: the planner may not choose the data file {action}.{param}={path!r}: it is not the user's choice {where}; "
            f"set it with --set {action}.{param}=... or list allowed directories in the policy's file_roots"
        )
    return None


def _root(root: str) -> str:
    root = root.strip()
    if "://" in root and not root.startswith("file://"):
        return root.rstrip("/") + "/"
    return str(Path(root.removeprefix("file://")).expanduser().resolve())


def _within(path: str, root: str) -> bool:
    if "://" in root:
        return "://" in path and not path.startswith("file://") and path.startswith(root) and "/../" not in path[len(root) - 1 :]
    if "://" in path and not path.startswith("file://"):
        return False
    return Path(path.removeprefix("file://")).expanduser().resolve().is_relative_to(root)


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a policy file (YAML or JSON); a bad file is one UsageError line."""
    location = Path(path)
    try:
        text = location.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"policy file {location} cannot be read ({exc.strerror or exc})") from None
    import yaml  # JSON is YAML too

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"policy file {location} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    return Policy.from_mapping(data, f"policy file {location}")


def resolve_policy(given: str | Mapping[str, Any] | None) -> Policy | None:
    """A flow or CLI ``policy``: a path, an already-parsed mapping, or None for ``$RLAM_POLICY``."""
    if isinstance(given, Mapping):
        return Policy.from_mapping(given, "policy")
    path = given or os.environ.get(POLICY_ENV)
    return load_policy(path) if path else None


def _names(value: Any, rule: str, source: str, known: Mapping[str, Any], allow_all: bool = False) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{source}: {rule} must be a list of action names")
    for name in value:
        if name not in known and not (allow_all and name == "all"):
            raise UsageError(f"{source}: {rule}: unknown action {name!r} (known: {', '.join(sorted(known))})")
    return value


def _count(value: Any, rule: str, source: str, minimum: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UsageError(f"{source}: {rule} must be an integer >= {minimum} (got {value!r})")
    return value


def _bounds(value: Any, source: str, known: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    if not isinstance(value, Mapping):
        raise UsageError(f"{source}: params must map action -> parameter -> bounds")
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for action, per_param in value.items():
        if action not in known:
            raise UsageError(f"{source}: params: unknown action {action!r}")
        if not isinstance(per_param, Mapping):
            raise UsageError(f"{source}: params.{action} must map parameter -> bounds")
        properties = known[action].params_schema().get("properties", {})
        for param, bounds in per_param.items():
            where = f"params.{action}.{param}"
            if param not in properties:
                raise UsageError(f"{source}: {where}: {action} has no parameter {param!r}")
            if not isinstance(bounds, Mapping) or not bounds or set(bounds) - set(BOUNDS):
                raise UsageError(f"{source}: {where} must be a mapping with min, max and/or choices")
            for side in ("min", "max"):
                if side in bounds and (not isinstance(bounds[side], (int, float)) or isinstance(bounds[side], bool)):
                    raise UsageError(f"{source}: {where}.{side} must be a number (got {bounds[side]!r})")
            if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
                raise UsageError(f"{source}: {where}: min {bounds['min']} is above max {bounds['max']}")
            if "choices" in bounds and (not isinstance(bounds["choices"], list) or not bounds["choices"]):
                raise UsageError(f"{source}: {where}.choices must be a non-empty list")
            result.setdefault(action, {})[param] = dict(bounds)
    return result


def _outside(value: Any, bounds: Mapping[str, Any]) -> str | None:
    if "choices" in bounds and value not in bounds["choices"]:
        return f"{value!r} is not one of {bounds['choices']}"
    if ("min" in bounds or "max" in bounds) and value is not None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{value!r} is not a number"
        if "min" in bounds and value < bounds["min"]:
            return f"{value} is below the policy's minimum {bounds['min']}"
        if "max" in bounds and value > bounds["max"]:
            return f"{value} is above the policy's maximum {bounds['max']}"
    return None
