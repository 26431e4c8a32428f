"""1-bit export of a trained binary network: every +-1 weight packed into one bit.

A binary network's params are +-1 (BayesBiNN's mode ``posterior_mode(lam)``,
Bop's params, ``binarize_params`` of STE's latent weights). :func:`save_packed`
stores each such leaf as bits, eight weights per byte::

  bits = np.packbits(w.ravel() > 0, bitorder="little")      # +1 -> 1, -1 -> 0
  w    = np.where(np.unpackbits(bits, count=w.size, bitorder="little"), 1, -1)

so a float32 network shrinks 32x (the BatchNorm statistics stay float32 beside it).

File format (``FORMAT``, version ``FORMAT_VERSION``): one uncompressed NumPy
``.npz`` archive that loads with ``allow_pickle=False``. It holds

* ``header``: UTF-8 JSON as a uint8 array, with ``format``, ``format_version``,
  ``bit_order`` ("little": bit i of byte j is element 8 j + i of the C-order
  flattened leaf; padding bits of the last byte are 0), the tree of ``params``
  and of ``batch_stats`` and the caller's ``metadata``;
* ``bits_<i>``: uint8, the packed bits of the i-th binary leaf;
* ``stats_<i>``: float32, the i-th BatchNorm statistic.

A tree node in the header is ``["dict", [[key, node], ...]]`` (key order kept),
``["leaf", {...}]`` (index, shape and dtype of a leaf) or ``["none"]`` (no
``batch_stats``). Trees are nested dicts (or Flax ``FrozenDict``) with string
keys, as Flax ``params`` and ``batch_stats`` are.

The file is written to a temporary file in the target's directory and moved
into place with ``os.replace``: ``path`` holds either the old file or the
complete new one, never a partial write. Unreadable, truncated, corrupt or
foreign files make :func:`load_packed` raise ValueError naming the file and
the problem (the archive's CRC-32 checks catch flipped bytes).

Typical use::

  lam = optax.tree_utils.tree_get(state.opt_state, "lam")  # BayesBiNN, also when wrapped
  save_packed("mnist.bbnn.npz", bb.posterior_mode(lam), state.batch_stats,
              metadata={"network": "MnistMLP", "num_classes": 10})
  # STE: save_packed(path, bb.binarize_params(state.params), ...)  (sign, 0 -> +1)
  params, batch_stats, metadata = load_packed("mnist.bbnn.npz")
  logits = MnistMLP(num_classes=10).apply(
      {"params": params, "batch_stats": batch_stats}, x, train=False)

Fully binary networks (``activations="binary"``) also load as a bit-packed
xnor/popcount inference function (:mod:`bayesbinn_jax.nn.xnor`):
:func:`save_xnor` checks that the network packs (one ValueError naming the layer
otherwise, before anything is written), stores its +-1 kernels with
:func:`save_packed` and its constructor arguments in the metadata entry
``"xnor"``; :func:`load_xnor` rebuilds the network and returns the packed
:class:`~bayesbinn_jax.nn.xnor.XnorNetwork`. With ``ensemble=True`` the params
carry a leading axis of K posterior samples (K bits per weight)::

  save_xnor("mnist.xnor.npz", MnistMLP(activations="binary"),
            {"params": bb.posterior_mode(lam), "batch_stats": state.batch_stats})
  net, metadata = load_xnor("mnist.xnor.npz")
  probs = net.predict_proba(x)
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from typing import Any, BinaryIO, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesbinn_jax._version import __version__
from bayesbinn_jax.atomic import write_atomic
from bayesbinn_jax.nn import xnor
from bayesbinn_jax.nn.packing import check_pm1, pack_bits_np, unpack_bits_np

PyTree = Any

__all__ = (
    "BIT_ORDER",
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "SizeReport",
    "XNOR_KEY",
    "load_packed",
    "load_xnor",
    "pack_bits",
    "packed_size_bytes",
    "save_packed",
    "save_xnor",
    "size_report",
    "unpack_bits",
)

FORMAT = "bayesbinn_jax.packed"
"""The ``format`` field of every packed file's header."""

