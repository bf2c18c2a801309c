"""The action space: pure, typed, bounded, deterministic given its recorded parameters."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

import tasks  # noqa: F401 - registers the default actions
from rlam_prefect.actions.project import fixed_order
from rlam_prefect.actions.registry import get_action, registered_actions
from rlam_prefect.actions.spec import action
from rlam_prefect.core.errors import ActionContractError, InvalidParamsError, UnknownActionError
from rlam_prefect.core.hashing import content_hash
from tasks.artifacts import Dataset, Metrics


def _pipeline(**overrides):
    values = {}
    for name in fixed_order():
        spec = get_action(name)
        params = spec.validate_params(overrides.get(name, {}))
        values[spec.output_kind] = spec.run({a: values[k] for a, k in spec.input_kinds.items()}, params)
    return values


def test_the_seed_actions_are_registered_with_typed_inputs_and_outputs():
    specs = registered_actions()
    assert set(fixed_order()) <= set(specs)
    assert specs["train_model"].input_kinds == {"split": "Split"}
    assert specs["evaluate_model"].input_kinds == {"model": "TrainedModel", "split": "Split"}
    assert specs["evaluate_model"].output_kind == "Metrics"
    assert "C" in specs["train_model"].params_schema()["properties"]


def test_same_params_same_outputs_and_seeds_are_parameters():
    a, b = _pipeline(), _pipeline()
    assert {k: content_hash(v) for k, v in a.items()} == {k: content_hash(v) for k, v in b.items()}
    reseeded = _pipeline(preprocess_data={"random_state": 7})
    assert content_hash(reseeded["Split"]) != content_hash(a["Split"])


def test_evaluation_is_on_the_held_out_split():
    values = _pipeline(preprocess_data={"test_size": 0.25})
    metrics: Metrics = values["Metrics"]
    assert metrics.n_test == len(values["Split"].y_test) == 143  # 25% of 569, stratified
    assert sum(map(sum, metrics.confusion_matrix)) == metrics.n_test
    assert 0.9 < metrics.accuracy <= 1.0


@pytest.mark.parametrize("model", ["logistic_regression", "random_forest", "svm"])
def test_every_model_trains_and_evaluates(model):
    metrics = _pipeline(train_model={"model": model, "n_estimators": 20})["Metrics"]
    assert 0.85 < metrics.accuracy <= 1.0


@pytest.mark.parametrize(
    ("action_name", "params", "message"),
    [
        ("train_model", {"C": 0}, "greater than 0"),
        ("train_model", {"C": 1e9}, "less than or equal"),
        ("train_model", {"model": "xgboost"}, "model:"),
        ("preprocess_data", {"test_size": 0.9}, "test_size"),
        ("preprocess_data", {"random_state": -1}, "random_state"),
        ("load_dataset", {"name": "mnist"}, "name:"),
        ("evaluate_model", {"nonsense": 1}, "unknown parameter"),
    ],
)
def test_params_are_validated_with_bounds(action_name, params, message):
    with pytest.raises(InvalidParamsError, match=message):
        get_action(action_name).validate_params(params)


def test_defaults_are_filled_so_the_recorded_params_are_complete():
    assert get_action("preprocess_data").validate_params({}) == {
        "test_size": 0.2, "random_state": 42, "scaler": "standard", "drop_low_variance": True, "stratify": True,
    }


def test_unknown_action_names_the_known_ones():
    with pytest.raises(UnknownActionError, match="load_dataset"):
        get_action("launch_rocket")


class NoiseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = Field(0.1, ge=0, le=10)


@action(name="test_add_noise")
def add_noise(dataset: Dataset, params: NoiseParams) -> Dataset:
    """Return the wrong type on purpose when scale is 0."""
    if params.scale == 0:
        return "not a dataset"  # type: ignore[return-value]
    return dataset


def test_a_user_action_is_one_decorated_function_and_its_contract_is_checked():
    spec = get_action("test_add_noise")
    assert spec.input_kinds == {"dataset": "Dataset"} and spec.output_kind == "Dataset"
    assert spec.description.startswith("Return the wrong type")
    dataset = get_action("load_dataset").run({}, {})
    assert spec.run({"dataset": dataset}, {"scale": 1.0}) is dataset
    with pytest.raises(ActionContractError, match="declares Dataset"):
        spec.run({"dataset": dataset}, {"scale": 0})
