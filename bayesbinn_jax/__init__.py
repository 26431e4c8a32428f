"""BayesBiNN for JAX: binary neural networks trained with the Bayesian learning rule."""

__version__ = "0.1.0"
