"""Flax NNX: binary layers, the paper's networks against their linen twins, the variable
converter, unbox/rebox, the posterior helpers on NNX objects and Monte Carlo mc_apply."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from numpy.testing import assert_allclose, assert_array_equal

from bayesbinn_jax import nn as bnn
from bayesbinn_jax import nnx as bnx
from bayesbinn_jax.nn.layers import default_kernel_init
from bayesbinn_jax.nnx.monte_carlo import apply_params, mc_apply
from bayesbinn_jax.optim import (
    BayesBiNNState,
    bayesbinn,
    find_state,
    mc_outputs,
    mean_params,
    mode_params,
    nonfinite_count,
    posterior_lambda,
    predictive_probs,
    sample_binary,
    sample_params,
)
from bayesbinn_jax.optim.unbox import rebox, unbox

RNG = np.random.default_rng(0)


def _sign(a):
  return np.where(np.asarray(a) >= 0, 1.0, -1.0).astype(np.float32)


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("jit", [False, True])
def test_binary_linear_is_the_numpy_product(jit):
  """Catches: a quantizer not applied (or applied to the wrong operand), a bias dropped or
  not quantized, an input quantizer ignored."""
  layer = bnx.BinaryLinear(3, 2, quantizer="ste", input_quantizer="ste_sign", use_bias=True,
                           rngs=nnx.Rngs(0))
  kernel = np.array([[0.3, -0.2], [-0.7, 0.0], [0.1, 0.9]], np.float32)
  bias = np.array([-0.5, 0.2], np.float32)
  layer.kernel[...] = kernel
  layer.bias[...] = bias
  x = np.array([[0.5, -2.0, 0.0], [-1.0, 3.0, -0.1]], np.float32)
  call = nnx.jit(lambda m, x: m(x)) if jit else (lambda m, x: m(x))
  expected = _sign(x) @ _sign(kernel) + _sign(bias)
  assert_array_equal(call(layer, x), expected)
  plain = bnx.BinaryLinear(3, 2, rngs=nnx.Rngs(0))
  plain.kernel[...] = kernel
  assert plain.bias is None
  assert_allclose(call(plain, x), x @ kernel, rtol=1e-6)


@pytest.mark.parametrize("quantizer,input_quantizer,dtype,param_dtype", [
    ("none", "none", None, jnp.float32),
    ("ste", "approx_sign", None, jnp.float32),
    ("none", "ste_sign", jnp.bfloat16, jnp.bfloat16),
    ("ste", "none", jnp.float16, jnp.float32),
])
def test_layers_equal_their_linen_twins(quantizer, input_quantizer, dtype, param_dtype):
  """Same outputs bit for bit and same dtype as nn.BinaryDense / nn.BinaryConv, for every
  quantizer and precision option. Catches: a cast in another order, a dtype option ignored."""
  opts = dict(quantizer=quantizer, input_quantizer=input_quantizer, dtype=dtype,
              param_dtype=param_dtype)
  x = jnp.asarray(RNG.normal(size=(2, 3, 6, 6, 4)), jnp.float32)  # two leading batch axes
  dense = bnx.BinaryLinear(4, 5, use_bias=True, rngs=nnx.Rngs(1), **opts)
  dense.bias[...] = jnp.asarray(RNG.normal(size=5), param_dtype)
  want = bnn.BinaryDense(5, use_bias=True, **opts).apply(
      {"params": {"kernel": dense.kernel[...], "bias": dense.bias[...]}}, x)
  got = dense(x)
  assert got.dtype == want.dtype and got.shape == (2, 3, 6, 6, 5)
  assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
  for padding, strides in [("SAME", (1, 1)), ([(1, 0), (0, 2)], (2, 1))]:
    conv = bnx.BinaryConv(4, 3, (3, 2), strides, padding, rngs=nnx.Rngs(2), **opts)
    want = bnn.BinaryConv(3, (3, 2), strides, padding, **opts).apply(
        {"params": {"kernel": conv.kernel[...]}}, x)
    got = conv(x)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_kernel_init_is_the_papers_uniform():
  """The kernel is linen's default_kernel_init drawn from rngs.params(), U(+-sqrt(1.5 /
  (fan_in + fan_out))) with the receptive field in a convolution's fans, in param_dtype.
  Catches: another initializer, fans without the receptive field, param_dtype ignored."""
  dense = bnx.BinaryLinear(300, 200, rngs=nnx.Rngs(params=7))
  assert_array_equal(dense.kernel[...],
                     default_kernel_init(nnx.Rngs(params=7).params(), (300, 200), jnp.float32))
  bound = np.sqrt(1.5 / 500)
  assert bound * 0.99 < np.abs(dense.kernel[...]).max() <= bound
  conv = bnx.BinaryConv(16, 32, (3, 3), param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  assert conv.kernel[...].dtype == jnp.bfloat16 and conv.kernel[...].shape == (3, 3, 16, 32)
  bound = np.sqrt(1.5 / (9 * 16 + 9 * 32))
  assert bound * 0.98 < float(jnp.abs(conv.kernel[...]).max()) <= bound * 1.01
  assert_array_equal(bnx.BinaryLinear(2, 3, use_bias=True, rngs=nnx.Rngs(0)).bias[...], 0.0)


def test_batchnorm_has_no_gain_or_bias_and_normalizes_as_numpy():
  """Train: (x - mean_B) / sqrt(var_B + eps) and the running averages with Flax's momentum;
  eval: the running statistics. Catches: a gain or bias, PyTorch's momentum convention."""
  bn = bnx.BatchNorm(3, momentum=0.8, epsilon=1e-3, rngs=nnx.Rngs(0))
  assert not jax.tree.leaves(nnx.state(bn, nnx.Param))
  x = RNG.normal(2.0, 3.0, size=(16, 3)).astype(np.float32)
  mean, var = x.mean(0), x.var(0)
  assert_allclose(bn(x), (x - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-5)
  assert_allclose(bn.mean[...], 0.2 * mean, rtol=1e-5)
  assert_allclose(bn.var[...], 0.8 + 0.2 * var, rtol=1e-5)
  bn.eval()
  assert_allclose(bn(x), (x - 0.2 * mean) / np.sqrt(0.8 + 0.2 * var + 1e-3), rtol=1e-4, atol=1e-5)
  scaled = bnx.BatchNorm(3, use_scale=True, rngs=nnx.Rngs(0))
  assert_array_equal(scaled.scale[...], 1.0)
  with pytest.raises(ValueError, match="momentum"):
    bnx.BatchNorm(3, momentum=1.5, rngs=nnx.Rngs(0))


def test_layer_options_are_checked_as_in_linen():
  with pytest.raises(ValueError, match="quantizer"):
    bnx.BinaryLinear(2, 2, quantizer="sign", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="input_quantizer"):
    bnx.BinaryConv(2, 2, input_quantizer="relu", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="activations"):
    bnx.MnistMLP(activations="ternary", rngs=nnx.Rngs(0))


def test_networks_refuse_inputs_of_another_shape():
  """An input unlike the one the network was built for is named, before any layer (linen's
  InputShapeError), not a matmul shape error."""
  mlp = nnx.eval_shape(lambda: bnx.ContinualMLP(in_features=20, rngs=nnx.Rngs(0)))
  with pytest.raises(bnn.networks.InputShapeError, match=r"21 features .*in_features=20"):
    mlp(jnp.zeros((2, 3, 7)))
  vgg = nnx.eval_shape(lambda: bnx.VGGBinaryConnect(image_size=(8, 8), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"\(N, 8, 8, 3\)"):
    vgg(jnp.zeros((2, 16, 16, 3)))


# --------------------------------------------------------------------------- networks

NETWORKS = {
    "toy": (bnx.ToyMLP, dict(hidden=(6, 5), output_batchnorm=True), (9, 2)),
    "toy_plain": (bnx.ToyMLP, dict(hidden=(6,)), (9, 2)),
    "mnist": (bnx.MnistMLP, dict(in_features=20, hidden=16, depth=2, dropout=0.0,
                                 learned_output_scale=True), (9, 4, 5)),
    "continual": (bnx.ContinualMLP, dict(in_features=20, hidden=12), (9, 20)),
    "vgg": (bnx.VGGBinaryConnect, dict(image_size=(8, 8), num_classes=4), (3, 8, 8, 3)),
}


def _random_linen_variables(module, x):
  """Linen variables with random relaxed kernels, biases, gains and BatchNorm statistics
  (away from init's 0/1, so that eval mode reads them); NumPy draws on init's shapes."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(3), x, train=False))
  rng = np.random.default_rng(4)

  def draw(path, leaf):
    name = path[-1].key
    if name == "var":
      value = rng.uniform(0.5, 2.0, leaf.shape)
    elif name == "scale":
      value = rng.uniform(0.5, 3.0, leaf.shape)
    else:
      value = rng.normal(0.0, 0.3 if name == "mean" else 1.0, leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, dict(shapes))


@pytest.mark.parametrize("name,activations", [(name, "binary") for name in sorted(NETWORKS)]
                         + [("mnist", "real"), ("toy", "real")])
def test_networks_equal_linen_in_train_and_eval(name, activations):
  """Given the linen twin's kernels and statistics (through linen_to_nnx), the NNX network
  gives the same outputs bit for bit in eval and train mode (eager and nnx.jit), and the same
  updated statistics. Catches: a layer in another order, a wrong input quantizer (first
  layer binary, or a hidden one real), a missing activation, BatchNorm options (momentum,
  epsilon, gain) differing, the converter swapping layers or statistics."""
  cls, kwargs, shape = NETWORKS[name]
  # built abstract (no init drawn), then given the linen twin's variables
  model = nnx.eval_shape(lambda: cls(**kwargs, activations=activations, quantizer="ste",
                                     rngs=nnx.Rngs(0)))
  twin = model.linen()
  assert type(twin) is cls.linen_class and twin.activations == activations
  x = jnp.asarray(RNG.normal(size=shape), jnp.float32)
  variables = _random_linen_variables(twin, x)
  bnx.linen_to_nnx(model, variables)
  model.eval()
  assert_array_equal(nnx.jit(lambda m, x: m(x))(model, x),
                     jax.jit(twin.apply, static_argnames="train")(variables, x, train=False))
  model.train()
  # jitted against jitted, eager against eager (XLA may fuse the two programs differently)
  want, updates = jax.jit(lambda v, x: twin.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, x)
  eager = name != "vgg"  # eager convolutions are slow on CPU: the jitted pass only
  assert_array_equal(nnx.jit(lambda m, x: m(x))(nnx.clone(model) if eager else model, x), want)
  if eager:
    want, updates = twin.apply(variables, x, train=True, mutable=["batch_stats"])
    assert_array_equal(model(x), want)
  if "batch_stats" in variables:
    jax.tree.map(assert_array_equal, bnx.nnx_variables(model)["batch_stats"],
                 dict(updates["batch_stats"]))
  # train=False in the call overrides the mode, and reads the updated statistics
  if eager:
    assert_array_equal(model(x, train=False),
                       twin.apply({**variables, **updates}, x, train=False))
  else:
    assert_array_equal(nnx.jit(lambda m, x: m(x, train=False))(model, x),
                       jax.jit(twin.apply, static_argnames="train")(
                           {**variables, **updates}, x, train=False))


def test_converter_round_trip_and_errors():
  """nnx_to_linen gives back exactly the variables loaded; linen_to_nnx refuses a missing or
  extra leaf and a shape mismatch, naming it."""
  model = bnx.ContinualMLP(in_features=20, hidden=12, rngs=nnx.Rngs(0))
  x = jnp.zeros((2, 20))
  variables = _random_linen_variables(model.linen(), x)
  twin, back = bnx.nnx_to_linen(bnx.linen_to_nnx(model, variables))
  assert isinstance(twin, bnn.ContinualMLP)
  assert jax.tree.structure(back) == jax.tree.structure(dict(variables))
  jax.tree.map(assert_array_equal, back, dict(variables))
  params = dict(variables["params"])
  missing = {**variables, "params": {k: v for k, v in params.items() if k != "BinaryDense_1"}}
  with pytest.raises(ValueError, match="missing .*BinaryDense_1/kernel"):
    bnx.linen_to_nnx(model, missing)
  extra = {**variables, "params": {**params, "BinaryDense_9": {"kernel": jnp.zeros((1, 1))}}}
  with pytest.raises(ValueError, match="unexpected .*BinaryDense_9/kernel"):
    bnx.linen_to_nnx(model, extra)
  wrong = {**variables, "params": {**params, "BinaryDense_0": {"kernel": jnp.zeros((21, 12))}}}
  with pytest.raises(ValueError, match=r"BinaryDense_0/kernel has shape \(21, 12\)"):
    bnx.linen_to_nnx(model, wrong)


def test_dropout_is_drawn_in_train_mode_only():
  """Catches: dropout active in eval, or the same mask every call in train mode."""
  model = bnx.MnistMLP(in_features=30, hidden=16, depth=1, dropout=0.5,
                       rngs=nnx.Rngs(0, dropout=1))
  x = jnp.ones((4, 30))
  assert not np.array_equal(model(x), model(x))
  model.eval()
  assert_array_equal(model(x), model(x))
  assert_array_equal(model(x), model(x, train=False))


# --------------------------------------------------------------------------- unbox / rebox


def _optimizer(model, **kwargs):
  return nnx.Optimizer(model, bayesbinn(1e-2, 100, **kwargs), wrt=nnx.Param)


def test_unbox_gives_the_tree_the_transform_sees():
  """unbox(opt.opt_state) and unbox(nnx.state(model, nnx.Param)) have exactly the structure
  and values of the trees nnx.Optimizer hands tx.update. Catches: Variables left in the tree,
  State containers turned into dicts (or the reverse), a changed layout."""
  seen = {}
  inner = bayesbinn(1e-2, 100, lambda_init_std=1.0)

  def update(grads, state, params=None, **extra):
    seen["state"], seen["params"] = state, params
    return inner.update(grads, state, params, **extra)

  model = bnx.ToyMLP(hidden=(4,), rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(model, optax.GradientTransformationExtraArgs(inner.init, update),
                      wrt=nnx.Param)
  before_state = unbox(opt.opt_state)
  before_params = unbox(nnx.state(model, nnx.Param))
  grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((2, 2)))))(model)
  opt.update(model, grads)
  for mine, theirs in [(before_state, seen["state"]), (before_params, seen["params"])]:
    assert jax.tree.structure(mine) == jax.tree.structure(theirs)
    jax.tree.map(assert_array_equal, mine, theirs)
  assert not any(isinstance(leaf, nnx.Variable) for leaf in
                 jax.tree.leaves(before_state, is_leaf=lambda n: isinstance(n, nnx.Variable)))
  assert isinstance(before_state, BayesBiNNState) and isinstance(before_state.lam, nnx.State)
  jax.tree.map(assert_array_equal, unbox(opt), unbox(opt.opt_state))


def test_unbox_is_a_no_op_on_plain_trees():
  plain = {"a": jnp.ones(2), "b": (optax.MaskedNode(), None, jnp.zeros(()))}
  assert unbox(plain) is plain
  state = bayesbinn(1e-2, 10).init(plain["a"])
  assert unbox(state) is state


@pytest.mark.slow
def test_unbox_imports_no_flax_nnx():
  """Importing optim/unbox.py loads no flax.nnx, and unbox then hands a tree back as is."""
  code = ("import sys; from bayesbinn_jax.optim.unbox import unbox; t = {'a': 1}; "
          "assert unbox(t) is t; assert 'flax.nnx' not in sys.modules, 'flax.nnx imported'")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_rebox_puts_arrays_back_into_the_variables():
  """rebox(like, unbox(like)-shaped tree) is an nnx.State of the same Variable types (metadata
  kept) holding the new arrays, K-stacked leaves included; a tree of another structure is
  refused. Catches: Variables replaced by arrays, values not replaced."""
  model = bnx.ToyMLP(hidden=(4,), rngs=nnx.Rngs(0))
  like = nnx.state(model, nnx.Param)
  new = jax.tree.map(lambda a: jnp.stack([a + 1, a - 1]), unbox(like))
  boxed = rebox(like, new)
  assert jax.tree.structure(boxed) == jax.tree.structure(
      jax.tree.map(lambda a: jnp.stack([a, a]), like))
  flat = nnx.to_flat_state(boxed)
  assert all(type(v) is nnx.Param for _, v in flat)
  jax.tree.map(assert_array_equal, unbox(boxed), new)
  assert rebox({"a": 1}, {"a": 2}) == {"a": 2}
  with pytest.raises(ValueError, match="structure"):
    rebox(like, {"kernel": jnp.ones(2)})


# --------------------------------------------------------------------------- the helpers


def _trained(num_samples=None, steps=2):
  """A ToyMLP trained for a few BayesBiNN steps through nnx.Optimizer, its optimizer and data."""
  model = bnx.ToyMLP(hidden=(5,), rngs=nnx.Rngs(0))
  opt = _optimizer(model, lambda_init_std=1.0, key=1)
  x = jnp.asarray(RNG.normal(size=(16, 2)), jnp.float32)
  y = jnp.asarray(RNG.integers(0, 2, 16))
  nnx.update(model, sample_params(unbox(opt.opt_state), unbox(nnx.state(model, nnx.Param)),
                                  jax.random.key(0), temperature=1.0))

  @nnx.jit
  def step(model, opt):
    loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()  # noqa: E731
    opt.update(model, nnx.grad(loss)(model))

  for _ in range(steps):
    step(model, opt)
  return model, opt, x


def test_helpers_on_unboxed_nnx_objects_give_what_nnx_update_accepts():
  """With unbox at the call (what the helpers will do themselves), mode/mean/sample/lambda/
  find_state/predictive read the NNX optimizer state and give trees nnx.update and
  apply_params take. Catches: a wrong unboxed layout (the helpers would raise), mode or
  mean not read from lambda, a predictive not averaging over the posterior samples."""
  model, opt, x = _trained()
  state, params = unbox(opt.opt_state), unbox(nnx.state(model, nnx.Param))
  lam = posterior_lambda(state)
  assert isinstance(lam, nnx.State)
  assert_array_equal(lam["dense"][0]["kernel"], opt.opt_state.lam["dense"][0]["kernel"][...])
  assert int(find_state(state, BayesBiNNState).count) == 2
  assert int(nonfinite_count(state)) == 0
  mode = mode_params(state, params)
  nnx.update(model, mode)
  assert_array_equal(model.dense[0].kernel[...], np.where(lam["dense"][0]["kernel"] > 0, 1, -1))
  mean = mean_params(state, params)
  assert_allclose(mean["dense"][1]["bias"], np.tanh(lam["dense"][1]["bias"]), rtol=1e-6)
  draw = sample_params(state, params, jax.random.key(5))
  assert_array_equal(draw["dense"][1]["kernel"],
                     sample_binary(lam, jax.random.key(5))["dense"][1]["kernel"])
  stacked = sample_params(state, params, jax.random.key(5), num_samples=3, temperature=1.0)
  assert stacked["dense"][0]["kernel"].shape == (3, 2, 5)
  model.eval()
  probs = predictive_probs(apply_params(model, x), state, jax.random.key(6), 4, params=params)
  keys = jax.random.split(jax.random.key(6), 4)
  by_hand = np.mean([jax.nn.softmax(apply_params(model, x)(sample_binary(lam, k))) for k in keys],
                    axis=0)
  assert_allclose(probs, by_hand, rtol=1e-6)
  outs = mc_outputs(apply_params(model, x), state, jax.random.key(6), 4, params=params)
  assert outs.shape == (4, 16, 2)


# These call the helpers with the NNX objects themselves, no unbox by the caller
# (optim/posterior.py and optim/nested.py call optim.unbox.unbox at their entry).
def test_helpers_take_nnx_objects_directly():
  """The same results as with unbox by hand, from opt.opt_state and nnx.state(model,
  nnx.Param) as they are, and the results go into nnx.update. Catches: a helper entry that
  does not unbox (Variables reach the lambda tree math or the structure checks)."""
  model, opt, x = _trained()
  params = nnx.state(model, nnx.Param)
  state_u, params_u = unbox(opt.opt_state), unbox(params)
  assert int(find_state(opt.opt_state, BayesBiNNState).count) == 2
  assert int(nonfinite_count(opt.opt_state)) == 0
  jax.tree.map(assert_array_equal, posterior_lambda(opt.opt_state), posterior_lambda(state_u))
  for helper in (mode_params, mean_params):
    jax.tree.map(assert_array_equal, helper(opt.opt_state, params), helper(state_u, params_u))
  key = jax.random.key(9)
  jax.tree.map(assert_array_equal, sample_params(opt.opt_state, params, key, 2, temperature=0.5),
               sample_params(state_u, params_u, key, 2, temperature=0.5))
  mode = mode_params(opt.opt_state, params)
  nnx.update(model, mode)
  jax.tree.map(assert_array_equal, unbox(nnx.state(model, nnx.Param)), unbox(mode))
  model.eval()
  fn = apply_params(model, x)
  assert_array_equal(predictive_probs(fn, opt.opt_state, key, 3, params=params),
                     predictive_probs(fn, state_u, key, 3, params=params_u))
  assert_array_equal(mc_outputs(fn, opt.opt_state, key, 3, params=params),
                     mc_outputs(fn, state_u, key, 3, params=params_u))


# --------------------------------------------------------------------------- Monte Carlo


def _stacked_mlp(num_samples, dropout=0.0):
  model = bnx.MnistMLP(in_features=6, hidden=5, depth=1, dropout=dropout, activations="binary",
                       rngs=nnx.Rngs(0, dropout=1))
  params = unbox(nnx.state(model, nnx.Param))
  keys = iter(jax.random.split(jax.random.key(2), 10))
  nnx.update(model, jax.tree.map(
      lambda a: jax.random.normal(next(keys), (num_samples, *a.shape)), params))
  return model


def _one(model, i):
  """Sample i of a K-stacked model, as its own model."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return nnx.merge(graphdef, jax.tree.map(lambda a: a[i], params), rest, copy=True)


@pytest.mark.parametrize("loop", ["vmap", "unroll"])
def test_mc_apply_runs_each_sample_under_jit(loop):
  """K = 3 under nnx.jit: output k is network k's (eval), train-mode statistics are the mean
  of the K networks' updates, and the gradient of the summed losses puts network k's
  gradient in slice k. Catches: samples mixed or broadcast, statistics of one sample kept,
  gradients summed over samples."""
  model = _stacked_mlp(3)
  x = jnp.asarray(RNG.normal(size=(8, 6)), jnp.float32)
  step = nnx.jit(lambda m, x: mc_apply(m, x, loop=loop))
  model.eval()
  out = step(model, x)
  assert out.shape == (3, 8, 10)
  for k in range(3):
    assert_allclose(out[k], _one(model, k)(x), rtol=1e-6, atol=1e-6)
  model.train()
  singles = [_one(model, k) for k in range(3)]
  for single in singles:
    single(x)
  step(model, x)
  for ours, *theirs in zip(jax.tree.leaves(nnx.state(model, nnx.BatchStat)),
                           *[jax.tree.leaves(nnx.state(s, nnx.BatchStat)) for s in singles]):
    assert_allclose(ours, np.mean(theirs, axis=0), rtol=1e-6, atol=1e-7)
  model.eval()

  def loss(m):
    return jnp.sum(mc_apply(m, x, loop=loop) ** 2)

  grads = nnx.jit(nnx.grad(loss))(model)
  for k in range(3):
    one = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(_one(model, k))
    assert_allclose(grads["dense"][0]["kernel"][...][k], one["dense"][0]["kernel"][...],
                    rtol=1e-5, atol=1e-6)


def test_mc_apply_draws_a_dropout_mask_per_sample():
  """K identical networks with dropout give K different outputs (one mask per sample), and
  the next call new masks. Catches: the stream key broadcast to every sample, or not advanced."""
  model = _stacked_mlp(2, dropout=0.5)
  nnx.update(model, jax.tree.map(lambda a: jnp.broadcast_to(a[:1], a.shape),
                                 unbox(nnx.state(model, nnx.Param))))
  x = jnp.ones((4, 6))
  apply = nnx.jit(mc_apply)  # one compiled program: the masks differ by the stream's state only
  first = apply(model, x)
  assert not np.array_equal(first[0], first[1])
  assert not np.array_equal(first, apply(model, x))


def test_mc_apply_refuses_params_without_one_sample_axis():
  model = bnx.ToyMLP(hidden=(3,), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="leading Monte Carlo axis"):
    mc_apply(model, jnp.ones((2, 2)))
  with pytest.raises(ValueError, match="loop"):
    mc_apply(_stacked_mlp(2), jnp.ones((2, 6)), loop="scan")


def test_nnx_optimizer_step_equals_the_linen_step():
  """Three BayesBiNN steps (K = 2) through nnx.Optimizer + mc_apply on the NNX ToyMLP give the
  lambdas, params and statistics that plain optax + nn.mc_apply give on its linen twin. Catches:
  any difference in the layers, the Monte Carlo mapping, or the state the transform sees."""
  kwargs = dict(hidden=(5,), output_batchnorm=True, activations="binary")
  model = bnx.ToyMLP(**kwargs, rngs=nnx.Rngs(0))
  twin = model.linen()
  x = jnp.asarray(RNG.normal(size=(16, 2)), jnp.float32)
  y = jnp.asarray(RNG.integers(0, 2, 16))
  tx = bayesbinn(1e-1, 100, num_samples=2, lambda_init_std=1.0, key=3)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  start = sample_params(unbox(opt.opt_state), unbox(nnx.state(model, nnx.Param)),
                        jax.random.key(0), 2, temperature=1.0)
  nnx.update(model, start)

  def nnx_loss(m):
    logits = mc_apply(m, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y[None]).mean(1).sum()

  @nnx.jit
  def nnx_step(m, opt):
    opt.update(m, nnx.grad(nnx_loss)(m))

  variables = bnx.nnx_variables(model)
  params, stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(jax.tree.map(lambda a: a[0], params))
  apply = bnn.mc_apply(twin.apply)

  @jax.jit
  def linen_step(params, stats, opt_state):
    def loss(p):
      logits, upd = apply({"params": p, "batch_stats": stats}, x, train=True,
                          mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y[None]).mean(1).sum(), upd
    grads, upd = jax.grad(loss, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates),
            jax.tree.map(lambda s: s.mean(0), upd["batch_stats"]), opt_state)

  for _ in range(3):
    nnx_step(model, opt)
    params, stats, opt_state = linen_step(params, stats, opt_state)
  mine = bnx.nnx_variables(model)
  jax.tree.map(lambda a, b: assert_allclose(a, b, rtol=1e-6, atol=1e-6), mine["params"], params)
  jax.tree.map(lambda a, b: assert_allclose(a, b, rtol=1e-6, atol=1e-6),
               mine["batch_stats"], dict(stats))
  lam = unbox(opt.opt_state).lam
  assert_allclose(lam["dense"][1]["kernel"], opt_state.lam["BinaryDense_1"]["kernel"], rtol=1e-5)


_SCANNED_STEPS = """\
def _steps(state):
  def body(state, _):
    model, optimizer = nnx.merge(graphdef, state)
    train_step(model, optimizer)
    return nnx.state((model, optimizer)), None
  return jax.lax.scan(body, state, None, length=3000)[0]
graphdef, _state = nnx.split((model, optimizer))
nnx.update((model, optimizer), jax.jit(_steps)(_state))
"""


def test_readme_nnx_loop_trains_two_moons():
  """The NNX block of docs/getting_started.md, run after its linen block (it reuses tx, x, y),
  trains two moons to 95% training accuracy and gives a predictive over the test set."""
  import os
  import re

  readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "getting_started.md")
  text = open(readme).read()
  linen_code = re.search(r"```python\n(.*?)```",
                         text[text.index("## BayesBiNN in a Flax TrainState loop"):], re.S).group(1)
  nnx_code = re.search(r"```python\n(.*?)```",
                       text[text.index("## The same loop in Flax NNX"):], re.S).group(1)
  # only its definitions before the loop are needed (tests/test_readme.py runs all of it, and
  # tests/test_docs_site.py checks that the two pages show the same loop)
  linen_code = linen_code[:linen_code.index("for _ in range(3000):")]
  # The block's 3000 calls of its own train_step, run in one jitted lax.scan: nnx.jit's Python
  # overhead per call (~4 ms) was most of this test's time; the same steps, bit for bit.
  loop = "for _ in range(3000):\n  train_step(model, optimizer)\n"
  assert nnx_code.count(loop) == 1, nnx_code
  nnx_code = nnx_code.replace(loop, _SCANNED_STEPS)
  namespace: dict = {}
  exec(compile(linen_code, "getting_started.md", "exec"), namespace)  # noqa: S102 - our own docs
  exec(compile(nnx_code, "getting_started.md", "exec"), namespace)  # noqa: S102
  assert int(namespace["optimizer"].step[...]) == 3000
  assert float(namespace["accuracy"]) >= 0.95
  probs = namespace["probs"]
  assert probs.shape == (len(namespace["moons"].x_test), 2)


