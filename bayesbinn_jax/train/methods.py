"""What each optimizer needs from the training engine, in one record.

Every optimizer trains the same network with the same step
(``updates = tx.update(grads, opt_state, params)``); they differ in how the
layers binarize, which params the model starts from, which network is
evaluated, and whether a posterior can be sampled. :class:`Method` holds those
differences so that the engine has no per-optimizer branches.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import optax

from bayesbinn_jax.optim.bayesbinn import bayesbinn
from bayesbinn_jax.optim.bop import BopState, binarize_params, bop
from bayesbinn_jax.optim.posterior import mode_params, posterior_lambda, sample_params
from bayesbinn_jax.optim.nested import find_state
from bayesbinn_jax.optim.pmf import PMFState, pmf, pmf_mode, pmf_weights
from bayesbinn_jax.optim.ste import ste_adam
from bayesbinn_jax.train.hyperparams import (OPTIMIZERS, AdamHyper, BayesBiNNHyper, BopHyper, Hyper,  # noqa: F401
                                             PMFHyper, ScheduleHyper, SteHyper)
from bayesbinn_jax.train.schedules import epoch_schedule

PyTree = Any
OUTPUT_SCALES = ("none", "learned")
"""``output_scale``: "none" (the paper's output BatchNorm without gain) or
"learned" (a gain per output trained by Adam beside the binary optimizer)."""


@dataclasses.dataclass(frozen=True)
class Method:
  """One optimizer as the engine sees it.

  Attributes:
    name: the optimizer's CLI name.
    quantizer: the binary layers' ``quantizer`` ("none" or "ste").
    tx: the optax transform.
    num_samples: K; the params carry a leading Monte Carlo axis when K > 1.
    initial_params: (opt_state, init_params, key) -> the params to train from.
    mode_params: (opt_state, params) -> the deterministic network to evaluate.
    posterior: opt_state -> the Bernoulli natural parameters lambda of the
      posterior over the weights (:func:`posterior_lambda`), or None for
      optimizers without one. Sample it with ``mc_outputs(fn, opt_state, key,
      C, params=params)``.
    metrics: opt_state -> scalars to log with every step (Bop's fraction of
      weights flipped, PMF's beta).
    schedule: the learning rate as a function of the step count (logged per
      epoch), None for Bop (no learning rate).
    skips_nonfinite: ``tx`` itself skips a step with NaN or Inf gradients
      (BayesBiNN's fused ``skip_nonfinite``); otherwise :func:`build_method`
      wraps it in ``optax.apply_if_finite``. Either way
      ``nonfinite_count(opt_state)`` is the number of consecutive skipped
      steps (> 0 after a skipped step).
  """

  name: str
  quantizer: str
  tx: optax.GradientTransformation
  num_samples: int
  initial_params: Callable[[Any, PyTree, jax.Array], PyTree]
  mode_params: Callable[[Any, PyTree], PyTree]
  posterior: Callable[[Any], PyTree] | None = None
  metrics: Callable[[Any], dict[str, jax.Array]] = lambda opt_state: {}  # noqa: E731
  skips_nonfinite: bool = False
  schedule: optax.Schedule | None = None


def learning_rate_schedule(hyper: ScheduleHyper, *, epochs: int, steps_per_epoch: int) -> optax.Schedule:
  """The per-epoch schedule ``hyper.lr_schedule`` over ``epochs`` epochs."""
  return epoch_schedule(
      hyper.lr_schedule,
      hyper.lr,
      epochs=epochs,
      steps_per_epoch=steps_per_epoch,
      end_learning_rate=hyper.lr_end,
      milestones=list(hyper.lr_milestones),
      decay=hyper.lr_decay,
  )


def build_method(
    hyper: Hyper,
    *,
    epochs: int,
    steps_per_epoch: int,
    train_set_size: int,
    key: jax.Array,
    prior_lambda: PyTree | None = None,
    output_scale: str = "none",
    output_scale_lr: float = 1e-2,
    lam_dtype: Any = "float32",
) -> Method:
  """Builds the :class:`Method` of the optimizer whose hyperparameters are ``hyper``
  (:mod:`bayesbinn_jax.train.hyperparams`: the class names the optimizer).

  ``epochs`` and ``steps_per_epoch`` fix the learning-rate schedule. ``key`` is
  the optimizer's own PRNG key (BayesBiNN's initial lambda and samples; derive it
  for this purpose alone, e.g. with ``jax.random.fold_in``). BayesBiNN keeps
  lambda in ``lam_dtype``, the baselines their state in float32 or wider,
  whatever the params' dtype.

  A step whose gradients hold a NaN or Inf leaves params and optimizer state
  (lambda, momentum, key) unchanged, and the training loop stops after
  ``max_nonfinite_steps`` of them in a row. BayesBiNN skips such steps itself
  (a select fused into its update); the other transforms are wrapped in
  ``optax.apply_if_finite``.

  With ``output_scale="learned"`` the network's output BatchNorm has a gain
  (its ``scale`` leaves), which :func:`with_learned_output_scale` trains with
  Adam at ``output_scale_lr`` beside the optimizer.

  Raises:
    ValueError: an unknown optimizer or output scale, or a learned output scale
      with optimizers it cannot join (pmf; BayesBiNN with ``train_samples`` > 1).
  """
  builder = _BUILDERS.get(type(hyper))
  if builder is None:
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)} (their hyperparameters); "
                     f"got {type(hyper).__name__}.")
  if output_scale not in OUTPUT_SCALES:
    raise ValueError(f"output_scale must be one of {', '.join(OUTPUT_SCALES)}; got {output_scale!r}.")
  schedule = (learning_rate_schedule(hyper, epochs=epochs, steps_per_epoch=steps_per_epoch)
              if isinstance(hyper, ScheduleHyper) else None)
  method = builder(hyper, _Context(steps_per_epoch, train_set_size, key, prior_lambda,
                                                  lam_dtype, schedule))
  if output_scale == "learned":
    method = with_learned_output_scale(method, output_scale_lr)
  if method.skips_nonfinite:
    return method
  return dataclasses.replace(method, tx=optax.apply_if_finite(method.tx, NEVER_APPLY_NONFINITE))


def output_scale_labels(params: PyTree) -> PyTree:
  """``"output_scale"`` at every ``scale`` leaf (a BatchNorm gain), ``"weights"`` elsewhere:
  the labels of :func:`with_learned_output_scale`'s ``optax.multi_transform``."""
  def label(path: jax.tree_util.KeyPath, leaf: Any) -> str:
    last = path[-1] if path else None
    return "output_scale" if getattr(last, "key", None) == "scale" else "weights"

  return jax.tree_util.tree_map_with_path(label, params)


def with_learned_output_scale(method: Method, learning_rate: float | optax.Schedule) -> Method:
  """``method`` with the output BatchNorm's gain trained by Adam at ``learning_rate``.

  ``optax.multi_transform({"weights": method.tx, "output_scale": adam}, output_scale_labels)``:
  the binary optimizer keeps every other leaf. Not in the paper, whose last
  BatchNorm has no gain and leaves the logits standardised (an under-confident
  predictive, see ``train/calibration.py``); a learned gain sets their scale during
  training, the alternative to fitting a temperature afterwards. When the
  method skips non-finite steps itself (BayesBiNN), Adam is wrapped in
  ``optax.apply_if_finite`` so that a skipped step changes neither.

  Raises:
    ValueError: ``method`` is pmf (its state maps every leaf to a binary weight) or
      draws K > 1 samples per step (one gain per network would be K gains).
  """
  if method.name == "pmf":
    raise ValueError("output_scale=learned works with bayesbinn, ste, bop and adam, not pmf.")
  if method.num_samples > 1:
    raise ValueError(
        f"output_scale=learned trains one gain, so it needs train_samples=1; got {method.num_samples}.")
  adam = optax.adam(learning_rate)
  if method.skips_nonfinite:
    adam = optax.apply_if_finite(adam, NEVER_APPLY_NONFINITE)
  tx = optax.multi_transform({"weights": method.tx, "output_scale": adam}, output_scale_labels)
  return dataclasses.replace(method, tx=tx)


NEVER_APPLY_NONFINITE = 2**31 - 1
"""``max_consecutive_errors`` of ``optax.apply_if_finite``: after that many skipped
steps optax applies the update anyway; the training loop stops long before."""


@dataclasses.dataclass(frozen=True)
class _Context:
  """What an optimizer's builder takes besides its hyperparameters."""

  steps_per_epoch: int
  train_set_size: int
  key: jax.Array
  prior_lambda: PyTree | None
  lam_dtype: Any
  schedule: optax.Schedule | None


def _as_initialised(opt_state: Any, params: PyTree, sample_key: jax.Array) -> PyTree:
  return params


def _as_trained(opt_state: Any, params: PyTree) -> PyTree:
  return params


def _bop(hyper: BopHyper, context: _Context) -> Method:
  gamma = optax.exponential_decay(hyper.gamma, context.steps_per_epoch * hyper.gamma_decay_every,
                                  hyper.gamma_decay, staircase=True)
  return Method("bop", "none", bop(hyper.threshold, gamma), 1,
                initial_params=lambda s, p, sample_key: binarize_params(p), mode_params=_as_trained,
                metrics=lambda s: {"flip_fraction": find_state(s, BopState).flip_fraction})


def _pmf(hyper: PMFHyper, context: _Context) -> Method:
  schedule = optax.exponential_decay(hyper.lr, hyper.lr_decay_steps, hyper.lr_decay, staircase=True)
  return Method("pmf", "none", pmf(schedule, hyper.rho, weight_decay=hyper.weight_decay), 1,
                initial_params=lambda s, p, sample_key: pmf_weights(s, p), mode_params=pmf_mode,
                metrics=lambda s: {"beta": find_state(s, PMFState).beta}, schedule=schedule)


def _bayesbinn(hyper: BayesBiNNHyper, context: _Context) -> Method:
  k, tau, key = hyper.train_samples, hyper.temperature, context.key
  tx = bayesbinn(
      context.schedule,
      context.train_set_size * hyper.train_set_scale,
      temperature=tau,
      num_samples=k,
      momentum=hyper.momentum,
      lambda_init=hyper.lambda_init,
      lambda_init_std=hyper.lambda_init_std,
      kl_weight=hyper.kl_weight,
      prior_lambda=context.prior_lambda,
      # Raw key data in the state: Orbax checkpoints store uint32 arrays, not typed keys.
      key=jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key,
      generator=hyper.generator,
      lam_dtype=context.lam_dtype,
      skip_nonfinite=True,
  )
  return Method(
      "bayesbinn", "none", tx, k,
      initial_params=lambda s, p, sample_key: sample_params(
          s, p, sample_key, k if k > 1 else None, temperature=tau, generator=hyper.generator),
      mode_params=mode_params,
      posterior=posterior_lambda,
      skips_nonfinite=True,
      schedule=context.schedule,
  )


def _ste(hyper: SteHyper, context: _Context) -> Method:
  return Method("ste", "ste", ste_adam(context.schedule), 1, initial_params=_as_initialised,
                mode_params=_as_trained, schedule=context.schedule)


def _adam(hyper: AdamHyper, context: _Context) -> Method:
  return Method("adam", "none", optax.adam(context.schedule), 1, initial_params=_as_initialised,
                mode_params=_as_trained, schedule=context.schedule)


_BUILDERS: dict[type, Callable[[Any, _Context], Method]] = {
    BayesBiNNHyper: _bayesbinn, SteHyper: _ste, AdamHyper: _adam, BopHyper: _bop, PMFHyper: _pmf}
