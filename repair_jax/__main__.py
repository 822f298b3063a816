"""``python -m repair_jax``: the command line (see :mod:`repair_jax.cli`)."""

import sys

from repair_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
