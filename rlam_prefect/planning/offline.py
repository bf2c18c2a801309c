"""Keep litellm offline: read its model cost map from the package, never from the internet.

Apart from ``llm.py`` so that the in-process heuristic model (imported by ``llm.py``) can call it
before its own ``import litellm`` without an import cycle.
"""

from __future__ import annotations

import os


def stay_offline() -> None:
    """Before any import of litellm: its cost map comes from the installed package (no network at import)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
