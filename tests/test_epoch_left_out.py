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


def test_the_data_line_says_how_many_examples_an_epoch_leaves_out():
  import io  # noqa: PLC0415

  from bayesbinn_jax.experiments.console import Console  # noqa: PLC0415

  described = {"input_shape": [2], "num_train": 150, "num_test": 50, "num_classes": 2, "num_val": 0,
               "dtype": "float32"}
  stream = io.StringIO()
  Console(stream=stream).data(described, 1, left_out=data.examples_left_out(150, 100))
  assert stream.getvalue() == ("data: 150 train, 50 test; inputs 2 float32; 2 classes; 1 step per epoch "
                               "(50 of the 150 training examples left out of each epoch: the last partial "
                               "batch is dropped)\n")
  stream = io.StringIO()
  Console(stream=stream).data(dict(described, num_train=200), 2, left_out=0)
  assert stream.getvalue() == "data: 200 train, 50 test; inputs 2 float32; 2 classes; 2 steps per epoch\n"
