"""``rlam experiments``: Script vs Naive LAM vs R-LAM, measured."""
