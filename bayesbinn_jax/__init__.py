"""BayesBiNN for JAX: binary neural networks trained with the Bayesian learning rule.

The optimizer is an optax transform (:func:`bayesbinn`) whose state holds the
Bernoulli natural parameters lambda of every binary weight; the model holds
relaxed samples of the weights. Flax binary layers and the paper's networks
are in :mod:`bayesbinn_jax.nn`, the baselines beside BayesBiNN here.
"""

__version__ = "0.1.0"

from bayesbinn_jax.export import load_packed, save_packed
from bayesbinn_jax.nn.monte_carlo import mc_vmap
from bayesbinn_jax.optim import (
    BayesBiNNState,
    BopState,
    PMFState,
    bayesbinn,
    binarize_params,
    bop,
    clip_weights,
    find_state,
    mc_outputs,
    natural_gradient_scale,
    pmf,
    pmf_lr_schedule,
    pmf_mode,
    pmf_weights,
    posterior_as_prior,
    posterior_mean,
    posterior_mode,
    predictive_probs,
    sample_binary,
    sample_relaxed,
    ste_adam,
)

__all__ = (
    "BayesBiNNState",
    "BopState",
    "PMFState",
    "bayesbinn",
    "binarize_params",
    "bop",
    "clip_weights",
    "find_state",
    "load_packed",
    "mc_outputs",
    "mc_vmap",
    "natural_gradient_scale",
    "pmf",
    "pmf_lr_schedule",
    "pmf_mode",
    "pmf_weights",
    "posterior_as_prior",
    "posterior_mean",
    "posterior_mode",
    "predictive_probs",
    "save_packed",
    "sample_binary",
    "sample_relaxed",
    "ste_adam",
)
