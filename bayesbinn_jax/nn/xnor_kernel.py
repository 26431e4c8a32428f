"""The xnor/popcount matrix product of packed inference: a native kernel, and XLA's fallback.

``xnor_count(a, w)[m, n] = sum_k popcount(a[m, k] XOR w[n, k])`` over ``uint32``
words, in int32 (with P bit-planes ``a[p]``, the sum over p weighted by ``2^p``). Two
implementations give the same integers:

- ``"native"``: ``native/xnor_count.cc``, an XLA FFI custom call (``jax.ffi``),
  compiled on first use with the system C++ compiler (``$CXX`` or ``g++``,
  ``-O3 -march=native``, headers from ``jax.ffi.include_dir()``) into a cache
  directory (``$BAYESBINN_JAX_CACHE`` or ``~/.cache/bayesbinn_jax``), keyed by the
  source, jaxlib's version and the host. It reads the words two at a time as
  ``uint64`` (same bit layout), 4 units per AVX2 vector and 2 rows per pass, and
  counts bits by Harley-Seal carry-save adders (from 24 words a row; nibble lookups
  below).
- ``"xla"``: pure JAX, a Python-unrolled loop over the K words of
  ``population_count(a[:, k] ^ w[k, :])`` (one fused elementwise pass per word;
  a (M, N, K) broadcast is many times slower). It takes the weights transposed,
  ``(K, N)``.

With the native kernel, the first layer of a network fed ``uint8`` images runs
:func:`dot_u8` instead of the 8-bit-plane product: ``sum_k u[m, k] v[n, k]`` by table
lookup (per 4 inputs and each 4-bit half of them, a 16-entry table of partial sums,
indexed by the units' weight nibbles), the same integers at a fraction of the work. With
AVX-512 VBMI and VNNI, four such tables share a 512-bit vector, one ``VPERMB`` looks up 16
units times 16 inputs and one ``VPDPBUSD`` adds them into the units' int32 sums (4 rows
share each index vector); with AVX2, one byte shuffle looks up 32 units times 4 inputs.
:func:`xnor_bits` is :func:`xnor_count` thresholded and packed in the kernel (bit ``count <=
limit``), :func:`dot_u8_bits` the same for the uint8 first layer (bit ``2 dot - sum_k u >=
limit``), and :func:`xnor_conv_bits` the same for a convolution, its patches gathered in the
kernel from the packed feature map (no patch matrix): a binary layer, its BatchNorm and the
next layer's sign leave no int32 sums between two products.

Environment (read at each call, for measurements): ``BAYESBINN_JAX_XNOR_THREADS``
caps the threads a large product splits over (default: the cores);
``BAYESBINN_JAX_XNOR_THREAD_WORK`` scales the work per thread by ``2^value``;
``BAYESBINN_JAX_XNOR_NUDGE=0`` stops a product too small to split from waking the
helper threads for the products after it; ``BAYESBINN_JAX_XNOR_SPIN_US`` (read once)
is how long an idle helper spins before it sleeps (default 100);
``BAYESBINN_JAX_XNOR_VARIANT`` selects an alternative of the popcount product in every
native product (counts, thresholded bits, convolutions): "scalar64", "scalar32",
"avx2" (the AVX2 count), "avx2_lookup", "avx2_hs", "avx2_rows1", "avx2_reduce1",
"avx2_unblocked", "avx512_vpop256", "avx512_permute" (each row's pairs of words
permuted at every use, 2 rows per pass); "avx2" and "u8_avx2" also put :func:`dot_u8`
and :func:`dot_u8_bits` on the AVX2 lookups; see ``benchmarks/packed_inference.py``.
Unset, the kernel counts with the fastest instructions its build has: AVX-512's vector
popcount (``VPOPCNTQ`` on 512-bit vectors, each row spread once into the vectors it is
xored with, 8 rows per pass) where the host has AVX-512 VPOPCNTDQ, else AVX2
(Harley-Seal carry-save adders for long rows, nibble lookups for short ones), else
scalar. Every alternative gives the same integers (tested). The helper threads are
persistent (started on first need, one per extra core); a product is cut into chunks of
rows, or at small batch of units, taken from a shared counter, and the calling thread
never waits for a helper that has not started a chunk.

``backend()`` picks "native" when the kernel builds and loads, else "xla" (no
compiler, a failed build: :func:`native_status` says why); the environment
variable ``BAYESBINN_JAX_XNOR_KERNEL`` set to ``xla`` or ``native`` forces one
("native" then raises :class:`NativeKernelError` when it cannot be had).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayesbinn_jax.nn.packing import pack_bits

BACKENDS: tuple[str, ...] = ("native", "xla")
"""The two implementations of :func:`xnor_count`."""

ENV_BACKEND = "BAYESBINN_JAX_XNOR_KERNEL"
"""Environment variable forcing a backend ("native" or "xla")."""

ENV_CACHE = "BAYESBINN_JAX_CACHE"
"""Environment variable naming the directory of the compiled kernel."""

_TARGET = "bayesbinn_xnor_count"
_TARGET_U8 = "bayesbinn_dot_u8"
_TARGET_BITS = "bayesbinn_xnor_bits"
_TARGET_U8_BITS = "bayesbinn_dot_u8_bits"
_TARGET_CONV_BITS = "bayesbinn_xnor_conv_bits"
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native", "xnor_count.cc")
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}


class NativeKernelError(OSError):
  """The native kernel was asked for and cannot be built or loaded (carries the reason)."""


def _cache_dir() -> str:
  return os.environ.get(ENV_CACHE) or os.path.join(os.path.expanduser("~"), ".cache",
                                                   "bayesbinn_jax")


def _library_path(compiler: str) -> str:
  with open(_SOURCE, "rb") as file:
    source = file.read()
  import jaxlib  # pylint: disable=import-outside-toplevel
  key = hashlib.sha256(b"\0".join([
      source, jaxlib.__version__.encode(), platform.machine().encode(), platform.node().encode(),
      compiler.encode()])).hexdigest()[:16]
  return os.path.join(_cache_dir(), f"xnor_count-{key}.so")


def _build(path: str, compiler: str) -> None:
  """Compiles the kernel to ``path`` atomically (a temporary file, then ``os.replace``)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
  os.close(fd)
  try:
    command = [compiler, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w",
               "-I", jax.ffi.include_dir(), _SOURCE, "-o", tmp]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
      raise NativeKernelError(
          f"{compiler} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _load() -> None:
  """Builds (if needed), loads and registers the kernel once; records the outcome."""
  if "native" in _STATE:
    return
  compiler = os.environ.get("CXX") or "g++"
  try:
    if shutil.which(compiler) is None:
      raise NativeKernelError(f"no C++ compiler ({compiler!r} not found)")
    path = _library_path(compiler)
    if not os.path.exists(path):
      _build(path, compiler)
    library = ctypes.cdll.LoadLibrary(path)
    jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(library.BayesbinnXnorCount),
                                platform="cpu")
    jax.ffi.register_ffi_target(_TARGET_U8, jax.ffi.pycapsule(library.BayesbinnDotU8),
                                platform="cpu")
    jax.ffi.register_ffi_target(_TARGET_BITS, jax.ffi.pycapsule(library.BayesbinnXnorBits),
                                platform="cpu")
    jax.ffi.register_ffi_target(_TARGET_U8_BITS, jax.ffi.pycapsule(library.BayesbinnDotU8Bits),
                                platform="cpu")
    jax.ffi.register_ffi_target(_TARGET_CONV_BITS,
                                jax.ffi.pycapsule(library.BayesbinnXnorConvBits), platform="cpu")
    _STATE["native"], _STATE["reason"] = True, f"loaded {path}"
  except (OSError, subprocess.SubprocessError, AttributeError) as error:
    _STATE["native"], _STATE["reason"] = False, str(error) or type(error).__name__


