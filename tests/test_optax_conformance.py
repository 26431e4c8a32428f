"""Every transform of bayesbinn_jax.optim behaves as an optax transform, in one matrix.

Modelled on optax's ``contrib/_common_test.py``: each optimizer joins by one
entry of :data:`OPTIMIZERS` and runs through the same checks: inject_hyperparams
gives identical results, the params' dtype is preserved (float32, bfloat16,
float16), MultiSteps gradient accumulation equals one step on the mean
gradient, ``init`` runs under ``jax.eval_shape``, a second jitted call does
not recompile, extra keyword arguments to ``update`` are accepted,
``optax.tree_map_params`` reaches every params tree of the state, float64
params train under ``jax_enable_x64``, the state's dtypes are stable under
``lax.cond``, and on 8 (simulated) devices sharded params give updates with the
same shardings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayesbinn_jax.optim.bayesbinn import bayesbinn
from bayesbinn_jax.optim.bop import binarize_params, bop
from bayesbinn_jax.optim.pmf import pmf, pmf_weights
from bayesbinn_jax.optim.posterior import sample_params
from bayesbinn_jax.optim.ste import ste_adam


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """One matrix entry: ``factory(**hyperparams)`` and the params its model holds.

  ``start(opt_state, params, key)`` turns a network's initial params into the
  params to train from (the relaxed sample, +-1, tanh(u)); ``num_samples`` K
  stacks the params on a leading axis when K > 1.
  """

  factory: Callable[..., optax.GradientTransformation]
  hyperparams: dict[str, Any]
  start: Callable[[Any, Any, jax.Array], Any]
  num_samples: int = 1


def _bayesbinn_start(k):
  return lambda s, p, key: sample_params(s, p, key, k if k > 1 else None, temperature=1.0)


OPTIMIZERS = {
    "bayesbinn_k1": Optimizer(bayesbinn, dict(learning_rate=1e-2, train_set_size=100, momentum=0.9,
                                              lambda_init=1.0), _bayesbinn_start(1)),
    "bayesbinn_k2": Optimizer(bayesbinn, dict(learning_rate=1e-2, train_set_size=100, momentum=0.9,
                                              lambda_init=1.0, num_samples=2), _bayesbinn_start(2), 2),
    "ste_adam": Optimizer(ste_adam, dict(learning_rate=1e-2), lambda s, p, key: p),
    "bop": Optimizer(bop, dict(threshold=1e-3, gamma=1e-1), lambda s, p, key: binarize_params(p)),
    "pmf": Optimizer(pmf, dict(learning_rate=1e-2, rho=1.2, beta_interval=2),
                     lambda s, p, key: pmf_weights(s, p)),
}
NAMES = list(OPTIMIZERS)
DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]


def network(dtype=jnp.float32):
  """One network's initial params: a kernel, a vector and a scalar, in (-1, 1)."""
  rng = np.random.default_rng(0)
  return {"kernel": jnp.asarray(rng.uniform(-0.9, 0.9, (3, 4)), dtype),
          "bias": jnp.asarray(rng.uniform(-0.9, 0.9, (4,)), dtype),
          "scale": jnp.asarray(0.3, dtype)}


def setup(name, dtype=jnp.float32, tx=None):
  """``(tx, opt_state, params)``: the transform initialised on the params its model holds."""
  opt = OPTIMIZERS[name]
  tx = opt.factory(**opt.hyperparams) if tx is None else tx
  init = network(dtype)
  if opt.num_samples > 1:  # init on the K stacked networks (the layout MultiSteps needs)
    init = jax.tree.map(lambda x: jnp.broadcast_to(x, (opt.num_samples, *x.shape)), init)
  state = tx.init(init)
  params = opt.start(state, init, jax.random.PRNGKey(1))
  return tx, state, params


def grads_at(params, step=0):
  """Deterministic gradients shaped and typed like ``params``."""
  return jax.tree.map(lambda p: (jnp.sin(3.0 * p.astype(jnp.float32) + step) + 0.1).astype(p.dtype), params)


def run(tx, state, params, steps, jit=True):
  """``steps`` updates; returns the list of (updates, state) and the final params."""
  update = jax.jit(tx.update) if jit else tx.update
  history = []
  for step in range(steps):
    updates, state = update(grads_at(params, step), state, params)
    params = optax.apply_updates(params, updates)
    history.append((updates, state))
  return history, params


