"""The learned output scale (issue 16): a gain on the output BatchNorm trained by Adam
beside the binary optimizer (``optax.multi_transform``), the alternative to temperature
scaling. Checked against hand-computed values: the BatchNorm formula, Adam's first step,
labels, mode networks, skipped non-finite steps, and the CLI end to end.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from cli_helpers import QUICK, read_summary, write_images

from bayesbinn_jax.experiments.cli import main
from bayesbinn_jax.experiments.config import build_config, method_of
from bayesbinn_jax.nn.layers import BatchNorm
from bayesbinn_jax.nn.networks import ContinualMLP, MnistMLP, ToyMLP, VGGBinaryConnect
from bayesbinn_jax.optim.nested import nonfinite_count
from bayesbinn_jax.optim.posterior import mode_params, posterior_lambda
from bayesbinn_jax.train.engine import create_train_state, make_train_step
from bayesbinn_jax.train.methods import output_scale_labels, with_learned_output_scale


def _config(optimizer, **changes):
  return build_config("permuted-mnist", optimizer).replace(epochs=1, output_scale="learned",
                                                          output_scale_lr=0.01, **changes)


def test_batchnorm_gain_scales_the_normalised_output():
  """y = scale * (x - mean) / sqrt(var + eps), per feature; scale starts at 1."""
  x = np.array([[1.0, -2.0], [3.0, 0.0], [2.0, 4.0]], np.float32)
  layer = BatchNorm(0.9, 1e-3, use_scale=True)
  variables = layer.init(jax.random.key(0), x, use_running_average=False)
  np.testing.assert_array_equal(variables["params"]["scale"], np.ones(2, np.float32))
  scale = np.array([0.5, 3.0], np.float32)
  y, _ = layer.apply({"params": {"scale": scale}, "batch_stats": variables["batch_stats"]}, x,
                     use_running_average=False, mutable=["batch_stats"])
  expected = scale * (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
  np.testing.assert_allclose(y, expected, rtol=1e-5)


@pytest.mark.parametrize("make, name, width", [
    (lambda **kw: MnistMLP(hidden=16, **kw), "BatchNorm_3", 10),
    (lambda **kw: ContinualMLP(hidden=8, **kw), "BatchNorm_2", 10),
    (lambda **kw: ToyMLP(outputs=1, output_batchnorm=True, **kw), "BatchNorm_0", 1),
])
def test_only_the_output_batchnorm_gets_a_gain(make, name, width):
  x = jnp.zeros((2, 28, 28))
  params = make(learned_output_scale=True).init(jax.random.key(0), x, train=False)["params"]
  scales = {k: v["scale"].shape for k, v in params.items() if "scale" in v}
  assert scales == {name: (width,)}
  plain = make().init(jax.random.key(0), x, train=False)["params"]
  assert all("scale" not in v for v in plain.values())


def test_vgg_output_gain_is_its_last_batchnorm():
  params = jax.eval_shape(
      lambda: VGGBinaryConnect(num_classes=10, learned_output_scale=True).init(
          jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))["params"]
  assert [k for k, v in params.items() if "scale" in v] == ["BatchNorm_8"]


def test_a_network_without_output_batchnorm_refuses_a_gain():
  with pytest.raises(ValueError, match="output_batchnorm=False"):
    ToyMLP(learned_output_scale=True)


def test_labels_mark_only_scale_leaves():
  params = {"BinaryDense_0": {"kernel": 1.0, "bias": 2.0}, "BatchNorm_1": {"scale": 3.0}}
  assert output_scale_labels(params) == {
      "BinaryDense_0": {"kernel": "weights", "bias": "weights"}, "BatchNorm_1": {"scale": "output_scale"}}


def _tiny_params():
  return {"BinaryDense_0": {"kernel": jnp.array([[0.5, -0.25], [1.0, 0.75]])},
          "BatchNorm_1": {"scale": jnp.ones(2)}}


@pytest.mark.parametrize("jit", [False, True])
def test_bayesbinn_keeps_the_kernels_and_adam_steps_the_gain(jit):
  """One step: Adam's first update is -lr * g / (|g| + eps) on the gain; lambda moves
  with BayesBiNN's rule only at the kernel; the mode network keeps the trained gain."""
  method = method_of(_config("bayesbinn"), steps_per_epoch=10, train_set_size=100,
                        key=jax.random.key(1))
  params = _tiny_params()
  state = method.tx.init(params)
  lam0 = posterior_lambda(state)
  assert isinstance(lam0["BatchNorm_1"]["scale"], optax.MaskedNode)
  grads = {"BinaryDense_0": {"kernel": jnp.array([[0.1, -0.2], [0.3, 0.0]])},
           "BatchNorm_1": {"scale": jnp.array([0.02, -3.0])}}
  update = jax.jit(method.tx.update) if jit else method.tx.update
  updates, state = update(grads, state, params)
  new = optax.apply_updates(params, updates)
  g = np.array([0.02, -3.0])
  np.testing.assert_allclose(new["BatchNorm_1"]["scale"], 1.0 - 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-6)
  lam1 = posterior_lambda(state)["BinaryDense_0"]["kernel"]
  assert not np.allclose(lam1, lam0["BinaryDense_0"]["kernel"])
  mode = mode_params(state, new)
  np.testing.assert_array_equal(mode["BinaryDense_0"]["kernel"], np.where(lam1 > 0, 1.0, -1.0))
  np.testing.assert_array_equal(mode["BatchNorm_1"]["scale"], new["BatchNorm_1"]["scale"])
  assert int(nonfinite_count(state)) == 0


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_networks_keep_a_float32_gain_trained_by_adam(dtype):
  """param_dtype bfloat16/float16: the kernels and the sample handed to the model take that
  dtype, lambda and the BatchNorm gain stay float32, and one jitted engine step moves the gain
  by Adam's first step, -lr * sign(g), at every logit."""
  config = _config("bayesbinn", param_dtype=dtype)
  method = method_of(config, steps_per_epoch=10, train_set_size=100,
                        key=jax.random.key(1))
  model = ContinualMLP(num_classes=4, hidden=8, learned_output_scale=True,
                       dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype))
  state = create_train_state(model, method, jnp.zeros((1, 8, 8, 1)), seed=0)
  assert state.params["BinaryDense_0"]["kernel"].dtype == jnp.dtype(dtype)
  assert state.params["BatchNorm_2"]["scale"].dtype == jnp.float32
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(posterior_lambda(state.opt_state)))
  step = make_train_step(method, "classification")
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(16, 8, 8, 1)).astype(np.float32), rng.integers(0, 4, 16)
  new, metrics = step(state, x, y)
  assert np.isfinite(float(metrics["loss"]))
  gain = np.asarray(new.params["BatchNorm_2"]["scale"])
  assert gain.dtype == np.float32 and new.params["BinaryDense_0"]["kernel"].dtype == jnp.dtype(dtype)
  np.testing.assert_allclose(np.abs(gain - 1.0), 0.01, rtol=1e-3)  # |g| >> eps at every logit