FORMAT_VERSION = 1
"""The version of the file format written by :func:`save_packed`."""

BIT_ORDER = "little"
"""``np.packbits`` bit order: bit i of byte j holds element 8 j + i."""

METADATA_KEY = "bayesbinn_jax"
"""Key of the metadata entry :func:`save_packed` writes itself (library version, format)."""

XNOR_KEY = "xnor"
"""Metadata entry of :func:`save_xnor`: the network's class, constructor arguments, samples."""

_HEADER = "header"


# --------------------------------------------------------------------------- trees


def _flatten(tree: PyTree, what: str) -> tuple[Any, list[tuple[str, Any]]]:
  """(skeleton, [(path, leaf), ...]) of a tree of nested string-keyed dicts.

  The skeleton is the header's node form with ``["leaf", index]`` placeholders.
  """
  leaves: list[tuple[str, Any]] = []

  def visit(node: Any, path: tuple[str, ...]) -> Any:
    if isinstance(node, Mapping):
      items = []
      for key, child in node.items():
        if not isinstance(key, str):
          raise ValueError(
              f"{what} at {_name(what, path)} has the key {key!r}; only nested dicts with "
              "string keys (Flax params and batch_stats) can be packed.")
        items.append([key, visit(child, path + (key,))])
      return ["dict", items]
    if node is None or isinstance(node, (list, tuple)):
      raise ValueError(
          f"{what} at {_name(what, path)} is a {type(node).__name__}; only nested dicts "
          "of arrays (Flax params and batch_stats) can be packed.")
    leaves.append((_name(what, path), node))
    return ["leaf", len(leaves) - 1]

  return visit(tree, ()), leaves


def _name(what: str, path: tuple[str, ...]) -> str:
  """A leaf's path as ``params/Dense_0/kernel``."""
  return "/".join((what,) + path)


def _numpy(leaf: Any) -> np.ndarray:
  """The leaf as a host NumPy array (also for jax arrays and Python numbers)."""
  return np.asarray(jax.device_get(leaf))


# --------------------------------------------------------------------------- packing


def _is_float(dtype: np.dtype) -> bool:
  """True for NumPy floats and the ml_dtypes floats of JAX (bfloat16, ...)."""
  return bool(jnp.issubdtype(dtype, jnp.floating))


def _check_binary(name: str, w: np.ndarray) -> None:
  """Raises ValueError naming the leaf unless every element of ``w`` is exactly +-1."""
  check_pm1(name, w, hint=" Save the mode network: bb.mode_params(opt_state, params) (or "
            "bb.posterior_mode(lam)), or bb.binarize_params(params) for STE.")


def pack_bits(w: np.ndarray) -> np.ndarray:
  """``np.packbits(w.ravel() > 0, bitorder="little")``: +1 -> 1, -1 -> 0, 8 weights a byte."""
  return pack_bits_np(np.asarray(w).ravel() > 0, np.uint8)


