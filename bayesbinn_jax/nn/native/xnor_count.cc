// The products of packed inference for bayesbinn_jax.nn.xnor_kernel (XLA FFI, CPU).
//
// BayesbinnXnorCount: out[m, n] = sum_p 2^p sum_k popcount(a[p, m, k] XOR w[n, k]) over uint32
// words, read two at a time as uint64 (little-endian, the same bit layout; K is even). With
// AVX2: 4 units per vector, byte-wise popcount by nibble lookup; else scalar popcount.
// BayesbinnDotU8: out[m, n] = sum_k u[m, k] v[n, k] for uint8 inputs and weight bits (the
// first layer of a network fed uint8 images), by table lookup.
// Large products split their rows over threads ($BAYESBINN_JAX_XNOR_THREADS caps them);
// $BAYESBINN_JAX_XNOR_VARIANT selects the measured alternatives of the popcount product.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Work per extra thread: 2^18 uint64 words (~0.1 ms) of popcounts, 2^21 uint8 products of
// table lookups (~0.1 ms); below it the work stays on the calling thread.
constexpr int64_t kWordsPerThread = int64_t{1} << 18;
constexpr int64_t kProductsPerThread = int64_t{1} << 21;

// Weights read from memory (after other work evicted them) are asked for ahead of use: the
// group kAhead groups on, line by line (measured: no loss warm; within noise cold).
constexpr int64_t kAhead = 4;
inline void Prefetch(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 3);
}

inline int64_t Pop(uint64_t x) { return __builtin_popcountll(x); }

// out[i, j] = sum_p 2^p sum_t popcount(a[p, i, t] ^ w[j, t]) over uint64 words: p runs over
// the bit-planes of an integer input (one plane for binary inputs). w4 is (groups, k, 4).
[[maybe_unused]] void CountScalar(const uint64_t* a, const uint64_t* w4, int32_t* out,
                                  int64_t planes, int64_t m, int64_t n, int64_t k, int64_t begin,
                                  int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const uint64_t* wj = w4 + (j / 4) * k * 4 + (j % 4);
      int64_t s = 0;
      for (int64_t p = 0; p < planes; ++p) {
        const uint64_t* ai = a + (p * m + i) * k;
        int64_t c = 0;
        for (int64_t t = 0; t < k; ++t) c += Pop(ai[t] ^ wj[t * 4]);
        s += c << p;
      }
      out[i * n + j] = static_cast<int32_t>(s);
    }
  }
}

// CountScalar on uint32 words (the same bits): the word-width alternative.
[[maybe_unused]] void CountScalar32(const uint64_t* a, const uint64_t* w4, int32_t* out,
                                    int64_t planes, int64_t m, int64_t n, int64_t k,
                                    int64_t begin, int64_t end) {
  const auto* a32 = reinterpret_cast<const uint32_t*>(a);
  const auto* w32 = reinterpret_cast<const uint32_t*>(w4);
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const uint32_t* wj = w32 + 2 * ((j / 4) * k * 4 + (j % 4));
      int64_t s = 0;
      for (int64_t p = 0; p < planes; ++p) {
        const uint32_t* ai = a32 + 2 * (p * m + i) * k;
        int64_t c = 0;
        for (int64_t t = 0; t < k; ++t) {
          c += __builtin_popcount(ai[2 * t] ^ wj[8 * t]) +
               __builtin_popcount(ai[2 * t + 1] ^ wj[8 * t + 1]);
        }
        s += c << p;
      }
      out[i * n + j] = static_cast<int32_t>(s);
    }
  }
}

#if defined(__AVX2__)
// Byte-wise popcount of 32 bytes (Mula's nibble lookup).
inline __m256i Pop8(__m256i v) {
  const __m256i lookup = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                          0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i lo = _mm256_and_si256(v, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lookup, lo), _mm256_shuffle_epi8(lookup, hi));
}

