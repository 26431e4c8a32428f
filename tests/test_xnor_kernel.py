"""Tests of the native kernels of bayesbinn_jax.nn.xnor_kernel against NumPy transcriptions.

``dot_u8`` (uint8 inputs against weight bits, by table lookup: the first layer of a network
fed uint8 images; the default, AVX-512 VBMI + VNNI where built, and the AVX2 lookups,
``u8_avx2``) is checked against ``u @ v.T`` in int64 and against the 8-bit-plane
popcount product it replaces (``sum_k u - 2 dot + 255 popcount(v)``), for sizes that are not
multiples of 4, 8 or 32 inputs or of 32 units, more than 2048 inputs (the 16-bit sums
flushed), one row and many, rows split over threads, eager and jitted; ``dot_u8_bits`` (its
+-1 sums thresholded and packed) against a NumPy transcription. ``xnor_bits`` likewise. Each measured
alternative of the popcount kernel (``$BAYESBINN_JAX_XNOR_VARIANT``: scalar uint64 and
uint32 words, the AVX2 default, nibble lookups only, Harley-Seal only, one row per pass, a
reduction per word, unblocked weights, AVX-512's vector popcount on 256-bit vectors and with
a permute per pair of words; the default is the fastest the build has, 512-bit vector popcount
on rows spread once, 8 a pass, on an AVX-512 VPOPCNTDQ host)
and the one-thread limit give the XLA fallback's integers bit for bit, also with every
product split into chunks of rows and of units over the persistent helper threads; the
thresholded kernels are checked under the default and the AVX2 count. On a host without
AVX-512 the AVX-512 variants fall back to the default (a build without AVX or AVX-512 is
checked by hand with a ``$CXX`` wrapper adding ``-mno-avx512f`` or ``-mno-avx2 -mno-avx``).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from bayesbinn_jax.nn import xnor_kernel

pytestmark = pytest.mark.skipif(not xnor_kernel.native_status()[0],
                                reason="no native kernel here")


def _dot_u8_case(m, k, n, seed):
  rng = np.random.default_rng(seed)
  u = rng.integers(0, 256, (m, k), dtype=np.uint8)
  u[0, : min(k, 9)] = 255                                      # the largest values
  v = rng.random((n, k)) < 0.5
  v[0] = True                                                  # a unit with every weight +1
  w8 = xnor_kernel.u8_weight_layout(np.packbits(v, axis=1, bitorder="little"))
  return u, v, w8


_U8_VARIANTS = ["", "u8_avx2"]   # the default (AVX-512 VBMI + VNNI where built), AVX2 lookups


@pytest.mark.parametrize("variant", _U8_VARIANTS)
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (1, 7, 33), (3, 13, 32), (2, 784, 70),
                                   (5, 2051, 3), (1, 4100, 65), (4, 16, 48), (9, 40, 20),
                                   (11, 17, 16)])
def test_dot_u8_is_the_integer_product(variant, m, k, n, monkeypatch):
  """Sizes around the kernels' steps: inputs in chunks of 16 (a lone last weight byte when
  ceil(K / 8) is odd), units in blocks of 32 read as two halves of 16 (N = 16, 20, 48), rows
  in passes of 4 (m = 4, 9, 11: whole passes and rows left over)."""
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_VARIANT", variant)
  u, v, w8 = _dot_u8_case(m, k, n, m * k + n)
  expected = u.astype(np.int64) @ v.T.astype(np.int64)
  assert_array_equal(np.asarray(xnor_kernel.dot_u8(u, w8, n)), expected)            # eager
  jitted = jax.jit(lambda u, w: xnor_kernel.dot_u8(u, w, n))
  assert_array_equal(np.asarray(jitted(u, w8)), expected)
  assert expected[0, 0] == int(u[0].astype(np.int64).sum())   # the all-+1 unit sums the row


def test_dot_u8_gives_the_bit_plane_products_integers():
  """``sum_b 2^b popcount(u_b XOR v) = sum_k u - 2 dot + 255 popcount(v)``, on the XLA
  fallback's bit-plane product of the same bits."""
  m, k, n = 4, 100, 37
  u, v, w8 = _dot_u8_case(m, k, n, 1)
  planes = ((u[None] >> np.arange(8, dtype=np.uint8)[:, None, None]) & 1).astype(bool)
  words = np.stack([np.packbits(np.pad(p, ((0, 0), (0, 28))), axis=1, bitorder="little")
                    .view("<u4") for p in planes])                     # (8, m, 4) uint32
  weights = np.packbits(np.pad(v, ((0, 0), (0, 28))), axis=1, bitorder="little").view("<u4")
  counts = np.asarray(xnor_kernel.xnor_count(
      words, xnor_kernel.weight_layout(weights, "xla"), "xla", n))
  dot = np.asarray(xnor_kernel.dot_u8(u, w8, n)).astype(np.int64)
  assert_array_equal(counts, u.astype(np.int64).sum(1)[:, None] - 2 * dot
                     + 255 * v.sum(1)[None, :])


