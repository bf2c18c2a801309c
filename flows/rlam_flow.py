"""The seed project's deployable R-LAM flow (prefect.yaml: ``flows/rlam_flow.py:rlam_flow``).

The flow itself is the library's: a thin adapter from flow parameters (the Prefect UI's
custom-run form) to a run, replay or fork request. A project of one's own deploys it the same way.
"""

from rlam_prefect import rlam_flow

__all__ = ["rlam_flow"]
