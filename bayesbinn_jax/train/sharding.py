"""Data parallelism over every visible device with ``jax.sharding``.

The batch is split along its first axis over a one-dimensional mesh named
``"data"``; the train state is replicated. The jitted step then computes the
same global minibatch mean (and the same BatchNorm statistics) as on one
device, and XLA inserts the gradient all-reduce. On several hosts, call
``jax.distributed.initialize()`` first (the CLI does when launched by a
cluster launcher); ``jax.devices()`` then lists every host's devices.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PyTree = Any


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named "data" over ``devices`` (all of ``jax.devices()`` by default)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def check_batch_size(mesh: Mesh, batch_size: int, name: str = "batch_size") -> None:
  """Raises ValueError unless ``batch_size`` splits evenly over the mesh's devices."""
  devices = mesh.devices.size
  if batch_size % devices:
    raise ValueError(
        f"{name}={batch_size} must be a multiple of the {devices} devices in use; "
        f"pick a multiple of {devices} (--set {name}=...)."
    )


def shard_batch(mesh: Mesh, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
  """Puts each array on the mesh, split along axis 0."""
  sharding = NamedSharding(mesh, PartitionSpec("data"))
  return tuple(jax.device_put(a, sharding) for a in arrays)


def replicate(mesh: Mesh, tree: PyTree) -> PyTree:
  """Puts every leaf of ``tree`` on every device of the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
