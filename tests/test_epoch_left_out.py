"""Issue 26, item 9: how many training examples an epoch of full batches leaves out."""

from __future__ import annotations

import numpy as np
import pytest

from bayesbinn_jax import data


@pytest.mark.parametrize("count, batch, left", [(200, 100, 0), (150, 100, 50), (540, 50, 40), (7, 1, 0),
                                                (3, 5, 3), (0, 4, 0)])
def test_examples_left_out_is_what_the_batches_with_drop_last_miss(count, batch, left):
  assert data.examples_left_out(count, batch) == left
  seen = [y for _, ys in data.iterate_batches(np.arange(count), np.arange(count), batch, seed=0,
                                              drop_last=True) for y in ys]
  assert count - len(seen) == left  # the batches themselves, counted
  assert len(set(seen)) == len(seen)


def test_examples_left_out_checks_its_arguments():
  with pytest.raises(ValueError, match="batch_size"):
    data.examples_left_out(10, 0)
  with pytest.raises(ValueError, match="num_examples"):
    data.examples_left_out(-1, 3)
