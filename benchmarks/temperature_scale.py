"""Why BayesBiNN stalls at moderate temperature: the scale s and the lambda steps, measured (issue 30).

Usage: python benchmarks/temperature_scale.py [--data-file ../shared/data/mnist.npz]
       [--steps 100] [--temperatures 1e-10,1e-4,1e-2,1e-1] [--out benchmarks/results/temperature_scale.json]

Trains the paper's MNIST MLP (784-2048x3-10) with BayesBiNN at the MNIST preset's settings
(lr 1e-4, lambda_init 10, batch 100, N = 54,000 = the training set less its 10% validation
split) for the first ``--steps`` steps at each temperature, in a small loop of its own built on
the public API (``bayesbinn``, ``natural_gradient_scale``, ``sample_params``, ``nn.MnistMLP``).
At every step and over every binary weight it records, before the update:

- s = (1 - w^2 + 1e-10) / tau / (1 - tanh^2(lambda) + 1e-10), the natural-gradient scale;
- |g|, the gradient of the mean minibatch loss at the relaxed sample w;
- |lr * N * s * g|, the data part of the lambda step;
- the share of unsaturated samples (|w| < 1 in float32: 1 - w^2 > 0, the only ones whose
  s is not set by the 1e-10 guards), the share of weights whose mean tanh(lambda) is
  exactly +-1 in float32, and the share of weights whose sign(lambda) differs from its
  initial sign;

and writes quantiles of the distributions pooled over the steps (from log10 histograms, 0.05
decades wide), the per-step shares, and the minibatch loss. The same is measured with the
recipe of ``bayesbinn_jax.optim.temperature`` (``--no-recipe`` skips it), and for the paper's
continual-learning preset (784-100-100-10, tau 1e-2, lr 1e-3, lambda_init 10, N = 60,000), which
trains. Each run also reports the mode's (sign(lambda)) accuracy on the first 2,000 test images
after its steps. docs/temperature.md reads the results.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _output import write_json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from bayesbinn_jax import bayesbinn, mode_params, natural_gradient_scale, sample_params  # noqa: E402
from bayesbinn_jax import data  # noqa: E402
from bayesbinn_jax.nn import ContinualMLP, MnistMLP  # noqa: E402
from bayesbinn_jax.optim.temperature import recipe  # noqa: E402

LOG_LOW, LOG_HIGH, BINS_PER_DECADE = -40.0, 40.0, 20
NUM_BINS = int((LOG_HIGH - LOG_LOW) * BINS_PER_DECADE)
QUANTILES = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999)
N_TRAIN = 54_000
"""The MNIST preset's N: 60,000 training images less the 10% validation split."""


def log_histogram(x: jax.Array) -> jax.Array:
  """Counts of log10|x| in NUM_BINS bins over [LOG_LOW, LOG_HIGH), zeros in a last extra bin."""
  x = jnp.abs(x.ravel())
  index = jnp.floor((jnp.log10(jnp.where(x > 0, x, 1.0)) - LOG_LOW) * BINS_PER_DECADE)
  index = jnp.where(x > 0, jnp.clip(index, 0, NUM_BINS - 1), NUM_BINS).astype(jnp.int32)
  return jnp.bincount(index, length=NUM_BINS + 1)


def quantiles(hist: np.ndarray) -> dict[str, float]:
  """Quantiles of a log10 histogram (bin centres); exact zeros count as 0."""
  cumulative = np.cumsum(hist, dtype=np.float64)
  total = cumulative[-1]
  zeros = hist[NUM_BINS]
  out = {}
  for q in QUANTILES:
    rank = q * total
    if rank < zeros:
      out[f"q{q:g}"] = 0.0
      continue
    index = int(np.searchsorted(np.cumsum(hist[:NUM_BINS], dtype=np.float64) + zeros, rank))
    out[f"q{q:g}"] = float(10 ** (LOG_LOW + (index + 0.5) / BINS_PER_DECADE))
  out["share_zero"] = float(zeros / total)
  return out