def unpack_bits(bits: np.ndarray, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
  """The +-1 array of ``shape`` and ``dtype`` whose packed bits are ``bits``."""
  flags = unpack_bits_np(np.asarray(bits, np.uint8), math.prod(shape))
  return np.array([-1, 1], dtype)[flags.astype(np.uint8)].reshape(shape)


def packed_size_bytes(params: PyTree) -> int:
  """Bytes of the packed bits of ``params``: sum over leaves of ceil(size / 8).

  Only the shapes are read, so ``jax.eval_shape`` output works. The file adds
  the BatchNorm statistics (4 bytes each), the header and the archive's
  per-entry overhead (about 250 bytes per leaf).
  """
  _, leaves = _flatten(params, "params")
  return sum(math.ceil(math.prod(np.shape(leaf)) / 8) for _, leaf in leaves)


class SizeReport(NamedTuple):
  """Sizes of a network stored in float32 and packed, from :func:`size_report`.

  Attributes:
    num_weights: number of binary weights in params.
    num_stats: number of BatchNorm statistics.
    float32_bytes: 4 (num_weights + num_stats): params and statistics as float32.
    packed_bytes: packed bits (ceil(size / 8) per leaf) plus 4 num_stats.
    ratio: float32_bytes / packed_bytes.
  """

  num_weights: int
  num_stats: int
  float32_bytes: int
  packed_bytes: int
  ratio: float


def size_report(params: PyTree, batch_stats: PyTree | None = None) -> SizeReport:
  """Payload sizes (no file headers) of ``params`` and ``batch_stats``: float32 vs packed.

  Only the shapes are read (``jax.eval_shape`` output works).
  """
  _, weights = _flatten(params, "params")
  _, stats = _flatten(batch_stats, "batch_stats") if batch_stats is not None else (None, [])
  num_weights = sum(math.prod(np.shape(leaf)) for _, leaf in weights)
  num_stats = sum(math.prod(np.shape(leaf)) for _, leaf in stats)
  float32_bytes = 4 * (num_weights + num_stats)
  packed = packed_size_bytes(params) + 4 * num_stats
  return SizeReport(num_weights, num_stats, float32_bytes, packed,
                    float32_bytes / packed if packed else float("inf"))


# --------------------------------------------------------------------------- save


def _write_archive(file: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
  """Writes ``arrays`` as an uncompressed ``.npz`` archive to the open ``file``."""
  named: dict[str, Any] = dict(arrays)  # numpy's stub types **kwds as its own flags
  np.savez(file, **named)


def save_packed(
    path: str | os.PathLike,
    params: PyTree,
    batch_stats: PyTree | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> None:
  """Saves a binary network to ``path``, one bit per weight, atomically.

  Every leaf of ``params`` must be exactly +-1; it is stored as
  ``np.packbits(w.ravel() > 0, bitorder="little")`` with its shape and dtype.
  Every leaf of ``batch_stats`` is stored as float32 (and restored to its dtype
  by :func:`load_packed`). ``metadata`` (JSON-serializable, e.g.
  ``{"network": "MnistMLP", "num_classes": 10}``) is stored with the entry
  ``metadata["bayesbinn_jax"] = {"version", "format", "format_version", "bit_order"}``
  added (overwritten if present). ``path`` is used as given (no suffix added).

  Args:
    path: the file to write; its directory must exist.
    params: nested dicts of +-1 arrays, e.g. ``bb.posterior_mode(lam)`` or
      ``bb.binarize_params(latent_params)``.
    batch_stats: nested dicts of the BatchNorm statistics, ``{}`` or None.
    metadata: JSON-serializable dict describing the network.

  Raises:
    ValueError: naming the leaf, for a params leaf not exactly +-1 or a tree
      that is not nested string-keyed dicts; for metadata that is not a
      JSON-serializable dict.
  """
  path = os.fspath(path)
  meta = dict(metadata) if metadata is not None else {}
  if not all(isinstance(k, str) for k in meta):
    raise ValueError("metadata keys must be strings.")
  meta[METADATA_KEY] = {"version": __version__, "format": FORMAT,
                        "format_version": FORMAT_VERSION, "bit_order": BIT_ORDER}

  arrays: dict[str, np.ndarray] = {}
  param_tree, param_leaves = _flatten(params, "params")
  param_specs = []
  for index, (name, leaf) in enumerate(param_leaves):
    w = _numpy(leaf)
    _check_binary(name, w)
    arrays[f"bits_{index}"] = pack_bits(w)
    param_specs.append({"shape": list(w.shape), "dtype": w.dtype.name})

  stats_tree: Any = ["none"]
  stats_specs = []
  if batch_stats is not None:
    stats_tree, stats_leaves = _flatten(batch_stats, "batch_stats")
    for index, (name, leaf) in enumerate(stats_leaves):
      s = _numpy(leaf)
      if not _is_float(s.dtype):
        raise ValueError(f"{name} has dtype {s.dtype}; BatchNorm statistics must be floating point.")
      arrays[f"stats_{index}"] = s.astype(np.float32)
      stats_specs.append({"shape": list(s.shape), "dtype": s.dtype.name})

  header = {
      "format": FORMAT,
      "format_version": FORMAT_VERSION,
      "bit_order": BIT_ORDER,
      "params": _fill(param_tree, param_specs),
      "batch_stats": _fill(stats_tree, stats_specs),
      "metadata": meta,
  }
  try:
    text = json.dumps(header, allow_nan=False)
  except (TypeError, ValueError) as error:
    raise ValueError(f"metadata must be JSON-serializable: {error}") from None
  arrays[_HEADER] = np.frombuffer(text.encode("utf-8"), np.uint8)

  buffer = io.BytesIO()
  _write_archive(buffer, arrays)
  write_atomic(path, buffer.getvalue())


def _fill(skeleton: Any, specs: list[dict]) -> Any:
  """The skeleton with each ``["leaf", i]`` replaced by ``["leaf", {"index": i, **specs[i]}]``."""
  kind = skeleton[0]
  if kind == "dict":
    return ["dict", [[key, _fill(child, specs)] for key, child in skeleton[1]]]
  if kind == "leaf":
    return ["leaf", {"index": skeleton[1], **specs[skeleton[1]]}]
  return skeleton


# --------------------------------------------------------------------------- load


class _Corrupt(Exception):
  """A problem found while reading a packed file; re-raised as ValueError with the path."""


def _dtype(name: Any) -> np.dtype:
  try:
    return np.dtype(jnp.dtype(name))
  except TypeError:
    raise _Corrupt(f"unknown dtype {name!r} in the header") from None


def _shape(spec: dict) -> tuple[int, ...]:
  shape = spec.get("shape")
  if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
    raise _Corrupt(f"invalid shape {shape!r} in the header")
  return tuple(shape)


def _build(node: Any, read_leaf: Any, where: str) -> Any:
  """Rebuilds the tree of a header node, reading each leaf with ``read_leaf(spec, where)``."""
  if not isinstance(node, list) or not node:
    raise _Corrupt(f"malformed tree node at {where}")
  kind = node[0]
  if kind == "dict" and len(node) == 2 and isinstance(node[1], list):
    out = {}
    for item in node[1]:
      if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        raise _Corrupt(f"malformed tree node at {where}")
      out[item[0]] = _build(item[1], read_leaf, f"{where}/{item[0]}")
    return out
  if kind == "leaf" and len(node) == 2 and isinstance(node[1], dict):
    return read_leaf(node[1], where)
  raise _Corrupt(f"malformed tree node at {where}")


def load_packed(path: str | os.PathLike) -> tuple[PyTree, PyTree | None, dict[str, Any]]:
  """Loads a network saved by :func:`save_packed`.

  Returns:
    ``(params, batch_stats, metadata)``: params as nested dicts of NumPy +-1
    arrays of the saved shapes and dtypes (float32 by default); batch_stats as
    nested dicts of NumPy arrays in their saved dtype, or None if none were
    saved; the metadata dict, with the ``"bayesbinn_jax"`` entry of the
    writer (library version, format version, bit order).

  Raises:
    ValueError: naming ``path`` and the problem, for a missing or unreadable
      file, a file that is not a packed network (not an ``.npz``, no header,
      other format), one written by a newer format version, or one that is
      truncated or corrupt (bad CRC, missing entries, sizes that do not
      match the header).
  """
  path = os.fspath(path)
  try:
    return _load(path)
  except FileNotFoundError:
    raise ValueError(f"{path}: no such file.") from None
  except IsADirectoryError:
    raise ValueError(f"{path}: is a directory, not a packed network file.") from None
  except _Corrupt as error:
    raise ValueError(f"{path}: {error}.") from None
  except zipfile.BadZipFile as error:
    raise ValueError(
        f"{path}: not a packed network file, or truncated or corrupt ({error}).") from None
  except (OSError, EOFError) as error:
    raise ValueError(f"{path}: cannot be read, truncated or corrupt ({error}).") from None


def _load(path: str) -> tuple[PyTree, PyTree | None, dict[str, Any]]:
  with open(path, "rb") as file:
    if not zipfile.is_zipfile(file):
      raise _Corrupt("not a packed network file (not an .npz archive; truncated or wrong format)")
    file.seek(0)
    try:
      archive = np.load(file, allow_pickle=False)
    except ValueError as error:
      raise _Corrupt(f"not a packed network file ({error})") from None
    with archive:
      names = set(archive.files)
      if _HEADER not in names:
        raise _Corrupt("not a packed network file (no header entry)")
      header = _header(_read(archive, _HEADER))

      def read_bits(spec: dict, where: str) -> np.ndarray:
        shape, dtype = _shape(spec), _dtype(spec.get("dtype"))
        bits = _read(archive, f"bits_{_index(spec, where)}")
        expected = math.ceil(math.prod(shape) / 8)
        if bits.dtype != np.uint8 or bits.shape != (expected,):
          raise _Corrupt(
              f"{where} holds {bits.shape} {bits.dtype} bits; the header's shape {shape} "
              f"needs ({expected},) uint8")
        return unpack_bits(bits, shape, dtype)

      def read_stats(spec: dict, where: str) -> np.ndarray:
        shape, dtype = _shape(spec), _dtype(spec.get("dtype"))
        stats = _read(archive, f"stats_{_index(spec, where)}")
        if stats.dtype != np.float32 or stats.shape != shape:
          raise _Corrupt(
              f"{where} holds {stats.shape} {stats.dtype}; the header says {shape} float32")
        return stats.astype(dtype)

      params = _build(header["params"], read_bits, "params")
      stats_node = header["batch_stats"]
      batch_stats = None if stats_node == ["none"] else _build(stats_node, read_stats, "batch_stats")
  return params, batch_stats, header["metadata"]


def _index(spec: dict, where: str) -> int:
  index = spec.get("index")
  if not isinstance(index, int) or index < 0:
    raise _Corrupt(f"invalid leaf index {index!r} at {where} in the header")
  return index


def _read(archive: Any, name: str) -> np.ndarray:
  """One entry of the archive; missing or unreadable entries are corrupt."""
  try:
    return archive[name]
  except KeyError:
    raise _Corrupt(f"the entry {name!r} is missing (truncated or corrupt file)") from None
  except (ValueError, zipfile.BadZipFile, EOFError, OSError) as error:
    raise _Corrupt(f"the entry {name!r} is corrupt ({error})") from None


def _header(raw: np.ndarray) -> dict[str, Any]:
  """The parsed and checked JSON header."""
  if raw.dtype != np.uint8 or raw.ndim != 1:
    raise _Corrupt("not a packed network file (the header is not UTF-8 bytes)")
  try:
    header = json.loads(raw.tobytes().decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise _Corrupt(f"the header is not valid JSON ({error})") from None
  if not isinstance(header, dict) or header.get("format") != FORMAT:
    found = header.get("format") if isinstance(header, dict) else None
    raise _Corrupt(f"not a packed network file (format {found!r}, expected {FORMAT!r})")
  version = header.get("format_version")
  if not isinstance(version, int) or version < 1:
    raise _Corrupt(f"invalid format_version {version!r}")
  if version > FORMAT_VERSION:
    raise _Corrupt(
        f"written with format version {version}; this bayesbinn_jax reads up to "
        f"{FORMAT_VERSION}: upgrade bayesbinn_jax")
  if header.get("bit_order") != BIT_ORDER:
    raise _Corrupt(f"unsupported bit order {header.get('bit_order')!r}")
  for key in ("params", "batch_stats"):
    if key not in header:
      raise _Corrupt(f"the header has no {key!r} tree")
  if not isinstance(header.get("metadata"), dict):
    raise _Corrupt("the header's metadata is not a dict")
  return header


# --------------------------------------------------------------------------- xnor


def save_xnor(
    path: str | os.PathLike,
    model: Any,
    variables: Mapping[str, PyTree],
    *,
    ensemble: bool = False,
    input_shape: tuple[int, ...] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
  """Saves a fully binary network for xnor/popcount inference, one bit per weight, atomically.

  The network is packed first (:func:`bayesbinn_jax.nn.xnor.pack_network`, or
  ``pack_ensemble``), so a network that is not fully binary is refused before
  any byte is written. The file is a :func:`save_packed` file whose metadata
  entry ``"xnor"`` holds ``{"network", "config", "num_samples", "input_shape"}``.

  Args:
    path: the file to write; its directory must exist.
    model: a supported network (``MnistMLP``, ``ContinualMLP``,
      ``VGGBinaryConnect``) with ``activations="binary"``.
    variables: ``{"params", "batch_stats"}``; kernels +-1 (or STE latent
      weights with ``quantizer="ste"``, saved as their sign).
    ensemble: params leaves carry a leading axis of K weight samples.
    input_shape: the shape of an input batch, batch axis first (e.g. ``(1, 32, 32, 3)``
      for the VGG, ``(1, 784)`` for the MLP); the library's networks have defaults.
    metadata: more JSON-serializable entries (the ``"xnor"`` key is reserved).

  Raises:
    ValueError: one line naming the layer and the reason (not fully binary,
      weights not +-1, unsupported network, bad statistics), or bad metadata.
  """
  pack = xnor.pack_ensemble if ensemble else xnor.pack_network
  net = pack(model, variables, input_shape=input_shape)
  meta = dict(metadata) if metadata is not None else {}
  meta[XNOR_KEY] = {**xnor.network_config(model), "num_samples": net.num_samples,
                    "input_shape": list(input_shape) if input_shape is not None else None}
  params = xnor.binary_params(model, variables, input_shape=input_shape, ensemble=ensemble)
  save_packed(path, params, variables["batch_stats"], metadata=meta)


def load_xnor(path: str | os.PathLike) -> tuple[xnor.XnorNetwork, dict[str, Any]]:
  """Loads a file written by :func:`save_xnor` as a packed xnor network.

  Returns:
    ``(net, metadata)``: the :class:`~bayesbinn_jax.nn.xnor.XnorNetwork`
    (``net(x)`` logits, ``net.predict_proba(x)``) and the file's metadata.

  Raises:
    ValueError: naming ``path``, for every :func:`load_packed` error, and for a
      packed file without xnor metadata or whose network cannot be rebuilt.
  """
  path = os.fspath(path)
  params, batch_stats, metadata = load_packed(path)
  spec = metadata.get(XNOR_KEY)
  if not isinstance(spec, dict):
    raise ValueError(f"{path}: not an xnor network file (no {XNOR_KEY!r} metadata); save it "
                     "with save_xnor, or read its weights with load_packed.")
  try:
    model = xnor.network_from_config(spec)
    variables = {"params": params, "batch_stats": batch_stats}
    shape = spec.get("input_shape")
    pack = xnor.pack_network if spec.get("num_samples") is None else xnor.pack_ensemble
    net = pack(model, variables, input_shape=tuple(shape) if shape else None)
  except ValueError as error:
    raise ValueError(f"{path}: {error}") from None
  return net, metadata