def test_a_nonfinite_step_changes_neither_gain_nor_lambda():
  method = method_of(_config("bayesbinn"), steps_per_epoch=10, train_set_size=100,
                        key=jax.random.key(1))
  params = _tiny_params()
  state = method.tx.init(params)
  grads = {"BinaryDense_0": {"kernel": jnp.array([[0.1, jnp.nan], [0.3, 0.0]])},
           "BatchNorm_1": {"scale": jnp.array([jnp.inf, 1.0])}}
  updates, new_state = jax.jit(method.tx.update)(grads, state, params)
  assert all(np.all(np.asarray(u) == 0) for u in jax.tree_util.tree_leaves(updates))
  np.testing.assert_array_equal(posterior_lambda(new_state)["BinaryDense_0"]["kernel"],
                                posterior_lambda(state)["BinaryDense_0"]["kernel"])
  assert int(nonfinite_count(new_state)) == 1


@pytest.mark.parametrize("optimizer", ["ste", "adam", "bop"])
def test_baselines_train_the_gain_with_adam(optimizer):
  method = method_of(_config(optimizer), steps_per_epoch=10, train_set_size=100,
                        key=jax.random.key(1))
  params = _tiny_params()
  state = method.tx.init(params)
  grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.5), params)
  updates, _ = method.tx.update(grads, state, params)
  np.testing.assert_allclose(updates["BatchNorm_1"]["scale"], -0.01 * 0.5 / (0.5 + 1e-8), rtol=1e-5)