# --------------------------------------------------------------------------- packing


def _binary_mlp(num_samples=None, activations="binary"):
  """An NNX MnistMLP with +-1 kernels (K stacked with num_samples) and random statistics."""
  model = nnx.eval_shape(lambda: bnx.MnistMLP(in_features=40, hidden=48, depth=2, dropout=0.0,
                                              activations=activations, rngs=nnx.Rngs(0)))
  variables = _random_linen_variables(model.linen(), jnp.zeros((1, 40)))
  rng = np.random.default_rng(5)
  lead = () if num_samples is None else (num_samples,)
  variables["params"] = jax.tree.map(
      lambda w: jnp.asarray(rng.choice([-1.0, 1.0], lead + w.shape), w.dtype), variables["params"])
  if num_samples is not None:  # the converter checks one network's shapes: load, then stack
    first = jax.tree.map(lambda w: w[0], variables["params"])
    bnx.linen_to_nnx(model, {**variables, "params": first})
    nnx.update(model, _stacked_state(model, variables["params"]))
  else:
    bnx.linen_to_nnx(model, variables)
  model.eval()
  return model


def _stacked_state(model, params):
  pure = {"dense": {int(name.rsplit("_", 1)[1]): leaves for name, leaves in params.items()}}
  state = nnx.state(model, nnx.Param)
  return jax.tree.map(lambda _, new: new, unbox(state), nnx.State(pure))


