"""Serve the R-LAM flow as a deployment without a work pool: ``python deployments/serve.py``.

The Prefect UI then offers a custom-run form for `rlam/rlam-serve`: leave everything empty for a
new run, fill `replay_of` to replay a run, or `fork_of` + `fork_step` (+ `overrides`) to fork one.
Uses this RLAM_HOME's local server unless PREFECT_API_URL is set.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlam_prefect.core.home import HomeLayout
from rlam_prefect.local.backend import configure


def main() -> None:
    url = configure(HomeLayout.from_env())
    from rlam_prefect.prefect.flow import rlam_flow

    print(f"serving rlam/rlam-serve on {url} (Ctrl-C to stop)", flush=True)
    rlam_flow.serve(name="rlam-serve")


if __name__ == "__main__":
    main()