def native_status() -> tuple[bool, str]:
  """``(available, reason)``: whether the native kernel loads, and the library or the error.

  Examples:
    >>> from bayesbinn_jax.nn import xnor_kernel
    >>> available, reason = xnor_kernel.native_status()
    >>> reason.startswith("loaded") == available
    True
  """
  with _LOCK:
    _load()
  return bool(_STATE["native"]), str(_STATE["reason"])


def backend(requested: str | None = None) -> str:
  """The backend to use: ``requested``, else ``$BAYESBINN_JAX_XNOR_KERNEL``, else the best.

  Raises:
    ValueError: an unknown name.
    NativeKernelError: "native" requested and the kernel cannot be had.

  Examples:
    >>> from bayesbinn_jax.nn import xnor_kernel
    >>> xnor_kernel.backend("xla")
    'xla'
    >>> xnor_kernel.backend() in xnor_kernel.BACKENDS
    True
  """
  name = requested or os.environ.get(ENV_BACKEND) or None
  if name is not None and name not in BACKENDS:
    raise ValueError(f"xnor kernel backend must be one of {', '.join(BACKENDS)}; got {name!r}.")
  if jax.default_backend() != "cpu":
    if name == "native":
      raise NativeKernelError(f"the native kernel runs on CPU; the default backend is "
                              f"{jax.default_backend()}")
    return "xla"
  available, reason = native_status()
  if name == "native" and not available:
    raise NativeKernelError(f"native xnor kernel unavailable: {reason}")
  if name is None:
    return "native" if available else "xla"
  return name