// Per unit of a group of 4, sum_t popcount(a0[t] ^ w) into *s0 (and of a1 into *s1 when kTwo):
// the two sources share each load of the group's words. Byte counts are summed for up to 31
// words (8 * 31 < 256), then into 64-bit lanes by _mm256_sad_epu8.
template <bool kTwo, int64_t kRun = 31>
inline void Sums(const uint64_t* a0, const uint64_t* a1, const uint64_t* wg, int64_t k,
                 __m256i* s0, __m256i* s1) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i c0 = zero, c1 = zero;
  int64_t t = 0;
  while (t < k) {
    const int64_t stop = t + kRun < k ? t + kRun : k;
    __m256i b0 = zero, b1 = zero;
    for (; t < stop; ++t) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + t * 4));
      b0 = _mm256_add_epi8(b0, Pop8(_mm256_xor_si256(wv, _mm256_set1_epi64x(a0[t]))));
      if (kTwo) b1 = _mm256_add_epi8(b1, Pop8(_mm256_xor_si256(wv, _mm256_set1_epi64x(a1[t]))));
    }
    c0 = _mm256_add_epi64(c0, _mm256_sad_epu8(b0, zero));
    if (kTwo) c1 = _mm256_add_epi64(c1, _mm256_sad_epu8(b1, zero));
  }
  *s0 = c0;
  *s1 = c1;
}

// Rows [begin, end) of the sums, 4 units per 256-bit vector (w4: groups of 4 units with their
// uint64 words interleaved, (groups, k, 4)). Two rows share each load of w4; a lone row pairs
// its bit-planes instead, so no work is done twice.
// kRun: words whose byte counts are summed before one widening (31: the most a byte holds; 1:
// a reduction per word); kPair: two rows (or two bit-planes) per pass over the weights.
// kBlock: the weights are taken in blocks of about kBlock bytes of groups, each block against
// every row [begin, end) before the next (so a block stays in L2 for all rows); 0: no blocks.
template <int64_t kRun = 31, bool kPair = true, int64_t kBlock = int64_t{128} << 10>
void CountAvx2(const uint64_t* a, const uint64_t* w4, int32_t* out, int64_t planes, int64_t m,
               int64_t n, int64_t k, int64_t begin, int64_t end) {
  const int64_t groups = (n + 3) / 4;
  const __m256i zero = _mm256_setzero_si256();
  int64_t block = kBlock ? kBlock / (32 * k) : groups;
  block = block < 1 ? 1 : block;
  for (int64_t g0 = 0; g0 < groups; g0 += block) {
  const int64_t g1 = g0 + block < groups ? g0 + block : groups;
  for (int64_t i = begin; i < end; i += kPair ? 2 : 1) {
    const bool two = kPair && i + 1 < end;
    for (int64_t g = g0; g < g1; ++g) {
      const uint64_t* wg = w4 + g * k * 4;
      if (g + kAhead < g1) Prefetch(wg + kAhead * k * 4, k * 32);
      __m256i t0 = zero, t1 = zero, s0, s1;
      if (two) {
        for (int64_t p = 0; p < planes; ++p) {
          const uint64_t* a0 = a + (p * m + i) * k;
          Sums<true, kRun>(a0, a0 + k, wg, k, &s0, &s1);
          t0 = _mm256_add_epi64(t0, _mm256_slli_epi64(s0, static_cast<int>(p)));
          t1 = _mm256_add_epi64(t1, _mm256_slli_epi64(s1, static_cast<int>(p)));
        }
      } else {
        for (int64_t p = 0; p < planes; p += kPair ? 2 : 1) {
          const uint64_t* a0 = a + (p * m + i) * k;
          if (kPair && p + 1 < planes) {
            Sums<true, kRun>(a0, a0 + m * k, wg, k, &s0, &s1);
            t0 = _mm256_add_epi64(t0, _mm256_slli_epi64(s1, static_cast<int>(p + 1)));
          } else {
            Sums<false, kRun>(a0, a0, wg, k, &s0, &s1);
          }
          t0 = _mm256_add_epi64(t0, _mm256_slli_epi64(s0, static_cast<int>(p)));
        }
      }
      alignas(32) int64_t r0[4], r1[4];
      _mm256_store_si256(reinterpret_cast<__m256i*>(r0), t0);
      _mm256_store_si256(reinterpret_cast<__m256i*>(r1), t1);
      for (int64_t u = 0; u < 4 && g * 4 + u < n; ++u) {
        out[i * n + g * 4 + u] = static_cast<int32_t>(r0[u]);
        if (two) out[(i + 1) * n + g * 4 + u] = static_cast<int32_t>(r1[u]);
      }
    }
  }
  }
}
#endif

// ---------------------------------------------------------------------------------- uint8 inputs
//
// dot[m, n] = sum_k u[m, k] * v[n, k]: uint8 inputs u (M, K) against weight bits v (bit set: +1),
// the first layer of a network fed uint8 images (the 8-bit-plane product's integers follow:
// sum_b 2^b popcount(u_b ^ v) = sum_k u - 2 dot + 255 popcount(v)). v is stored in blocks of 32
// units, byte q of each unit side by side: w8[b, q, j] = bits k = 8q .. 8q + 7 of unit 32 b + j.
//
// AVX2 (table lookup, as in T-MAC): per group of 4 inputs, u = 16 h + l with h, l < 16, and a
// 16-entry table per half, T[c] = sum_{i in c} l_i (<= 60, a byte). A weight nibble of 32 units
// indexes the table with one byte shuffle: 32 units times 4 inputs per shuffle, against 8
// popcounted bit-plane words for the same 4 x 32 products.

