"""The continual-learning prior is wired exactly: task t+1 trains against task t's final lambda.

The one earlier test of this wiring compared two NLLs; handing the next task -3 * lambda as its
prior (or the lambda of some other epoch, or no prior at all) passed it. This test spies on every
epoch the pipeline trains and pins the prior bit for bit.
"""

from __future__ import annotations

import jax
import numpy as np

from bayesbinn_jax.experiments import pipeline
from bayesbinn_jax.experiments.cli import main
from bayesbinn_jax.optim.nested import find_state
from bayesbinn_jax.optim.state import BayesBiNNState
from cli_helpers import write_images


def _leaves(tree):
  return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def test_each_task_trains_against_the_previous_tasks_final_lambda(tmp_path, monkeypatch):
  seen = []  # (prior_lam at the start of the epoch, lam at its end), one per epoch
  real_train_epoch = pipeline.train_epoch

  def spy(state, *args, **kwargs):
    before = find_state(state.opt_state, BayesBiNNState)
    prior = None if before.prior_lam is None else _leaves(before.prior_lam)  # copied: the step donates
    state, metrics = real_train_epoch(state, *args, **kwargs)
    after = find_state(state.opt_state, BayesBiNNState)
    seen.append((prior, _leaves(after.lam), None if after.prior_lam is None else _leaves(after.prior_lam)))
    return state, metrics

  monkeypatch.setattr(pipeline, "train_epoch", spy)
  path = write_images(tmp_path / "d.npz", num_train=200)
  assert main(["permuted-mnist", "--data-file", path, "--out", str(tmp_path / "run"), "--epochs", "2",
               "--quiet", "--no-figures", "--set", "num_tasks=3", "--set", "test_samples=2",
               "--set", "lr=0.1"]) == 0
  assert len(seen) == 6  # 3 tasks x 2 epochs
  for epoch, (prior, _, prior_after) in enumerate(seen):
    task, within = divmod(epoch, 2)
    if task == 0:
      assert all(np.all(leaf == 0) for leaf in prior)  # the first task's prior is zero
    elif within == 0:  # a new task: its prior is the last epoch's final lambda, bit for bit
      for got, want in zip(prior, seen[epoch - 1][1], strict=True):
        np.testing.assert_array_equal(got, want)
    else:  # within a task the prior stays
      for got, want in zip(prior, seen[epoch - 1][2], strict=True):
        np.testing.assert_array_equal(got, want)
  assert not np.array_equal(seen[1][1][0], seen[3][1][0])  # lambda moved between tasks
