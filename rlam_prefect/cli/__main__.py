"""``python -m rlam_prefect.cli``: the same entry point as the ``rlam`` script."""

import sys

from rlam_prefect.cli.main import main

sys.exit(main())