def test_pmf_and_several_samples_are_refused_by_name():
  with pytest.raises(ValueError, match="not pmf"):
    method_of(_config("pmf"), steps_per_epoch=10, train_set_size=100, key=jax.random.key(1))
  with pytest.raises(ValueError, match="train_samples=1; got 2"):
    method_of(_config("bayesbinn", train_samples=2), steps_per_epoch=10,
                 train_set_size=100, key=jax.random.key(1))
  method = method_of(_config("adam"), steps_per_epoch=10, train_set_size=100,
                        key=jax.random.key(1))
  with pytest.raises(ValueError, match="train_samples=1; got 3"):
    with_learned_output_scale(dataclasses.replace(method, num_samples=3), 1e-3)


@pytest.mark.parametrize("key, value, message", [
    ("output_scale", "gain", "output_scale must be one of none, learned"),
    ("output_scale_lr", 0.0, "output_scale_lr must be > 0"),
])
def test_config_checks_name_the_key(key, value, message):
  with pytest.raises(ValueError, match=message):
    _config("bayesbinn").replace(**{key: value})


def test_cli_learns_the_gain_and_reports_it(tmp_path):
  """End to end: the gain moves from 1, the summary reports the learned gains beside the
  fitted temperature, and the config records the setting."""
  path = write_images(tmp_path / "d.npz", classes=4)
  out = str(tmp_path / "run")
  assert main([*QUICK, "--data-file", path, "--out", out, "--epochs", "2", "--quiet",
               "--set", "output_scale=learned", "--set", "output_scale_lr=0.05"]) == 0
  summary = read_summary(out)
  gains = summary["output_scale"]
  assert len(gains) == 4 and not np.allclose(gains, 1.0)
  assert summary["temperature"] > 0 and "test_ece_calibrated" in summary
  with open(os.path.join(out, "config.json")) as handle:
    assert json.load(handle)["config"]["output_scale"] == "learned"


def test_cli_refuses_a_gain_without_output_batchnorm(tmp_path, capsys):
  out = str(tmp_path / "run")
  assert main(["two-moons", "--optimizer", "ste", "--out", out, "--set", "output_scale=learned"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "output_batchnorm" in err[0]
  assert not os.path.exists(out)


def test_xnor_packing_of_a_learned_gain_equals_the_float_network():
  # The packer follows the layers (issue 25): the output BatchNorm's learned gain is a real
  # operation after the last binary layer, replayed as the float network computes it.
  import os  # noqa: PLC0415
  import sys  # noqa: PLC0415

  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from test_xnor import _apply, _check_equal, _random_network  # noqa: PLC0415
  from bayesbinn_jax.nn.xnor import pack_network  # noqa: PLC0415

  model = MnistMLP(num_classes=5, hidden=16, depth=2, activations="binary", learned_output_scale=True)
  x = np.random.default_rng(0).standard_normal((3, 28, 28)).astype(np.float32)
  variables = _random_network(model, x, seed=4)
  gain = variables["params"]["BatchNorm_2"]["scale"]
  variables["params"]["BatchNorm_2"]["scale"] = np.linspace(0.5, 3.0, np.size(gain)).astype(np.float32)
  _check_equal(_apply(model), variables, x, pack_network(model, variables))


def test_runs_saved_before_the_setting_resume_as_without_a_gain():
  """A config.json written before output_scale existed reads as output_scale=none."""
  from bayesbinn_jax.experiments.config import migrate  # noqa: PLC0415
  from bayesbinn_jax.train.checkpoint import CheckpointError, check_metadata  # noqa: PLC0415

  old = migrate({"experiment": "mnist", "optimizer": "bayesbinn", "version": "0.2.0",
                 "config": {"lr": 1e-4, "generator": "counter"}}, "config.json")
  now = {"experiment": "mnist", "optimizer": "bayesbinn",
         "config": {"lr": 1e-4, "generator": "counter", "output_scale": "none", "output_scale_lr": 1e-2}}
  check_metadata(old, now, "config.json", ignored=("activations", "activation_quantizer", "param_dtype",
                                                   "max_nonfinite_steps", "mc_loop"))
  now["config"]["output_scale"] = "learned"
  with pytest.raises(CheckpointError, match="written with output_scale='none', but this run has "
                                            "output_scale='learned'"):
    check_metadata(old, now, "config.json", ignored=("activations", "activation_quantizer", "param_dtype",
                                                     "max_nonfinite_steps", "mc_loop"))