def measure(x: np.ndarray, y: np.ndarray, *, temperature: float, lr: float, lambda_init: float,
            steps: int, batch_size: int, seed: int, x_test: np.ndarray | None = None,
            y_test: np.ndarray | None = None, model: Any = None, train_set_size: int = N_TRAIN) -> dict:
  """The first ``steps`` BayesBiNN steps at ``temperature``; histograms and shares per step, and
  the mode's (sign(lambda)) accuracy on ``x_test`` after them when given."""
  model = MnistMLP(num_classes=10) if model is None else model
  init_key, opt_key, sample_key, dropout_key = jax.random.split(jax.random.key(seed), 4)
  variables = model.init({"params": init_key, "dropout": init_key}, x[:2], train=False)
  params, batch_stats = variables["params"], variables["batch_stats"]
  tx = bayesbinn(lr, train_set_size, temperature=temperature, lambda_init=lambda_init,
                 key=jax.random.key_data(opt_key))
  opt_state = tx.init(params)
  params = sample_params(opt_state, params, sample_key, temperature=temperature)
  lam0_sign = jax.tree.map(jnp.sign, opt_state.lam)

  def loss_fn(p, stats, xb, yb, key):
    logits, new = model.apply({"params": p, "batch_stats": stats}, xb, train=True,
                              mutable=["batch_stats"], rngs={"dropout": key})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
    return loss, (new["batch_stats"], jnp.mean(jnp.argmax(logits, -1) == yb))

  @jax.jit
  def step(p, stats, state, xb, yb, key):
    (loss, (stats, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, stats, xb, yb, key)
    leaves = lambda tree: jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(tree)])  # noqa: E731
    w, g, lam = leaves(p), leaves(grads), leaves(state.lam)
    s = natural_gradient_scale(w, lam, temperature)
    lam_step = lr * train_set_size * s * g
    record = dict(
        loss=loss, accuracy=acc,
        unsaturated=jnp.mean(jnp.abs(w) < 1), mu_saturated=jnp.mean(jnp.abs(jnp.tanh(lam)) == 1),
        flipped=jnp.mean(jnp.sign(lam) != leaves(lam0_sign)), mean_abs_lambda=jnp.mean(jnp.abs(lam)),
        hist_s=log_histogram(s), hist_step=log_histogram(lam_step), hist_g=log_histogram(g))
    updates, state = tx.update(grads, state, p)
    return optax.apply_updates(p, updates), stats, state, record

  rng = np.random.default_rng(seed)
  order = rng.permutation(len(x))
  records = []
  start = time.perf_counter()
  for t in range(steps):
    batch = order[(t * batch_size) % len(x):][:batch_size]
    params, batch_stats, opt_state, record = step(
        params, batch_stats, opt_state, x[batch], y[batch], jax.random.fold_in(dropout_key, t))
    records.append(jax.device_get(record))
  seconds = time.perf_counter() - start
  last = jax.tree.map(jnp.ravel, opt_state.lam)
  hist = {name: sum(r[f"hist_{name}"] for r in records) for name in ("s", "step", "g")}
  per_step = {key: [float(r[key]) for r in records]
              for key in ("loss", "accuracy", "unsaturated", "mu_saturated", "flipped", "mean_abs_lambda")}
  mode_accuracy = None
  if x_test is not None:
    logits = model.apply({"params": mode_params(opt_state, params), "batch_stats": batch_stats}, x_test,
                         train=False)
    mode_accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == y_test))
  lam_all = np.concatenate([np.asarray(leaf) for leaf in jax.tree.leaves(last)])
  return dict(
      network=type(model).__name__, train_set_size=train_set_size,
      temperature=temperature, lr=lr, lambda_init=lambda_init, steps=steps, seconds=round(seconds, 1),
      s=quantiles(hist["s"]), step=quantiles(hist["step"]), grad=quantiles(hist["g"]),
      unsaturated_share=float(np.mean(per_step["unsaturated"])),
      mu_saturated_share_last=per_step["mu_saturated"][-1],
      flipped_share_last=per_step["flipped"][-1],
      abs_lambda_after={f"q{q:g}": float(np.quantile(np.abs(lam_all), q)) for q in (0.01, 0.1, 0.5, 0.9, 0.99)},
      loss_first10=float(np.mean(per_step["loss"][:10])), loss_last10=float(np.mean(per_step["loss"][-10:])),
      accuracy_last10=float(np.mean(per_step["accuracy"][-10:])), mode_test_accuracy=mode_accuracy,
      per_step=per_step)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data-file", default="../shared/data/mnist.npz")
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--temperatures", default="1e-10,1e-4,1e-2,1e-1")
  parser.add_argument("--train-examples", type=int, default=10_000,
                      help="the first examples of a fixed shuffle of the training set used")
  parser.add_argument("--no-recipe", action="store_true")
  parser.add_argument("--no-preset", action="store_true", help="skip the paper's settings and the continual preset")
  parser.add_argument("--settings", default="",
                      help="more runs, comma-separated TAU:LR:LAMBDA_INIT[:TRAIN_SET_SCALE] (e.g. 1e-2:1e-2:2)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="benchmarks/results/temperature_scale.json")
  args = parser.parse_args()
  dataset = data.load_npz(args.data_file)
  subset = np.random.default_rng(args.seed).permutation(dataset.num_train)[:args.train_examples]
  x = data.images_to_float(dataset.x_train[subset], 0.1307, 0.3081)
  y = dataset.y_train[subset]
  x_test = data.images_to_float(dataset.x_test[:2000], 0.1307, 0.3081)
  y_test = dataset.y_test[:2000]
  temperatures = [float(t) for t in args.temperatures.split(",")]
  runs = []
  settings = [] if args.no_preset else [("preset", t, 1e-4, 10.0, 1) for t in temperatures]
  if not args.no_recipe:
    settings += [("recipe", t, recipe(t)["lr"], recipe(t)["lambda_init"], recipe(t)["train_set_scale"])
                 for t in temperatures]
  for item in filter(None, args.settings.split(",")):
    tau, lr, lambda_init, *scale = (float(v) for v in item.split(":"))
    settings.append(("settings", tau, lr, lambda_init, int(scale[0]) if scale else 1))
  if not args.no_preset:
    # The paper's continual-learning preset: 784-100-100-10, tau 1e-2, lr 1e-3, N = 60,000.
    settings.append(("continual", 1e-2, 1e-3, 10.0, 1))
  for label, tau, lr, lambda_init, scale in settings:
    continual = label == "continual"
    result = measure(x, y, temperature=tau, lr=lr, lambda_init=lambda_init, steps=args.steps,
                     batch_size=100, seed=args.seed, x_test=x_test, y_test=y_test,
                     model=ContinualMLP(num_classes=10) if continual else None,
                     train_set_size=(60_000 if continual else N_TRAIN) * scale)
    result["settings"] = label
    runs.append(result)
    print(f"{label:9s} tau={tau:g} lr={lr:g} lambda_init={lambda_init:g} N={result['train_set_size']}: s median {result['s']['q0.5']:.3g} "
          f"|step| median {result['step']['q0.5']:.3g} q0.99 {result['step']['q0.99']:.3g}, "
          f"unsaturated {result['unsaturated_share']:.2e}, flipped {result['flipped_share_last']:.4f}, "
          f"loss {result['loss_first10']:.3f} -> {result['loss_last10']:.3f}, mode test accuracy "
          f"{result['mode_test_accuracy']:.3f} ({result['seconds']} s)",
          flush=True)
  write_json(args.out, dict(
      command="python " + " ".join(sys.argv), batch_size=100, train_examples=args.train_examples, histogram_bins_per_decade=BINS_PER_DECADE,
      runs=runs))


if __name__ == "__main__":
  main()
