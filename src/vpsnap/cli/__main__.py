"""``python -m vpsnap.cli``: the same as the ``vpsnap`` console script."""

from vpsnap.cli.entry import main

main()
