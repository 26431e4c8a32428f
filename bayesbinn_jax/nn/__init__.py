"""Flax linen binary layers and the paper's binary networks; xnor/popcount inference."""

from bayesbinn_jax.nn.activations import INPUT_QUANTIZERS
from bayesbinn_jax.nn.activations import approx_sign
from bayesbinn_jax.nn.activations import ste_sign
from bayesbinn_jax.nn.layers import BatchNorm
from bayesbinn_jax.nn.layers import BinaryConv
from bayesbinn_jax.nn.layers import BinaryDense
from bayesbinn_jax.nn.layers import QUANTIZERS
from bayesbinn_jax.nn.layers import default_kernel_init
from bayesbinn_jax.nn.monte_carlo import mc_apply
from bayesbinn_jax.nn.networks import ACTIVATIONS
from bayesbinn_jax.nn.networks import ContinualMLP
from bayesbinn_jax.nn.networks import InputShapeError
from bayesbinn_jax.nn.networks import MnistMLP
from bayesbinn_jax.nn.networks import ToyMLP
from bayesbinn_jax.nn.networks import VGGBinaryConnect
from bayesbinn_jax.nn.summary import Summary
from bayesbinn_jax.nn.summary import summary
from bayesbinn_jax.nn.xnor import PackingError
from bayesbinn_jax.nn.xnor import XnorNetwork
from bayesbinn_jax.nn.xnor import pack
from bayesbinn_jax.nn.xnor import pack_ensemble
from bayesbinn_jax.nn.xnor import pack_network

__all__ = (
    "ACTIVATIONS",
    "BatchNorm",
    "BinaryConv",
    "BinaryDense",
    "ContinualMLP",
    "INPUT_QUANTIZERS",
    "InputShapeError",
    "MnistMLP",
    "PackingError",
    "QUANTIZERS",
    "Summary",
    "ToyMLP",
    "VGGBinaryConnect",
    "XnorNetwork",
    "approx_sign",
    "default_kernel_init",
    "mc_apply",
    "pack",
    "pack_ensemble",
    "pack_network",
    "ste_sign",
    "summary",
)