def test_pack_network_of_an_nnx_model_equals_its_float_outputs():
  """bnx.pack_network packs the NNX network through its linen twin (nn.xnor's one packer):
  the same predictions and logits to float32 rounding; a network with real activations is
  refused by the packer, naming the linen layer. Catches: the adapter handing the packer
  other weights or statistics than the model's (another layer order, train-mode statistics)."""
  model = _binary_mlp()
  x = jnp.asarray(RNG.normal(size=(32, 40)), jnp.float32)
  net = bnx.pack_network(model)
  want = np.asarray(nnx.jit(lambda m, x: m(x))(model, x))
  got = np.asarray(net(x))
  assert_array_equal(got.argmax(-1), want.argmax(-1))
  assert_allclose(got, want, atol=1e-5)
  with pytest.raises(ValueError, match="BinaryDense_1"):
    bnx.pack_network(_binary_mlp(activations="real"))


def test_pack_ensemble_of_an_nnx_model_packs_each_sample():
  model = _binary_mlp(num_samples=2)
  x = jnp.asarray(RNG.normal(size=(16, 40)), jnp.float32)
  got = np.asarray(bnx.pack_ensemble(model)(x))
  assert got.shape == (2, 16, 10)
  for k in range(2):
    assert_allclose(got[k], _one(model, k)(x), atol=1e-5)


