"""The paper's settings of each experiment and optimizer, as the specs give them.

:func:`preset` is the flat ``key: value`` mapping of an experiment's settings and
its optimizer's preset (both in :mod:`bayesbinn_jax.experiments.specs`); the typed,
checked config of a run is built from it in
:func:`bayesbinn_jax.experiments.config.build_config`. Settings the paper does not
give (e.g. Bop on two moons) are marked as ours in :data:`NOT_FROM_THE_PAPER`.
"""

from __future__ import annotations

import json
from typing import Any

from bayesbinn_jax.experiments.specs import SPECS, get_spec
from bayesbinn_jax.train.hyperparams import hyper_class

RENAMED_KEYS = {"rng": "generator"}
"""Settings renamed since release 0.1.0: ``--set old=...`` names the new key, and a saved
config's old key reads as the new one."""

NOT_FROM_THE_PAPER = {name: spec.presets_ours for name, spec in SPECS.items() if spec.presets_ours}
"""Presets chosen by us where the paper gives no setting."""


def preset(experiment: str, optimizer: str) -> dict[str, Any]:
  """The paper's config of ``experiment`` trained with ``optimizer``."""
  spec = get_spec(experiment)
  hyper_class(optimizer)  # ValueError naming the known optimizers
  config = dict(spec.settings)
  config.update(spec.presets[optimizer])
  return json.loads(json.dumps(config))  # a deep copy: lists in presets stay untouched
