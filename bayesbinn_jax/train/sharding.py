"""Data parallelism over every device of the job, and the train state split over them.

The batch is split along its first axis over a one-dimensional mesh named
``"data"``. The jitted step then computes the same global minibatch mean (and
the same BatchNorm statistics) as on one device, and XLA inserts the gradient
all-reduce.

Several processes (:mod:`bayesbinn_jax.train.distributed`): the mesh spans
every process's devices (``jax.devices()`` lists them all after
``jax.distributed.initialize``), every process computes the same seeded
order of the global batches, and hands over only the rows its own devices
hold (:func:`process_rows`, ``jax.make_array_from_process_local_data``), so
the global batch, and the run, are those of one process. Outputs come back to
every host with :func:`to_host`.

The train state is either replicated (:func:`replicate`) or split ZeRO/FSDP
style (:func:`shard_state`): each floating-point array of the params (the
sampled weights) and of the optimizer state (lambda, the momentum, the
prior) is cut along one weight axis into one slice per device. In the step,
XLA gathers the weights where the forward and backward passes need them
whole and computes the update of each slice on the device holding it (the
gradient all-reduce becomes a reduce-scatter); :func:`pin_layout` compiles
the step with that layout on its inputs and outputs. BayesBiNN's counter-based
noise depends only on (key, position), so each device draws the noise of its
own slice and the samples equal the replicated run's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bayesbinn_jax.data.batching import Augment, iterate_batches
from bayesbinn_jax.data.rng import SeedLike
from bayesbinn_jax.train import host_cpu

PyTree = Any
AXIS = "data"


class ShardingError(ValueError):
  """A batch or a train state that cannot be laid out over the devices in use."""


class BatchSizeError(ShardingError):
  """A batch size (the setting ``name``, ``batch_size``) that does not split over ``devices`` devices."""

  def __init__(self, message: str, name: str, batch_size: int, devices: int):
    super().__init__(message)
    self.name, self.batch_size, self.devices = name, batch_size, devices


class NothingToSplitError(ShardingError):
  """A train state none of whose weight arrays splits over ``devices`` devices."""

  def __init__(self, message: str, devices: int):
    super().__init__(message)
    self.devices = devices


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named "data" over ``devices`` (all of ``jax.devices()``, every process's, by default)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def _devices_in_use(mesh: Mesh) -> str:
  count, processes = mesh.devices.size, len({d.process_index for d in mesh.devices.flat})
  return f"{count} devices in use" + (f" ({processes} processes)" if processes > 1 else "")


def check_batch_size(mesh: Mesh, batch_size: int, name: str = "batch_size") -> None:
  """Raises ShardingError unless ``batch_size`` splits evenly over the mesh's devices (every process's)."""
  devices = mesh.devices.size
  if batch_size % devices:
    raise BatchSizeError(
        f"{name}={batch_size} must be a multiple of the {_devices_in_use(mesh)}; pick a multiple of {devices}.",
        name, batch_size, devices)


def process_rows(mesh: Mesh, batch_size: int) -> slice:
  """The rows of a global batch of ``batch_size`` held by this process's devices.

  A batch split along axis 0 over the mesh gives each device
  ``batch_size / devices`` consecutive rows; this process holds the rows of
  its devices, consecutive when, as in ``jax.devices()``, the mesh lists each
  process's devices together. One process: ``slice(0, batch_size)``.

  Raises:
    ShardingError: ``batch_size`` is not a multiple of the device count, or
      this process's rows are not consecutive (a mesh interleaving processes).
  """
  check_batch_size(mesh, batch_size)
  indices = NamedSharding(mesh, PartitionSpec(AXIS)).addressable_devices_indices_map((batch_size,))
  spans = sorted({(index[0].start or 0, batch_size if index[0].stop is None else index[0].stop)  # type: ignore[index]
                  for index in indices.values()})
  if any(stop != start for (_, stop), (start, _) in zip(spans, spans[1:])):
    raise ShardingError(
        f"process {jax.process_index()} holds rows {spans} of each batch, not one block: "
        "build the mesh from jax.devices() (each process's devices together).")
  return slice(spans[0][0], spans[-1][1])


def shard_batch(mesh: Mesh, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
  """Puts each global array (the same on every process) on the mesh, split along axis 0.

  Each process transfers only the rows of its own devices (:func:`process_rows`).
  """
  sharding = NamedSharding(mesh, PartitionSpec(AXIS))
  if jax.process_count() == 1:
    return tuple(jax.device_put(a, sharding) for a in arrays)
  return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(a)[process_rows(mesh, len(a))],
                                                      np.shape(a)) for a in arrays)


def shard_process_batch(mesh: Mesh, batch_size: int, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
  """Global arrays of ``batch_size`` rows from this process's rows of them (:func:`process_rows`).

  Args:
    mesh: the data mesh.
    batch_size: the global batch size B.
    *arrays: this process's rows of each global array, ``(B * local devices / devices, ...)``.

  Returns:
    One ``jax.Array`` of shape ``(B, ...)`` per input, split over the mesh.

  Raises:
    ShardingError: an array without this process's number of rows.
  """
  rows = process_rows(mesh, batch_size)
  sharding = NamedSharding(mesh, PartitionSpec(AXIS))
  out = []
  for array in arrays:
    if len(array) != rows.stop - rows.start:
      raise ShardingError(
          f"process {jax.process_index()} must hand over rows {rows.start}:{rows.stop} of the batch of "
          f"{batch_size} ({rows.stop - rows.start} rows); got {len(array)}.")
    out.append(jax.make_array_from_process_local_data(sharding, array, (batch_size, *np.shape(array)[1:])))
  return tuple(out)


def process_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    mesh: Mesh,
    seed: SeedLike,
    epoch: int,
    augment: Augment | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """This process's rows of each global batch of one epoch (the last partial batch dropped).

  The global batches are those of
  ``iterate_batches(x, y, batch_size, seed=seed, epoch=epoch, drop_last=True, augment=augment)``,
  whatever the number of processes; each process reads only its rows
  (:func:`process_rows`) of them. Augmentation draws its random numbers for
  the whole batch, so with ``augment`` the whole batch is read and augmented,
  and the rows taken after. Feed the rows to :func:`shard_process_batch`.
  """
  return iterate_batches(x, y, batch_size, seed=seed, epoch=epoch, drop_last=True, augment=augment,
                         rows=process_rows(mesh, batch_size))


def to_host(tree: PyTree) -> PyTree:
  """Every array of ``tree`` as a NumPy array, whole, on every process.

  One process, or an array replicated on every device: read locally.
  Otherwise the processes exchange their pieces
  (``multihost_utils.process_allgather``); every process must call it.
  """

  def one(array: Any) -> np.ndarray:
    if not isinstance(array, jax.Array) or array.is_fully_addressable:
      return np.asarray(array)
    if array.is_fully_replicated:
      return np.asarray(array.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))

  return jax.tree.map(one, tree)


def replicate(mesh: Mesh, tree: PyTree) -> PyTree:
  """Puts every leaf of ``tree`` (the same on every process) on every device of the mesh."""
  return place(tree, jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), tree))


def place(tree: PyTree, shardings: PyTree) -> PyTree:
  """Puts every leaf of ``tree`` (the same on every process) on the devices as ``shardings`` say.

  One process: ``jax.device_put``. Several: ``device_put`` refuses host
  arrays for devices of other processes (and builds arrays Orbax cannot save
  from device arrays), so each process builds its own shards from the host
  value (``jax.make_array_from_callback``); PRNG keys travel as their key data.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)

  def one(leaf: Any, sharding: NamedSharding) -> jax.Array:
    typed_key = jnp.issubdtype(jnp.result_type(leaf), jax.dtypes.prng_key)
    host = np.asarray(to_host(jax.random.key_data(leaf) if typed_key else leaf))
    array = jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.random.wrap_key_data(array, impl=jax.random.key_impl(leaf)) if typed_key else array

  return jax.tree.map(one, tree, shardings)