def assert_trees_close(a, b, rtol=1e-6, atol=0.0):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams_gives_identical_results(name):
  opt = OPTIMIZERS[name]
  _, state, params = setup(name)
  injected = optax.inject_hyperparams(opt.factory)(**opt.hyperparams)
  _, injected_state, injected_params = setup(name, tx=injected)
  assert_trees_close(injected_params, params)
  plain, final = run(opt.factory(**opt.hyperparams), state, params, 3)
  inject, injected_final = run(injected, injected_state, injected_params, 3)
  for (u, s), (ui, si) in zip(plain, inject, strict=True):
    # atol: lambda near 0 carries the float32 rounding of its O(10) terms (an ulp of 16 is
    # 2e-6): an injected momentum gives 1 - f32(0.9) = 0.100000024 where Python's is 0.1.
    assert_trees_close(ui, u, rtol=1e-5, atol=1e-5)
    assert_trees_close(si.inner_state, s, rtol=1e-5, atol=1e-5)
  assert_trees_close(injected_final, final, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("name", NAMES)
def test_params_dtype_is_preserved_and_state_is_float32(name, dtype):
  tx, state, params = setup(name, dtype)
  history, final = run(tx, state, params, 3)
  for updates, state in history:
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
      assert u.dtype == dtype and u.shape == p.shape
    for leaf in jax.tree.leaves(state):
      if jnp.issubdtype(leaf.dtype, jnp.floating):  # lambda, moments, latent: float32
        assert leaf.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(leaf)))
  for leaf in jax.tree.leaves(final):
    assert leaf.dtype == dtype and np.all(np.isfinite(np.asarray(leaf, np.float32)))


@pytest.mark.parametrize("name", NAMES)
def test_multisteps_equals_one_step_on_the_mean_gradient(name):
  tx, state, params = setup(name)
  g1, g2 = grads_at(params, 0), grads_at(params, 1)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
  expected_updates, expected_state = jax.jit(tx.update)(mean, state, params)

  multi = optax.MultiSteps(tx, every_k_schedule=2)
  multi_state = multi.init(jax.tree.map(jnp.zeros_like, params))
  multi_state = multi_state._replace(inner_opt_state=state)
  update = jax.jit(multi.update)
  updates, multi_state = update(g1, multi_state, params)
  for leaf in jax.tree.leaves(updates):  # the first micro-step accumulates only
    np.testing.assert_array_equal(leaf, 0.0)
  updates, multi_state = update(g2, multi_state, params)
  assert_trees_close(updates, expected_updates, rtol=1e-5, atol=1e-6)
  assert_trees_close(multi_state.inner_opt_state, expected_state, rtol=1e-5, atol=1e-6)


def test_multisteps_initialised_on_one_network_with_k_samples_says_what_to_do():
  tx = bayesbinn(1e-2, 100, num_samples=2)
  multi = optax.MultiSteps(tx, every_k_schedule=2)
  one = network()
  state = multi.init(one)
  stacked = jax.tree.map(lambda x: jnp.stack([x, -x]), one)
  with pytest.raises(ValueError, match=r"call init on the K stacked params"):
    multi.update(grads_at(stacked), state, stacked)


@pytest.mark.parametrize("name", NAMES)
def test_init_under_eval_shape_on_shape_dtype_structs(name):
  opt = OPTIMIZERS[name]
  tx = opt.factory(**opt.hyperparams)
  _, state, params = setup(name, jnp.bfloat16)
  init = network(jnp.bfloat16)
  if opt.num_samples > 1:
    init = jax.tree.map(lambda x: jnp.broadcast_to(x, (opt.num_samples, *x.shape)), init)
  abstract = jax.eval_shape(tx.init, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), init))
  assert jax.tree.structure(abstract) == jax.tree.structure(state)
  for a, c in zip(jax.tree.leaves(abstract), jax.tree.leaves(state), strict=True):
    assert (a.shape, a.dtype) == (c.shape, c.dtype)


@pytest.mark.parametrize("name", NAMES)
def test_second_jitted_call_does_not_recompile(name):
  tx, state, params = setup(name)
  update = jax.jit(tx.update)
  updates, state = update(grads_at(params, 0), state, params)
  params = optax.apply_updates(params, updates)
  update(grads_at(params, 1), state, params)
  assert update._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.parametrize("name", NAMES)
def test_update_accepts_extra_arguments(name):
  tx, state, params = setup(name)
  plain = tx.update(grads_at(params), state, params)
  extra = tx.update(grads_at(params), state, params, value=jnp.asarray(0.5), loss=jnp.asarray(1.0))
  assert_trees_close(extra, plain, rtol=0.0)
  chained = optax.chain(optax.identity(), tx)  # optax passes extra args through a chain
  chained_updates, _ = chained.update(grads_at(params), (optax.EmptyState(), state), params,
                                     value=jnp.asarray(0.5))
  assert_trees_close(chained_updates, plain[0], rtol=0.0)


@pytest.mark.parametrize("name", NAMES)
def test_tree_map_params_maps_every_params_tree_of_the_state(name):
  # optax's map_params row: the params-shaped fields of the state get f, the others stay.
  tx, state, params = setup(name)
  one = network()
  mapped = optax.tree_map_params(tx, lambda p: jnp.full(jnp.shape(p), 7.0, jnp.float32), state)
  assert jax.tree.structure(mapped) == jax.tree.structure(state)
  sevens = [leaf for leaf in jax.tree.leaves(mapped)
            if jnp.issubdtype(leaf.dtype, jnp.floating) and bool(jnp.all(leaf == 7.0))]
  assert len(sevens) >= len(jax.tree.leaves(one))  # at least one params tree was mapped
  specs = optax.tree_map_params(tx, lambda _, spec: spec, state, jax.tree.map(lambda _: "spec", one),
                                transform_non_params=lambda _: None)
  assert "spec" in jax.tree.leaves(specs)