def _native_call(target: str, shape: tuple[int, int], dtype: Any, *args: Any, **attributes: Any
                 ) -> jax.Array:
  """The native kernel ``target`` on ``args`` (and integer ``attributes``), giving ``shape``
  of ``dtype``: zeros without a call when there are no rows.

  Raises:
    NativeKernelError: the native kernel cannot be had.
  """
  available, reason = native_status()
  if not available:
    raise NativeKernelError(f"native xnor kernel unavailable: {reason}")
  if shape[0] == 0:
    return jnp.zeros(shape, dtype)
  call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, dtype), vmap_method="sequential")
  return call(*args, **{name: np.int64(value) for name, value in attributes.items()})


def xnor_count(a: jax.Array, w: jax.Array, kernel: str, units: int) -> jax.Array:
  """``sum_p 2^p sum_k popcount(a[p, m, k] ^ w[., k])``, int32 (M, units), on uint32 words.

  Args:
    a: (M, K) uint32, or (P, M, K): P bit-planes, plane p weighted by 2^p; K even
      for "native".
    w: the weights in ``kernel``'s layout (:func:`weight_layout`).
    kernel: "native" or "xla" (see :func:`backend`).
    units: N, the number of weight rows.

  Examples:
    >>> import numpy as np
    >>> from bayesbinn_jax.nn import xnor_kernel
    >>> a = np.array([[0b1011, 0]], np.uint32)             # 1 row, K = 2 words
    >>> w = np.array([[0b0001, 0], [0b1111, 1]], np.uint32)  # 2 units
    >>> kernel = xnor_kernel.backend()
    >>> xnor_kernel.xnor_count(a, xnor_kernel.weight_layout(w, kernel), kernel, 2).tolist()
    [[2, 2]]
  """
  a3 = a if a.ndim == 3 else a[None]
  if kernel == "native":
    return _native_call(_TARGET, (a3.shape[1], units), jnp.int32, a3, w)
  total = jnp.zeros((a3.shape[1], units), jnp.int32)
  for p in range(a3.shape[0]):
    plane = jnp.zeros((a3.shape[1], units), jnp.int32)
    for k in range(a3.shape[2]):
      plane = plane + jax.lax.population_count(
          jnp.bitwise_xor(a3[p, :, k:k + 1], w[k][None, :])).astype(jnp.int32)
    total = total + (plane << p) if p else plane
  return total


