"""Issue 26, item 8: an input that cannot pass through a network is refused before any
layer, naming the input's shape and the smallest that fits (was a ZeroDivisionError
deep in an initializer)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesbinn_jax.nn import ContinualMLP, InputShapeError, MnistMLP, ToyMLP, VGGBinaryConnect
from bayesbinn_jax.nn.networks import VGG_CONVS, VGG_MIN_SIZE

KEY = jax.random.key(0)


def _init(model, shape):
  return model.init(KEY, jnp.zeros(shape), train=False)


def test_the_smallest_vgg_input_is_two_to_the_number_of_pools():
  assert VGG_MIN_SIZE == 2 ** sum(pool for _, pool in VGG_CONVS) == 8


@pytest.mark.parametrize("shape, words", [
    ((2, 4, 4, 3), "input shape (2, 4, 4, 3) is too small: its 3 2x2 max-pools leave 0 x 0 pixels"),
    ((2, 32, 7, 3), "input shape (2, 32, 7, 3) is too small: its 3 2x2 max-pools leave 4 x 0 pixels"),
    ((2, 32, 32), "input shape (2, 32, 32) has 3 axes, not 4: images are (N, H, W, C)"),
    ((2, 8, 8, 0), "input shape (2, 8, 8, 0) has no channels"),
])
def test_vgg_refuses_inputs_it_cannot_take(shape, words):
  with pytest.raises(InputShapeError) as error:
    _init(VGGBinaryConnect(num_classes=3), shape)
  message = str(error.value)
  assert message == (f"VGGBinaryConnect: {words}; the smallest input that fits is (N, 8, 8, C) "
                     "with C >= 1 (CIFAR: (N, 32, 32, 3)).")
  assert error.value.shape == shape and isinstance(error.value, ValueError)


def test_vgg_takes_the_smallest_input_and_refuses_it_when_traced_too():
  # Traced only (jax.eval_shape: shapes, no compilation), as under jit: the check reads static shapes.
  model = VGGBinaryConnect(num_classes=3)
  variables = jax.eval_shape(lambda: _init(model, (1, 8, 8, 1)))  # one pixel left after the pools
  apply = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
  assert jax.eval_shape(apply, variables, jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)).shape == (2, 3)
  with pytest.raises(InputShapeError, match=r"\(2, 6, 6, 1\) is too small"):
    jax.eval_shape(apply, variables, jax.ShapeDtypeStruct((2, 6, 6, 1), jnp.float32))


@pytest.mark.parametrize("model", [ToyMLP(hidden=(4,)), MnistMLP(hidden=4, depth=1), ContinualMLP(hidden=4)],
                         ids=["toy", "mnist", "continual"])
def test_mlps_refuse_inputs_without_features(model):
  name = type(model).__name__
  with pytest.raises(InputShapeError) as error:
    _init(model, (3, 0))
  assert str(error.value) == (f"{name}: input shape (3, 0) has no features per example (a size of 0); "
                              "the smallest input that fits is (N, 1).")
  with pytest.raises(InputShapeError, match=r"input shape \(5, 2, 0, 1\) has no features"):
    _init(model, (5, 2, 0, 1))
  with pytest.raises(InputShapeError, match=r"input shape \(\) has no batch axis"):
    model.init(KEY, jnp.zeros(()), train=False)
  # one feature fits
  assert np.asarray(_init(model, (3, 1))["params"]["BinaryDense_0"]["kernel"]).shape[0] == 1