def test_tree_map_params_on_bayesbinn_with_a_prior():
  one = network()
  tx = bayesbinn(1e-2, 100, prior_lambda=jax.tree.map(jnp.ones_like, one))
  state = tx.init(one)
  mapped = optax.tree_map_params(tx, lambda p: p * 0 - 1, state)
  for leaf in jax.tree.leaves(mapped.prior_lam) + jax.tree.leaves(mapped.lam):
    np.testing.assert_array_equal(leaf, -1.0)


@pytest.mark.parametrize("name", NAMES)
def test_float64_params_under_enable_x64(name):
  # optax's float64 row: float64 params train, updates come back in float64, the state stays
  # float32 or wider, and the step equals the float32 one from the same state to float32
  # precision. (The state is built once, in float32: under x64 jax.random draws other bits.)
  tx, state, params = setup(name, jnp.float32)
  updates, _ = jax.jit(tx.update)(grads_at(params), state, params)
  expected = optax.apply_updates(params, updates)
  with jax.enable_x64(True):
    params64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    updates64, new_state = jax.jit(tx.update)(grads_at(params64), state, params64)
    for leaf in jax.tree.leaves(updates64):
      assert leaf.dtype == jnp.float64
    for leaf in jax.tree.leaves(new_state):
      if jnp.issubdtype(leaf.dtype, jnp.floating):
        assert jnp.finfo(leaf.dtype).bits >= 32
    new64 = optax.apply_updates(params64, updates64)
  assert_trees_close(new64, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("name", NAMES)
def test_state_dtypes_are_stable_under_lax_cond(name, dtype):
  # optax's lax.cond row: the state after update has the dtypes and shapes of the state after
  # init, so that a cond (or scan) carrying it type-checks; a dtype drift fails to trace.
  tx, state, params = setup(name, dtype)

  def step(s):
    return tx.update(grads_at(params), s, params)[1]

  for pred in (True, False):
    out = jax.jit(lambda s, p: jax.lax.cond(p, step, lambda x: x, s))(state, pred)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(state), strict=True):
      assert (a.dtype, a.shape) == (b.dtype, b.shape)


@pytest.mark.parametrize("name", NAMES)
def test_a_non_floating_leaf_is_named_at_init_and_update(name):
  tx, state, params = setup(name)
  bad = dict(network(), step=jnp.zeros((), jnp.int32))
  with pytest.raises(ValueError, match=r"params at \['step'\] has dtype int32.*multi_transform"):
    tx.init(bad)
  grads = dict(grads_at(params), bias=jnp.zeros(jnp.shape(params["bias"]), jnp.int32))
  with pytest.raises(ValueError, match=r"grads at \['bias'\] has dtype int32"):
    tx.update(grads, state, params)


SHARDING_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    sys.path.insert(0, sys.argv[1])
    import test_optax_conformance as c

    mesh = Mesh(jax.devices(), ("d",))
    out = {}
    for name in c.NAMES:
      opt = c.OPTIMIZERS[name]
      tx = opt.factory(**opt.hyperparams)
      lead = (opt.num_samples,) if opt.num_samples > 1 else ()
      spec = P(*([None] * len(lead)), "d")
      init = {"kernel": jnp.linspace(-0.9, 0.9, 16 * 8).reshape(lead + (16, 8)) if not lead else
                        jnp.broadcast_to(jnp.linspace(-0.9, 0.9, 16 * 8).reshape(16, 8), lead + (16, 8)),
              "bias": jnp.broadcast_to(jnp.linspace(-0.5, 0.5, 8), lead + (8,))}
      init = jax.device_put(init, NamedSharding(mesh, spec))
      state = jax.jit(tx.init)(init)
      params = jax.jit(opt.start)(state, init, jax.random.PRNGKey(1))
      params = jax.device_put(params, NamedSharding(mesh, spec))
      updates, state = jax.jit(tx.update)(c.grads_at(params), state, params)
      new = jax.jit(optax.apply_updates)(params, updates)
      out[name] = all(u.sharding.is_equivalent_to(p.sharding, p.ndim) and n.sharding.is_equivalent_to(p.sharding, p.ndim)
                      for u, n, p in zip(jax.tree.leaves(updates), jax.tree.leaves(new), jax.tree.leaves(params)))
    print(json.dumps({"devices": jax.device_count(), "same": out}))
""")


def test_sharded_params_give_updates_with_the_same_shardings():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT, os.path.dirname(__file__)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["devices"] == 8
  assert report["same"] == {name: True for name in NAMES}