[[maybe_unused]] void DotU8Scalar(const uint8_t* u, const uint8_t* w8, int32_t* out, int64_t m,
                                  int64_t n, int64_t k, int64_t k8, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const uint8_t* ui = u + i * k;
    for (int64_t j = 0; j < n; ++j) {
      const uint8_t* wj = w8 + (j / 32) * k8 * 32 + (j % 32);
      int64_t s = 0;
      for (int64_t t = 0; t < k; ++t) {
        if ((wj[(t / 8) * 32] >> (t % 8)) & 1) s += ui[t];
      }
      out[i * n + j] = static_cast<int32_t>(s);
    }
  }
}

#if defined(__AVX2__)
void DotU8Avx2(const uint8_t* u, const uint8_t* w8, int32_t* out, int64_t m, int64_t n,
               int64_t k, int64_t k8, int64_t begin, int64_t end) {
  const int64_t blocks = (n + 31) / 32;
  const int64_t groups = 2 * k8;
  // Per group: the low halves' table, then the high halves', each in both 128-bit lanes.
  std::vector<uint8_t> storage(64 * groups + 32);
  auto* tables = reinterpret_cast<__m256i*>(
      (reinterpret_cast<uintptr_t>(storage.data()) + 31) & ~static_cast<uintptr_t>(31));
  __m256i bit[4];
  for (int j = 0; j < 4; ++j) {
    alignas(32) uint8_t mask[32];
    for (int p = 0; p < 32; ++p) mask[p] = ((p & 15) >> j) & 1 ? 0xff : 0;
    bit[j] = _mm256_load_si256(reinterpret_cast<const __m256i*>(mask));
  }
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t i = begin; i < end; ++i) {
    const uint8_t* ui = u + i * k;
    for (int64_t g = 0; g < groups; ++g) {
      __m256i lo = zero, hi = zero;
      for (int j = 0; j < 4; ++j) {
        const int64_t t = 4 * g + j;
        const uint8_t v = t < k ? ui[t] : 0;
        lo = _mm256_add_epi8(lo, _mm256_and_si256(_mm256_set1_epi8(static_cast<char>(v & 15)), bit[j]));
        hi = _mm256_add_epi8(hi, _mm256_and_si256(_mm256_set1_epi8(static_cast<char>(v >> 4)), bit[j]));
      }
      tables[2 * g] = lo;
      tables[2 * g + 1] = hi;
    }
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* wb = w8 + b * k8 * 32;
      if (b + 1 < blocks) Prefetch(wb + k8 * 32, k8 * 32);
      // int32 sums of units 0-7, 8-15, 16-23, 24-31 of the block.
      __m256i total[4] = {zero, zero, zero, zero};
      for (int64_t q0 = 0; q0 < k8; q0 += 256) {  // 16-bit sums of at most 2048 halves < 2^16
        const int64_t q1 = q0 + 256 < k8 ? q0 + 256 : k8;
        __m256i l0 = zero, l1 = zero, h0 = zero, h1 = zero;
        for (int64_t q = q0; q < q1; q += 2) {
          __m256i sl = zero, sh = zero;  // bytes: at most 4 lookups of <= 60
          for (int64_t r = q; r < q + 2 && r < q1; ++r) {
            const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + r * 32));
            const __m256i a = _mm256_and_si256(wv, nibble);
            const __m256i c = _mm256_and_si256(_mm256_srli_epi16(wv, 4), nibble);
            const __m256i* t = tables + 4 * r;
            sl = _mm256_add_epi8(sl, _mm256_add_epi8(_mm256_shuffle_epi8(t[0], a),
                                                     _mm256_shuffle_epi8(t[2], c)));
            sh = _mm256_add_epi8(sh, _mm256_add_epi8(_mm256_shuffle_epi8(t[1], a),
                                                     _mm256_shuffle_epi8(t[3], c)));
          }
          l0 = _mm256_add_epi16(l0, _mm256_unpacklo_epi8(sl, zero));
          l1 = _mm256_add_epi16(l1, _mm256_unpackhi_epi8(sl, zero));
          h0 = _mm256_add_epi16(h0, _mm256_unpacklo_epi8(sh, zero));
          h1 = _mm256_add_epi16(h1, _mm256_unpackhi_epi8(sh, zero));
        }
        // l0/h0 hold units 0-7 | 16-23 in 16-bit lanes, l1/h1 units 8-15 | 24-31; in 32-bit
        // lanes: a = 0-3 | 16-19, b = 4-7 | 20-23, c = 8-11 | 24-27, d = 12-15 | 28-31.
        const __m256i a = _mm256_add_epi32(_mm256_unpacklo_epi16(l0, zero),
                                           _mm256_slli_epi32(_mm256_unpacklo_epi16(h0, zero), 4));
        const __m256i bb = _mm256_add_epi32(_mm256_unpackhi_epi16(l0, zero),
                                            _mm256_slli_epi32(_mm256_unpackhi_epi16(h0, zero), 4));
        const __m256i c = _mm256_add_epi32(_mm256_unpacklo_epi16(l1, zero),
                                           _mm256_slli_epi32(_mm256_unpacklo_epi16(h1, zero), 4));
        const __m256i d = _mm256_add_epi32(_mm256_unpackhi_epi16(l1, zero),
                                           _mm256_slli_epi32(_mm256_unpackhi_epi16(h1, zero), 4));
        total[0] = _mm256_add_epi32(total[0], _mm256_permute2x128_si256(a, bb, 0x20));
        total[1] = _mm256_add_epi32(total[1], _mm256_permute2x128_si256(c, d, 0x20));
        total[2] = _mm256_add_epi32(total[2], _mm256_permute2x128_si256(a, bb, 0x31));
        total[3] = _mm256_add_epi32(total[3], _mm256_permute2x128_si256(c, d, 0x31));
      }
      int32_t* o = out + i * n + b * 32;
      if (b * 32 + 32 <= n) {
        for (int v = 0; v < 4; ++v) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 8 * v), total[v]);
        }
      } else {
        alignas(32) int32_t rest[32];
        for (int v = 0; v < 4; ++v) {
          _mm256_store_si256(reinterpret_cast<__m256i*>(rest + 8 * v), total[v]);
        }
        for (int64_t j = 0; b * 32 + j < n; ++j) o[j] = rest[j];
      }
    }
  }
}
#endif

