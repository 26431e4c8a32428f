"""Helpers shared by the end-to-end CLI tests (test_cli.py, test_reliability.py).

Imported as ``from cli_helpers import ...`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The continual-learning MLP (784-100-100-10) on one task with a validation split: the
# engine's paths at a fraction of the MNIST MLP's cost.
SMALL = ["permuted-mnist", "--set", "num_tasks=1", "--set", "val_fraction=0.1"]
# SMALL without the figures (about 2 s of matplotlib a run), for the tests that read none.
QUICK = [*SMALL, "--no-figures"]


def write_images(path, *, num_train=300, num_test=100, classes=4, shape=(8, 8), seed=0, **replace):
  """A small image classification .npz whose classes differ by mean brightness."""
  rng = np.random.default_rng(seed)

  def split(n):
    y = rng.integers(0, classes, n).astype(np.uint8)
    x = rng.normal(40 + 50 * y[:, None, None], 20, (n, *shape)).clip(0, 255).astype(np.uint8)
    return x, y

  x_train, y_train = split(num_train)
  x_test, y_test = split(num_test)
  arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
  arrays.update(replace)
  np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
  return str(path)


def read_summary(out):
  with open(os.path.join(out, "summary.json")) as handle:
    return json.load(handle)


def read_records(out):
  with open(os.path.join(out, "metrics.jsonl")) as handle:
    return [json.loads(line) for line in handle]


def comparable(summary):
  """The summary without what differs between identical runs (the time taken)."""
  return {k: v for k, v in summary.items() if k not in ("train_seconds",)}


def cli_command(*args):
  """The argv of ``python -m bayesbinn_jax ARGS`` (run with ``cwd=REPO``)."""
  return [sys.executable, "-m", "bayesbinn_jax", *args]
