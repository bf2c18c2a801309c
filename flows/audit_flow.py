"""The seed project's scheduled reproducibility audit (prefect.yaml: ``flows/audit_flow.py:audit_flow``)."""

from rlam_prefect import audit_flow

__all__ = ["audit_flow"]