// Threads for `work` units of work: one per `per_thread`, at most the cores (or
// $BAYESBINN_JAX_XNOR_THREADS when set), at most `parts`, at least 1.
// $BAYESBINN_JAX_XNOR_THREAD_WORK scales `per_thread` by 2^value (negative: smaller shares).
int64_t Threads(int64_t work, int64_t per_thread, int64_t parts) {
  if (const char* shift = std::getenv("BAYESBINN_JAX_XNOR_THREAD_WORK")) {
    const int value = std::atoi(shift);
    per_thread = value >= 0 ? per_thread << value : per_thread >> -value;
    per_thread = per_thread < 1 ? 1 : per_thread;
  }
  if (work < 2 * per_thread || parts < 2) return 1;
  // hardware_concurrency() reads /sys (some 15 us a call here): once per process.
  static const int64_t kCores = static_cast<int64_t>(std::thread::hardware_concurrency());
  int64_t cores = kCores;
  if (const char* limit = std::getenv("BAYESBINN_JAX_XNOR_THREADS")) {
    const int64_t value = std::atoll(limit);
    if (value > 0) cores = value;
  }
  int64_t threads = work / per_thread;
  threads = threads > cores ? cores : threads;
  threads = threads > parts ? parts : threads;
  return threads < 1 ? 1 : threads;
}

