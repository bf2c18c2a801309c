"""The default action space: the seed's five pure actions.

Importing this package registers them; ``rlam_prefect.actions.get_action`` finds them by name.
"""

from tasks.analyze import analyze_data
from tasks.evaluate import evaluate_model
from tasks.load import load_dataset
from tasks.preprocess import preprocess_data
from tasks.train import train_model

# The seed's fixed order, used by the Script pipeline and the fixed planner.
SEED_ORDER: tuple[str, ...] = ("load_dataset", "analyze_data", "preprocess_data", "train_model", "evaluate_model")

__all__ = ["SEED_ORDER", "analyze_data", "evaluate_model", "load_dataset", "preprocess_data", "train_model"]
