"""Bit-packed xnor/popcount inference of any network built from the binary layers, equal to
its float simulation.

**What packs.** Any function of the input built from :class:`~bayesbinn_jax.nn.BinaryDense`,
:class:`~bayesbinn_jax.nn.BinaryConv` (any kernel size, strides, "SAME", "VALID" or
explicit padding, any leading batch axes) and BatchNorm (``flax.linen.BatchNorm``,
e.g. :func:`~bayesbinn_jax.nn.BatchNorm`), with whatever plain JAX between them:
flatten and reshapes, max and average pooling, real-valued residual additions
(Bi-Real / ReActNet: a binary convolution's integer sum, BatchNorm, plus a float
shortcut, then the next layer's sign), dropout in eval mode. No network class list,
no generated names.

**How it sees the network (tracing).** The model is applied once to an example
input under ``jax.make_jaxpr`` with a ``flax.linen.intercept_methods`` interceptor
that wraps every call of a binary layer or BatchNorm in a marker primitive
``bayesbinn_layer(y, x)`` (value ``y``, the layer's output, and its input ``x``),
recording the module's path, attributes and variables. Everything else is the
plain jaxpr of the user's code, with Flax's module names in each equation's name
stack. :func:`pack` then *interprets* that jaxpr once per input shape:

- a binary layer whose input quantizer is a sign (``"ste_sign"``, ``"approx_sign"``;
  every sign has 0 -> +1) is replaced by xnor/popcount on packed bits of its input:
  ``a . w = n - 2 popcount(a XOR w)`` (XNOR-Net, BinaryNet), an exact integer;
- a BatchNorm of such an integer, when a sign reads it, becomes an integer
  threshold per channel: the float network computes ``y = BN(z)`` in float32 and
  the next layer ``sign(y)`` with 0 -> +1; ``BN`` is monotone non-decreasing in
  ``z`` (no gain, or a positive one), so ``sign(y) = +1`` iff ``z >= t`` with ``t``
  the smallest integer for which the BatchNorm *of the traced network* (its own
  equations, replayed) gives ``y >= 0``: bisection, ties included;
- reshapes and max pooling act on the integers or the bits directly (max commutes
  with a monotone threshold: a 2x2 max pool of bits is an OR);
- every other equation (average pooling, residual additions, the output
  BatchNorm, a user's ReLU on the real stream, the first layer with real inputs)
  is replayed as it is in the float network, on values that equal the float
  network's bit for bit (an integer sum below 2^24 is exact in float32), as eager
  JAX runs the float network: what depends on the variables alone is computed at
  once, op by op, and every other equation is its own XLA operation (no fused
  multiply-add).
  Hence the packed network's output equals the float simulation's, not
  approximately.

**Integer inputs.** A first binary layer (input quantizer "none") fed an
unsigned-integer input cast to float (e.g. ``uint8`` images, ``x.astype(float32)``)
runs on bit-planes: with ``u = sum_b 2^b u_b`` and ``w = 2 v - 1``,
``u . w = sum_b 2^b (popcount(v) - popcount(u_b XOR v))``, one popcount product on
8 planes, exact, and no float matrix product is left. A normalisation with a
power-of-two scale and an integer offset (``x / 256``, ``x / 128 - 1``) is folded
in: the float sums of such values are exact, and the integer sum times the scale
reproduces them. A normalisation that is not exact in float (``x / 255``) keeps
the float first layer, so the result stays equal to the float network's.

**Refusals** (:class:`PackingError`, a ValueError; one line starting with the
module path, raised before anything is written): a binary layer with real inputs
after a binary layer (``activations="real"``), kernels not exactly +-1 (pack the
mode network), BatchNorm in training mode or with statistics that are not finite,
a layer computing in a dtype other than float32/float64 (pack the float32 clone),
a binary layer inside a transformed function other than jit, and a network with
no binary layer that takes binary inputs.

**Kernels.** The popcount product runs in :mod:`bayesbinn_jax.nn.xnor_kernel`: a
native XLA FFI kernel compiled on first use, or pure XLA when no compiler is
present; both give the same integers (tested). With the native kernel, a
binary layer whose BatchNorm output reaches the next binary layer only through its
sign (and reshapes, flattens of a multiple of 32 channels, max pools) is one call
that writes the next layer's packed bits (``xnor_kernel.xnor_bits``): no int32
sums and no XLA code between the two products.

K-sample ensembles: :func:`pack_ensemble` packs K posterior samples of the binary
weights (params with a leading axis K, one set of BatchNorm statistics) and
predicts the Monte Carlo average of the K networks' softmax probabilities.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, Callable, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core
from jax.interpreters import mlir

from bayesbinn_jax.nn import xnor_kernel
from bayesbinn_jax.nn.layers import BinaryConv, BinaryDense
from bayesbinn_jax.nn.networks import ContinualMLP, MnistMLP, ToyMLP, VGGBinaryConnect
from bayesbinn_jax.nn.packing import NotBinaryError, check_pm1, pack_bits, pack_bits_np

__all__ = (
    "PackingError",
    "XnorNetwork",
    "pack",
    "pack_ensemble",
    "pack_network",
    "pack_words",
    "trace_layers",
)

WORD_BITS = 32
"""Bits per packed word (``uint32``; the native kernel reads pairs as ``uint64``)."""

NETWORKS: dict[str, type] = {cls.__name__: cls for cls in (MnistMLP, ContinualMLP,
                                                            VGGBinaryConnect, ToyMLP)}
"""The library's networks :func:`network_from_config` rebuilds, by class name."""

DEFAULT_INPUT_SHAPES: dict[type, tuple[int, ...]] = {MnistMLP: (1, 784),
                                                     VGGBinaryConnect: (1, 32, 32, 3)}
"""Example input shapes of the library's networks when no ``input_shape`` is given."""

_DTYPE_FIELDS = ("dtype", "param_dtype")
_EXACT_FLOATS = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))
_HINT = (" Pack the mode network: bb.mode_params(opt_state, params) (or "
         "bb.posterior_mode(lam)), or bb.binarize_params(params) for STE.")

pack_words = pack_bits
"""Packs booleans along the last axis into uint32 words (see :mod:`bayesbinn_jax.nn.packing`)."""