class _UsersOwn(nnx.Module):
  """A user's own fully binary NNX model: a strided conv block, a pool, then dense layers."""

  def __init__(self, rngs, second_input="ste_sign"):
    self.conv = bnx.BinaryConv(2, 8, (3, 3), (2, 2), rngs=rngs)
    self.norm = bnx.BatchNorm(8, 0.9, 1e-3, rngs=rngs)
    self.l1 = bnx.BinaryLinear(32, 16, input_quantizer=second_input, rngs=rngs)
    self.b1 = bnx.BatchNorm(16, rngs=rngs)
    self.l2 = bnx.BinaryLinear(16, 3, input_quantizer="approx_sign", rngs=rngs)
    self.b2 = bnx.BatchNorm(3, use_scale=True, rngs=rngs)

  def __call__(self, x):
    x = self.norm(self.conv(x))
    x = _max_pool(x)
    x = self.b1(self.l1(x.reshape(x.shape[0], -1)))
    return self.b2(self.l2(x))


def _max_pool(x):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _users_own(**kwargs):
  model = _UsersOwn(nnx.Rngs(0), **kwargs)
  rng = np.random.default_rng(6)
  nnx.update(model, jax.tree.map(lambda w: jnp.asarray(rng.choice([-1.0, 1.0], w.shape), w.dtype),
                                 unbox(nnx.state(model, nnx.Param))))
  model(jnp.asarray(RNG.normal(size=(16, 8, 8, 2)), jnp.float32))  # statistics away from 0/1
  model.b2.scale[...] = jnp.asarray([0.5, 1.0, 2.0])
  model.eval()
  return model


