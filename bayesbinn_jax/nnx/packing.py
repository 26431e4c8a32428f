"""Packed xnor/popcount inference and the layer summary for the NNX networks.

No second packer: an NNX network of :mod:`bayesbinn_jax.nnx.networks` is turned
into its linen twin and variables (:func:`bayesbinn_jax.nnx.nnx_to_linen`; the
two compute the same outputs, tested) and handed to the one implementation in
:mod:`bayesbinn_jax.nn.xnor` (packing) and ``bayesbinn_jax.nn.summary``. What packs,
what is refused and why is documented there; the packed network's outputs equal
the NNX network's in eval mode.

Put the mode network into the model first::

  nnx.update(model, bb.mode_params(optimizer.opt_state, nnx.state(model, nnx.Param)))
  net = pack_network(model)          # net(x) == model.eval(); model(x)
"""

from __future__ import annotations

from typing import Any, Sequence

from flax import nnx

from bayesbinn_jax.nn import xnor
from bayesbinn_jax.nnx.convert import nnx_to_linen


def example_shape(model: nnx.Module) -> tuple[int, ...]:
  """The shape of a one-example input batch of an NNX network: (1, in_features) for the
  MLPs, (1, H, W, C) for the VGG."""
  if hasattr(model, "image_size"):
    return (1, *model.image_size, model.in_channels)
  return (1, model.in_features)


def pack_network(model: nnx.Module, *, input_shape: Sequence[int] | None = None,
                 **kwargs: Any) -> xnor.XnorNetwork:
  """Packs a trained fully binary NNX network (``activations="binary"``, kernels +-1 or
  STE latent weights) with :func:`bayesbinn_jax.nn.xnor.pack_network` on its linen twin.

  ``input_shape`` defaults to one example of the network's input; other keyword
  arguments go to the linen packer (e.g. ``input_dtype``, ``kernel``).

  Raises:
    ValueError: the packer's refusals (``PackingError``), naming the linen layer
      (``BinaryDense_i`` is ``model.dense[i]``, ``BatchNorm_i`` is ``model.bn[i]``).
  """
  twin, variables = nnx_to_linen(model)
  shape = example_shape(model) if input_shape is None else tuple(input_shape)
  return xnor.pack_network(twin, variables, input_shape=shape, **kwargs)


def pack_ensemble(model: nnx.Module, *, input_shape: Sequence[int] | None = None,
                  **kwargs: Any) -> xnor.XnorNetwork:
  """Packs the K networks an NNX model holds stacked (every ``nnx.Param`` with a leading
  axis K, e.g. ``bb.sample_params(opt_state, params, key, K)``), sharing its BatchNorm
  statistics: :func:`bayesbinn_jax.nn.xnor.pack_ensemble` on the linen twin."""
  twin, variables = nnx_to_linen(model)
  shape = example_shape(model) if input_shape is None else tuple(input_shape)
  return xnor.pack_ensemble(twin, variables, input_shape=shape, **kwargs)


def summary(model: nnx.Module, **kwargs: Any) -> Any:
  """The per-layer summary (kinds, precisions, parameter counts, packed sizes,
  multiply-accumulates) of an NNX network: ``bayesbinn_jax.nn.summary`` of its linen twin."""
  from bayesbinn_jax import nn as linen_nn  # pylint: disable=import-outside-toplevel

  if not hasattr(linen_nn, "summary"):
    raise NotImplementedError("bayesbinn_jax.nn.summary is not available in this version.")
  twin, variables = nnx_to_linen(model)
  return linen_nn.summary(twin, variables, **kwargs)

