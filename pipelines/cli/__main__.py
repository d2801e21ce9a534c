"""``python -m pipelines.cli``: the ``sessionlake`` command without its console script."""

from pipelines.cli.process_exit import console_script

console_script()