@pytest.mark.parametrize("variant", _U8_VARIANTS)
def test_dot_u8_rows_split_over_threads_and_one_thread(variant, monkeypatch):
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_VARIANT", variant)
  m, k, n = 67, 300, 130                    # 2.6M products: more than one thread's share
  u, v, w8 = _dot_u8_case(m, k, n, 7)
  expected = u.astype(np.int64) @ v.T.astype(np.int64)
  assert_array_equal(np.asarray(xnor_kernel.dot_u8(u, w8, n)), expected)
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_THREADS", "1")
  assert_array_equal(np.asarray(xnor_kernel.dot_u8(u, w8, n)), expected)


def test_dot_u8_refuses_a_weight_layout_of_other_inputs():
  u, _, w8 = _dot_u8_case(2, 20, 5, 3)
  with pytest.raises(Exception, match="dot_u8: expected u"):
    jax.block_until_ready(xnor_kernel.dot_u8(u[:, :8], w8, 5))


@pytest.mark.parametrize("variant", ["", "scalar64", "scalar32", "avx2", "avx2_lookup", "avx2_hs",
                                     "avx2_rows1", "avx2_reduce1", "avx2_unblocked",
                                     "avx512_vpop256", "avx512_permute"])
@pytest.mark.parametrize("p,m,k,n", [(1, 1, 64, 70), (3, 5, 6, 9), (8, 2, 26, 33),
                                     (1, 600, 36, 130), (1, 3, 1000, 70),  # 1000: 3 weight blocks
                                     (1, 100, 64, 2048), (1, 1, 144, 512),  # MLP and VGG shapes
                                     (1, 7, 6, 5), (1, 6, 30, 4), (1, 9, 4, 7)])  # rows left over
def test_popcount_variants_equal_the_xla_fallback(variant, p, m, k, n, monkeypatch):
  rng = np.random.default_rng(p * m + k * n)
  a = rng.integers(0, 2 ** 32, (p, m, k), dtype=np.uint32)
  w = rng.integers(0, 2 ** 32, (n, k), dtype=np.uint32)
  expected = np.asarray(xnor_kernel.xnor_count(a, xnor_kernel.weight_layout(w, "xla"), "xla", n))
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_VARIANT", variant)
  native = jax.jit(lambda a, w: xnor_kernel.xnor_count(a, w, "native", n))
  assert_array_equal(np.asarray(native(a, xnor_kernel.weight_layout(w, "native"))), expected)
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_THREADS", "1")
  assert_array_equal(np.asarray(native(a, xnor_kernel.weight_layout(w, "native"))), expected)


@pytest.mark.parametrize("variant", ["", "avx2", "avx2_lookup", "avx2_hs", "scalar64"])
@pytest.mark.parametrize("threads", ["2", "3", "5"])
@pytest.mark.parametrize("p,m,k,n", [(1, 1, 64, 2048), (1, 3, 38, 70), (2, 1, 18, 130),
                                     (1, 100, 64, 9), (1, 7, 496, 33)])