def test_as_linen_computes_what_the_nnx_layers_compute():
  """Inside as_linen every layer (BatchNorm in eval mode) runs as its linen twin: the same
  outputs bit for bit. Catches: a twin built with other options (strides, padding,
  quantizers, epsilon, gain) than the NNX layer's."""
  model = _users_own()
  x = jnp.asarray(RNG.normal(size=(4, 8, 8, 2)), jnp.float32)
  want = model(x)
  with bnx.as_linen(model):
    got = model(x)
  assert_array_equal(got, want)


def test_pack_network_of_a_users_own_nnx_model():
  """Any NNX model built from the binary layers packs (nn.xnor.pack, layers seen through
  as_linen) to its eval-mode outputs; a refusal names the layer by its NNX path. Catches: the
  model run in train mode, layers invisible to the tracer (no binary layer to pack)."""
  model = _users_own()
  x = jnp.asarray(RNG.normal(size=(10, 8, 8, 2)), jnp.float32)
  net = bnx.pack_network(model, input_shape=(1, 8, 8, 2))
  assert [layer["path"] for layer in net.layers(x)] == ["conv", "norm", "l1", "b1", "l2", "b2"]
  assert [layer["input"] for layer in net.layers(x)][2::2] == ["binary", "binary"]
  want = np.asarray(model(x))
  assert_array_equal(np.asarray(net(x)).argmax(-1), want.argmax(-1))
  assert_allclose(net(x), want, atol=1e-5)
  with pytest.raises(ValueError, match="^l1: "):
    bnx.pack_network(_users_own(second_input="none"), input_shape=(1, 8, 8, 2))
  with pytest.raises(ValueError, match="input_shape"):
    bnx.pack_network(model)


