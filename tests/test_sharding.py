"""Data parallelism and the train state split over devices (``train/sharding.py``).

The multi-device checks run this file as a script in a subprocess with 8
simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``):
10 BayesBiNN steps of the two-moons ToyMLP and of a small MNIST MLP with the
state split over the 8 devices give the replicated run's losses and state,
keep their layout from step to step (one compiled step runs all 10), and hold
about 1/8 of the replicated state's bytes per device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from bayesbinn_jax.data import two_moons
from bayesbinn_jax.data.batching import iterate_batches
from bayesbinn_jax.train import sharding

DEVICES = 8


# ------------------------------------------------------------------ one process, in this one


@pytest.mark.parametrize("shape, devices, axis", [
    ((784, 2048), 8, 1),     # the longest divisible axis
    ((2048, 2048), 8, 0),    # the first of equal ones
    ((64, 2), 8, 0),         # 2 < 8: only the 64 axis
    ((2,), 8, None),         # shorter than the device count
    ((12, 20), 8, None),     # no multiple of 8
    ((3, 4), 1, 1),          # one device: every axis divides
    ((), 8, None),
])
def test_weight_axis_is_the_longest_axis_divisible_by_the_device_count(shape, devices, axis):
  assert sharding.weight_axis(shape, devices) == axis


def test_split_spec_leaves_trailing_axes_out_and_skips_the_sample_axis():
  # P("data") rather than P("data", None): what XLA gives the outputs, so the step does not recompile.
  assert sharding._split_spec((64, 2), 8, 0) == PartitionSpec("data")
  assert sharding._split_spec((2, 64), 8, 0) == PartitionSpec(None, "data")
  # K = 8 samples on axis 0 are never split: the weight axis of (2, 64) is
  assert sharding._split_spec((8, 2, 64), 8, 1) == PartitionSpec(None, None, "data")
  assert sharding._split_spec((8, 2), 8, 1) is None


def test_one_process_holds_every_row_and_batches_are_iterate_batches():
  mesh = sharding.data_mesh()
  assert sharding.process_rows(mesh, 12) == slice(0, 12)
  rng = np.random.default_rng(0)
  x, y = rng.standard_normal((50, 3)).astype(np.float32), rng.integers(0, 2, 50)
  ours = list(sharding.process_batches(x, y, 8, mesh=mesh, seed=3, epoch=2))
  theirs = list(iterate_batches(x, y, 8, seed=3, epoch=2, drop_last=True))
  assert len(ours) == len(theirs) == 6
  for (xa, ya), (xb, yb) in zip(ours, theirs):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
  flip = lambda batch, generator: batch[:, ::-1] * generator.random()  # noqa: E731
  ours = list(sharding.process_batches(x, y, 8, mesh=mesh, seed=3, epoch=2, augment=flip))
  theirs = list(iterate_batches(x, y, 8, seed=3, epoch=2, drop_last=True, augment=flip))
  for (xa, _), (xb, _) in zip(ours, theirs):
    np.testing.assert_array_equal(xa, xb)


def test_global_batch_from_process_rows_equals_the_batch():
  mesh = sharding.data_mesh()
  x = np.arange(24, dtype=np.float32).reshape(8, 3)
  (a,) = sharding.shard_process_batch(mesh, 8, x)
  (b,) = sharding.shard_batch(mesh, x)
  np.testing.assert_array_equal(sharding.to_host(a), x)
  np.testing.assert_array_equal(sharding.to_host(b), x)
  with pytest.raises(sharding.ShardingError, match="rows 0:8 of the batch of 8"):
    sharding.shard_process_batch(mesh, 8, x[:5])


def test_state_bytes_count_each_array_once_per_device():
  tree = {"w": jnp.zeros((10, 4), jnp.float32), "k": jax.random.key(0), "n": jnp.zeros((), jnp.int32)}
  assert sharding.state_bytes_per_device(tree) == 10 * 4 * 4 + 8 + 4
  assert sharding.state_bytes_per_device({}) == 0


# ------------------------------------------------------------------ 8 simulated devices


def _run_script(mode: str, timeout: int = 240) -> dict:
  """Runs this file as a script with 8 simulated CPU devices; returns its JSON result."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}")
  done = subprocess.run([sys.executable, __file__, mode], env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # trains on 8 simulated devices twice (16 s each on 2 cores)
@pytest.mark.parametrize("model", ["two-moons", "mnist"])
def test_sharded_state_trains_as_the_replicated_one_on_an_eighth_of_the_memory(model):
  result = _run_script(model)
  replicated, split = result["replicated"], result["sharded"]
  np.testing.assert_allclose(split["losses"], replicated["losses"], rtol=1e-3, atol=1e-3)
  assert result["max_prediction_difference"] < 1e-3
  if model == "mnist":
    assert result["max_state_difference"] < 1e-3
  # Two moons (temperature 1, momentum 0.99): lambda of saturated weights (|lambda| >> 1, where
  # float32 holds sigmoid(2 lambda) = 1) grows by N s g, which amplifies the last-bit differences
  # of the gradient reduction (an all-reduce replicated, a reduce-scatter split): such lambdas
  # differ between the runs after 10 steps (1.7 relative, measured) while the mode network, its
  # predictions and the losses agree.
  assert result["samples_equal"] and split["layout_kept"] and replicated["layout_kept"]
  ratio = split["state_bytes_per_device"] / replicated["state_bytes_per_device"]
  assert 1 / DEVICES <= ratio < 1.1 / DEVICES, ratio
  if model == "two-moons":  # the output layer's 2 biases cannot be split over 8 devices
    assert split["left_whole"] == ["params/BinaryDense_2/bias", "opt_state/lam/BinaryDense_2/bias",
                                   "opt_state/momentum/BinaryDense_2/bias"]
  else:
    assert split["left_whole"] == []


def test_errors_on_eight_devices_and_the_pinned_layout_of_a_wide_batchnorm_network():
  result = _run_script("errors")
  # MnistMLP(hidden=2048, depth=1): jax.jit alone splits the BatchNorm statistics of its
  # output next to the split weights (jax 0.10); pin_layout keeps every array as it came in.
  assert result["pinned_layout_kept"]
  assert result["batch"] == ("batch_size=12 must be a multiple of the 8 devices in use; "
                             "pick a multiple of 8.")
  assert result["nothing_splits"].startswith("the train state cannot be split: no weight array has an axis "
                                             "that is a multiple of the 8 devices in use")
  assert "\n" not in result["nothing_splits"]


# ------------------------------------------------------------------ the script's side


def _init(model, method, sample):
  from bayesbinn_jax.train.engine import create_train_state  # pylint: disable=import-outside-toplevel
  return create_train_state(model, method, sample, 0)


def _train(name: str) -> dict:
  """10 BayesBiNN steps, replicated and sharded, on random batches of ``name``'s shapes."""
  from bayesbinn_jax.experiments.config import build_config, method_of  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.nn import MnistMLP, ToyMLP  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.optim import BayesBiNNState, find_state  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.engine import make_predict, make_train_step  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.keys import purpose_key  # pylint: disable=import-outside-toplevel

  if name == "two-moons":  # the paper's preset: K = 5 samples, momentum 0.99
    shape, batch, classes = (2,), 200, 2
    make = lambda q: ToyMLP(outputs=2, quantizer=q)  # noqa: E731
  else:  # the MNIST preset (K = 1, no momentum buffer) on a 784-64-64-10 MLP
    shape, batch, classes = (28, 28), 64, 10
    make = lambda q: MnistMLP(hidden=64, depth=2, quantizer=q)  # noqa: E731
  config = build_config(name, "bayesbinn")
  method = method_of(config, steps_per_epoch=10, train_set_size=10 * batch,
                        key=purpose_key(0, "optimizer"))
  model = make(method.quantizer)
  mesh = sharding.data_mesh()
  if name == "two-moons":  # the data set itself, 200 points: one batch per epoch, 10 epochs
    moons = two_moons(100, 0.1, 0)
    xs, ys = zip(*(next(iterate_batches(moons.x_train.astype(np.float32), moons.y_train, batch, seed=0,
                                        epoch=epoch)) for epoch in range(10)))
  else:
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((10, batch, *shape)).astype(np.float32)
    ys = rng.integers(0, classes, (10, batch)).astype(np.int32)
  out, states, predictions = {}, {}, {}
  for mode in ("replicated", "sharded"):
    state = _init(model, method, jnp.zeros((1, *shape)))
    step = make_train_step(method, "classification")
    if mode == "replicated":
      state, whole = sharding.replicate(mesh, state), []
    else:
      state, layout, whole = sharding.shard_state(mesh, state, num_samples=method.num_samples)
      step = sharding.pin_layout(step, mesh, layout)
    layout = [leaf.sharding for leaf in jax.tree.leaves(state)]
    # One compiled step for all 10: a call whose inputs are laid out otherwise raises.
    compiled = step.lower(state, *sharding.shard_batch(mesh, xs[0], ys[0])).compile()
    losses = []
    for x, y in zip(xs, ys):
      state, metrics = compiled(state, *sharding.shard_batch(mesh, x, y))
      losses.append(float(metrics["loss"]))
    states[mode] = sharding.to_host((state.params, state.opt_state))
    predictions[mode] = sharding.to_host(make_predict(method, "classification")(
        state, *sharding.shard_batch(mesh, np.concatenate(xs[:2]))))
    if mode == "sharded":
      out["samples_equal"] = _samples_equal(mesh, find_state(state.opt_state, BayesBiNNState).lam)
    out[mode] = dict(
        losses=losses, left_whole=whole, state_bytes_per_device=sharding.state_bytes_per_device(state),
        layout_kept=all(leaf.sharding == s for leaf, s in zip(jax.tree.leaves(state), layout)))
  differences = [float(np.max(np.abs(a.astype(np.float64) - b) / (1 + np.abs(b))))
                 for a, b in zip(jax.tree.leaves(states["sharded"]), jax.tree.leaves(states["replicated"]))
                 if np.issubdtype(a.dtype, np.floating) and a.size]
  out["max_state_difference"] = max(differences)
  out["max_prediction_difference"] = float(np.max(np.abs(predictions["sharded"] - predictions["replicated"])))
  return out


def _samples_equal(mesh, lam) -> bool:
  """Whether K = 3 relaxed samples of the split ``lam`` equal, bit for bit, those of ``lam`` replicated."""
  from bayesbinn_jax.optim import sample_relaxed  # pylint: disable=import-outside-toplevel
  draw = jax.jit(lambda lam, key: sample_relaxed(lam, key, 1.0, 3))
  key = jax.random.PRNGKey(7)
  split = sharding.to_host(draw(lam, key))
  whole = sharding.to_host(draw(sharding.replicate(mesh, sharding.to_host(lam)), key))
  return all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(split), jax.tree.leaves(whole)))