# ------------------------------------------------------------------ sharded train state


def weight_axis(shape: tuple[int, ...], devices: int) -> int | None:
  """The axis of ``shape`` to split over ``devices``: the longest one whose length is a
  multiple of ``devices`` (the first of equal ones); None when no axis is."""
  candidates = [axis for axis, size in enumerate(shape) if size >= devices and size % devices == 0]
  return max(candidates, key=lambda axis: shape[axis], default=None)


def _split_spec(shape: tuple[int, ...], devices: int, skip: int) -> PartitionSpec | None:
  """The spec splitting ``shape`` along :func:`weight_axis` of ``shape[skip:]``; None when none divides.

  Trailing unsplit axes are left out of the spec (``P("data")``, not
  ``P("data", None)``): the spec XLA gives the step's outputs, so that the
  next step's inputs match the compiled ones and nothing recompiles.
  """
  axis = weight_axis(tuple(shape[skip:]), devices)
  if axis is None:
    return None
  return PartitionSpec(*([None] * (skip + axis)), AXIS)


def state_shardings(state: Any, mesh: Mesh, *, num_samples: int = 1) -> tuple[Any, list[str]]:
  """The shardings of a train state split ZeRO/FSDP style over the mesh.

  Every floating-point array of ``state.params`` and ``state.opt_state`` with
  at least one axis is split along :func:`weight_axis` (the longest axis whose
  length is a multiple of the device count). When K = ``num_samples`` > 1 the
  params carry a leading Monte Carlo axis, never split: the K samples of a
  weight slice stay with its lambda. Everything else (step counters, keys,
  BatchNorm statistics) is replicated, and so are the weight arrays with no
  axis divisible by the device count (small biases, an output layer narrower
  than the mesh): they are returned by path so that the caller can report them.
  Padding them would change the shapes the network and the optimizer see.

  Args:
    state: a train state (``engine.TrainState``: ``params``, ``opt_state``,
      a ``replace`` method).
    mesh: the data mesh; its device count D is what each array is split into.
    num_samples: K, the Monte Carlo samples the params carry on axis 0 when K > 1.

  Returns:
    ``(shardings, replicated)``: a tree of ``NamedSharding`` shaped like
    ``state``; the paths (``"params/Dense_0/bias"``) of the weight arrays left whole.

  Raises:
    ShardingError: no array of the params or optimizer state can be split
      over the D devices (every weight axis shorter than D or not a multiple of
      it): sharding would save nothing.
  """
  devices = mesh.devices.size
  whole = NamedSharding(mesh, PartitionSpec())
  replicated: list[str] = []
  split = 0

  def layout(prefix: str, skip: int) -> Any:
    def one(path: tuple, leaf: Any) -> NamedSharding:
      nonlocal split
      shape = np.shape(leaf)
      if not jnp.issubdtype(leaf.dtype, jnp.floating) or len(shape) <= skip:
        return whole
      spec = _split_spec(shape, devices, skip)
      if spec is None:
        replicated.append(prefix + jax.tree_util.keystr(path, simple=True, separator="/"))
        return whole
      split += 1
      return NamedSharding(mesh, spec)

    return one

  shardings = jax.tree.map(lambda _: whole, state)
  shardings = shardings.replace(
      params=jax.tree_util.tree_map_with_path(layout("params/", 1 if num_samples > 1 else 0), state.params),
      opt_state=jax.tree_util.tree_map_with_path(layout("opt_state/", 0), state.opt_state))
  if not split:
    raise NothingToSplitError(
        f"the train state cannot be split: no weight array has an axis that is a multiple of the "
        f"{_devices_in_use(mesh)}; keep it replicated, or use a device count dividing a layer width.", devices)
  return shardings, replicated


