"""The typed action space: one registry of decorated pure functions.

An action is ``fn(*artifacts, params: ParamsModel) -> OutputArtifact``. Its inputs and
output are read from the type hints, its parameters are a pydantic model (types, bounds,
defaults, JSON schema for the planner). Decorating a function is all it takes to get cache,
trace, replay and fork; the Prefect task is built lazily so that plain pipelines never
import Prefect.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from rlam_prefect.actions.conditions import Effect, Precondition, default_preconditions
from rlam_prefect.actions.registry import default_registry
from rlam_prefect.core.code_version import code_version
from rlam_prefect.core.errors import InvalidParamsError

if TYPE_CHECKING:
    from rlam_prefect.actions.registry import ActionRegistry
    from rlam_prefect.core.files import FileDigest

class NoParams(BaseModel):
    """Parameters of an action that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ActionSpec:
    name: str
    fn: Callable[..., Any]
    params_model: type[BaseModel]
    inputs: Mapping[str, type]  # argument name -> artifact type
    output: type
    description: str
    packages: tuple[str, ...] = ()
    takes_params: bool = True
    preconditions: tuple[Precondition, ...] = ()  # checked before dispatch
    effects: tuple[Effect, ...] = ()  # checked after the action ran
    _prefect_task: list[Any] = field(default_factory=list, repr=False, compare=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    @property
    def module(self) -> str:
        return self.fn.__module__

    @property
    def output_kind(self) -> str:
        return self.output.__name__

    @property
    def input_kinds(self) -> dict[str, str]:
        return {arg: typ.__name__ for arg, typ in self.inputs.items()}

    @property
    def file_params(self) -> tuple[str, ...]:
        """Parameters declared as data files (``DataFile``): their bytes enter the step's key."""
        from rlam_prefect.actions.files import file_params

        return file_params(self.params_model)

    def file_digests(self, params: Mapping[str, Any]) -> dict[str, FileDigest]:
        """{param: digest} of the data files validated ``params`` name (hashed once per process while unchanged)."""
        from rlam_prefect.actions.files import declared_files
        from rlam_prefect.core.files import file_digest

        return {name: file_digest(path) for name, path in declared_files(self.params_model, params).items()}

    @property
    def code_version(self) -> str:
        return "sha256:" + code_version(self.fn)

    def unmet_inputs(self, available: Mapping[str, Any]) -> str | None:
        """The first declared precondition that does not hold, named, or None.

        ``available`` maps artifact kinds to the latest value of each kind (plain values or Artifacts).
        """
        inputs = {arg: _plain(available[kind]) for arg, kind in self.input_kinds.items() if kind in available}
        for condition in self.preconditions:
            why = condition.violated(available, inputs)
            if why:
                return f"precondition of {self.name} not met: {condition.name!r} ({why})"
        return None

    def unmet_effect(self, kind: str | None, value: Any) -> str | None:
        """The first declared effect that does not hold after the action ran, named, or None."""
        for effect in self.effects:
            why = effect.violated(kind, value)
            if why:
                return f"effect of {self.name} not met: {effect.name!r} ({why})"
        return None

    def validate_params(self, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """Full, canonical params (defaults filled) or one-line InvalidParamsError."""
        try:
            model = self.params_model.model_validate(dict(raw or {}))
        except ValidationError as exc:
            raise InvalidParamsError(f"{self.name}: {_describe_validation_error(exc)}") from None
        return model.model_dump(mode="json")

    def params_schema(self) -> dict[str, Any]:
        return self.params_model.model_json_schema()

    def run(self, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
        """Call the pure function on artifact values; the result must be of the declared type."""
        from rlam_prefect.core.errors import ActionContractError

        kwargs = dict(inputs)
        if self.takes_params:
            kwargs["params"] = self.params_model.model_validate(dict(params))
        value = self.fn(**kwargs)
        if not isinstance(value, self.output):
            raise ActionContractError(
                f"{self.name} returned {type(value).__name__}, but declares {self.output_kind}"
            )
        return value


def action(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    packages: Iterable[str] = (),
    requires: Mapping[str, str] | None = None,
    preconditions: Iterable[Precondition] = (),
    produces: str | None = None,
    effects: Iterable[Effect] = (),
    registry: ActionRegistry | None = None,
) -> Any:
    """Register ``fn`` as an action (in ``registry``, default the process-wide one). Usable bare (``@action``) or with options.

    requires: {input argument: what it means in words}, e.g. {"split": "a preprocessed split exists"}
    (default "a <Kind> exists"); preconditions: further named checks over the inputs. produces: the
    output in words (default "produces a <Kind>"); effects: further named checks over the output.
    """

    def register(func: Callable[..., Any]) -> ActionSpec:
        target = registry if registry is not None else default_registry()
        spec = _spec_from_function(func, name or func.__name__, tuple(packages))
        declared_pre = (*default_preconditions(spec.input_kinds, requires or {}), *preconditions)
        declared_effects = (Effect(produces or f"produces a {spec.output_kind}", spec.output_kind), *effects)
        spec = replace(spec, preconditions=declared_pre, effects=declared_effects)
        return target.add(spec)

    return register(fn) if fn is not None else register


def _spec_from_function(func: Callable[..., Any], name: str, packages: tuple[str, ...]) -> ActionSpec:
    hints = typing.get_type_hints(func)
    signature = inspect.signature(func)
    params_model: type[BaseModel] = NoParams
    inputs: dict[str, type] = {}
    for arg in signature.parameters:
        annotation = hints.get(arg)
        if arg == "params":
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                raise TypeError(f"action {name}: 'params' must be annotated with a pydantic model")
            params_model = annotation
        elif isinstance(annotation, type):
            inputs[arg] = annotation
        else:
            raise TypeError(f"action {name}: input {arg!r} needs an artifact type annotation")
    output = hints.get("return")
    if not isinstance(output, type):
        raise TypeError(f"action {name}: the return annotation must be an artifact type")
    description = inspect.cleandoc(func.__doc__ or "").split("\n\n")[0].replace("\n", " ")
    takes_params = "params" in signature.parameters
    return ActionSpec(name, func, params_model, inputs, output, description, packages, takes_params)


def _plain(value: Any) -> Any:
    from rlam_prefect.actions.artifact import Artifact

    return value.value if isinstance(value, Artifact) else value


def _describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ())) or "params"
        message = error.get("msg", "invalid")
        if error.get("type") == "extra_forbidden":
            message = "unknown parameter"
        value = error.get("input")
        shown = "" if error.get("type") in ("missing", "extra_forbidden") else f" (got {value!r})"
        parts.append(f"{where}: {message}{shown}")
    return "; ".join(parts)
