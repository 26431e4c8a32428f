"""A per-layer account of a binary network's sizes and operations (larq's ``models.summary``).

:func:`summary` traces the network as :func:`~bayesbinn_jax.nn.xnor.pack_network` does
(every binary layer and BatchNorm, by module path) and gives, per layer: its kind,
the precision of its input and of its weights, its parameter count, its memory as
float32 and packed (a binary weight takes one bit, rounded up to whole bytes per
layer; a BatchNorm keeps 4 bytes per statistic, which packed inference turns into
one int32 threshold per channel when a sign reads it), and its multiply-accumulates
per example, binary (1-bit inputs and weights: xnor/popcount; 8-bit integer inputs
count 8 binary MACs each, one per bit-plane) or float. Totals follow; ``print(s)``
or ``s.table()`` gives the table.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from bayesbinn_jax.nn import xnor

__all__ = ("LayerSummary", "Summary", "summary")


@dataclasses.dataclass(frozen=True)
class LayerSummary:
  """One layer's row (MACs per example)."""

  path: str
  kind: str
  input_precision: str
  weight_precision: str
  params: int
  float32_bytes: int
  packed_bytes: int
  binary_macs: int
  float_macs: int


@dataclasses.dataclass(frozen=True)
class Summary:
  """Rows and totals of :func:`summary`."""

  layers: tuple[LayerSummary, ...]

  @property
  def binary_weights(self) -> int:
    return sum(l.params for l in self.layers if l.weight_precision == "1-bit")

  @property
  def params(self) -> int:
    return sum(l.params for l in self.layers)

  @property
  def float32_bytes(self) -> int:
    return sum(l.float32_bytes for l in self.layers)

  @property
  def packed_bytes(self) -> int:
    return sum(l.packed_bytes for l in self.layers)

  @property
  def binary_macs(self) -> int:
    return sum(l.binary_macs for l in self.layers)

  @property
  def float_macs(self) -> int:
    return sum(l.float_macs for l in self.layers)

  def table(self) -> str:
    """The rows and the totals as a fixed-width text table."""
    head = ("layer", "kind", "input", "weights", "params", "float32", "packed", "binary MACs",
            "float MACs")
    rows = [(l.path, l.kind, l.input_precision, l.weight_precision, f"{l.params:,}",
             _bytes(l.float32_bytes), _bytes(l.packed_bytes), f"{l.binary_macs:,}",
             f"{l.float_macs:,}") for l in self.layers]
    rows.append(("total", "", "", "", f"{self.params:,}", _bytes(self.float32_bytes),
                 _bytes(self.packed_bytes), f"{self.binary_macs:,}", f"{self.float_macs:,}"))
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))
    rule = "-" * len(line(head))
    ratio = self.float32_bytes / self.packed_bytes if self.packed_bytes else float("inf")
    return "\n".join([line(head), rule, *map(line, rows[:-1]), rule, line(rows[-1]),
                      f"binary weights {self.binary_weights:,}; memory {ratio:.1f}x smaller "
                      "packed"])

  def __str__(self) -> str:
    return self.table()


def _bytes(count: int) -> str:
  if count >= 2 ** 20:
    return f"{count / 2 ** 20:.2f} MiB"
  if count >= 2 ** 10:
    return f"{count / 2 ** 10:.1f} KiB"
  return f"{count} B"


_KINDS = {"dense": "BinaryDense", "conv": "BinaryConv", "batchnorm": "BatchNorm"}
_PRECISION = {"binary": "1-bit", "integer bit-planes": "8-bit int", "float": "float32"}


