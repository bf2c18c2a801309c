"""The public Python API: verbs, the home handle and typed results (re-exported by ``rlam_prefect``)."""
