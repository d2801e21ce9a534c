"""``python -m pipelines.cli``: the ``sessionlake`` command without its console script."""

import sys

from pipelines.cli.main import main

sys.exit(main())
