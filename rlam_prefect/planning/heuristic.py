"""``rlam/heuristic``: the offline default planner, served in-process as a litellm custom provider.

It reads the same prompt a real model gets and answers in the same JSON, so the default goes
through the same completion -> parse -> validate path. It adapts to what it sees: it recovers
from a failed step, and after evaluation tries other models or parameters while accuracy is
below the target and the budget allows. At temperature 0 it is deterministic; above 0 it samples
among valid choices (softmax over its preferences), as an LLM would, so the irreproducibility of
an unconstrained planner can be measured honestly.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from rlam_prefect.planning.offline import stay_offline

stay_offline()  # this module may be imported before llm.litellm_module() (tests, tools)

from litellm import ModelResponse
from litellm.llms.custom_llm import CustomLLM  # where it is defined: litellm re-exports it implicitly

from rlam_prefect.core.hashing import canonical_json, sha256_hex
from rlam_prefect.planning.prompt import read_state

# Training configurations in order of preference; the first untried one comes next.
_TRAIN_CONFIGS: tuple[tuple[float, dict[str, Any]], ...] = (
    (3.0, {"model": "logistic_regression", "C": 1.0}),
    (2.0, {"model": "logistic_regression", "C": 0.5}),
    (1.8, {"model": "logistic_regression", "C": 2.0}),
    (1.5, {"model": "svm", "C": 1.0}),
    (1.4, {"model": "random_forest", "n_estimators": 200}),
    (1.0, {"model": "logistic_regression", "C": 10.0}),
    (0.8, {"model": "logistic_regression", "C": 0.1}),
)
_SPLITS: tuple[tuple[float, dict[str, Any]], ...] = (
    (3.0, {"test_size": 0.2}),
    (1.5, {"test_size": 0.25}),
    (1.0, {"test_size": 0.3}),
    (1.0, {"test_size": 0.2, "random_state": 7}),
)


class HeuristicLLM(CustomLLM):
    def completion(self, *args: Any, **kwargs: Any) -> ModelResponse:
        messages = kwargs.get("messages") or []
        optional = kwargs.get("optional_params") or {}
        temperature = float(optional.get("temperature") or 0.0)
        seed = optional.get("seed")
        state = read_state(messages)
        candidates = within_policy(propose(state), state)
        choice = _choose(candidates, temperature, seed, canonical_json(state.get("history", [])))
        content = json.dumps(choice)
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
        return ModelResponse(
            model="rlam/heuristic",
            choices=[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            usage={
                "prompt_tokens": prompt_chars // 4,
                "completion_tokens": len(content) // 4,
                "total_tokens": (prompt_chars + len(content)) // 4,
            },
        )


def propose(state: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
    """Scored candidate replies for this state (the best first)."""
    history = state.get("history", [])
    pinned = state.get("pinned_params", {})
    budget = state.get("budget", {})
    remaining = int(budget.get("max_steps", 12)) - int(budget.get("steps_used", len(history)))
    available = set(state.get("available_artifacts", []))
    goal = state.get("goal", {})
    target = float(goal.get("threshold", goal.get("target", 0.0)))
    metric = str(goal.get("metric", "accuracy"))
    maximize = goal.get("direction", "maximize") != "minimize"
    last = history[-1] if history else None

    if last and last["status"] == "rejected":
        # our own previous reply was refused; a rejection produced nothing, so answer from the state before it
        return propose({**state, "history": history[:-1]})
    if last and last["status"] == "failed":
        return _recover(history, last, pinned)
    if remaining <= 0:
        return [(1.0, _reply("stop", {}, "the step budget is used up"))]
    if "Dataset" not in available:
        return [(1.0, _reply("load_dataset", _with_pins("load_dataset", {}, pinned), "no data is loaded yet"))]
    if "Analysis" not in available:
        return [(1.0, _reply("analyze_data", _with_pins("analyze_data", {}, pinned), "inspect the data before preprocessing"))]
    if "Split" not in available:
        return [
            (score, _reply("preprocess_data", _with_pins("preprocess_data", params, pinned), "hold out a test split and scale"))
            for score, params in _SPLITS
        ]
    since_split = _since_last(history, "preprocess_data")
    trained = [row for row in since_split if row["action"] == "train_model" and row["status"] in ("executed", "cached")]
    evaluated_after_training = trained and any(
        row["action"] == "evaluate_model" and row["step"] > trained[-1]["step"] and row["status"] in ("executed", "cached")
        for row in since_split
    )
    if not trained:
        return _train_candidates(history, pinned, "train a first model on the training split")
    if not evaluated_after_training:
        return [(1.0, _reply("evaluate_model", _with_pins("evaluate_model", {}, pinned), "measure held-out accuracy"))]
    value = _latest_metric(history, metric)
    if value is not None and (value >= target if maximize else value <= target):
        return [(1.0, _reply("stop", {}, f"held-out {metric} {value:.4f} meets the goal {metric} {'>=' if maximize else '<='} {target}"))]
    if remaining < 2:
        return [(1.0, _reply("stop", {}, "not enough budget left to train and evaluate again"))]
    candidates = _train_candidates(history, pinned, f"{metric} {value} does not meet the goal {metric} {'>=' if maximize else '<='} {target}; try another model")
    return candidates or [(1.0, _reply("stop", {}, "every configuration I know has been tried"))]


def within_policy(candidates: list[tuple[float, dict[str, Any]]], state: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
    """The candidates the prompt's execution policy allows, with parameters moved inside its bounds.

    A disallowed action or an exhausted retrain budget drops the candidate; if none is left, stop.
    """
    policy = state.get("policy") or {}
    if not policy:
        return candidates
    history = state.get("history", [])
    allowed = policy.get("allowed_actions")
    retrain = policy.get("retrain_action")
    trained = sum(1 for row in history if row["action"] == retrain and row["status"] in ("executed", "cached"))
    tried = {canonical_json(_training_identity(row.get("params", {}))) for row in history if row["action"] == "train_model"}
    kept = []
    for score, reply in candidates:
        action = reply["action"]
        if action != "stop":
            if allowed is not None and action not in allowed:
                continue
            if policy.get("max_retrains") is not None and action == retrain and trained > policy["max_retrains"]:
                continue
            defaults = {k: v.get("default") for k, v in state.get("actions", {}).get(action, {}).get("params_schema", {}).items()}
            fitted = _inside(reply["params"], policy.get("params", {}).get(action, {}), defaults)
            if fitted != reply["params"] and action == "train_model" and canonical_json(_training_identity(fitted)) in tried:
                continue  # moved onto a configuration already tried
            reply = {**reply, "params": fitted}
        kept.append((score, reply))
    return kept or [(1.0, _reply("stop", {}, "the execution policy allows none of the steps I would take next"))]


def _inside(params: dict[str, Any], bounds: dict[str, dict[str, Any]], defaults: dict[str, Any]) -> dict[str, Any]:
    fitted = dict(params)
    for name, bound in bounds.items():
        value = fitted.get(name, defaults.get(name))
        if "choices" in bound and value not in bound["choices"]:
            value = bound["choices"][0]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = min(max(value, bound.get("min", value)), bound.get("max", value))
        if value != fitted.get(name, defaults.get(name)):
            fitted[name] = value
    return fitted


def _recover(history: list[dict[str, Any]], last: dict[str, Any], pinned: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
    failures = [row for row in history if row["status"] == "failed" and row["action"] == last["action"]]
    if len(failures) >= 2:
        return [(1.0, _reply("stop", {}, f"{last['action']} failed twice; stopping with the failure recorded"))]
    if last["action"] == "preprocess_data" and "variance" in last.get("error", ""):
        params = _with_pins("analyze_data", {"variance_threshold": 0.0}, pinned)
        return [(1.0, _reply("analyze_data", params, "preprocessing dropped every feature; re-analyze with threshold 0", last["step"]))]
    params = _with_pins(last["action"], {}, pinned)
    return [(1.0, _reply(last["action"], params, f"retry {last['action']} with default parameters after its failure", last["step"]))]


def _train_candidates(history: list[dict[str, Any]], pinned: dict[str, Any], reason: str) -> list[tuple[float, dict[str, Any]]]:
    tried = {canonical_json(_training_identity(row.get("params", {}))) for row in history if row["action"] == "train_model"}
    candidates = []
    for score, params in _TRAIN_CONFIGS:
        proposal = _with_pins("train_model", params, pinned)
        if canonical_json(_training_identity(proposal)) not in tried:
            candidates.append((score, _reply("train_model", proposal, reason)))
    return candidates


def _training_identity(params: dict[str, Any]) -> dict[str, Any]:
    model = params.get("model", "logistic_regression")
    if model == "random_forest":
        return {"model": model, "n_estimators": params.get("n_estimators", 100), "max_depth": params.get("max_depth")}
    return {"model": model, "C": float(params.get("C", 1.0))}


def _with_pins(action: str, params: dict[str, Any], pinned: dict[str, Any]) -> dict[str, Any]:
    return {**params, **pinned.get(action, {})}


def _since_last(history: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    for index in range(len(history) - 1, -1, -1):
        if history[index]["action"] == action and history[index]["status"] in ("executed", "cached"):
            return history[index + 1 :]
    return []


def _latest_metric(history: list[dict[str, Any]], metric: str) -> float | None:
    for row in reversed(history):
        if row["action"] == "evaluate_model" and isinstance(row.get("output"), dict):
            value = row["output"].get(metric)
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return None


def _reply(action: str, params: dict[str, Any], reason: str, recovers_step: int | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"action": action, "params": params, "reason": reason}
    if recovers_step is not None:
        reply["recovers_step"] = recovers_step
    return reply


def _choose(candidates: list[tuple[float, dict[str, Any]]], temperature: float, seed: Any, context: str) -> dict[str, Any]:
    if temperature <= 0 or len(candidates) == 1:
        return max(candidates, key=lambda c: c[0])[1]
    top = max(score for score, _ in candidates)
    weights = [math.exp((score - top) / temperature) for score, _ in candidates]
    # seeded: reproducible for the same state; unseeded: a fresh draw each call, like a sampling LLM
    rng = random.Random(sha256_hex(str(seed).encode(), context.encode())) if seed is not None else random.SystemRandom()
    return rng.choices([reply for _, reply in candidates], weights=weights, k=1)[0]