def summary(model: Any, variables: Mapping[str, Any], *, input_shape: Sequence[int] | None = None,
            input_dtype: Any = jnp.float32, print_table: bool = True) -> Summary:
  """Per-layer sizes and operations of a network built from the binary layers.

  Args:
    model: a linen module (as :func:`~bayesbinn_jax.nn.xnor.pack_network` takes it).
    variables: its ``params`` and ``batch_stats`` (only shapes are read when the
      network does not pack, e.g. real activations).
    input_shape: an input batch's shape (defaults as ``pack_network``'s).
    input_dtype: float32, or uint8 for the bit-plane first layer.
    print_table: print the table.

  Returns:
    A :class:`Summary` (rows, totals; ``str()`` is the table).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from bayesbinn_jax.nn import MnistMLP, summary
    >>> model = MnistMLP(num_classes=3, hidden=8, depth=1, activations="binary")
    >>> variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 5)), train=False)
    >>> s = summary(model, variables, input_shape=(1, 5), print_table=False)
    >>> [(l.path, l.input_precision, l.params) for l in s.layers]  # doctest: +NORMALIZE_WHITESPACE
    [('BinaryDense_0', 'float32', 40), ('BatchNorm_0', '-', 16), ('BinaryDense_1', '1-bit', 24),
     ('BatchNorm_1', '-', 6)]
    >>> s.binary_weights, s.binary_macs, s.float_macs   # 5 x 8 + 8 x 3 weights
    (64, 24, 40)
  """
  example = xnor._example(model, input_shape, input_dtype, variables)  # pylint: disable=protected-access
  try:
    net = xnor.pack_network(model, variables, input_shape=input_shape, input_dtype=input_dtype)
  except xnor.PackingError:
    net = None
  return summarize(xnor._apply_fn(xnor._float32(model)), variables, example,  # pylint: disable=protected-access
                   packed=net, print_table=print_table)


def summarize(apply: Any, variables: Mapping[str, Any], example: Any, *, packed: Any = None,
              print_table: bool = True) -> Summary:
  """:func:`summary` of any ``apply(variables, x)`` built from the binary layers (the
  entry :func:`~bayesbinn_jax.nn.xnor.pack` takes; the NNX adapter uses it): the layers
  as the packed network computes them, or, when it does not pack (real activations),
  as traced. ``packed``: the network already packed, if any.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from bayesbinn_jax.nn import MnistMLP
    >>> from bayesbinn_jax.nn.summary import summarize
    >>> model = MnistMLP(num_classes=3, hidden=8, depth=1, activations="binary")
    >>> x = jnp.zeros((1, 5))
    >>> variables = model.init(jax.random.PRNGKey(0), x, train=False)
    >>> apply = lambda v, x: model.apply(v, x, train=False)
    >>> s = summarize(apply, variables, x, print_table=False)
    >>> s.params, s.float32_bytes, s.packed_bytes   # 64 weights: 8 bytes packed
    (86, 344, 96)
  """
  kinds: dict[int, str] = {}
  try:
    net = packed if packed is not None else xnor.pack(apply, variables, example)
    program, _ = net._networks[0].program(  # pylint: disable=protected-access
        tuple(np.shape(example)), jnp.result_type(example))
    records, kinds = program.records, program.input_kinds
  except xnor.PackingError:
    records = xnor.trace_layers(apply, dict(variables), example)[1]
  rows = []
  for record in records:
    params = record.variables.get("params", {}) or {}
    stats = record.variables.get("batch_stats", {}) or {}
    batch = record.in_shape[0] if record.in_shape else 1
    if record.kind == "batchnorm":
      count = sum(int(np.size(v)) for v in stats.values()) + sum(
          int(np.size(v)) for v in params.values())
      rows.append(LayerSummary(record.path, "BatchNorm", "-", "float32", count, 4 * count,
                               4 * count, 0, 0))
      continue
    weights = sum(int(np.size(v)) for v in params.values())
    kernel_shape = np.shape(params["kernel"]) if "kernel" in params else ()
    fan_in = int(np.prod(kernel_shape[:-1]))
    macs = int(np.prod(record.out_shape)) // max(batch, 1) * fan_in
    quantizer = record.module.input_quantizer
    how = kinds.get(record.index, "binary" if quantizer != "none" else "float")
    binary_macs = macs if how == "binary" else 8 * macs if how == "integer bit-planes" else 0
    rows.append(LayerSummary(record.path, _KINDS[record.kind], _PRECISION[how], "1-bit", weights,
                             4 * weights, math.ceil(weights / 8), binary_macs,
                             macs if how == "float" else 0))
  result = Summary(tuple(rows))
  if print_table:
    print(result.table())
  return result
