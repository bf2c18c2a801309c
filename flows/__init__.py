"""Flows only orchestrate: the decisions come from a planner, the work from rlam_prefect and tasks."""
