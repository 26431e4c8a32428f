"""Optax transforms: BayesBiNN, its posterior helpers, and the paper's baselines."""

from bayesbinn_jax.optim.bayesbinn import BayesBiNNState, bayesbinn, natural_gradient_scale
from bayesbinn_jax.optim.bop import BopState, binarize_params, bop
from bayesbinn_jax.optim.nested import find_state, find_states, nonfinite_count
from bayesbinn_jax.optim.pmf import PMFState, pmf, pmf_lr_schedule, pmf_mode, pmf_weights
from bayesbinn_jax.optim.posterior import (
    mc_outputs,
    mean_params,
    mode_params,
    posterior_as_prior,
    posterior_lambda,
    posterior_mean,
    posterior_mode,
    predictive_probs,
    sample_binary,
    sample_params,
    sample_relaxed,
)
from bayesbinn_jax.optim.ste import clip_weights, ste_adam

__all__ = (
    "BayesBiNNState",
    "BopState",
    "PMFState",
    "bayesbinn",
    "binarize_params",
    "bop",
    "clip_weights",
    "find_state",
    "find_states",
    "mc_outputs",
    "mean_params",
    "mode_params",
    "natural_gradient_scale",
    "nonfinite_count",
    "pmf",
    "pmf_lr_schedule",
    "pmf_mode",
    "pmf_weights",
    "posterior_as_prior",
    "posterior_lambda",
    "posterior_mean",
    "posterior_mode",
    "predictive_probs",
    "sample_binary",
    "sample_params",
    "sample_relaxed",
    "ste_adam",
)
