"""Packed xnor/popcount inference and the layer summary for NNX models.

No second packer: everything goes to the one implementation in
:mod:`bayesbinn_jax.nn.xnor` (what packs, what is refused and why is documented
there), which traces linen layers.

- A network of :mod:`bayesbinn_jax.nnx.networks` is turned into its linen twin and
  variables (:func:`bayesbinn_jax.nnx.nnx_to_linen`; the two compute the same
  outputs, tested) and handed to ``nn.xnor.pack_network`` / ``pack_ensemble`` and
  ``bayesbinn_jax.nn.summary``; refusals name the linen layer (``BinaryDense_i``
  is ``model.dense[i]``, ``BatchNorm_i`` is ``model.bn[i]``).
- Any other NNX model built from :class:`~bayesbinn_jax.nnx.BinaryLinear`,
  :class:`~bayesbinn_jax.nnx.BinaryConv` and :func:`~bayesbinn_jax.nnx.BatchNorm`
  (with any JAX code between them) is run in eval mode inside
  :func:`bayesbinn_jax.nnx.layers.as_linen`, where each of these layers computes
  through its linen twin, and handed to ``nn.xnor.pack``; refusals name the
  layer's path in the NNX model (``l2``, ``blocks_1_conv``).

The packed network's outputs equal the NNX model's in eval mode.

Put the mode network into the model first::

  nnx.update(model, bb.mode_params(optimizer.opt_state, nnx.state(model, nnx.Param)))
  net = pack_network(model)          # net(x) == model.eval(); model(x)
"""

from __future__ import annotations

from typing import Any, Sequence

from flax import nnx

import jax
import jax.numpy as jnp

from bayesbinn_jax.nn import xnor
from bayesbinn_jax.nnx.convert import nnx_to_linen
from bayesbinn_jax.nnx.layers import as_linen
from bayesbinn_jax.nnx.networks import _Network


def example_shape(model: nnx.Module) -> tuple[int, ...]:
  """The shape of a one-example input batch of an NNX network: (1, in_features) for the
  MLPs, (1, H, W, C) for the VGG.

  Raises:
    ValueError: for a model that says neither (pass ``input_shape``).

  Examples:
    >>> from flax import nnx
    >>> from bayesbinn_jax.nnx import ToyMLP, VGGBinaryConnect
    >>> example_shape(nnx.eval_shape(lambda: ToyMLP(in_features=3, rngs=nnx.Rngs(0))))
    (1, 3)
    >>> example_shape(nnx.eval_shape(lambda: VGGBinaryConnect(image_size=(16, 16), rngs=nnx.Rngs(0))))
    (1, 16, 16, 3)
  """
  if hasattr(model, "image_size") and hasattr(model, "in_channels"):
    return (1, *model.image_size, model.in_channels)
  if hasattr(model, "in_features"):
    return (1, model.in_features)
  raise ValueError(f"{type(model).__name__}: pass input_shape, the shape of an input batch "
                   "(e.g. (1, 784)).")


def _eval_apply(model: nnx.Module):
  """``(state, x) -> model(x)`` in eval mode, its binary layers computing through linen."""
  graphdef, _ = nnx.split(model)

  def apply(state: Any, x: jax.Array) -> Any:
    network = nnx.merge(graphdef, state, copy=True)
    network.eval()
    with as_linen(network):
      return network(x)

  return apply


