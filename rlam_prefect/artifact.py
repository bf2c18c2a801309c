"""Where results pickled by rlam-prefect 0.1.x look for ``Artifact``; keeps their homes loadable.

0.1.x defined the class here, and every stored result names this module. Today it lives in
``rlam_prefect.actions.artifact``; this alias is what lets ``rlam verify`` and forks read those
results (tests/test_legacy_home.py).
"""

from rlam_prefect.actions.artifact import Artifact

__all__ = ["Artifact"]
