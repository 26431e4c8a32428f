"""BayesBiNN for JAX: binary neural networks trained with the Bayesian learning rule.

The optimizer is an optax transform (:func:`bayesbinn`) whose state holds the
Bernoulli natural parameters lambda of every binary weight; the model holds
relaxed samples of the weights. Flax binary layers and the paper's networks
are in :mod:`bayesbinn_jax.nn`, the baselines beside BayesBiNN here.
"""

from bayesbinn_jax._version import __version__

from bayesbinn_jax import optim as _optim
from bayesbinn_jax.export import load_packed, load_xnor, save_packed, save_xnor
from bayesbinn_jax.nn.monte_carlo import mc_apply
from bayesbinn_jax.optim import *  # noqa: F403 - the optimizers and posterior helpers

__all__ = (*_optim.__all__, "load_packed", "load_xnor", "mc_apply", "save_packed", "save_xnor")
