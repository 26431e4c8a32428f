"""An out-of-distribution image set for MNIST runs: the test digits rotated by 90 degrees.

Usage: python benchmarks/ood_mnist.py MNIST_NPZ OUT_NPZ

Writes ``x`` (10,000 x 28 x 28 uint8), the in-distribution test digits turned a quarter
turn counter-clockwise: the same strokes and brightness as the test set, in shapes the
network never saw, for ``bayesbinn-train mnist ... --ood-data-file OUT_NPZ`` (issue 16).
"""

from __future__ import annotations

import sys

import numpy as np


def rotated_test_digits(mnist_npz: str) -> np.ndarray:
  """``x_test`` of ``mnist_npz`` (N, 28, 28[, 1]) rotated by 90 degrees in the image plane."""
  with np.load(mnist_npz) as data:
    x = data["x_test"]
  return np.ascontiguousarray(np.rot90(x, k=1, axes=(1, 2)))


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit(__doc__.split("\n\n")[1])
  np.savez(sys.argv[2], x=rotated_test_digits(sys.argv[1]))
