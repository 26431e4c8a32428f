"""What a train step needs from the host when XLA runs it on the CPU.

Two settings, each measured on the MNIST MLP (10 million weights, batch 100) with
``benchmarks/step_time.py`` on a 2-core AVX-512 host:

* **Compiler options.** XLA's CPU backend vectorises elementwise loops 256 bits
  wide by default, also on hosts with 512-bit vectors. BayesBiNN's sample loop
  (counter hash, one log, one tanh per weight) is compute-bound and runs about
  1.5x faster at 512 bits; memory-bound loops (Adam's update) do not change.
  :func:`compiler_options` gives the options the engine compiles its train
  step with: ``xla_cpu_prefer_vector_width=512`` on a CPU backend (a
  preference: LLVM keeps to the widths the host has), none elsewhere.

* **Host memory.** XLA allocates every execution's temporaries with ``malloc``
  and frees them on return. glibc serves a block above its mmap threshold
  (dynamic, at most 32 MiB), or one too big for a thread's arena (64 MiB), with
  a fresh ``mmap``, and the kernel zeroes it page by page as the step first
  touches it: BayesBiNN's 40 MiB of gradients on the MNIST MLP took 10,000 page
  faults a step (about 10 ms of a 61 ms step), an Adam step behind
  ``optax.apply_if_finite`` 20,000, BayesBiNN with 5 samples 60,000.
  :func:`retain_freed_memory` makes glibc keep freed blocks of up to
  :data:`RETAINED_BLOCK_BYTES` in one heap, so the next step reuses them
  without faulting. Larger blocks are still mapped afresh: kept in the heap,
  they fragment it (the CIFAR VGG's step with 5 samples, 1 GiB of
  temporaries, grew the process to 4.7 GiB within 30 steps). The setting is
  process-wide, and the resident memory stays at its peak plus what
  fragmentation adds (the MNIST MLP's benchmark with 5 samples: 1.8 GiB, 0.9
  GiB without), so it is the caller's choice: the command line
  (``bayesbinn-train --malloc retain``, the default) and the benchmarks call
  it, and so can any training script, before its first JAX computation. From
  outside a process, the environment variables
  ``MALLOC_MMAP_THRESHOLD_=268435456``, ``MALLOC_TRIM_THRESHOLD_=2147483647``
  and ``MALLOC_ARENA_MAX=1`` do the same.
"""

from __future__ import annotations

import ctypes
from typing import Any

import jax

CPU_COMPILER_OPTIONS: dict[str, Any] = {"xla_cpu_prefer_vector_width": 512}
"""XLA debug options for steps compiled for the CPU backend."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
RETAINED_BLOCK_BYTES = 256 * 2**20
"""Blocks up to this size come from (and go back to) the heap; larger ones are mapped afresh."""


def compiler_options(backend: str | None = None) -> dict[str, Any]:
  """The XLA compiler options for a step compiled for ``backend``.

  Args:
    backend: "cpu", "gpu", "tpu"...; None for ``jax.default_backend()``.

  Returns:
    A copy of :data:`CPU_COMPILER_OPTIONS` for "cpu", an empty dict otherwise.
  """
  backend = jax.default_backend() if backend is None else backend
  return dict(CPU_COMPILER_OPTIONS) if backend == "cpu" else {}


def retain_freed_memory() -> bool:
  """Keeps memory freed by XLA in the process, so the next step reuses it.

  Sets glibc's ``M_MMAP_THRESHOLD`` to :data:`RETAINED_BLOCK_BYTES` (smaller
  blocks come from the heap instead of a fresh ``mmap``), ``M_TRIM_THRESHOLD``
  to its largest value (the heap is not shrunk after each step; only free
  space above 2 GiB at its top goes back to the system) and ``M_ARENA_MAX`` = 1
  (every thread allocates from the main heap, which has no size limit; a
  thread's own arena maps anything above 64 MiB afresh). Call it before the
  first JAX computation: glibc fixes the number of arenas the first time a
  second thread allocates.

  Returns:
    True when all three settings were taken; False where the C library is not
    glibc (musl, macOS, Windows), which leaves the process unchanged.
  """
  try:
    mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
  except (OSError, TypeError, AttributeError):  # no C library to load, or no mallopt in it
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  return all(mallopt(option, value) for option, value in (
      (_M_MMAP_THRESHOLD, RETAINED_BLOCK_BYTES),
      (_M_TRIM_THRESHOLD, 2**31 - 1),
      (_M_ARENA_MAX, 1),
  ))