def pack_network(model: nnx.Module, *, input_shape: Sequence[int] | None = None,
                 input_dtype: Any = jnp.float32, **kwargs: Any) -> xnor.XnorNetwork:
  """Packs a trained fully binary NNX model (kernels +-1, or STE latent weights) for
  xnor/popcount inference; ``net(x)`` equals the model's eval-mode output.

  A network of :mod:`bayesbinn_jax.nnx.networks` goes through its linen twin
  (:func:`bayesbinn_jax.nn.xnor.pack_network`, which packs a bfloat16 network as its
  float32 simulation); any other model built from the NNX binary layers through
  :func:`bayesbinn_jax.nn.xnor.pack` (see the module docstring).

  Args:
    model: the NNX model, with the weights to pack (e.g. ``nnx.update(model,
      bb.mode_params(...))``); it is not modified.
    input_shape: the shape of an input batch to check it with; by default one
      example of the paper networks' input (required for other models).
    input_dtype: the input dtype (float32, or unsigned integers for bit-planes).
    **kwargs: more options of the linen packer (``kernel``).

  Raises:
    ValueError: the packer's refusals (``PackingError``: one line naming the layer).

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from bayesbinn_jax.nnx import ToyMLP
    >>> model = ToyMLP(hidden=(8,), activations="binary", quantizer="ste", rngs=nnx.Rngs(0))
    >>> net = pack_network(model)                    # STE latent weights: packs their signs
    >>> x = jnp.array([[0.5, -1.0], [2.0, 0.3]])
    >>> model.eval()
    >>> bool(jnp.all(net(x) == model(x)))
    True
  """
  shape = example_shape(model) if input_shape is None else tuple(input_shape)
  if isinstance(model, _Network):
    twin, variables = nnx_to_linen(model)
    return xnor.pack_network(twin, variables, input_shape=shape, input_dtype=input_dtype,
                             **kwargs)
  return xnor.pack(_eval_apply(model), nnx.state(model), jax.ShapeDtypeStruct(shape, input_dtype),
                   name=type(model).__name__, **kwargs)


def pack_ensemble(model: nnx.Module, *, input_shape: Sequence[int] | None = None,
                  **kwargs: Any) -> xnor.XnorNetwork:
  """Packs the K networks a network of :mod:`bayesbinn_jax.nnx.networks` holds stacked
  (every ``nnx.Param`` with a leading axis K, e.g. ``bb.sample_params(opt_state, params,
  key, K)``), sharing its BatchNorm statistics: :func:`bayesbinn_jax.nn.xnor.pack_ensemble`
  on the linen twin; ``predict_proba`` is the K networks' mean probability.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from bayesbinn_jax.nnx import ToyMLP
    >>> model = ToyMLP(hidden=(8,), activations="binary", quantizer="ste", rngs=nnx.Rngs(0))
    >>> stacked = jax.tree.map(lambda p: jnp.stack([p, -p]), nnx.state(model, nnx.Param))
    >>> nnx.update(model, stacked)                   # K = 2 networks
    >>> net = pack_ensemble(model)
    >>> x = jnp.array([[0.5, -1.0], [2.0, 0.3]])
    >>> net(x).shape, net.predict_proba(x).shape     # (K, N, outputs); the mean over K
    ((2, 2, 2), (2, 2))
  """
  twin, variables = nnx_to_linen(model)
  shape = example_shape(model) if input_shape is None else tuple(input_shape)
  return xnor.pack_ensemble(twin, variables, input_shape=shape, **kwargs)


def summary(model: nnx.Module, *, input_shape: Sequence[int] | None = None,
            input_dtype: Any = jnp.float32, print_table: bool = True) -> Any:
  """The per-layer summary (kind, input and weight precision, parameter count, float32 and
  packed memory, binary and float multiply-accumulates; totals, a table) of an NNX model
  built from the binary layers: a network of :mod:`bayesbinn_jax.nnx.networks` through
  :func:`bayesbinn_jax.nn.summary` of its linen twin (rows named by the linen layers,
  ``BinaryDense_i`` is ``model.dense[i]``), any other model through
  :func:`bayesbinn_jax.nn.summary.summarize` of its eval-mode function (rows named by
  the NNX paths; ``input_shape`` required).

  Examples:
    >>> from flax import nnx
    >>> from bayesbinn_jax.nnx import ToyMLP
    >>> model = ToyMLP(hidden=(8,), activations="binary", rngs=nnx.Rngs(0))
    >>> table = summary(model, print_table=False)   # print_table=True prints it
    >>> table.binary_weights, table.float_macs, table.binary_macs   # 2*8+8 + 8*2+2; 2*8; 8*2
    (42, 16, 16)
  """
  from bayesbinn_jax.nn.summary import summarize, summary as linen_summary  # pylint: disable=import-outside-toplevel

  shape = example_shape(model) if input_shape is None else tuple(input_shape)
  if isinstance(model, _Network):
    twin, variables = nnx_to_linen(model)
    return linen_summary(twin, variables, input_shape=shape, input_dtype=input_dtype,
                             print_table=print_table)
  return summarize(_eval_apply(model), nnx.state(model), jax.ShapeDtypeStruct(shape, input_dtype),
                             print_table=print_table)