def xnor_bits(a: jax.Array, w: jax.Array, limit: jax.Array, kernel: str, units: int) -> jax.Array:
  """Bits ``xnor_count(a, w)[m, n] <= limit[m % R, n]`` packed as :func:`~bayesbinn_jax.nn.
  packing.pack_bits` packs them, uint32 (M, ceil(units / 32)) (0 bits past ``units``).

  A binary layer's BatchNorm and the next layer's sign, as a threshold on the count, computed
  in the native kernel without writing the int32 counts ("xla": the same from
  :func:`xnor_count`).

  Args:
    a: (M, K) uint32, or (P, M, K) bit-planes, as :func:`xnor_count`.
    w: the weights in ``kernel``'s layout.
    limit: (R, units) int32 with M a multiple of R: row ``m`` is compared with ``limit[m % R]``
      (R = 1 for a dense layer; the output positions of one image for a convolution, whose
      padded taps shift the threshold).
    kernel: "native" or "xla".
    units: N.

  Examples:
    >>> import numpy as np
    >>> from bayesbinn_jax.nn import xnor_kernel
    >>> a = np.array([[0b1011, 0]], np.uint32)
    >>> w = np.array([[0b0001, 0], [0b1111, 1], [0, 0]], np.uint32)   # counts 2, 2, 3
    >>> kernel = xnor_kernel.backend()
    >>> limit = np.array([[2, 1, 3]], np.int32)
    >>> int(xnor_kernel.xnor_bits(a, xnor_kernel.weight_layout(w, kernel), limit, kernel, 3)[0, 0])
    5
  """
  a3 = a if a.ndim == 3 else a[None]
  limit = jnp.asarray(limit, jnp.int32)
  rows, words = a3.shape[1], -(-units // 32)
  if kernel == "native":
    return _native_call(_TARGET_BITS, (rows, words), jnp.uint32, a3, w, limit)
  count = xnor_count(a, w, kernel, units)
  return pack_bits((count.reshape(-1, limit.shape[0], units) <= limit[None]).reshape(rows, units))


def conv_patches(x: jax.Array, kernel_size: tuple[int, int], strides: tuple[int, int],
                 pads: tuple[tuple[int, int], tuple[int, int]], out_hw: tuple[int, int]
                 ) -> jax.Array:
  """(B, Ho, Wo, kh * kw * C) patches of ``x`` (B, H, W, C), taps in (row, column) order, each
  tap's C values side by side, zeros where the window leaves the image (``pads``: (before,
  after) rows, then columns).

  Examples:
    >>> import numpy as np
    >>> from bayesbinn_jax.nn import xnor_kernel
    >>> x = np.arange(1, 5, dtype=np.uint32).reshape(1, 2, 2, 1)     # [[1, 2], [3, 4]]
    >>> xnor_kernel.conv_patches(x, (2, 2), (1, 1), ((0, 1), (0, 1)), (2, 2))[0, :, :].tolist()
    [[[1, 2, 3, 4], [2, 0, 4, 0]], [[3, 4, 0, 0], [4, 0, 0, 0]]]
  """
  (kh, kw), (sh, sw), (ho, wo) = kernel_size, strides, out_hw
  padded = jax.lax.pad(jnp.asarray(x), jnp.zeros((), jnp.asarray(x).dtype),
                       [(0, 0, 0), (pads[0][0], pads[0][1], 0), (pads[1][0], pads[1][1], 0),
                        (0, 0, 0)])
  taps = [padded[:, i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw, :]
          for i in range(kh) for j in range(kw)]
  return jnp.concatenate(taps, axis=-1)


def xnor_conv_bits(x: jax.Array, w: jax.Array, limit: jax.Array, kernel: str, units: int,
                   kernel_size: tuple[int, int], strides: tuple[int, int],
                   pads: tuple[tuple[int, int], tuple[int, int]], out_hw: tuple[int, int]
                   ) -> jax.Array:
  """:func:`xnor_bits` of a convolution's patches (:func:`conv_patches` of ``x``, zero words
  where padded; K padded to even), uint32 (B * Ho * Wo, ceil(units / 32)).

  The native kernel gathers each block of rows' patches from the packed feature map itself,
  so no patch matrix is written; "xla" builds the patches and calls :func:`xnor_bits`.

  Args:
    x: (B, H, W, C) uint32: the packed input channels (C words per pixel).
    w: the weights over K = kh * kw * C words (tap-major) in ``kernel``'s layout.
    limit: (Ho * Wo, units) int32, row ``(oh, ow)`` for output position (oh, ow).
    kernel: "native" or "xla".
    units: N.
    kernel_size, strides, pads, out_hw: the convolution's window, as :func:`conv_patches`.

  Examples:
    >>> import numpy as np
    >>> from bayesbinn_jax.nn import xnor_kernel
    >>> x = np.array([1, 3, 0, 2], np.uint32).reshape(1, 2, 2, 1)   # 1-word pixels
    >>> w = np.array([[1, 1]], np.uint32)                          # 1 unit, taps (0, 0), (0, 1)
    >>> kernel = xnor_kernel.backend()
    >>> bits = xnor_kernel.xnor_conv_bits(x, xnor_kernel.weight_layout(w, kernel),
    ...                                   np.full((2, 1), 1, np.int32), kernel, 1,
    ...                                   (1, 2), (1, 1), ((0, 0), (0, 0)), (2, 1))
    >>> bits.ravel().tolist()                                      # counts 1 and 3 against <= 1
    [1, 0]
  """
  (kh, kw), (sh, sw), (ho, wo) = kernel_size, strides, out_hw
  x = jnp.asarray(x)
  rows, words = x.shape[0] * ho * wo, -(-units // 32)
  if kernel == "native":
    return _native_call(_TARGET_CONV_BITS, (rows, words), jnp.uint32, x, w,
                        jnp.asarray(limit, jnp.int32), kh=kh, kw=kw, sh=sh, sw=sw,
                        pt=pads[0][0], pl=pads[1][0], ho=ho, wo=wo)
  flat = conv_patches(x, kernel_size, strides, pads, out_hw).reshape(rows, -1)
  k = w.shape[0]                                                    # "xla": (K, N)
  if flat.shape[-1] < k:
    flat = jnp.pad(flat, ((0, 0), (0, k - flat.shape[-1])))
  return xnor_bits(flat, w, limit, kernel, units)


def dot_u8(u: jax.Array, w8: jax.Array, units: int) -> jax.Array:
  """``sum_k u[m, k] v[n, k]``, int32 (M, units): uint8 inputs against weight bits (native only).

  The first layer of a network fed uint8 images, by table lookup (``native/xnor_count.cc``);
  the 8-bit-plane product it replaces is ``sum_k u - 2 dot + 255 popcount(v)``.

  Args:
    u: (M, K) uint8.
    w8: the weight bits over K in the layout of :func:`u8_weight_layout`.
    units: N.

  Raises:
    NativeKernelError: the native kernel cannot be had.

  Examples:
    >>> import numpy as np
    >>> from bayesbinn_jax.nn import xnor_kernel
    >>> if xnor_kernel.native_status()[0]:
    ...   u = np.array([[1, 2, 3, 250]], np.uint8)
    ...   v = np.array([[1, 0, 1, 1], [0, 1, 0, 0]], bool)   # 2 units
    ...   w8 = xnor_kernel.u8_weight_layout(np.packbits(v, axis=1, bitorder="little"))
    ...   print(np.asarray(xnor_kernel.dot_u8(u, w8, 2)).tolist())
    ... else:
    ...   print([[254, 2]])
    [[254, 2]]
  """
  u = jnp.asarray(u)
  return _native_call(_TARGET_U8, (u.shape[0], units), jnp.int32, u, w8)


def dot_u8_bits(u: jax.Array, w8: jax.Array, limit: jax.Array, units: int) -> jax.Array:
  """Bits ``2 dot_u8(u, w8)[m, n] - sum_k u[m, k] >= limit[m % R, n]`` packed as
  :func:`~bayesbinn_jax.nn.packing.pack_bits` packs them, uint32 (M, ceil(units / 32)) (native
  only; 0 bits past ``units``).

  ``2 dot - sum_k u`` is the uint8 inputs' product with the +-1 weights: a first layer fed
  uint8 images, its BatchNorm and the next layer's sign in one native call, without int32 sums.

  Args:
    u: (M, K) uint8.
    w8: the weight bits in the layout of :func:`u8_weight_layout`.
    limit: (R, units) int32 with M a multiple of R: row ``m`` is compared with ``limit[m % R]``.
    units: N.

  Raises:
    NativeKernelError: the native kernel cannot be had.

  Examples:
    >>> import numpy as np
    >>> from bayesbinn_jax.nn import xnor_kernel
    >>> if xnor_kernel.native_status()[0]:
    ...   u = np.array([[1, 2, 3, 250]], np.uint8)
    ...   v = np.array([[1, 0, 1, 1], [0, 1, 0, 0]], bool)   # +-1 sums 252, -252
    ...   w8 = xnor_kernel.u8_weight_layout(np.packbits(v, axis=1, bitorder="little"))
    ...   limit = np.array([[252, -253]], np.int32)
    ...   print(int(xnor_kernel.dot_u8_bits(u, w8, limit, 2)[0, 0]))
    ... else:
    ...   print(3)
    3
  """
  u = jnp.asarray(u)
  return _native_call(_TARGET_U8_BITS, (u.shape[0], -(-units // 32)), jnp.uint32, u, w8,
                      jnp.asarray(limit, jnp.int32))


def u8_weight_layout(bytes_nk: np.ndarray) -> np.ndarray:
  """Weight bits (N, ceil(K / 8)) uint8 (little-endian bit order, bit ``i`` of byte ``q`` is
  input ``8 q + i``) in :func:`dot_u8`'s layout: blocks of 32 units, byte ``q`` of each unit
  side by side, (ceil(N / 32), ceil(K / 8), 32) (units padded with zero bytes).

  Examples:
    >>> import numpy as np
    >>> from bayesbinn_jax.nn import xnor_kernel
    >>> w8 = xnor_kernel.u8_weight_layout(np.array([[1, 2], [3, 4]], np.uint8))  # 2 units
    >>> w8.shape, w8[0, :, :3].tolist()
    ((1, 2, 32), [[1, 3, 0], [2, 4, 0]])
  """
  bytes_nk = np.asarray(bytes_nk, np.uint8)
  n, k8 = bytes_nk.shape
  padded = np.pad(bytes_nk, ((0, (-n) % 32), (0, 0)))
  return np.ascontiguousarray(padded.reshape(-1, 32, k8).transpose(0, 2, 1))


def weight_layout(words_nk: np.ndarray, kernel: str) -> np.ndarray:
  """The (N, K) packed uint32 weights in ``kernel``'s layout.

  "xla": (K, N). "native": K padded to even, the uint64 words of groups of 4 units
  interleaved, (ceil(N / 4), K / 2, 8) uint32 (units padded with zero words).

  Examples:
    >>> import numpy as np
    >>> from bayesbinn_jax.nn import xnor_kernel
    >>> w = np.arange(6, dtype=np.uint32).reshape(3, 2)   # 3 units, 2 words
    >>> xnor_kernel.weight_layout(w, "xla").tolist()
    [[0, 2, 4], [1, 3, 5]]
    >>> xnor_kernel.weight_layout(w, "native").tolist()   # unit j's pair at 2j, 2j + 1
    [[[0, 1, 2, 3, 4, 5, 0, 0]]]
  """
  words_nk = np.asarray(words_nk, np.uint32)
  if kernel != "native":
    return np.ascontiguousarray(np.transpose(words_nk))
  n, k = words_nk.shape
  words = np.pad(words_nk, ((0, (-n) % 4), (0, k % 2)))
  groups = words.shape[0] // 4
  pairs = words.reshape(groups, 4, words.shape[1] // 2, 2)        # (G, 4, K/2, 2)
  return np.ascontiguousarray(pairs.transpose(0, 2, 1, 3).reshape(groups, -1, 8))