def _errors() -> dict:
  from bayesbinn_jax.experiments.config import build_config, method_of  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.nn import MnistMLP, ToyMLP  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.engine import make_train_step  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.keys import purpose_key  # pylint: disable=import-outside-toplevel

  mesh = sharding.data_mesh()
  result = {}
  try:
    sharding.check_batch_size(mesh, 12)
  except sharding.ShardingError as error:
    result["batch"] = str(error)
  method = method_of(build_config("two-moons", "bayesbinn"), steps_per_epoch=1,
                        train_set_size=10, key=purpose_key(0, "optimizer"))
  state = _init(ToyMLP(hidden=(3, 3), outputs=3, quantizer=method.quantizer), method, jnp.zeros((1, 2)))
  try:
    sharding.state_shardings(state, mesh, num_samples=method.num_samples)
  except sharding.ShardingError as error:
    result["nothing_splits"] = str(error)
  method = method_of(build_config("mnist", "bayesbinn"), steps_per_epoch=1,
                        train_set_size=64, key=purpose_key(0, "optimizer"))
  state = _init(MnistMLP(hidden=2048, depth=1, quantizer=method.quantizer), method, jnp.zeros((1, 28, 28)))
  state, layout, _ = sharding.shard_state(mesh, state)
  step = sharding.pin_layout(make_train_step(method, "classification"), mesh, layout)
  batch = sharding.shard_batch(mesh, np.zeros((64, 28, 28), np.float32), np.zeros(64, np.int32))
  outputs = step.lower(state, *batch).compile().output_shardings[0]
  result["pinned_layout_kept"] = all(
      a.spec == b.spec for a, b in zip(jax.tree.leaves(outputs), jax.tree.leaves(layout)))
  return result


if __name__ == "__main__":
  assert len(jax.devices()) == DEVICES, jax.devices()
  print(json.dumps(_errors() if sys.argv[1] == "errors" else _train(sys.argv[1])))
