"""The jitted train and evaluation steps shared by every optimizer and experiment.

One train step serves every optimizer: gradients of the mean minibatch loss at
the params the model holds, then ``TrainState.apply_gradients``. With
``K = method.num_samples > 1`` the params carry a leading Monte Carlo axis and
the K forward/backward passes run vectorised through :func:`mc_apply`.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from bayesbinn_jax.nn.monte_carlo import mc_apply
from bayesbinn_jax.optim.nested import nonfinite_count
from bayesbinn_jax.optim.posterior import mc_outputs
from bayesbinn_jax.train import host_cpu
from bayesbinn_jax.train.keys import purpose_key
from bayesbinn_jax.train.methods import Method

PyTree = Any
TASKS = ("classification", "regression")


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm statistics and the dropout key.

  The number of consecutive steps skipped for NaN or Inf gradients lives in
  the optimizer state (``nonfinite_count(state.opt_state)``).
  """

  batch_stats: PyTree
  dropout_key: jax.Array


def create_train_state(model: nn.Module, method: Method, sample_input: jax.Array, seed: int) -> TrainState:
  """Initialises the network and the optimizer, and draws the params to train from.

  The network's initial params, the first params to train from and the
  dropout masks each take their own key of ``seed``
  (:func:`bayesbinn_jax.train.keys.purpose_key`); the optimizer's key is the
  one ``method`` was built with. The initialisation runs as one jitted
  computation (op by op it takes seconds for the paper's networks).
  """

  @jax.jit
  def init(sample_input: jax.Array, init_key: jax.Array,
           params_key: jax.Array) -> tuple[PyTree, PyTree, PyTree]:
    variables = model.init({"params": init_key, "dropout": init_key}, sample_input, train=False)
    opt_state = method.tx.init(variables["params"])
    params = method.initial_params(opt_state, variables["params"], params_key)
    return params, opt_state, variables.get("batch_stats", {})

  params, opt_state, batch_stats = init(
      sample_input, purpose_key(seed, "model_init"), purpose_key(seed, "first_sample"))
  return TrainState(
      step=jnp.zeros([], jnp.int32),
      apply_fn=model.apply,
      params=params,
      tx=method.tx,
      opt_state=opt_state,
      batch_stats=batch_stats,
      dropout_key=jax.random.key_data(purpose_key(seed, "dropout")),  # raw: Orbax stores uint32
  )


def loss_fn_for(task: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Mean minibatch loss: cross-entropy for classification, MSE for regression,
  computed in at least float32 whatever the network's dtype."""
  if task not in TASKS:
    raise ValueError(f"task must be one of {TASKS}; got {task!r}.")
  if task == "classification":
    return lambda out, y: optax.softmax_cross_entropy_with_integer_labels(_wide(out), y).mean()
  return lambda out, y: jnp.mean((_wide(out).reshape(y.shape) - y) ** 2)


def _wide(out: jax.Array) -> jax.Array:
  """Network outputs in at least float32: the loss of a bfloat16 or float16 network
  is computed in float32."""
  return out.astype(jnp.promote_types(out.dtype, jnp.float32))


def make_train_step(
    method: Method, task: str, *, mc_loop: str = "vmap", compiler_options: dict[str, Any] | None = None
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict]]:
  """A jitted ``step(state, x, y) -> (state, {"loss", "accuracy"?, "nonfinite_streak"})``.

  The loss is the mean over the minibatch (and over the K samples). The batch
  statistics of the K sampled networks are averaged; ``mc_loop`` is how the K
  passes run (:func:`mc_apply`'s ``loop``: "unroll" for convolutional networks
  on CPU). A step whose gradients
  hold a NaN or Inf is skipped by the method's transform (params and optimizer
  state unchanged, see :func:`build_method`), which counts consecutive skipped
  steps in its state; the step reads that count (``nonfinite_count``, > 0 after
  a skipped step) to keep the batch statistics too, and returns it as
  ``"nonfinite_streak"``.
  ``compiler_options`` are XLA's (None: :func:`host_cpu.compiler_options`,
  512-bit vectors on a CPU backend; ``{}``: XLA's defaults). The predict
  functions below keep XLA's defaults, so that their outputs equal, bit for
  bit, those of a plain ``jax.jit`` of the model (what ``load_packed`` users run).
  """
  loss_of = loss_fn_for(task)
  stacked = method.num_samples > 1

  def step(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[TrainState, dict]:
    rngs = {"dropout": jax.random.fold_in(state.dropout_key, state.step)}

    def loss_fn(params: PyTree) -> tuple[jax.Array, tuple[jax.Array, PyTree, PyTree]]:
      variables = {"params": params, "batch_stats": state.batch_stats}
      apply = mc_apply(state.apply_fn, loop=mc_loop) if stacked else state.apply_fn
      out, mutated = apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
      stats = mutated.get("batch_stats", {})
      if stacked:
        losses = jax.vmap(loss_of, in_axes=(0, None))(out, y)
        stats = jax.tree.map(lambda s: s.mean(axis=0), stats)
        return losses.sum(), (losses.mean(), out, stats)
      loss = loss_of(out, y)
      return loss, (loss, out[None], stats)

    grads, (loss, out, stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    old_stats = state.batch_stats
    state = state.apply_gradients(grads=grads)
    streak = nonfinite_count(state.opt_state)
    state = state.replace(
        batch_stats=jax.tree.map(lambda new, old: jnp.where(streak > 0, old, new), stats, old_stats))
    metrics = {"loss": loss, **method.metrics(state.opt_state), "nonfinite_streak": streak}
    if task == "classification":
      probs = jax.nn.softmax(out, axis=-1).mean(axis=0)
      metrics["accuracy"] = jnp.mean(jnp.argmax(probs, axis=-1) == y)
    return state, metrics

  if compiler_options is None:
    compiler_options = host_cpu.compiler_options()
  return jax.jit(step, donate_argnums=0, compiler_options=compiler_options)


def make_predict(method: Method, task: str) -> Callable[[TrainState, jax.Array], jax.Array]:
  """A jitted ``predict(state, x)``: the mode network's class probabilities
  (classification) or outputs (regression), batch statistics in inference mode,
  in at least float32 whatever the network's dtype."""

  def predict(state: TrainState, x: jax.Array) -> jax.Array:
    params = method.mode_params(state.opt_state, state.params)
    out = _wide(state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x, train=False))
    return jax.nn.softmax(out, axis=-1) if task == "classification" else out

  return jax.jit(predict)


def make_predict_mc(
    method: Method, task: str, num_samples: int, *, batch_size: int | None = None
) -> Callable[[TrainState, jax.Array, jax.Array], jax.Array]:
  """A jitted ``predict(state, x, key)`` over C networks drawn from the posterior.

  Classification: the mean of the C networks' probabilities. Regression: the
  C outputs stacked on axis 0 (their mean and spread are the predictive).
  """
  if method.posterior is None:
    raise ValueError(f"the {method.name} optimizer has no posterior to sample; set test_samples=0.")

  def predict(state: TrainState, x: jax.Array, key: jax.Array) -> jax.Array:
    def forward(params: PyTree) -> jax.Array:
      out = _wide(state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x, train=False))
      return jax.nn.softmax(out, axis=-1) if task == "classification" else out

    outs = mc_outputs(forward, state.opt_state, key, num_samples, params=state.params, batch_size=batch_size)
    return outs.mean(axis=0) if task == "classification" else outs

  return jax.jit(predict)
