"""Flax NNX: binary layers, the paper's networks, Monte Carlo and packed inference."""

from bayesbinn_jax.nnx.convert import linen_to_nnx
from bayesbinn_jax.nnx.convert import nnx_to_linen
from bayesbinn_jax.nnx.convert import nnx_variables
from bayesbinn_jax.nnx.layers import BatchNorm
from bayesbinn_jax.nnx.layers import BinaryConv
from bayesbinn_jax.nnx.layers import BinaryLinear
from bayesbinn_jax.nnx.layers import as_linen
from bayesbinn_jax.nnx.monte_carlo import apply_params
from bayesbinn_jax.nnx.monte_carlo import mc_apply
from bayesbinn_jax.nnx.networks import ContinualMLP
from bayesbinn_jax.nnx.networks import MnistMLP
from bayesbinn_jax.nnx.networks import ToyMLP
from bayesbinn_jax.nnx.networks import VGGBinaryConnect
from bayesbinn_jax.nnx.packing import example_shape
from bayesbinn_jax.nnx.packing import pack_ensemble
from bayesbinn_jax.nnx.packing import pack_network
from bayesbinn_jax.nnx.packing import summary

__all__ = (
    "BatchNorm",
    "BinaryConv",
    "BinaryLinear",
    "ContinualMLP",
    "MnistMLP",
    "ToyMLP",
    "VGGBinaryConnect",
    "apply_params",
    "as_linen",
    "example_shape",
    "linen_to_nnx",
    "mc_apply",
    "nnx_to_linen",
    "nnx_variables",
    "pack_ensemble",
    "pack_network",
    "summary",
)
