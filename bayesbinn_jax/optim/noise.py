"""Uniform and logistic noise for BayesBiNN's samples, from an explicit key.

Sampling one relaxed network draws one uniform per weight: 10 million per step
for the MNIST MLP. ``jax.random``'s threefry generator costs more there than
the whole Adam step on a CPU, so the default generator is a counter-based
hash: the i-th uniform of a leaf is

    x = h(h(i xor k0) + k1),   u = (floor(x / 2^9) + 1/2) / 2^23   in (0, 1)

with ``(k0, k1)`` the leaf's key (split from the caller's key with
``jax.random.split``) and ``h`` the 32-bit "lowbias32" integer mixer of
C. Wellons (xor-shift-multiply, a bijection with low avalanche bias). Like
threefry it is a pure function of (key, position): the same seed gives the
same noise on any device, jitted or not, and sharding does not change it.
``generator="threefry"`` uses ``jax.random`` instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

GENERATORS = ("counter", "threefry")


def check_generator(generator: str) -> str:
  """Returns ``generator`` or raises ValueError naming the accepted ones."""
  if generator not in GENERATORS:
    raise ValueError(f"generator must be one of {GENERATORS}; got {generator!r}.")
  return generator


def canonical_key(key: int | jax.Array, name: str = "key") -> jax.Array:
  """A PRNG key from an int seed, a typed key (``jax.random.key``) or a raw ``PRNGKey``.

  An int seed ``s`` (a Python or NumPy int, or an integer scalar array, as
  ``optax.inject_hyperparams`` hands on an int default) gives the raw key
  ``jax.random.PRNGKey(s)`` (uint32 words, which NumPy-based checkpoints store
  as they are); a key, typed or raw, is returned unchanged, so a typed key
  keeps its implementation.

  Raises:
    ValueError: naming ``name`` when ``key`` is none of these (a float, a bool, a
      string, a uint32 array of the wrong shape).
  """
  if isinstance(key, (bool, np.bool_)):
    raise ValueError(f"{name} must be an int seed or a PRNG key; got {key!r}.")
  if isinstance(key, (int, np.integer)):
    return jax.random.PRNGKey(int(key))
  dtype = getattr(key, "dtype", None)
  shape = getattr(key, "shape", None)
  if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and shape == ():
    return key
  raw_shape = jax.random.key_data(jax.random.key(0)).shape
  if dtype == jnp.uint32 and shape == raw_shape:
    return jnp.asarray(key)
  if dtype is not None and jnp.issubdtype(dtype, jnp.integer) and shape == ():
    return jax.random.PRNGKey(key)
  raise ValueError(
      f"{name} must be an int seed, a typed key (jax.random.key) or a raw key "
      f"(jax.random.PRNGKey, uint32 of shape {raw_shape}); got {key!r}."
  )


def _mix(x: jax.Array) -> jax.Array:
  """lowbias32: x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _key_words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  words = jnp.ravel(key).astype(jnp.uint32)
  return words[0], words[-1]


def counter_uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """float32 uniforms in the open interval (0, 1), 23 random bits each.

  Every value (n + 1/2) / 2^23 is exact in float32 (24 significant bits), so
  u never rounds to 0 or 1 and log(u / (1 - u)) is always finite.
  """
  size = int(np.prod(shape, dtype=np.int64))
  if size >= 2**32:
    raise ValueError(f"counter_uniform draws at most 2^32 values per key; got shape {shape}.")
  k0, k1 = _key_words(key)
  x = _mix(_mix(jax.lax.iota(jnp.uint32, size) ^ k0) + k1)
  return (((x >> 9).astype(jnp.float32) + 0.5) * (1.0 / 2**23)).reshape(shape)


def logistic(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype, generator: str = "counter") -> jax.Array:
  """Standard logistic noise log(u / (1 - u)), u ~ U(0, 1), in ``dtype``."""
  if check_generator(generator) == "threefry":
    return jax.random.logistic(key, shape, dtype)
  u = counter_uniform(key, shape)
  return jnp.log(u / (1 - u)).astype(dtype)
