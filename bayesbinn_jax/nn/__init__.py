"""Flax linen binary layers and the paper's binary networks."""

from bayesbinn_jax.nn.layers import BatchNorm
from bayesbinn_jax.nn.layers import BinaryConv
from bayesbinn_jax.nn.layers import BinaryDense
from bayesbinn_jax.nn.layers import QUANTIZERS
from bayesbinn_jax.nn.layers import default_kernel_init
from bayesbinn_jax.nn.layers import ste_sign
from bayesbinn_jax.nn.monte_carlo import mc_apply
from bayesbinn_jax.nn.networks import ContinualMLP
from bayesbinn_jax.nn.networks import MnistMLP
from bayesbinn_jax.nn.networks import ToyMLP
from bayesbinn_jax.nn.networks import VGGBinaryConnect

__all__ = (
    "BatchNorm",
    "BinaryConv",
    "BinaryDense",
    "ContinualMLP",
    "MnistMLP",
    "QUANTIZERS",
    "ToyMLP",
    "VGGBinaryConnect",
    "default_kernel_init",
    "mc_apply",
    "ste_sign",
)
