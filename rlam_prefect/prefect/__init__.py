"""Prefect integration: the R-LAM flow, the sweep and audit flows, UI artifacts and the shared client."""