def test_summary_of_a_users_own_nnx_model_counts_by_hand():
  """bnx.summary of a model that is no paper network: rows by NNX path; binary weights
  3*3*2*8 + 32*16 + 16*3 = 704, the conv's 4*4*8*(3*3*2) = 2,304 float MACs (real input),
  the two dense layers' 32*16 + 16*3 = 560 binary MACs per example. Catches: the summary
  refusing user models, or counting them through another network."""
  result = bnx.summary(_users_own(), input_shape=(1, 8, 8, 2), print_table=False)
  assert [row.path for row in result.layers] == ["conv", "norm", "l1", "b1", "l2", "b2"]
  assert result.binary_weights == 704
  assert result.float_macs == 4 * 4 * 8 * 18 and result.binary_macs == 32 * 16 + 16 * 3


def test_summary_of_an_nnx_network_counts_by_hand():
  """bnx.summary is nn.summary of the linen twin: 40*48 + 48*48 + 48*10 = 4,704 binary
  weights, the first layer's 1,920 float MACs and 2,784 binary ones per
  example. Catches: another network handed to the summary, the default input shape wrong."""
  result = bnx.summary(_binary_mlp(), print_table=False)
  assert result.binary_weights == 4704
  assert [row.path for row in result.layers][:2] == ["BinaryDense_0", "BatchNorm_0"]
  assert result.float_macs == 40 * 48 and result.binary_macs == 48 * 48 + 48 * 10
