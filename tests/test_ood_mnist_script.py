"""benchmarks/ood_mnist.py: the OOD set of the committed MNIST runs (issue 16)."""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import ood_mnist  # noqa: E402


def test_test_digits_turn_a_quarter_counter_clockwise(tmp_path):
  path = str(tmp_path / "m.npz")
  np.savez(path, x_train=np.zeros((1, 2, 2), np.uint8), x_test=np.array([[[1, 2], [3, 4]]], np.uint8))
  # 1 2      2 4
  # 3 4  ->  1 3   (the right column becomes the top row)
  np.testing.assert_array_equal(ood_mnist.rotated_test_digits(path), [[[2, 4], [1, 3]]])
