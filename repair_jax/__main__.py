import sys

from repair_jax.cli import main

sys.exit(main())
