"""The flow prefect.yaml deploys: rlam's own flow, run in this project's directory (so [tool.rlam] applies)."""

from rlam_prefect import rlam_flow

__all__ = ["rlam_flow"]
