"""Host CPU settings of the train step: XLA compiler options and glibc's allocator."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesbinn_jax.experiments.config import build_config, method_of
from bayesbinn_jax.nn import MnistMLP
from bayesbinn_jax.optim.bayesbinn import BayesBiNNState
from bayesbinn_jax.optim.nested import find_state
from bayesbinn_jax.train import host_cpu
from bayesbinn_jax.train.engine import create_train_state, make_train_step


def test_compiler_options_widen_vectors_on_cpu_only():
  assert host_cpu.compiler_options("cpu") == {"xla_cpu_prefer_vector_width": 512}
  assert host_cpu.compiler_options("gpu") == {} and host_cpu.compiler_options("tpu") == {}
  assert host_cpu.compiler_options() == host_cpu.compiler_options(jax.default_backend())
  options = host_cpu.compiler_options("cpu")
  options["xla_cpu_prefer_vector_width"] = 128
  assert host_cpu.CPU_COMPILER_OPTIONS["xla_cpu_prefer_vector_width"] == 512  # a copy was returned


def _three_steps(compiler_options):
  config = build_config("mnist", "bayesbinn").replace(temperature=0.5)
  method = method_of(config, steps_per_epoch=1, train_set_size=100, key=jax.random.key(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 28, 28))
  y = jnp.arange(8) % 10
  state = create_train_state(MnistMLP(hidden=64, depth=2, quantizer=method.quantizer), method, x[:1], 0)
  step = make_train_step(method, "classification", compiler_options=compiler_options)
  losses = []
  for _ in range(3):
    state, metrics = step(state, x, y)
    losses.append(float(metrics["loss"]))
  return losses, jax.tree.leaves(find_state(state.opt_state, BayesBiNNState).lam)


def test_the_engine_options_compute_what_xla_defaults_compute():
  # Vector width changes how XLA vectorises loops, not what they compute: equal up to
  # the order of vectorised sums (tau = 0.5 keeps the samples away from +-1).
  default_losses, default_lam = _three_steps({})
  losses, lam = _three_steps(None)
  np.testing.assert_allclose(losses, default_losses, rtol=1e-5)
  for got, expected in zip(lam, default_lam, strict=True):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


_FAULTS_PER_CALL = textwrap.dedent("""
    import resource, sys
    from bayesbinn_jax.train import host_cpu
    if sys.argv[1] == "retain":
        assert host_cpu.retain_freed_memory()
    import jax, jax.numpy as jnp
    x = jnp.ones((24 * 2**20,), jnp.float32)  # 96 MiB: above both of glibc's mmap limits
    double = jax.jit(lambda a: a * 2)
    for _ in range(50):  # the heap grows until its free blocks fit the step's pattern
        double(x).block_until_ready()
    faults = []
    for _ in range(21):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        double(x).block_until_ready()  # the result is freed before the next call allocates
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(sorted(faults)[10])  # the median call: the heap may still grow once in a while
""")


@pytest.mark.skipif(platform.system() != "Linux" or "musl" in (ctypes.util.find_library("c") or ""),
                    reason="glibc's allocator only")
@pytest.mark.slow
def test_retained_memory_is_reused_without_page_faults():
  def faults(mode):
    result = subprocess.run([sys.executable, "-c", _FAULTS_PER_CALL, mode], capture_output=True, text=True,
                            check=True, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    return int(result.stdout.split()[-1])

  pages = 24 * 2**20 * 4 // 4096
  assert faults("default") > pages // 2  # every call maps its 96 MiB output afresh
  assert faults("retain") < pages // 20  # reuses the block the previous call freed