class PackingError(ValueError):
  """A network, or one of its layers, that cannot be packed; ``path`` names the module."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path, self.reason = path, reason


# --------------------------------------------------------------------------- tracing

_MARK = jex_core.Primitive("bayesbinn_layer")
_MARK.def_impl(lambda y, x, *, index: y)
_MARK.def_abstract_eval(lambda y, x, *, index: y)
mlir.register_lowering(_MARK, lambda ctx, y, x, *, index: [y])


@dataclasses.dataclass
class LayerRecord:
  """One traced call of a binary layer or BatchNorm.

  Attributes:
    index: call order in the trace.
    kind: "dense", "conv" or "batchnorm".
    path: the module's path ("BinaryDense_1", "Block_0/BinaryConv_0").
    module: the module (its attributes: quantizers, kernel size, strides, ...).
    variables: its variables as host arrays ({"params": ...}, {"batch_stats": ...}).
    in_shape, out_shape: shapes of its input and output in the trace.
    out_dtype: its output dtype.
    running_average: BatchNorm only: eval mode.
  """

  index: int
  kind: str
  path: str
  module: Any
  variables: dict
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  out_dtype: Any
  running_average: bool = True


def _kind(module: Any) -> str | None:
  if isinstance(module, BinaryDense):
    return "dense"
  if isinstance(module, BinaryConv):
    return "conv"
  if isinstance(module, nn.BatchNorm):
    return "batchnorm"
  return None


def _module_path(module: Any) -> str:
  path = "/".join(str(p) for p in module.path) if module.path else ""
  return path or type(module).__name__


def trace_layers(apply: Callable[[Any, jax.Array], Any], variables: Any,
                 example: jax.ShapeDtypeStruct | jax.Array) -> tuple[Any, list[LayerRecord]]:
  """Traces ``apply(variables, x)`` into a jaxpr with every binary layer and BatchNorm marked.

  This is the one entry point an adapter needs (e.g. Flax NNX through linen
  layers): any function that calls the linen layers of :mod:`bayesbinn_jax.nn`.

  Returns:
    ``(closed_jaxpr, records)``: the jaxpr of ``x -> outputs`` (``variables``
    closed over as constants) and one :class:`LayerRecord` per marked call.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from bayesbinn_jax.nn import MnistMLP
    >>> from bayesbinn_jax.nn.xnor import trace_layers
    >>> model = MnistMLP(num_classes=3, hidden=8, depth=1, activations="binary")
    >>> x = jnp.zeros((2, 5))
    >>> variables = model.init(jax.random.PRNGKey(0), x, train=False)
    >>> _, records = trace_layers(lambda v, x: model.apply(v, x, train=False), variables, x)
    >>> [(r.path, r.kind, r.in_shape) for r in records]  # doctest: +NORMALIZE_WHITESPACE
    [('BinaryDense_0', 'dense', (2, 5)), ('BatchNorm_0', 'batchnorm', (2, 8)),
     ('BinaryDense_1', 'dense', (2, 8)), ('BatchNorm_1', 'batchnorm', (2, 3))]
  """
  records: list[LayerRecord] = []

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    kind = _kind(module)
    if context.method_name != "__call__" or kind is None or not args:
      return next_fun(*args, **kwargs)
    x = args[0]
    y = next_fun(*args, **kwargs)
    running = True
    if kind == "batchnorm":
      flag = kwargs.get("use_running_average", args[1] if len(args) > 1 else None)
      running = bool(nn.merge_param("use_running_average", module.use_running_average, flag))
    record = LayerRecord(len(records), kind, _module_path(module), module,
                         _host(module.variables), tuple(jnp.shape(x)), tuple(jnp.shape(y)),
                         jnp.dtype(jnp.result_type(y)), running)
    records.append(record)
    return _MARK.bind(y, jnp.asarray(x), index=record.index)

  shape = jax.ShapeDtypeStruct(jnp.shape(example), jnp.result_type(example))
  with nn.intercept_methods(interceptor):
    closed = jax.make_jaxpr(lambda x: apply(variables, x))(shape)
  return closed, records


def _host(tree: Any) -> dict:
  """Variables as nested dicts of NumPy arrays (None for values computed in the trace, e.g.
  the batch statistics of a BatchNorm in training mode)."""
  def get(leaf):
    if isinstance(leaf, jax.core.Tracer):
      return None
    return np.asarray(jax.device_get(leaf))
  return jax.tree.map(get, jax.tree.map(lambda t: t, dict(tree)))


# --------------------------------------------------------------------------- values


class _Value:
  """A value of the traced network during interpretation.

  ``value`` is the array the float network has there (bit for bit); ``integer``,
  when known, the same numbers as int32, with ``bounds`` their range; ``bits`` a
  function giving ``value >= 0`` more cheaply (thresholds on the integers);
  ``after_layer``: it depends on a binary layer's output; ``constant``: it depends on
  the variables alone (computed at once, as eager JAX does); ``planes``: ``value ==
  (u + offset) * scale`` exactly for an unsigned integer input ``u`` of ``depth``
  bits, as (u, offset, scale, depth).

  Packed bits straight from the native kernel (no int32 sums, no XLA code between two
  products): ``words``, when known, gives ``pack_bits(bits())`` (uint32 words along the
  last axis); ``threshold_words(t)``, when known, gives ``pack_bits(integer >= t)`` for
  per-channel integer thresholds ``t`` (the BatchNorm that follows a binary layer).
  """

  __slots__ = ("value", "integer", "bounds", "_bits", "_bits_value", "after_layer", "planes",
               "_words", "_words_value", "threshold_words", "constant")

  def __init__(self, value: Any, *, integer: Any = None, bounds: tuple[int, int] | None = None,
               bits: Callable[[], jax.Array] | None = None, after_layer: bool = False,
               planes: tuple | None = None, words: Callable[[], jax.Array] | None = None,
               threshold_words: Callable[[np.ndarray], jax.Array] | None = None,
               constant: bool = False):
    self.value = value
    self.constant = constant
    self.integer = integer
    self.bounds = bounds
    self._bits = bits
    self._bits_value: Any = None
    self.after_layer = after_layer
    self.planes = planes
    self._words = words
    self._words_value: Any = None
    self.threshold_words = threshold_words

  def bits(self) -> jax.Array:
    """``value >= 0`` (the sign with 0 -> +1, NaN -> -1), bool."""
    if self._bits_value is None:
      if self._bits is not None:
        self._bits_value = self._bits()
      elif self.integer is not None:
        self._bits_value = self.integer >= 0
      else:
        self._bits_value = jnp.asarray(self.value) >= 0
    return self._bits_value

  def words(self) -> jax.Array | None:
    """``pack_bits(bits())`` from the kernel when known (else None)."""
    if self._words_value is None and self._words is not None:
      self._words_value = self._words()
    return self._words_value


_LAYOUT = {"reshape", "squeeze", "expand_dims", "transpose", "copy", "copy_p", "slice",
           "rev", "broadcast_in_dim"}


def _bind(eqn: Any, *args: Any) -> Any:
  """Applies the equation's primitive, with its parameters and context, to ``args``."""
  params = eqn.primitive.get_bind_params(eqn.params)
  with eqn.ctx.manager:
    return eqn.primitive.bind(*args, **params)


def _bind_as_eager(eqn: Any, args: Sequence[Any], constant: bool) -> list[Any]:
  """The equation's outputs computed as eager JAX computes the float network: on constants
  (functions of the variables alone) at once, op by op, while the packed program is traced;
  on values of the input, as its own XLA operation.

  Inside the packed program XLA would otherwise compute the constants in its own fusions (a
  BatchNorm's ``rsqrt(var + eps)``: one ulp off the eager value) and fuse the rest,
  contracting a multiply and an add into one FMA (a BatchNorm feeding an average pool): either
  moves a value near 0 across the next sign, or the logits by an ulp.
  """
  if constant:
    with jax.ensure_compile_time_eval():
      outs = _bind(eqn, *args)
    return list(outs) if eqn.primitive.multiple_results else [outs]
  outs = _bind(eqn, *args)
  return jax.lax.optimization_barrier(list(outs) if eqn.primitive.multiple_results else [outs])


def _contains_mark(jaxpr: Any) -> bool:
  for eqn in jaxpr.eqns:
    if eqn.primitive is _MARK:
      return True
    for sub in jex_core.jaxprs_in_params(eqn.params):
      if _contains_mark(sub):
        return True
  return False


def _scalar_const(value: Any) -> float | None:
  array = np.asarray(value)
  if array.size != 1 or not np.issubdtype(array.dtype, np.number):
    return None
  return float(array.reshape(()))


def _power_of_two(value: float) -> bool:
  if not np.isfinite(value) or value <= 0:
    return False
  mantissa, _ = np.frexp(value)
  return mantissa == 0.5


