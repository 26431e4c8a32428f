"""What defines one run of an experiment (the CLI's arguments), and the error of a run
that cannot start.

:class:`RunOptions` is what :func:`bayesbinn_jax.experiments.pipeline.run_experiment`
and ``evaluate_run`` take; :mod:`~bayesbinn_jax.experiments.prepare` and
:mod:`~bayesbinn_jax.experiments.report` read it.
"""

from __future__ import annotations

import dataclasses

from bayesbinn_jax.experiments.config import RunConfig


class RunError(ValueError):
  """A run that cannot start: bad options or an output directory in the way."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """Everything that defines a run (the CLI's arguments): the typed ``config`` (which
  names the experiment, the optimizer and the seed), where the data and the outputs are,
  and how the run goes."""

  config: RunConfig
  out_dir: str
  data_file: str | None = None
  data_dir: str | None = None
  resume: bool = False
  cl_prior: str = "posterior"
  quiet: bool = False
  ood_data_file: str | None = None
  shard_state: bool = False
  figures: bool = True
  """False: no PNG figures, nor the arrays drawn in them (e.g. ``two_moons_grid.npz``)."""
  allow_unseen_labels: bool = False
  """Accept test labels the training split lacks (noted); refused otherwise."""

  @property
  def experiment(self) -> str:
    return self.config.experiment

  @property
  def optimizer(self) -> str:
    return self.config.optimizer
