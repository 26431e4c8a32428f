"""``python -m bayesbinn_jax``: the ``bayesbinn-train`` command."""

import sys

from bayesbinn_jax.experiments.cli import main

sys.exit(main())