def test_popcount_split_over_threads_equals_the_xla_fallback(variant, threads, p, m, k, n,
                                                              monkeypatch):
  """Every product split into chunks for the helper threads (the work per thread shrunk to
  one word): one row's units split (batch 1), a few rows and their units, many rows; widths
  that are no multiple of 64 bits and unit counts no multiple of 4; more threads than cores
  (the calling thread takes the chunks no helper takes). Harley-Seal flushes its byte
  counters after 31 rounds of 8 words: 496 uint32 words are 31 rounds."""
  rng = np.random.default_rng(m * k + n + p)
  a = rng.integers(0, 2 ** 32, (p, m, k), dtype=np.uint32)
  w = rng.integers(0, 2 ** 32, (n, k), dtype=np.uint32)
  a[0, 0] = w[0]                                      # unit 0 matches row 0: a zero count
  expected = np.asarray(xnor_kernel.xnor_count(a, xnor_kernel.weight_layout(w, "xla"), "xla", n))
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_VARIANT", variant)
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_THREADS", threads)
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_THREAD_WORK", "-40")
  native = jax.jit(lambda a, w: xnor_kernel.xnor_count(a, w, "native", n))
  for _ in range(3):                                  # the helpers asleep, then spinning
    assert_array_equal(np.asarray(native(a, xnor_kernel.weight_layout(w, "native"))), expected)
  if p == 1:
    assert expected[0, 0] == 0


@pytest.mark.parametrize("variant", _U8_VARIANTS)
@pytest.mark.parametrize("threads", ["2", "5"])
@pytest.mark.parametrize("m,k,n", [(1, 784, 2048), (3, 27, 130), (2, 2051, 33)])
def test_dot_u8_split_over_threads(variant, threads, m, k, n, monkeypatch):
  """The uint8 product split into chunks of rows and of blocks of 32 units (batch 1: units)."""
  u, v, w8 = _dot_u8_case(m, k, n, m + k + n)
  expected = u.astype(np.int64) @ v.T.astype(np.int64)
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_VARIANT", variant)
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_THREADS", threads)
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_THREAD_WORK", "-40")
  for _ in range(3):
    assert_array_equal(np.asarray(xnor_kernel.dot_u8(u, w8, n)), expected)


def _below_words(count, limit):
  """NumPy transcription of xnor_bits: bit b of word q of row m is count[m, 32 q + b] <=
  limit[m % R, 32 q + b], little-endian bit order, zero bits past the units."""
  rows, units = count.shape
  below = count.reshape(-1, limit.shape[0], units) <= limit[None]
  below = np.pad(below.reshape(rows, units), ((0, 0), (0, (-units) % 32)))
  weights = np.uint64(1) << np.arange(32, dtype=np.uint64)
  return (below.reshape(rows, -1, 32).astype(np.uint64) * weights).sum(-1).astype(np.uint32)


@pytest.mark.parametrize("variant", ["", "avx2"])
@pytest.mark.parametrize("threads", ["1", "2", "5"])
@pytest.mark.parametrize("p,m,k,n,r", [(1, 1, 64, 2048, 1), (1, 100, 64, 2048, 1),
                                       (1, 7, 18, 130, 1), (2, 6, 4, 33, 3), (8, 5, 26, 70, 5),
                                       (1, 64, 36, 128, 16), (1, 3, 2, 31, 1), (1, 70, 2, 1, 1)])
