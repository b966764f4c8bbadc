"""``python -m emaild`` is the ``emaild`` command."""

from emaild.cli import main

main()