// Rows [0, m) of fn(begin, end) over up to `threads` threads, in chunks of about a quarter
// of a thread's share (a multiple of `align` rows) taken from a shared counter: the calling
// thread starts at once and takes whatever chunks the helpers have not, so a helper that a
// loaded machine does not schedule costs nothing but its start (the helpers are detached and
// touch only the shared counters once the last chunk is done).
template <typename Fn>
void SplitRows(int64_t m, int64_t threads, int64_t align, Fn fn) {
  if (threads <= 1) {
    fn(0, m);
    return;
  }
  const int64_t chunk = ((m + 4 * threads - 1) / (4 * threads) + align - 1) / align * align;
  const int64_t chunks = (m + chunk - 1) / chunk;
  struct Counters {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto counters = std::make_shared<Counters>();
  auto work = [counters, chunk, chunks, m, fn]() {
    for (;;) {
      const int64_t c = counters->next.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks) return;
      const int64_t begin = c * chunk;
      fn(begin, begin + chunk < m ? begin + chunk : m);
      counters->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 1; t < threads; ++t) std::thread(work).detach();
  work();
  while (counters->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

ffi::Error DotU8Impl(ffi::Buffer<ffi::U8> u, ffi::Buffer<ffi::U8> w,
                     ffi::ResultBuffer<ffi::S32> out) {
  auto ud = u.dimensions();
  auto wd = w.dimensions();
  auto od = out->dimensions();
  if (ud.size() != 2 || wd.size() != 3 || od.size() != 2 || wd[2] != 32 ||
      wd[1] != (ud[1] + 7) / 8 || wd[0] * 32 < od[1] || od[0] != ud[0]) {
    return ffi::Error::InvalidArgument(
        "dot_u8: expected u (M, K) uint8, w (ceil(N / 32), ceil(K / 8), 32) uint8");
  }
  const int64_t m = ud[0], k = ud[1], k8 = wd[1], n = od[1];
  const uint8_t* up = u.typed_data();
  const uint8_t* wp = w.typed_data();
  int32_t* op = out->typed_data();
  const int64_t threads = Threads(m * n * k, kProductsPerThread, m);
  SplitRows(m, threads, 1, [=](int64_t begin, int64_t end) {
#if defined(__AVX2__)
    DotU8Avx2(up, wp, op, m, n, k, k8, begin, end);
#else
    DotU8Scalar(up, wp, op, m, n, k, k8, begin, end);
#endif
  });
  return ffi::Error::Success();
}

ffi::Error XnorCountImpl(ffi::Buffer<ffi::U32> a, ffi::Buffer<ffi::U32> w,
                         ffi::ResultBuffer<ffi::S32> out) {
  // a: (P, M, K) uint32 with K even; w: (groups, K / 2, 8) uint32, i.e. groups of 4 units whose
  // uint64 words are interleaved; out: (M, N).
  auto ad = a.dimensions();
  auto wd = w.dimensions();
  auto od = out->dimensions();
  if (ad.size() != 3 || wd.size() != 3 || od.size() != 2 || ad[2] % 2 != 0 ||
      wd[1] * 2 != ad[2] || wd[2] != 8 || wd[0] * 4 < od[1] || od[0] != ad[1]) {
    return ffi::Error::InvalidArgument(
        "xnor_count: expected a (P, M, K) uint32 with K even, w (ceil(N / 4), K / 2, 8) uint32");
  }
  const int64_t planes = ad[0], m = ad[1], k = ad[2] / 2, n = od[1];
  const auto* ap = reinterpret_cast<const uint64_t*>(a.typed_data());
  const auto* wp = reinterpret_cast<const uint64_t*>(w.typed_data());
  int32_t* op = out->typed_data();
  // Rows split over the cores when the work is large (a thread costs some 20-50 us to start).
  const int64_t threads = Threads(planes * m * n * k, kWordsPerThread, m / 2);
  // $BAYESBINN_JAX_XNOR_VARIANT picks a measured alternative (benchmarks/packed_inference.py):
  // "scalar64", "scalar32" (word width), "avx2_rows1" (one row per pass), "avx2_reduce1" (a
  // widening reduction per word), "avx2_unblocked" (all weights against each row pair in
  // turn); unset: AVX2, two rows per pass, 31-word runs, 128 KiB weight blocks.
  const char* env = std::getenv("BAYESBINN_JAX_XNOR_VARIANT");
  const std::string variant = env ? env : "";
  SplitRows(m, threads, 2, [=](int64_t begin, int64_t end) {
    if (variant == "scalar64") return CountScalar(ap, wp, op, planes, m, n, k, begin, end);
    if (variant == "scalar32") return CountScalar32(ap, wp, op, planes, m, n, k, begin, end);
#if defined(__AVX2__)
    if (variant == "avx2_rows1") return CountAvx2<31, false>(ap, wp, op, planes, m, n, k, begin, end);
    if (variant == "avx2_reduce1") return CountAvx2<1, true>(ap, wp, op, planes, m, n, k, begin, end);
    if (variant == "avx2_unblocked") return CountAvx2<31, true, 0>(ap, wp, op, planes, m, n, k, begin, end);
    CountAvx2(ap, wp, op, planes, m, n, k, begin, end);
#else
    CountScalar(ap, wp, op, planes, m, n, k, begin, end);
#endif
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BayesbinnXnorCount, XnorCountImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(BayesbinnDotU8, DotU8Impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());