def _words_op(eqn: Any, before: Any, after: Any) -> Callable[[jax.Array], jax.Array] | None:
  """What a layout equation or a max pool does to words packed along the last axis (bits
  packed 32 to a word), or None when it does not act on them as on the bits: a reshape
  that keeps the last axis, or merges trailing axes whose last is a multiple of 32 (a
  flatten); a max pool (an OR of the bits) that leaves the last axis alone."""
  shape_in, shape_out = tuple(np.shape(before)), tuple(np.shape(after))
  name = eqn.primitive.name
  if name == "reshape" and eqn.params.get("dimensions") is None and shape_in and shape_out:
    if shape_out[-1] == shape_in[-1]:
      return lambda w: w.reshape(shape_out[:-1] + (w.shape[-1],))
    if shape_in[-1] % WORD_BITS == 0 and shape_out[-1] % WORD_BITS == 0:
      for j in range(len(shape_in)):
        if shape_in[:j] == shape_out[:-1] and int(np.prod(shape_in[j:])) == shape_out[-1]:
          return lambda w: w.reshape(shape_out[:-1] + (shape_out[-1] // WORD_BITS,))
    return None
  if name == "reduce_window_max":
    p = eqn.params
    if (p["window_dimensions"][-1] == 1 and p["window_strides"][-1] == 1
        and tuple(p["padding"][-1]) == (0, 0) and p["base_dilation"][-1] == 1
        and p["window_dilation"][-1] == 1):
      return lambda w: jax.lax.reduce_window(
          w, np.uint32(0), jax.lax.bitwise_or, p["window_dimensions"], p["window_strides"],
          p["padding"], p["base_dilation"], p["window_dilation"])
  return None


def _words_through(op: Callable[[jax.Array], jax.Array] | None, a: Any) -> dict:
  """The ``words`` and ``threshold_words`` of ``op(a)`` (``a``'s, through ``op``)."""
  if op is None:
    return {}
  out: dict = {}
  if a._words is not None:
    out["words"] = lambda: op(a.words())
  if a.threshold_words is not None:
    out["threshold_words"] = lambda t: op(a.threshold_words(t))
  return out


# --------------------------------------------------------------------------- program


class _Program:
  """The traced network for one input shape and dtype, interpreted with packed layers.

  Packing work (bit-packed weights, thresholds, padding corrections) is cached in
  ``cache``, shared by the programs of every input shape of one network.
  """

  def __init__(self, closed: Any, records: list[LayerRecord], kernel: str, cache: dict,
               name: str):
    self.closed = closed
    self.records = records
    self.kernel = kernel
    self.cache = cache
    self.name = name
    self.packed: list[int] = []        # indices of layers run on bits
    self.input_kinds: dict[int, str] = {}
    self.features: jax.Array | None = None
    self.products: list[dict] = []     # one per popcount product: path, rows, words, units
    self._producers: dict[Any, Any] = {}

  # ------------------------------------------------------------------ driver

  def run(self, x: jax.Array) -> list[jax.Array]:
    """The float network's outputs, computed with the packed layers."""
    self.packed, self.features, self.products = [], None, []
    jaxpr, consts = self.closed.jaxpr, self.closed.consts
    x = jnp.asarray(x)
    input_value = _Value(x)
    if jnp.issubdtype(x.dtype, jnp.unsignedinteger):
      depth = 8 * x.dtype.itemsize
      input_value = _Value(x, integer=x.astype(jnp.int32) if depth < 32 else None,
                           bounds=(0, 2 ** depth - 1), planes=(x, 0, 1.0, depth))
    outs = self._interpret(jaxpr, consts, [input_value])
    if not self.packed:
      raise PackingError(self.name, "no binary layer takes binary inputs; nothing to pack "
                         "(build the network with binary activations, e.g. "
                         "activations=\"binary\").")
    return [jnp.asarray(o.value) for o in outs]

  def _interpret(self, jaxpr: Any, consts: Sequence[Any], args: Sequence[_Value]) -> list[_Value]:
    env: dict[Any, _Value] = {}
    for var, const in zip(jaxpr.constvars, consts):
      env[var] = _Value(const, constant=True)
    for var, arg in zip(jaxpr.invars, args):
      env[var] = arg
    producers = {v: eqn for eqn in jaxpr.eqns for v in eqn.outvars}
    self._producers.update(producers)
    needed = self._needed(jaxpr, producers)

    def read(atom: Any) -> _Value:
      if isinstance(atom, jex_core.Literal):
        return _Value(atom.val, constant=True)
      return env[atom]

    for eqn in jaxpr.eqns:
      if not any(v in needed for v in eqn.outvars):
        continue
      if eqn.primitive is _MARK:
        y_atom, x_atom = eqn.invars
        y, x = env.get(y_atom), read(x_atom)
        env[eqn.outvars[0]] = self._layer(eqn, y, x, env, jaxpr, consts)
        continue
      invals = [read(a) for a in eqn.invars]
      subs = list(jex_core.jaxprs_in_params(eqn.params))
      if any(_contains_mark(s) for s in subs):
        if eqn.primitive.name not in ("pjit", "jit", "closed_call", "core_call"):
          raise PackingError(self._where(eqn), f"a binary layer inside {eqn.primitive.name}; "
                             "only jit-wrapped code can hold layers.")
        inner = eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr")
        inner_jaxpr = getattr(inner, "jaxpr", inner)
        inner_consts = getattr(inner, "consts", ())
        outs = self._interpret(inner_jaxpr, inner_consts, invals)
        for var, out in zip(eqn.outvars, outs):
          env[var] = out
        continue
      outs = self._replay(eqn, invals)
      for var, out in zip(eqn.outvars, outs):
        env[var] = out
    return [read(v) for v in jaxpr.outvars]

  def _needed(self, jaxpr: Any, producers: dict) -> set:
    """Variables the outputs depend on; a layer run on bits needs only its input."""
    needed: set = set()
    stack = [v for v in jaxpr.outvars if not isinstance(v, jex_core.Literal)]
    while stack:
      var = stack.pop()
      if var in needed:
        continue
      needed.add(var)
      eqn = producers.get(var)
      if eqn is None:
        continue
      inputs = eqn.invars
      if eqn.primitive is _MARK:
        record = self.records[eqn.params["index"]]
        if record.kind in ("dense", "conv") and record.module.input_quantizer != "none":
          inputs = eqn.invars[1:]
      stack.extend(v for v in inputs if not isinstance(v, jex_core.Literal))
    return needed

  def _where(self, eqn: Any) -> str:
    stack = str(eqn.source_info.name_stack)
    return stack or self.name

  # ------------------------------------------------------------------ replay

  def _replay(self, eqn: Any, invals: list[_Value]) -> list[_Value]:
    """An equation of the user's code, on the float network's values (exact)."""
    name = eqn.primitive.name
    after = any(v.after_layer for v in invals)
    if all(v.constant for v in invals):
      outs = _bind_as_eager(eqn, [v.value for v in invals], constant=True)
      return [_Value(o, constant=True) for o in outs]
    if len(invals) == 1 and len(eqn.outvars) == 1:
      (a,) = invals
      if name in _LAYOUT:
        out = _bind(eqn, a.value)
        integer = _bind(eqn, a.integer) if a.integer is not None else None
        bits = None
        if a._bits is not None:
          bits = lambda a=a: _bind(eqn, a.bits())
        planes = None
        if a.planes is not None:
          planes = (_bind(eqn, a.planes[0]),) + tuple(a.planes[1:])
        return [_Value(out, integer=integer, bounds=a.bounds, bits=bits, after_layer=after,
                       planes=planes, **_words_through(_words_op(eqn, a.value, out), a))]
      if name == "reduce_window_max":
        out = _bind(eqn, a.value)
        integer = _bind(eqn, a.integer) if a.integer is not None else None
        bits = None
        if a._bits is not None:
          bits = lambda a=a: _bind(eqn, a.bits().astype(jnp.int8)) > 0
        return [_Value(out, integer=integer, bounds=a.bounds, bits=bits, after_layer=after,
                       **_words_through(_words_op(eqn, a.value, out), a))]
      if name == "convert_element_type":
        out = _bind(eqn, a.value)
        new = jnp.dtype(eqn.params["new_dtype"])
        keep = new in _EXACT_FLOATS or jnp.issubdtype(new, jnp.signedinteger)
        planes = a.planes if keep and new in _EXACT_FLOATS else None
        kept = _words_through(lambda w: w, a) if keep else {}
        return [_Value(out, integer=a.integer if keep else None, bounds=a.bounds,
                       after_layer=after, planes=planes, **kept)]
    if len(invals) == 2 and name in ("mul", "add") and invals[1].planes and not invals[0].planes:
      invals = invals[::-1]
      eqn_args = [v.value for v in invals[::-1]]
    else:
      eqn_args = [v.value for v in invals]
    if len(invals) == 2 and name in ("mul", "div", "add", "sub") and invals[0].planes:
      folded = self._fold(name, invals[0], invals[1])
      if folded is not None:
        (out,) = _bind_as_eager(eqn, eqn_args, constant=False)
        return [_Value(out, after_layer=after, planes=folded)]
    outs = _bind_as_eager(eqn, eqn_args, constant=False)
    return [_Value(o, after_layer=after) for o in outs]

  @staticmethod
  def _fold(name: str, a: _Value, b: _Value) -> tuple | None:
    """The bit-plane description of ``a (op) b`` for a scalar constant ``b``, if exact."""
    c = _scalar_const(b.value) if not isinstance(b.value, jax.core.Tracer) else None
    if c is None or a.planes is None:
      return None
    u, offset, scale, depth = a.planes
    if name in ("mul", "div"):
      factor = c if name == "mul" else (1.0 / c if c != 0 else 0.0)
      if not (_power_of_two(factor) and (name == "mul" or _power_of_two(c))):
        return None
      return (u, offset, scale * factor, depth)
    shift = c if name == "add" else -c
    steps = shift / scale
    if steps != round(steps) or abs(steps) > 2 ** 20:
      return None
    return (u, offset + int(round(steps)), scale, depth)

  # ------------------------------------------------------------------ layers

  def _layer(self, eqn: Any, y: _Value | None, x: _Value, env: dict, jaxpr: Any,
             consts: Sequence[Any]) -> _Value:
    record = self.records[eqn.params["index"]]
    if record.kind == "batchnorm":
      assert y is not None  # a BatchNorm's output is always computed (see _needed)
      return self._batchnorm(record, eqn, y, x, jaxpr, consts)
    if record.out_dtype not in _EXACT_FLOATS:
      raise PackingError(record.path, f"computes in {record.out_dtype.name}; xnor packing "
                         "reproduces the float32 simulation: pack a float32 clone "
                         "(dtype=float32, param_dtype=float32).")
    words, bias = self._weights(record)
    quantizer = record.module.input_quantizer
    if quantizer == "none":
      if x.after_layer:
        raise PackingError(record.path, "real-valued inputs (input_quantizer='none') after "
                           "a binary layer; xnor packing needs binary activations into every "
                           "binary layer but the first (e.g. activations=\"binary\").")
      if x.planes is not None and self._planes_fit(record, x):
        self.input_kinds[record.index] = "integer bit-planes"
        self.packed.append(record.index)
        return self._planes_layer(record, words, bias, x)
      self.input_kinds[record.index] = "float"
      assert y is not None  # computed: a layer with real inputs keeps its float output
      return _Value(y.value, after_layer=True)
    self.input_kinds[record.index] = "binary"
    self.packed.append(record.index)
    bits = x.bits()
    self.features = bits
    packed = x.words()
    z: Any
    units = self._units(record)
    if record.kind == "dense":
      count, flat = self._dense_counts(record, words, bits, packed=packed)
      z = bits.shape[-1] - 2 * count
      base = np.full((1, count.shape[-1]), bits.shape[-1], np.int64)      # z = base - 2 count
      bits_below = lambda limit: xnor_kernel.xnor_bits(flat, words, limit, self.kernel, units)
    else:
      count, packed_map = self._conv_counts(record, words, bits, packed=packed)
      offset = self._conv_offset(record)
      z = offset - 2 * count
      base = offset.reshape(-1, offset.shape[-1]).astype(np.int64)         # per output position
      (kh, kw), strides, pads, _, out_hw = self._conv_geometry(record)
      bits_below = lambda limit: xnor_kernel.xnor_conv_bits(
          packed_map, words, limit, self.kernel, units, (kh, kw), strides, pads, out_hw)
    if bias is not None:
      z = z + bias
      base = base + bias
    n = int(np.prod(record.variables["params"]["kernel"].shape[:-1]))
    extra = 1 if bias is not None else 0
    return _Value(z.astype(record.out_dtype), integer=z, bounds=(-n - extra, n + extra),
                  after_layer=True,
                  threshold_words=self._threshold_words(bits_below, base, count.shape[:-1]))

  def _threshold_words(self, bits_below: Callable[[np.ndarray], jax.Array], base: np.ndarray,
                       lead: tuple) -> Callable[[np.ndarray], jax.Array] | None:
    """``t -> pack_bits(z >= t)`` for ``z = base - 2 count`` in one native call (bits
    ``count <= floor((base - t) / 2)``: ``bits_below(limit)``, the layer's ``xnor_bits`` or
    ``xnor_conv_bits``), or None with the XLA kernel."""
    if self.kernel != "native":
      return None

    def threshold_words(t: np.ndarray) -> jax.Array:
      limit = np.floor_divide(base - np.asarray(t, np.int64), 2)
      limit = np.clip(limit, -1, np.iinfo(np.int32).max).astype(np.int32)
      out = bits_below(limit)
      return out.reshape(tuple(lead) + (out.shape[-1],))

    return threshold_words

  def _weights(self, record: LayerRecord) -> tuple[jax.Array, jax.Array | None]:
    """(packed kernel words in the kernel's layout, bias as int32 or None), cached."""
    key = ("weights", record.index)
    if key not in self.cache:
      params = record.variables.get("params", {})
      kernel = params.get("kernel")
      if kernel is None:
        raise PackingError(record.path, "no kernel in params; params do not match the network.")
      signs = self._signs(record, "kernel", kernel)
      units = signs.shape[-1]
      # (units, ..., in) with the input channels last: one word row per tap.
      rows = np.moveaxis(signs > 0, -1, 0)
      words = pack_bits_np(rows, np.uint32).reshape(units, -1)
      if words.shape[1] % 2:  # even word counts let the native kernel read uint64
        words = np.pad(words, ((0, 0), (0, 1)))
      bias = None
      if getattr(record.module, "use_bias", False) and "bias" in params:
        bias = self._signs(record, "bias", params["bias"]).astype(np.int32)
      self.cache[key] = (xnor_kernel.weight_layout(words, self.kernel), bias)
      self.cache[("positive", record.index)] = (signs > 0).sum(
          axis=tuple(range(signs.ndim - 1))).astype(np.int64)
      self.cache[("signs", record.index)] = signs
    return self.cache[key]

  def _units(self, record: LayerRecord) -> int:
    return int(self.cache[("signs", record.index)].shape[-1])

  def _product(self, record: LayerRecord, flat: jax.Array, units: int) -> None:
    self.products.append({"path": record.path, "kind": record.kind, "op": "xnor_count",
                          "planes": int(flat.shape[0]) if flat.ndim == 3 else 1,
                          "rows": int(flat.shape[-2]), "words": int(flat.shape[-1]),
                          "units": int(units),
                          "input": self.input_kinds.get(record.index, "binary")})

  def _signs(self, record: LayerRecord, name: str, w: np.ndarray) -> np.ndarray:
    if not jnp.issubdtype(w.dtype, jnp.floating):
      raise PackingError(record.path, f"{name} has dtype {w.dtype}; a binary {name} is a "
                         "float array of +-1.")
    w = w.astype(np.float32)
    if record.module.quantizer == "ste":
      return np.where(w >= 0, 1.0, -1.0).astype(np.float32)
    try:
      return check_pm1(name, w, hint=_HINT).astype(np.float32)
    except NotBinaryError as error:
      raise PackingError(record.path, str(error)) from None

  def _pack_input(self, bits: jax.Array, words: int) -> jax.Array:
    return self._pad_words(pack_bits(bits), words)

  @staticmethod
  def _pad_words(packed: jax.Array, words: int) -> jax.Array:
    if packed.shape[-1] < words:
      packed = jnp.pad(packed, [(0, 0)] * (packed.ndim - 1) + [(0, words - packed.shape[-1])])
    return packed

  def _words_k(self, words: jax.Array) -> int:
    return 2 * words.shape[1] if self.kernel == "native" else words.shape[0]

  def _dense_counts(self, record: LayerRecord, words: jax.Array, bits: jax.Array,
                    planes: int = 0, packed: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(``sum_p 2^p popcount(bits_p XOR w)`` per unit, (..., units), and the packed rows the
    kernel read); with ``planes`` P the bits carry a leading axis of P bit-planes. ``packed``:
    the bits already packed (by the kernel of the layer before)."""
    packed = self._pad_words(packed, self._words_k(words)) if packed is not None else (
        self._pack_input(bits, self._words_k(words)))
    lead = packed.shape[1 if planes else 0:-1]
    flat = packed.reshape((planes,) * bool(planes) + (-1, packed.shape[-1]))
    units = self._units(record)
    self._product(record, flat, units)
    count = xnor_kernel.xnor_count(flat, words, self.kernel, units)
    return count.reshape(lead + (count.shape[-1],)), flat

  def _conv_geometry(self, record: LayerRecord) -> tuple:
    module = record.module
    kh, kw = tuple(module.kernel_size)
    strides = tuple(module.strides)
    spatial = record.in_shape[-3:-1]
    padding = module.padding
    if isinstance(padding, str):
      pads = jax.lax.padtype_to_pads(spatial, (kh, kw), strides, padding)
    else:
      pads = [tuple(p) for p in padding]
    out_hw = record.out_shape[-3:-1]
    return (kh, kw), strides, tuple(tuple(int(v) for v in p) for p in pads), spatial, out_hw

  def _patches(self, record: LayerRecord, words_in: jax.Array) -> tuple[jax.Array, tuple]:
    """(N, Ho, Wo, kh * kw * words) patches of the packed input, zero words where padded."""
    kernel_size, strides, pads, _, out_hw = self._conv_geometry(record)
    return xnor_kernel.conv_patches(words_in, kernel_size, strides, pads, out_hw), out_hw

  def _valid(self, record: LayerRecord) -> np.ndarray:
    """valid[p, q, a, b]: tap (a, b) of output position (p, q) reads an in-image pixel."""
    (kh, kw), (sh, sw), pads, (height, width), (ho, wo) = self._conv_geometry(record)
    rows = np.arange(ho)[:, None] * sh + np.arange(kh)[None, :] - pads[0][0]
    cols = np.arange(wo)[:, None] * sw + np.arange(kw)[None, :] - pads[1][0]
    return (((rows >= 0) & (rows < height))[:, None, :, None]
            & ((cols >= 0) & (cols < width))[None, :, None, :])

  def _conv_offset(self, record: LayerRecord) -> np.ndarray:
    """``n_valid(p) + 2 c(p, o)``, (Ho, Wo, units): ``z = offset - 2 count`` where the count
    includes, on each padded tap, the +1 weights ``c`` (padded words are 0)."""
    key = ("conv", record.index, record.in_shape[-3:])
    if key not in self.cache:
      signs = self.cache[("signs", record.index)]
      channels = signs.shape[2]
      valid = self._valid(record)
      taps_positive = (signs > 0).sum(axis=2).astype(np.int64)             # (kh, kw, O)
      padded_count = np.einsum("pqab,abo->pqo", (~valid).astype(np.int64), taps_positive)
      n_valid = channels * valid.sum(axis=(2, 3)).astype(np.int64)         # (Ho, Wo)
      self.cache[key] = (n_valid[:, :, None] + 2 * padded_count).astype(np.int32)
    return self.cache[key]

  def _conv_counts(self, record: LayerRecord, words: jax.Array, bits: jax.Array,
                   planes: int = 0, packed: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(``sum_p 2^p popcount(patch_p XOR w)`` per output position and unit, (..., Ho, Wo,
    units), on patches of the packed input padded with 0 words, and that packed input,
    (N, H, W, words), whose patches the kernel read); ``packed``: the bits already packed (by
    the kernel of the layer before)."""
    lead = bits.shape[1 if planes else 0:-3]
    channel_words = -(-bits.shape[-1] // WORD_BITS)
    if packed is not None:
      packed = packed.reshape((-1,) + packed.shape[-3:])
    else:
      packed = self._pack_input(bits.reshape((-1,) + bits.shape[-3:]), channel_words)
    patches, (ho, wo) = self._patches(record, packed)
    flat = patches.reshape((planes,) * bool(planes) + (-1, patches.shape[-1]))
    k = self._words_k(words)
    if flat.shape[-1] < k:
      flat = jnp.pad(flat, [(0, 0)] * (flat.ndim - 1) + [(0, k - flat.shape[-1])])
    units = self._units(record)
    self._product(record, flat, units)
    count = xnor_kernel.xnor_count(flat, words, self.kernel, units)
    return count.reshape(lead + (ho, wo, count.shape[-1])), packed

  # ------------------------------------------------------------------ integer inputs

  def _planes_fit(self, record: LayerRecord, x: _Value) -> bool:
    assert x.planes is not None
    _, offset, scale, depth = x.planes
    kernel = record.variables.get("params", {}).get("kernel")
    if kernel is None or depth > 16:
      return False
    n = int(np.prod(kernel.shape[:-1]))
    largest = n * (2 ** depth - 1 + abs(offset))
    return largest < 2 ** 24 and _power_of_two(scale)

  def _planes_layer(self, record: LayerRecord, words: jax.Array, bias: Any, x: _Value) -> _Value:
    """``(u + o) s . w = s (sum_b 2^b (P - popcount(u_b XOR v)) + o sum_valid w)``."""
    assert x.planes is not None
    u, offset, scale, depth = x.planes
    u = jnp.asarray(u).astype(jnp.uint32)
    positive = self.cache[("positive", record.index)]          # +1 weights per unit
    signs = self.cache[("signs", record.index)]
    shifts = jnp.arange(depth, dtype=jnp.uint32).reshape((depth,) + (1,) * u.ndim)
    planes = ((u[None] >> shifts) & 1).astype(bool)                   # (depth, *u.shape)
    # sum_b 2^b (P - c_b) = (2^depth - 1) P - sum_b 2^b c_b: one kernel call over the planes
    # (a padded conv tap counts its +1 weights in c_b and in P alike, so it adds nothing).
    top = jnp.asarray((2 ** depth - 1) * positive, jnp.int32)
    bytes_in = self.kernel == "native" and depth == 8
    rows: tuple | None = None
    if record.kind == "dense":
      weight_sum_np = signs.sum(axis=0).astype(np.int64)
      if bytes_in:
        rows = self._u8_rows(record, u.astype(jnp.uint8))
        total = self._u8_dot(record, *rows)
      else:
        total = top - self._dense_counts(record, words, planes, depth)[0]
    else:
      valid = self._valid(record)                                         # (Ho, Wo, kh, kw)
      weight_sum_np = np.einsum("pqab,abco->pqo", valid.astype(np.int64), signs.astype(np.int64))
      if bytes_in:
        rows = self._u8_rows(record, u.astype(jnp.uint8))
        total = self._u8_dot(record, *rows)
      else:
        total = top - self._conv_counts(record, words, planes, depth)[0]
    weight_sum = jnp.asarray(weight_sum_np, jnp.int32)
    z = total + offset * weight_sum if offset else total
    if bias is not None:
      z = z + bias   # the bias is added to the float sum: exact only for scale 1
      if scale != 1.0:
        raise PackingError(record.path, "a binary bias with a scaled integer input; feed the "
                           "integers unscaled.")
    value = z.astype(record.out_dtype) * jnp.asarray(scale, record.out_dtype)
    n = int(np.prod(signs.shape[:-1]))
    bound = n * (2 ** depth - 1 + abs(offset)) + 1
    threshold_words = None
    if rows is not None and scale == 1.0:
      base = offset * weight_sum_np + (0 if bias is None else np.asarray(bias, np.int64))
      threshold_words = self._u8_threshold_words(record, rows, base)
    return _Value(value, integer=z if scale == 1.0 else None, bounds=(-bound, bound),
                  after_layer=True, bits=(lambda: z >= 0), threshold_words=threshold_words)

  def _u8_threshold_words(self, record: LayerRecord, rows: tuple, base: np.ndarray
                          ) -> Callable[[np.ndarray], jax.Array]:
    """``t -> pack_bits(z >= t)`` for ``z = (2 dot - sum_k u) + base`` in one native call
    (:func:`~bayesbinn_jax.nn.xnor_kernel.dot_u8_bits`, limit ``t - base``); ``base``: the input
    offset times the weights' sum (per output position for a convolution), plus the bias."""
    flat, lead = rows
    units = self._units(record)
    base = np.asarray(base, np.int64).reshape(-1, units)               # (1 or Ho Wo, units)

    def threshold_words(t: np.ndarray) -> jax.Array:
      limit = np.clip(np.asarray(t, np.int64) - base, -np.iinfo(np.int32).max,
                      np.iinfo(np.int32).max).astype(np.int32)
      out = xnor_kernel.dot_u8_bits(flat, self.cache[("u8", record.index)], limit, units)
      return out.reshape(tuple(lead) + (out.shape[-1],))

    return threshold_words

  def _u8_rows(self, record: LayerRecord, u: jax.Array) -> tuple[jax.Array, tuple]:
    """(the rows of uint8 inputs the product reads, (M, K), and the leading shape of its
    output): the inputs of a dense layer, a convolution's patches (0 where padded); the
    weights' layout cached."""
    key = ("u8", record.index)
    signs = self.cache[("signs", record.index)]
    units = signs.shape[-1]
    if key not in self.cache:
      rows = np.moveaxis(signs > 0, -1, 0).reshape(units, -1)    # (units, kh * kw * C) or (units, K)
      self.cache[key] = xnor_kernel.u8_weight_layout(np.packbits(rows, axis=1, bitorder="little"))
    if record.kind == "dense":
      lead = u.shape[:-1]
      flat = u.reshape(-1, u.shape[-1])
    else:
      (kh, kw), (sh, sw), pads, _, (ho, wo) = self._conv_geometry(record)
      lead = u.shape[:-3] + (ho, wo)
      u4 = u.reshape((-1,) + u.shape[-3:])
      padded = jax.lax.pad(u4, jnp.uint8(0), [(0, 0, 0), (pads[0][0], pads[0][1], 0),
                                              (pads[1][0], pads[1][1], 0), (0, 0, 0)])
      taps = [padded[:, i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw, :]
              for i in range(kh) for j in range(kw)]
      flat = jnp.concatenate(taps, axis=-1).reshape(-1, kh * kw * u.shape[-1])
    self.products.append({"path": record.path, "kind": record.kind, "op": "dot_u8",
                          "planes": 8, "rows": int(flat.shape[0]), "inputs": int(flat.shape[1]),
                          "words": -(-int(flat.shape[1]) // WORD_BITS), "units": int(units),
                          "input": "uint8 table lookup"})
    return flat, lead

  def _u8_dot(self, record: LayerRecord, flat: jax.Array, lead: tuple) -> jax.Array:
    """``sum_k u_k w_k`` per unit, (..., units) or (..., Ho, Wo, units), of the rows of uint8
    inputs (:meth:`_u8_rows`) and the +-1 weights: ``2 dot(u, v) - sum_k u`` with
    :func:`~bayesbinn_jax.nn.xnor_kernel.dot_u8` (table lookup; the same integers as the
    8-bit-plane product, ``(2^8 - 1) P - sum_b 2^b popcount(u_b XOR v)``)."""
    units = self._units(record)
    dot = xnor_kernel.dot_u8(flat, self.cache[("u8", record.index)], units)
    total = 2 * dot - jnp.sum(flat, axis=-1, dtype=jnp.int32)[:, None]
    return total.reshape(tuple(lead) + (units,))

  # ------------------------------------------------------------------ batchnorm

  def _batchnorm(self, record: LayerRecord, eqn: Any, y: _Value, x: _Value, jaxpr: Any,
                 consts: Sequence[Any]) -> _Value:
    if not record.running_average:
      raise PackingError(record.path, "BatchNorm in training mode; apply the network in eval "
                         "mode (train=False / use_running_average=True).")
    stats = record.variables.get("batch_stats", {})
    mean, var = stats.get("mean"), stats.get("var")
    if mean is None or var is None:
      raise PackingError(record.path, "no batch_stats for this BatchNorm; pass the trained "
                         "batch_stats.")
    epsilon = record.module.epsilon
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var))
            and np.all(var.astype(np.float64) + epsilon > 0)):
      raise PackingError(record.path, "statistics not finite or var + epsilon <= 0; the "
                         "BatchNorm is not a monotone threshold.")
    out = _Value(y.value, after_layer=True)
    if x.integer is None or x.bounds is None or not self._monotone(record):
      return out
    x_var, y_var = eqn.invars[1], eqn.invars[0]

    bounds = x.bounds

    def bits() -> jax.Array:
      t = self._thresholds(record, jaxpr, consts, x_var, y_var, bounds)
      return x.integer >= t

    out._bits = bits
    if x.threshold_words is not None:
      threshold_words = x.threshold_words
      out._words = lambda: threshold_words(
          self._thresholds(record, jaxpr, consts, x_var, y_var, bounds))
    return out

  @staticmethod
  def _monotone(record: LayerRecord) -> bool:
    module = record.module
    axis = module.axis if isinstance(module.axis, int) else None
    if axis not in (-1, len(record.in_shape) - 1):
      return False
    if module.use_scale:
      scale = record.variables.get("params", {}).get("scale")
      return scale is not None and bool(np.all(scale > 0))
    return True

  def _thresholds(self, record: LayerRecord, jaxpr: Any, consts: Sequence[Any], x_var: Any,
                  y_var: Any, bounds: tuple[int, int]) -> np.ndarray:
    """Per channel, the smallest integer ``t`` with ``BN(t) >= 0`` (hi + 1: never), cached.

    Bisection on the traced BatchNorm's own equations (monotone in its input).
    """
    key = ("threshold", record.index)
    if key not in self.cache:
      interior = _interior(jaxpr, y_var, x_var)
      constmap = dict(zip(jaxpr.constvars, consts))
      shape, dtype = record.in_shape, x_var.aval.dtype

      def bn(z):
        env = {x_var: z}
        for eqn in interior:
          args = [a.val if isinstance(a, jex_core.Literal) else env.get(a, constmap.get(a))
                  for a in eqn.invars]
          outs = _bind(eqn, *args)
          outs = outs if eqn.primitive.multiple_results else [outs]
          env.update(zip(eqn.outvars, outs))
        return env[y_var]

      channels = shape[-1]
      evaluate = lambda t: jnp.reshape(  # op by op: each primitive compiles once
          bn(jnp.broadcast_to(t.astype(dtype), shape)) >= 0, (-1, channels))[0]
      lo = np.full(channels, bounds[0], np.int64)
      hi = np.full(channels, bounds[1] + 1, np.int64)
      with jax.ensure_compile_time_eval():
        while np.any(lo < hi):
          mid = (lo + hi) // 2
          ok = np.asarray(evaluate(jnp.asarray(mid, jnp.float32)))
          hi = np.where(ok & (lo < hi), mid, hi)
          lo = np.where(~ok & (lo < hi), mid + 1, lo)
      self.cache[key] = lo.astype(np.int32)
    return self.cache[key]


def _interior(jaxpr: Any, y_var: Any, x_var: Any) -> list:
  """The equations computing ``y_var`` from ``x_var`` and constants, in order."""
  producers = {v: eqn for eqn in jaxpr.eqns for v in eqn.outvars}
  chosen: set = set()
  stack = [y_var]
  while stack:
    var = stack.pop()
    if var is x_var or isinstance(var, jex_core.Literal):
      continue
    eqn = producers.get(var)
    if eqn is None or id(eqn) in chosen:
      continue
    if eqn.primitive is _MARK:
      raise ValueError("a BatchNorm whose statistics depend on another layer")
    chosen.add(id(eqn))
    stack.extend(eqn.invars)
  return [eqn for eqn in jaxpr.eqns if id(eqn) in chosen]


# --------------------------------------------------------------------------- network


class _Packed:
  """One packed network: traces and interprets it per input shape and dtype."""

  def __init__(self, apply: Callable, variables: Any, kernel: str, name: str):
    self.apply = apply
    self.variables = variables
    self.kernel = kernel
    self.name = name
    self.cache: dict = {}
    self.programs: dict = {}
    self.records: list[LayerRecord] | None = None

  def program(self, shape: tuple[int, ...], dtype: Any) -> tuple[_Program, Any]:
    key = (tuple(shape), jnp.dtype(dtype).name)
    if key not in self.programs:
      try:
        closed, records = trace_layers(self.apply, self.variables,
                                       jax.ShapeDtypeStruct(shape, dtype))
      except flax.errors.ScopeCollectionNotFound as error:  # e.g. {"params": ...} alone
        where = re.search(r'collection "([^"]+)" in "([^"]*)"', str(error))
        what = f"the {where[1]!r} collection that {where[2] or '/'} reads" if where else "a collection"
        raise PackingError(self.name, f"the variables lack {what}; pass every collection, e.g. "
                           "{'params': state.params, 'batch_stats': state.batch_stats}") from None
      except (TypeError, KeyError, flax.errors.FlaxError) as error:
        raise PackingError(self.name, f"the network cannot be applied to these variables and "
                           f"an input of shape {tuple(shape)} {jnp.dtype(dtype).name} "
                           f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
      program = _Program(closed, records, self.kernel, self.cache, self.name)
      out_tree = jax.tree.structure(jax.eval_shape(
          lambda x: self.apply(self.variables, x), jax.ShapeDtypeStruct(shape, dtype)))
      try:
        jax.eval_shape(program.run, jax.ShapeDtypeStruct(shape, dtype))  # packs, or refuses
      except PackingError as error:  # a fresh one-line error, without JAX's trace notes
        raise PackingError(error.path, error.reason) from None
      self.records = records
      self.programs[key] = (program, out_tree)
    return self.programs[key]

  def logits(self, x: jax.Array) -> Any:
    program, tree = self.program(jnp.shape(x), jnp.result_type(x))
    return jax.tree.unflatten(tree, program.run(x))

  def features(self, x: jax.Array) -> jax.Array:
    program, _ = self.program(jnp.shape(x), jnp.result_type(x))
    program.run(x)
    assert program.features is not None  # run() refuses a network with no packed layer
    return program.features


class XnorNetwork:
  """A packed network: ``net(x)`` gives the float network's eval-mode outputs.

  ``net(x)`` takes the float network's input and returns its outputs (e.g. logits
  (N, classes)) equal to the float32 network's, computed with xnor/popcount on
  packed bits. Each new input shape or dtype is traced once (a few hundred ms);
  calls are jitted. ``predict_proba(x)`` is ``softmax(logits)``.

  Attributes:
    num_samples: None for one network; K for an ensemble of K weight samples,
      whose ``__call__`` returns (K, N, classes) and ``predict_proba`` the mean
      of the K softmax probabilities.
    kernel: "native" or "xla" (:mod:`bayesbinn_jax.nn.xnor_kernel`).
  """

  def __init__(self, networks: Sequence[_Packed], num_samples: int | None = None):
    self._networks = list(networks)
    self.num_samples = num_samples
    self.kernel = self._networks[0].kernel
    if num_samples is None:
      self._logits = jax.jit(self._networks[0].logits)
      self._features = jax.jit(self._networks[0].features)
    else:
      self._logits = jax.jit(lambda x: jnp.stack([n.logits(x) for n in self._networks]))
      self._features = jax.jit(lambda x: jnp.stack([n.features(x) for n in self._networks]))

  def __call__(self, x: jax.Array) -> jax.Array:
    """Outputs (N, classes), or (K, N, classes) for an ensemble.

    Examples:
    >>> import jax, jax.numpy as jnp
    >>> from bayesbinn_jax.nn import MnistMLP, pack_network
    >>> model = MnistMLP(num_classes=3, hidden=8, depth=1, activations="binary")
    >>> x = jnp.arange(10.0).reshape(2, 5) - 4.0
    >>> variables = model.init(jax.random.PRNGKey(0), x, train=False)
    >>> variables["params"] = jax.tree.map(lambda w: jnp.where(w >= 0, 1.0, -1.0),
    ...                                    variables["params"])
    >>> net = pack_network(model, variables, input_shape=x.shape)
    >>> bool(jnp.array_equal(net(x), model.apply(variables, x, train=False)))
    True
    """
    return self._logits(x)

  def features(self, x: jax.Array) -> jax.Array:
    """The binary activations entering the last binary layer, bool (True is +1).

    Examples:
    >>> import jax, jax.numpy as jnp
    >>> from bayesbinn_jax.nn import MnistMLP, pack_network
    >>> model = MnistMLP(num_classes=3, hidden=8, depth=1, activations="binary")
    >>> x = jnp.arange(10.0).reshape(2, 5) - 4.0
    >>> variables = model.init(jax.random.PRNGKey(0), x, train=False)
    >>> variables["params"] = jax.tree.map(lambda w: jnp.where(w >= 0, 1.0, -1.0),
    ...                                    variables["params"])
    >>> net = pack_network(model, variables, input_shape=x.shape)
    >>> net.features(x).shape, net.features(x).dtype
    ((2, 8), dtype('bool'))
    """
    return self._features(x)

  def predict_proba(self, x: jax.Array) -> jax.Array:
    """Softmax probabilities (N, classes); an ensemble averages its K networks' probabilities.

    Examples:
    >>> import jax, jax.numpy as jnp
    >>> from bayesbinn_jax.nn import MnistMLP, pack_network
    >>> model = MnistMLP(num_classes=3, hidden=8, depth=1, activations="binary")
    >>> x = jnp.arange(10.0).reshape(2, 5) - 4.0
    >>> variables = model.init(jax.random.PRNGKey(0), x, train=False)
    >>> variables["params"] = jax.tree.map(lambda w: jnp.where(w >= 0, 1.0, -1.0),
    ...                                    variables["params"])
    >>> net = pack_network(model, variables, input_shape=x.shape)
    >>> p = net.predict_proba(x)
    >>> p.shape, bool(jnp.allclose(p.sum(-1), 1.0))
    ((2, 3), True)
    """
    probs = jax.nn.softmax(self(x), axis=-1)
    return probs if self.num_samples is None else jnp.mean(probs, axis=0)

  def products(self, x: Any) -> list[dict]:
    """The products of one call on inputs like ``x``: path, kind, op (``"xnor_count"``, or
    ``"dot_u8"`` for a uint8 first layer on the native kernel, with its ``inputs``),
    bit-planes (P), rows (M), uint32 words (K) and units (N).

    Examples:
    >>> import jax, jax.numpy as jnp
    >>> from bayesbinn_jax.nn import MnistMLP, pack_network
    >>> model = MnistMLP(num_classes=3, hidden=8, depth=1, activations="binary")
    >>> x = jnp.arange(10.0).reshape(2, 5) - 4.0
    >>> variables = model.init(jax.random.PRNGKey(0), x, train=False)
    >>> variables["params"] = jax.tree.map(lambda w: jnp.where(w >= 0, 1.0, -1.0),
    ...                                    variables["params"])
    >>> net = pack_network(model, variables, input_shape=x.shape)
    >>> [(p["path"], p["op"], p["rows"], p["words"], p["units"]) for p in net.products(x)]
    [('BinaryDense_1', 'xnor_count', 2, 2, 3)]
    """
    program, _ = self._networks[0].program(jnp.shape(x), jnp.result_type(x))
    jax.eval_shape(program.run, jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)))
    return list(program.products)

  def layers(self, x: Any) -> list[dict]:
    """Per traced layer for inputs like ``x``: path, kind and how its input is computed.

    Examples:
    >>> import jax, jax.numpy as jnp
    >>> from bayesbinn_jax.nn import MnistMLP, pack_network
    >>> model = MnistMLP(num_classes=3, hidden=8, depth=1, activations="binary")
    >>> x = jnp.arange(10.0).reshape(2, 5) - 4.0
    >>> variables = model.init(jax.random.PRNGKey(0), x, train=False)
    >>> variables["params"] = jax.tree.map(lambda w: jnp.where(w >= 0, 1.0, -1.0),
    ...                                    variables["params"])
    >>> net = pack_network(model, variables, input_shape=x.shape)
    >>> [(l["path"], l["input"]) for l in net.layers(x)]  # doctest: +NORMALIZE_WHITESPACE
    [('BinaryDense_0', 'float'), ('BatchNorm_0', '-'), ('BinaryDense_1', 'binary'),
     ('BatchNorm_1', '-')]
    """
    program, _ = self._networks[0].program(jnp.shape(x), jnp.result_type(x))
    return [{"path": r.path, "kind": r.kind,
             "input": program.input_kinds.get(r.index, "-")} for r in program.records]


# --------------------------------------------------------------------------- entry points


def pack(apply: Callable[[Any, jax.Array], Any], variables: Any,
         example: jax.ShapeDtypeStruct | jax.Array, *, kernel: str | None = None,
         name: str = "network") -> XnorNetwork:
  """Packs ``apply(variables, x)`` for xnor/popcount inference: the one general entry point.

  ``apply`` calls the linen layers of :mod:`bayesbinn_jax.nn` in eval mode (for a
  linen module: ``lambda v, x: model.apply(v, x, train=False)``). ``example``
  (an array or ``jax.ShapeDtypeStruct``) fixes the shape and dtype the network is
  checked with; other shapes are traced on first use.

  Args:
    apply: the float network as a function of (variables, input).
    variables: concrete variables (``params`` +-1, or STE latent weights with
      ``quantizer="ste"``; ``batch_stats``).
    example: an input, or its shape and dtype.
    kernel: "native" or "xla"; None picks (:func:`bayesbinn_jax.nn.xnor_kernel.backend`).
    name: the network's name in messages.

  Raises:
    PackingError: one line naming the module path and the reason.

  Examples:
    A function of the variables and the input (here a linen module's ``apply``), fed
    uint8 images: the first layer runs on their 8 bit-planes, no float product left.

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from bayesbinn_jax.nn import MnistMLP, pack
    >>> model = MnistMLP(num_classes=3, hidden=8, depth=1, activations="binary")
    >>> x = np.arange(10, dtype=np.uint8).reshape(2, 5) * 25
    >>> variables = model.init(jax.random.PRNGKey(0), x.astype(np.float32), train=False)
    >>> variables["params"] = jax.tree.map(lambda w: jnp.where(w >= 0, 1.0, -1.0),
    ...                                    variables["params"])
    >>> apply = lambda v, x: model.apply(v, x.astype(jnp.float32), train=False)
    >>> net = pack(apply, variables, x)
    >>> bool(jnp.array_equal(net(x), apply(variables, x)))
    True
    >>> [l["input"] for l in net.layers(x) if l["kind"] == "dense"]
    ['integer bit-planes', 'binary']
  """
  network = _Packed(apply, variables, xnor_kernel.backend(kernel), name)
  network.program(tuple(jnp.shape(example)), jnp.result_type(example))
  return XnorNetwork([network])


def _apply_fn(model: nn.Module) -> Callable:
  takes_train = "train" in inspect.signature(type(model).__call__).parameters
  if takes_train:
    return lambda v, x: model.apply(v, x, train=False)
  return lambda v, x: model.apply(v, x)


def _float32(model: nn.Module) -> nn.Module:
  """The float32 clone of a network with ``dtype``/``param_dtype`` fields (its simulation)."""
  fields = {f.name for f in dataclasses.fields(model)}
  changes = {k: jnp.float32 for k in _DTYPE_FIELDS if k in fields}
  return model.clone(**changes) if changes else model


def _example(model: nn.Module, input_shape: Sequence[int] | None, input_dtype: Any,
             variables: Mapping[str, Any] | None = None) -> Any:
  if input_shape is None and isinstance(model, MnistMLP) and variables is not None:
    kernel = (variables.get("params") or {}).get("BinaryDense_0", {}).get("kernel")
    if kernel is not None and np.ndim(kernel) >= 2:   # the MLP's input width, from its kernel
      input_shape = (1, int(np.shape(kernel)[-2]))
  if input_shape is None:
    for cls, shape in DEFAULT_INPUT_SHAPES.items():
      if isinstance(model, cls):
        input_shape = shape
        break
    else:
      raise ValueError(f"{type(model).__name__}: pass input_shape, the shape of an input "
                       "batch (e.g. (1, 28, 28, 1)).")
  return jax.ShapeDtypeStruct(tuple(input_shape), jnp.dtype(input_dtype))


def pack_network(model: nn.Module, variables: Mapping[str, Any], *,
                 input_shape: Sequence[int] | None = None, input_dtype: Any = jnp.float32,
                 kernel: str | None = None) -> XnorNetwork:
  """Packs a trained linen network built from the binary layers (see the module docstring).

  Args:
    model: any ``flax.linen.Module``; called as ``model.apply(variables, x,
      train=False)`` if its ``__call__`` takes ``train``, else ``model.apply(variables, x)``.
      A network with ``dtype``/``param_dtype`` fields is packed as its float32 clone.
    variables: ``{"params": ..., "batch_stats": ...}``; kernels exactly +-1
      (``quantizer="none"``, e.g. ``bb.posterior_mode(lam)``) or STE latent
      weights (``quantizer="ste"``, binarized by sign with 0 -> +1).
    input_shape: the shape of an input batch to check the network with (default
      for MnistMLP (1, 784), VGGBinaryConnect (1, 32, 32, 3)); other shapes
      work too, each traced on first use.
    input_dtype: the input dtype: float32, or an unsigned integer type for the
      bit-plane first layer.
    kernel: "native" or "xla"; None picks the native kernel when it builds.

  Returns:
    An :class:`XnorNetwork` whose outputs equal the float32 network's in eval mode.

  Raises:
    PackingError: one line naming the module path and the reason.

  Examples:
  >>> import jax, jax.numpy as jnp
  >>> from bayesbinn_jax.nn import MnistMLP, pack_network
  >>> model = MnistMLP(num_classes=3, hidden=8, depth=1, activations="binary")
  >>> x = jnp.arange(10.0).reshape(2, 5) - 4.0
  >>> variables = model.init(jax.random.PRNGKey(0), x, train=False)
  >>> variables["params"] = jax.tree.map(lambda w: jnp.where(w >= 0, 1.0, -1.0),
  ...                                    variables["params"])
  >>> net = pack_network(model, variables, input_shape=x.shape)
  >>> bool(jnp.array_equal(net(x), model.apply(variables, x, train=False)))
  True
  """
  model = _float32(model)
  example = _example(model, input_shape, input_dtype, variables)
  network = _Packed(_apply_fn(model), _variables(variables), xnor_kernel.backend(kernel),
                    type(model).__name__)
  network.program(example.shape, example.dtype)
  return XnorNetwork([network])


def _variables(variables: Mapping[str, Any]) -> dict:
  if not isinstance(variables, Mapping) or "params" not in variables:
    raise ValueError("variables must hold 'params' (and the trained 'batch_stats').")
  return {k: v for k, v in variables.items() if v is not None}


def pack_ensemble(model: nn.Module, variables: Mapping[str, Any], *,
                  input_shape: Sequence[int] | None = None, input_dtype: Any = jnp.float32,
                  kernel: str | None = None) -> XnorNetwork:
  """Packs K weight samples (params leaves with a leading axis K) sharing one batch_stats.

  The K networks' mean softmax probability (``predict_proba``) is the Monte
  Carlo predictive ``1/K sum_k p(y | x, w_k)`` with ``w_k ~ Bernoulli(sigmoid(2
  lambda))`` (``bb.sample_binary``), stored at K bits per weight.

  Raises:
    PackingError: as :func:`pack_network`; ValueError for params leaves without a
      common leading axis.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from bayesbinn_jax.nn import MnistMLP, pack_ensemble
    >>> model = MnistMLP(num_classes=3, hidden=8, depth=1, activations="binary")
    >>> x = jnp.arange(10.0).reshape(2, 5) - 4.0
    >>> variables = model.init(jax.random.PRNGKey(0), x, train=False)
    >>> samples = jax.tree.map(   # K = 2 weight samples, +-1
    ...     lambda w: jnp.stack([jnp.where(w >= 0, 1.0, -1.0), jnp.where(w >= 0.1, 1.0, -1.0)]),
    ...     variables["params"])
    >>> net = pack_ensemble(model, {"params": samples,
    ...                             "batch_stats": variables["batch_stats"]})
    >>> net.num_samples, net(x).shape, net.predict_proba(x).shape
    (2, (2, 2, 3), (2, 3))
  """
  variables = _variables(variables)
  params = variables["params"]
  sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(params)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError("params: every leaf needs the same leading sample axis K for an ensemble; "
                     f"got leading sizes {sorted(sizes, key=str)}.")
  num_samples = sizes.pop()
  assert num_samples is not None  # refused above
  model = _float32(model)
  example = _example(model, input_shape, input_dtype, variables)
  backend = xnor_kernel.backend(kernel)
  networks = []
  for k in range(num_samples):
    sample = {**variables, "params": jax.tree.map(lambda p, k=k: np.asarray(p)[k], params)}
    network = _Packed(_apply_fn(model), sample, backend, type(model).__name__)
    network.program(example.shape, example.dtype)
    networks.append(network)
  return XnorNetwork(networks, num_samples)


# --------------------------------------------------------------------------- export helpers


def binary_params(model: nn.Module, variables: Mapping[str, Any], *,
                  input_shape: Sequence[int] | None = None, ensemble: bool = False) -> dict:
  """``variables["params"]`` with every binary layer's kernel (and bias) as float32 +-1.

  ``quantizer="ste"`` layers give the sign of their latent weights (0 -> +1);
  ``"none"`` layers are checked to be exactly +-1. With ``ensemble`` the leaves
  carry a leading sample axis, kept.

  Raises:
    PackingError: naming the layer, for weights not +-1.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from bayesbinn_jax.nn import MnistMLP
    >>> from bayesbinn_jax.nn.xnor import binary_params
    >>> model = MnistMLP(num_classes=3, hidden=8, depth=1, quantizer="ste")
    >>> variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 5)), train=False)
    >>> params = binary_params(model, variables, input_shape=(1, 5))
    >>> sorted(np.unique(params["BinaryDense_0"]["kernel"]).tolist())
    [-1.0, 1.0]
  """
  variables = _variables(variables)
  params = jax.tree.map(np.asarray, variables["params"])
  model = _float32(model)
  first = jax.tree.map(lambda p: p[0], params) if ensemble else params
  closed_records = trace_layers(_apply_fn(model), {**variables, "params": first},
                                _example(model, input_shape, jnp.float32, variables))[1]
  out = jax.tree.map(lambda p: p, params)
  for record in closed_records:
    if record.kind not in ("dense", "conv"):
      continue
    node = out
    for part in record.module.path:
      node = node[part]
    for leaf in ("kernel", "bias"):
      if leaf not in node:
        continue
      w = np.asarray(node[leaf]).astype(np.float32)
      if record.module.quantizer == "ste":
        node[leaf] = np.where(w >= 0, 1.0, -1.0).astype(np.float32)
      else:
        try:
          node[leaf] = check_pm1(leaf, w, hint=_HINT).astype(np.float32)
        except NotBinaryError as error:
          raise PackingError(record.path, str(error)) from None
  return out


def network_config(model: nn.Module) -> dict:
  """The JSON-serializable constructor arguments of a library network (dtypes by name).

  ``quantizer`` is stored as "none": packed kernels are already +-1.

  Raises:
    ValueError: a network :func:`network_from_config` cannot rebuild.

  Examples:
    >>> from bayesbinn_jax.nn import MnistMLP
    >>> from bayesbinn_jax.nn.xnor import network_config
    >>> spec = network_config(MnistMLP(hidden=8, depth=1, activations="binary"))
    >>> spec["network"], spec["config"]["hidden"], spec["config"]["quantizer"]
    ('MnistMLP', 8, 'none')
  """
  name = type(model).__name__
  if NETWORKS.get(name) is not type(model):
    raise ValueError(f"{name}: only the library's networks ({', '.join(sorted(NETWORKS))}) "
                     "can be rebuilt from a file; pack others with pack_network.")
  config = {}
  for field in dataclasses.fields(model):
    if field.name in ("parent", "name"):
      continue
    value = getattr(model, field.name)
    if field.name in _DTYPE_FIELDS:
      value = jnp.dtype(value).name
    config[field.name] = list(value) if isinstance(value, tuple) else value
  config["quantizer"] = "none"
  return {"network": name, "config": config}


def network_from_config(spec: Mapping[str, Any]) -> nn.Module:
  """Rebuilds the network :func:`network_config` described; ValueError if it cannot.

  Examples:
    >>> from bayesbinn_jax.nn import MnistMLP
    >>> from bayesbinn_jax.nn.xnor import network_config, network_from_config
    >>> model = MnistMLP(hidden=8, depth=1, activations="binary", quantizer="none")
    >>> network_from_config(network_config(model)) == model
    True
  """
  name = spec.get("network") if isinstance(spec, Mapping) else None
  if name not in NETWORKS or not isinstance(spec.get("config"), Mapping):
    raise ValueError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)}")
  config = dict(spec["config"])
  for key in _DTYPE_FIELDS:
    if key in config:
      config[key] = jnp.dtype(config[key])
  try:
    return NETWORKS[name](**config)
  except (TypeError, ValueError) as error:
    raise ValueError(f"{name}: invalid configuration ({error})") from None
