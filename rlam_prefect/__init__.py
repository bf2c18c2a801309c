"""R-LAM on Prefect: the reproducibility layer (hashing, cache policy, trace store, replay, fork)."""

__version__ = "0.1.0"
