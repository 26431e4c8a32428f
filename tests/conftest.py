"""Test session settings: one JAX persistent compilation cache for the whole session.

Most of the suite's time is XLA compiling the same small programs again: every
CLI run in a subprocess, every notebook kernel, every xdist worker and every
``main()`` run in this process compiles its train step, its evaluation and its
eager ops from scratch. JAX's persistent compilation cache keys an executable
by its HLO, the compile options, the devices and the XLA flags, so a program
compiled once in the session is loaded, not compiled, by the next process or
run that builds the same one; what is computed does not change (a cache miss
compiles as without the cache, and a damaged entry is recompiled with a warning).

The cache is a fresh temporary directory, created by the first process that
loads this file (the xdist controller, or the only process), inherited through
the environment by the xdist workers and by every subprocess and kernel that the
tests start, and removed at the end of the session by the process that created
it. A ``JAX_COMPILATION_CACHE_DIR`` already set is used as it is and kept (set
to an empty string, it turns the cache off).
"""

from __future__ import annotations

import os
import shutil
import tempfile

_CACHE_DIR = "JAX_COMPILATION_CACHE_DIR"
_CREATED_HERE = "BAYESBINN_TEST_CACHE_OWNER"

if _CACHE_DIR not in os.environ:
  os.environ[_CACHE_DIR] = tempfile.mkdtemp(prefix="bayesbinn-jax-cache-")
  os.environ[_CREATED_HERE] = str(os.getpid())
# Cache every program, however small or quick to compile (JAX's defaults keep only those
# that took a second to compile); the tests' programs are small and compiled many times.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import jax  # noqa: E402  (after the environment it reads at import)

if os.environ[_CACHE_DIR]:  # the same settings in this process, had JAX been imported before
  jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_DIR])
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                    int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


def pytest_unconfigure(config):  # noqa: ARG001
  """Removes the session's cache, in the process that created it."""
  if os.environ.get(_CREATED_HERE) == str(os.getpid()):
    shutil.rmtree(os.environ[_CACHE_DIR], ignore_errors=True)