def shard_state(mesh: Mesh, state: Any, *, num_samples: int = 1) -> tuple[Any, Any, list[str]]:
  """Places ``state`` (the same on every process) on the mesh as :func:`state_shardings` lays it out.

  Train it with ``pin_layout(step, mesh, layout)``, which keeps that layout.
  The arrays of ``state`` may share buffers with the result: use only the
  result afterwards (the step donates it).

  Returns:
    ``(sharded state, layout, paths of the weight arrays left whole)``;
    ``layout`` is the tree of shardings, for :func:`pin_layout` and for
    restoring a checkpoint into the same layout.
  """
  layout, replicated = state_shardings(state, mesh, num_samples=num_samples)
  return place(state, layout), layout, replicated


def pin_layout(
    step: Callable[..., Any], mesh: Mesh, state_layout: Any, *, compiler_options: dict[str, Any] | None = None
) -> Callable[..., Any]:
  """The train step ``step(state, x, y) -> (state, metrics)`` compiled with the state's layout fixed.

  ``jax.jit`` alone lets XLA choose the layout of the outputs, and next to
  split weights it splits arrays the input held whole (BatchNorm statistics):
  the next call would then see other input shardings and compile again.
  Here the state enters and leaves as ``state_layout`` (the shardings of
  :func:`state_shardings`), the batch split along its first axis, the
  metrics replicated; the state is donated, as in the engine.

  Args:
    step: the engine's ``make_train_step(...)``; a jitted function is
      compiled anew from its Python function (``__wrapped__``), with
      ``compiler_options`` in place of its own.
    mesh: the data mesh.
    state_layout: a tree of shardings shaped like the state.
    compiler_options: XLA's options (None: :func:`host_cpu.compiler_options`, the engine's).
  """
  batch = NamedSharding(mesh, PartitionSpec(AXIS))
  return jax.jit(getattr(step, "__wrapped__", step), in_shardings=(state_layout, batch, batch),
                 out_shardings=(state_layout, NamedSharding(mesh, PartitionSpec())), donate_argnums=0,
                 compiler_options=host_cpu.compiler_options() if compiler_options is None else compiler_options)


def state_bytes_per_device(tree: PyTree) -> int:
  """Bytes of ``tree``'s arrays held by one device: the largest sum over this process's devices.

  Counted from the arrays' addressable shards, so a replicated array counts
  whole on every device and a split one by its slice.
  """
  per_device: dict[Any, int] = {}
  for leaf in jax.tree.leaves(tree):
    if not isinstance(leaf, jax.Array):
      continue
    for shard in leaf.addressable_shards:
      data = shard.data
      if jnp.issubdtype(data.dtype, jax.dtypes.prng_key):
        data = jax.random.key_data(data)
      per_device[shard.device] = per_device.get(shard.device, 0) + data.nbytes
  return max(per_device.values(), default=0)
