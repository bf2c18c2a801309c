"""The default action space: the seed's five pure actions.

Importing this package registers them; rlam finds them through ``[tool.rlam] actions = ["tasks"]`` in pyproject.toml.
"""

from tasks.analyze import analyze_data
from tasks.evaluate import evaluate_model
from tasks.load import load_dataset
from tasks.preprocess import preprocess_data
from tasks.train import train_model

__all__ = ["analyze_data", "evaluate_model", "load_dataset", "preprocess_data", "train_model"]