def test_xnor_bits_are_the_thresholded_counts_packed(variant, threads, p, m, k, n, r,
                                                     monkeypatch):
  """Counts and limits to the bit (limits drawn around each count, so both sides of every
  comparison occur, ties included); units no multiple of 32 (zero bits after the last),
  one limit row per output position (R > 1, a convolution's borders), bit-planes, more rows
  than the count buffer holds, chunks of whole words over threads, eager and jitted."""
  rng = np.random.default_rng(p + m + k + n + r)
  a = rng.integers(0, 2 ** 32, (p, m, k), dtype=np.uint32)
  w = rng.integers(0, 2 ** 32, (n, k), dtype=np.uint32)
  count = np.asarray(xnor_kernel.xnor_count(a, xnor_kernel.weight_layout(w, "xla"), "xla", n))
  limit = (count[:r] + rng.integers(-1, 2, (r, n))).astype(np.int32)
  expected = _below_words(count, limit)
  assert 0 < np.unpackbits(expected.view(np.uint8)).mean() < 1 or n == 1
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_VARIANT", variant)
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_THREADS", threads)
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_THREAD_WORK", "-40")
  native_w = xnor_kernel.weight_layout(w, "native")
  eager = xnor_kernel.xnor_bits(a, native_w, limit, "native", n)
  jitted = jax.jit(lambda a, w, l: xnor_kernel.xnor_bits(a, w, l, "native", n))(a, native_w, limit)
  fallback = xnor_kernel.xnor_bits(a, xnor_kernel.weight_layout(w, "xla"), limit, "xla", n)
  for got in (eager, jitted, fallback):
    assert got.dtype == np.uint32 and got.shape == (m, -(-n // 32))
    assert_array_equal(np.asarray(got), expected)


def _at_least_words(value, limit):
  """NumPy transcription of dot_u8_bits' packing: bit b of word q of row m is
  value[m, 32 q + b] >= limit[m % R, 32 q + b] (the complement of _below_words at limit - 1)."""
  return _below_words(-value, -limit)


@pytest.mark.parametrize("variant", _U8_VARIANTS)
@pytest.mark.parametrize("threads", ["1", "2", "5"])
@pytest.mark.parametrize("m,k,n,r", [(1, 784, 2048, 1), (100, 784, 64, 1), (7, 27, 130, 7),
                                     (64, 27, 128, 16), (3, 13, 33, 3), (70, 2051, 5, 1),
                                     (2, 1, 1, 1)])
def test_dot_u8_bits_are_the_thresholded_pm1_sums_packed(variant, threads, m, k, n, r,
                                                         monkeypatch):
  """``2 u.v - sum_k u >= limit`` (the uint8 inputs against +-1 weights) to the bit: limits
  drawn around each sum (ties included), one limit row per output position (R > 1), units no
  multiple of 32, more rows than the buffer of 32, chunks over threads, eager and jitted."""
  u, v, w8 = _dot_u8_case(m, k, n, m + k + n + r)
  value = 2 * (u.astype(np.int64) @ v.T.astype(np.int64)) - u.astype(np.int64).sum(1)[:, None]
  rng = np.random.default_rng(r)
  limit = (value[:r] + rng.integers(-1, 2, (r, n))).astype(np.int32)
  expected = _at_least_words(value, limit)
  assert 0 < np.unpackbits(expected.view(np.uint8)).mean() < 1 or n == 1
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_VARIANT", variant)
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_THREADS", threads)
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_THREAD_WORK", "-40")
  eager = xnor_kernel.dot_u8_bits(u, w8, limit, n)
  jitted = jax.jit(lambda u, w, l: xnor_kernel.dot_u8_bits(u, w, l, n))(u, w8, limit)
  for got in (eager, jitted):
    assert got.dtype == np.uint32 and got.shape == (m, -(-n // 32))
    assert_array_equal(np.asarray(got), expected)


def test_dot_u8_bits_refuses_rows_that_are_no_multiple_of_the_limit_rows():
  u, _, w8 = _dot_u8_case(5, 20, 3, 3)
  with pytest.raises(Exception, match="multiple of R"):
    np.asarray(xnor_kernel.dot_u8_bits(u, w8, np.zeros((2, 3), np.int32), 3))


@pytest.mark.parametrize("variant", ["", "avx2"])
@pytest.mark.parametrize("threads", ["1", "2", "5"])
@pytest.mark.parametrize("b,h,w,c,window,n", [
    (1, 8, 8, 4, ((3, 3), (1, 1), ((1, 1), (1, 1))), 128),     # VGG-like 3x3 SAME, even K
    (2, 9, 7, 3, ((3, 3), (1, 1), ((1, 1), (1, 1))), 33),      # odd K (27 words): a zero word
    (2, 11, 10, 2, ((5, 5), (2, 2), ((2, 2), (2, 2))), 70),    # 5x5 stride 2
    (3, 6, 5, 1, ((2, 2), (1, 1), ((0, 0), (0, 0))), 40),      # VALID
    (1, 7, 9, 3, ((1, 3), (2, 1), ((1, 0), (2, 1))), 31),      # explicit, asymmetric
    (1, 4, 4, 1, ((3, 3), (1, 1), ((3, 3), (3, 3))), 9),       # rows of zero words only
])
def test_xnor_conv_bits_gathers_the_patches_of_the_packed_map(variant, threads, b, h, w, c,
                                                               window, n, monkeypatch):
  """The convolution's bits from the packed feature map equal ``xnor_bits`` of the patch
  matrix XLA builds (``conv_patches``, zero words where padded) and a NumPy transcription of
  its counts: kernel sizes, strides, explicit and asymmetric padding, odd K, batches, limits
  per output position around each count (ties), chunks over threads, eager and jitted."""
  (kh, kw), (sh, sw), pads = window
  ho = (h + sum(pads[0]) - kh) // sh + 1
  wo = (w + sum(pads[1]) - kw) // sw + 1
  rng = np.random.default_rng(b + h + w + c + n)
  x = rng.integers(0, 2 ** 32, (b, h, w, c), dtype=np.uint32)
  weights = rng.integers(0, 2 ** 32, (n, kh * kw * c), dtype=np.uint32)
  padded = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  patches = np.stack([np.concatenate([padded[:, i * sh + a, j * sw + e]
                                      for a in range(kh) for e in range(kw)], axis=-1)
                      for i in range(ho) for j in range(wo)], axis=1).reshape(b * ho * wo, -1)
  bits = np.unpackbits(patches.view(np.uint8), axis=-1)
  count = (bits[:, None, :] != np.unpackbits(weights.view(np.uint8), axis=-1)[None]).sum(-1)
  limit = (count[:ho * wo] + rng.integers(-1, 2, (ho * wo, n))).astype(np.int32)
  expected = _below_words(count, limit)
  assert 0 < np.unpackbits(expected.view(np.uint8)).mean() < 1
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_VARIANT", variant)
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_THREADS", threads)
  monkeypatch.setenv("BAYESBINN_JAX_XNOR_THREAD_WORK", "-40")
  words = np.pad(weights, ((0, 0), (0, weights.shape[1] % 2)))
  args = ((kh, kw), (sh, sw), pads, (ho, wo))
  native_w = xnor_kernel.weight_layout(words, "native")
  eager = xnor_kernel.xnor_conv_bits(x, native_w, limit, "native", n, *args)
  jitted = jax.jit(lambda x, w, l: xnor_kernel.xnor_conv_bits(x, w, l, "native", n, *args))(
      x, native_w, limit)
  fallback = xnor_kernel.xnor_conv_bits(x, xnor_kernel.weight_layout(words, "xla"), limit,
                                        "xla", n, *args)
  for got in (eager, jitted, fallback):
    assert got.dtype == np.uint32 and got.shape == (b * ho * wo, -(-n // 32))
    assert_array_equal(np.asarray(got), expected)


def test_xnor_conv_bits_refuses_weights_of_another_window():
  x = np.zeros((1, 4, 4, 2), np.uint32)
  w = xnor_kernel.weight_layout(np.zeros((3, 8), np.uint32), "native")     # 2x2 taps, not 3x3
  with pytest.raises(Exception, match="xnor_conv_bits: expected"):
    np.asarray(xnor_kernel.xnor_conv_bits(x, w, np.zeros((16, 3), np.int32), "native", 3,
                                          (3, 3), (1, 1), ((1, 1), (1, 1)), (4, 4)))


def test_xnor_bits_refuses_rows_that_are_no_multiple_of_the_limit_rows():
  a = np.zeros((1, 5, 2), np.uint32)
  w = xnor_kernel.weight_layout(np.zeros((3, 2), np.uint32), "native")
  with pytest.raises(Exception, match="multiple of R"):
    np.asarray(xnor_kernel.xnor_bits(a, w, np.zeros((2, 3), np.int32), "native", 3))
