// The products of packed inference for bayesbinn_jax.nn.xnor_kernel (XLA FFI, CPU).
//
// BayesbinnXnorCount: out[m, n] = sum_p 2^p sum_k popcount(a[p, m, k] XOR w[n, k]) over uint32
// words, read two at a time as uint64 (little-endian, the same bit layout; K is even). Groups of
// 4 units; with AVX-512 VPOPCNTDQ one vector popcount per 8 words (2 words of the group's 4
// units), the rows spread once and 8 rows per pass, else 2 rows per pass with AVX2 bits counted
// by Harley-Seal carry-save adders (rows of at least kHarleySealWords words) or by nibble
// lookup; else scalar popcount.
// BayesbinnXnorBits: the same counts thresholded and packed as the next layer reads them:
// bit b of out[m, q] is count[m, 32 q + b] <= limit[m % R, 32 q + b] (0 past N), so a binary
// layer, its BatchNorm and the next layer's sign leave no int32 sums and no XLA code between
// two products.
// BayesbinnDotU8: out[m, n] = sum_k u[m, k] v[n, k] for uint8 inputs and weight bits (the
// first layer of a network fed uint8 images), by table lookup (AVX-512 VBMI + VNNI, else AVX2).
// BayesbinnDotU8Bits: the same products as the +-1 sums 2 dot - sum_k u[m, k], thresholded and
// packed: bit b of out[m, q] is that sum for unit 32 q + b >= limit[m % R, 32 q + b].
// BayesbinnXnorConvBits: XnorBits of a convolution, reading its patches straight from the packed
// feature map (B, H, W, C words): each block of rows' patches is gathered into a thread-local
// buffer (zero words where the window leaves the image), so no patch matrix is written.
// Large products are split into chunks of rows (or, for few rows, of units) over persistent
// helper threads ($BAYESBINN_JAX_XNOR_THREADS caps them); $BAYESBINN_JAX_XNOR_VARIANT selects
// the measured alternatives of the popcount product and of the uint8 product.
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
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

// Work per extra thread: 2^18 uint64 words (~0.05 ms) of popcounts, 2^21 uint8 products of
// table lookups (~0.03 ms); below it the work stays on the calling thread.
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
                                  int64_t end, int64_t gbegin, int64_t gend) {
  const int64_t jend = 4 * gend < n ? 4 * gend : n;
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t j = 4 * gbegin; j < jend; ++j) {
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
                                    int64_t begin, int64_t end, int64_t gbegin, int64_t gend) {
  const auto* a32 = reinterpret_cast<const uint32_t*>(a);
  const auto* w32 = reinterpret_cast<const uint32_t*>(w4);
  const int64_t jend = 4 * gend < n ? 4 * gend : n;
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t j = 4 * gbegin; j < jend; ++j) {
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

// Harley-Seal: the words' popcounts by carry-save adders. Per 8 words of a source, 7 CSAs
// (5 bitwise operations each, on any vector port) fold them into ones, twos and fours, and only
// the eights are popcounted by nibble lookup: 1 lookup per 8 words instead of 8.
inline void Csa(__m256i* h, __m256i* l, __m256i a, __m256i b) {
  const __m256i u = _mm256_xor_si256(*l, a);
  *h = _mm256_or_si256(_mm256_and_si256(*l, a), _mm256_and_si256(u, b));
  *l = _mm256_xor_si256(u, b);
}

struct Adders {
  __m256i ones, twos, fours, eights8, eights;  // eights8: byte counts; eights: 64-bit lanes
};

inline __m256i XorWord(const uint64_t* wg, const uint64_t* a, int64_t t) {
  return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + t * 4)),
                          _mm256_set1_epi64x(a[t]));
}

inline void Round8(Adders* s, const uint64_t* wg, const uint64_t* a, int64_t t) {
  __m256i twos_a, twos_b, fours_a, fours_b, eights;
  Csa(&twos_a, &s->ones, XorWord(wg, a, t), XorWord(wg, a, t + 1));
  Csa(&twos_b, &s->ones, XorWord(wg, a, t + 2), XorWord(wg, a, t + 3));
  Csa(&fours_a, &s->twos, twos_a, twos_b);
  Csa(&twos_a, &s->ones, XorWord(wg, a, t + 4), XorWord(wg, a, t + 5));
  Csa(&twos_b, &s->ones, XorWord(wg, a, t + 6), XorWord(wg, a, t + 7));
  Csa(&fours_b, &s->twos, twos_a, twos_b);
  Csa(&eights, &s->fours, fours_a, fours_b);
  s->eights8 = _mm256_add_epi8(s->eights8, Pop8(eights));
}

// Round8 of two sources sharing each load of the weights.
inline void Round8Two(Adders* s0, Adders* s1, const uint64_t* wg, const uint64_t* a0,
                      const uint64_t* a1, int64_t t) {
  __m256i w[8];
  for (int j = 0; j < 8; ++j) w[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + (t + j) * 4));
  __m256i twos_a, twos_b, fours_a, fours_b, eights;
  for (int src = 0; src < 2; ++src) {
    const uint64_t* a = src ? a1 : a0;
    Adders* s = src ? s1 : s0;
    auto x = [&](int j) { return _mm256_xor_si256(w[j], _mm256_set1_epi64x(a[t + j])); };
    Csa(&twos_a, &s->ones, x(0), x(1));
    Csa(&twos_b, &s->ones, x(2), x(3));
    Csa(&fours_a, &s->twos, twos_a, twos_b);
    Csa(&twos_a, &s->ones, x(4), x(5));
    Csa(&twos_b, &s->ones, x(6), x(7));
    Csa(&fours_b, &s->twos, twos_a, twos_b);
    Csa(&eights, &s->fours, fours_a, fours_b);
    s->eights8 = _mm256_add_epi8(s->eights8, Pop8(eights));
  }
}

// Per 64-bit lane: 8 eights + 4 popcount(fours) + 2 popcount(twos) + popcount(ones) + rest
// (rest: byte counts of the words after the last round, at most 7 * 8).
inline __m256i Total(const Adders& s, __m256i rest) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i b = _mm256_add_epi8(Pop8(s.fours), Pop8(s.fours));
  b = _mm256_add_epi8(b, Pop8(s.twos));
  b = _mm256_add_epi8(_mm256_add_epi8(b, b), _mm256_add_epi8(Pop8(s.ones), rest));  // <= 112
  const __m256i e = _mm256_add_epi64(s.eights, _mm256_sad_epu8(s.eights8, zero));
  return _mm256_add_epi64(_mm256_slli_epi64(e, 3), _mm256_sad_epu8(b, zero));
}

// Sums, by Harley-Seal rounds of 8 words (the two sources in turn, the weights re-read from L1).
template <bool kTwo>
inline void SumsHS(const uint64_t* a0, const uint64_t* a1, const uint64_t* wg, int64_t k,
                   __m256i* s0, __m256i* s1) {
  const __m256i zero = _mm256_setzero_si256();
  Adders h0{zero, zero, zero, zero, zero}, h1{zero, zero, zero, zero, zero};
  int64_t t = 0;
  for (int rounds = 1; t + 8 <= k; t += 8, ++rounds) {
    if (kTwo) {
      Round8Two(&h0, &h1, wg, a0, a1, t);
    } else {
      Round8(&h0, wg, a0, t);
    }
    if (rounds % 31 == 0) {  // eights8 holds at most 31 rounds of 8 per byte
      h0.eights = _mm256_add_epi64(h0.eights, _mm256_sad_epu8(h0.eights8, zero));
      h0.eights8 = zero;
      if (kTwo) {
        h1.eights = _mm256_add_epi64(h1.eights, _mm256_sad_epu8(h1.eights8, zero));
        h1.eights8 = zero;
      }
    }
  }
  __m256i r0 = zero, r1 = zero;
  for (; t < k; ++t) {
    r0 = _mm256_add_epi8(r0, Pop8(XorWord(wg, a0, t)));
    if (kTwo) r1 = _mm256_add_epi8(r1, Pop8(XorWord(wg, a1, t)));
  }
  *s0 = Total(h0, r0);
  *s1 = kTwo ? Total(h1, r1) : zero;
}

#if defined(__AVX512VPOPCNTDQ__) && defined(__AVX512F__)
// Sums by AVX-512's vector popcount: per 512-bit vector, words t and t + 1 of the group's 4
// units against a0[t] (lanes 0-3) and a0[t + 1] (lanes 4-7), one VPOPCNTQ per 8 words; the two
// halves are added at the end.
template <bool kTwo>
inline void SumsVpop(const uint64_t* a0, const uint64_t* a1, const uint64_t* wg, int64_t k,
                     __m256i* s0, __m256i* s1) {
  const __m512i pair = _mm512_setr_epi64(0, 0, 0, 0, 1, 1, 1, 1);
  __m512i c0 = _mm512_setzero_si512(), c1 = _mm512_setzero_si512();
  int64_t t = 0;
  for (; t + 2 <= k; t += 2) {
    const __m512i wv = _mm512_loadu_si512(wg + t * 4);
    const __m512i x0 = _mm512_permutexvar_epi64(pair, _mm512_castsi128_si512(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(a0 + t))));
    c0 = _mm512_add_epi64(c0, _mm512_popcnt_epi64(_mm512_xor_si512(wv, x0)));
    if (kTwo) {
      const __m512i x1 = _mm512_permutexvar_epi64(pair, _mm512_castsi128_si512(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(a1 + t))));
      c1 = _mm512_add_epi64(c1, _mm512_popcnt_epi64(_mm512_xor_si512(wv, x1)));
    }
  }
  __m256i r0 = _mm256_add_epi64(_mm512_castsi512_si256(c0), _mm512_extracti64x4_epi64(c0, 1));
  __m256i r1 = _mm256_add_epi64(_mm512_castsi512_si256(c1), _mm512_extracti64x4_epi64(c1, 1));
  if (t < k) {  // an odd last word
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + t * 4));
    r0 = _mm256_add_epi64(r0, _mm256_popcnt_epi64(_mm256_xor_si256(wv, _mm256_set1_epi64x(a0[t]))));
    if (kTwo) r1 = _mm256_add_epi64(r1, _mm256_popcnt_epi64(_mm256_xor_si256(wv, _mm256_set1_epi64x(a1[t]))));
  }
  *s0 = r0;
  *s1 = kTwo ? r1 : _mm256_setzero_si256();
}

// SumsVpop on 256-bit vectors: one word of the group's 4 units per VPOPCNTQ (the vector-width
// alternative: no permute, half the width).
template <bool kTwo>
inline void SumsVpop256(const uint64_t* a0, const uint64_t* a1, const uint64_t* wg, int64_t k,
                        __m256i* s0, __m256i* s1) {
  __m256i c0 = _mm256_setzero_si256(), c1 = _mm256_setzero_si256();
  for (int64_t t = 0; t < k; ++t) {
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + t * 4));
    c0 = _mm256_add_epi64(c0, _mm256_popcnt_epi64(_mm256_xor_si256(wv, _mm256_set1_epi64x(a0[t]))));
    if (kTwo) c1 = _mm256_add_epi64(c1, _mm256_popcnt_epi64(_mm256_xor_si256(wv, _mm256_set1_epi64x(a1[t]))));
  }
  *s0 = c0;
  *s1 = c1;
}
#endif

// Words per row from which Harley-Seal is used by default (measured, one thread, AMD EPYC AVX2:
// 7% faster at 32 words, 15-20% at 72; 7% slower at 18, where its 3 closing popcounts weigh).
constexpr int64_t kHarleySealWords = 24;

// The sums of one or two sources: Harley-Seal (kRun 0), nibble lookups in runs of kRun words
// (kRun > 0), or (kRun < 0) Harley-Seal from kHarleySealWords words per row on.
// With AVX-512's vector popcount, kRun -1 is SumsVpop and -2 SumsVpop256.
template <bool kTwo, int64_t kRun>
inline void AnySums(const uint64_t* a0, const uint64_t* a1, const uint64_t* wg, int64_t k,
                    __m256i* s0, __m256i* s1) {
#if defined(__AVX512VPOPCNTDQ__) && defined(__AVX512F__)
  if (kRun == -1) return SumsVpop<kTwo>(a0, a1, wg, k, s0, s1);
  if (kRun == -2) return SumsVpop256<kTwo>(a0, a1, wg, k, s0, s1);
#endif
  if (kRun == 0 || (kRun < 0 && k >= kHarleySealWords)) {
    SumsHS<kTwo>(a0, a1, wg, k, s0, s1);
  } else {
    Sums<kTwo, kRun <= 0 ? 31 : kRun>(a0, a1, wg, k, s0, s1);
  }
}

// A group's 4 sums (the low 32 bits of s's 64-bit lanes: they fit in int32) into o, of which
// `units` (at most 4 are written) are within the output row.
inline void StoreGroup(__m256i s, int32_t* o, int64_t units) {
  const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const __m128i v = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(s, pick));
  if (units >= 4) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o), v);
  } else {
    alignas(16) int32_t rest[4];
    _mm_store_si128(reinterpret_cast<__m128i*>(rest), v);
    for (int64_t u = 0; u < units; ++u) o[u] = rest[u];
  }
}

// Rows [begin, end) and unit groups [gbegin, gend) of the sums, 4 units per 256-bit vector (w4:
// groups of 4 units with their uint64 words interleaved, (groups, k, 4)). Two rows share each
// load of w4; a lone row pairs its bit-planes instead, so no work is done twice.
// kRun: -1 AVX-512's vector popcount where the build has it (-2: on 256-bit vectors), else as
// -3; -3 Harley-Seal from kHarleySealWords words on, else nibble lookups in runs of 31; 0
// Harley-Seal; > 0 nibble lookups whose byte counts are summed over kRun words before one
// widening (31: the most a byte holds; 1: a reduction per word); kPair: two rows (or two
// bit-planes) per pass over the weights.
// kBlock: the weights are taken in blocks of about kBlock bytes of groups, each block against
// every row [begin, end) before the next (so a block stays in L2 for all rows); 0: no blocks.
template <int64_t kRun = -1, bool kPair = true, int64_t kBlock = int64_t{128} << 10>
void CountAvx2(const uint64_t* a, const uint64_t* w4, int32_t* out, int64_t planes, int64_t m,
               int64_t n, int64_t k, int64_t begin, int64_t end, int64_t gbegin, int64_t gend) {
  const int64_t groups = gend;
  const __m256i zero = _mm256_setzero_si256();
  int64_t block = kBlock ? kBlock / (32 * k) : groups;
  block = block < 1 ? 1 : block;
  for (int64_t g0 = gbegin; g0 < groups; g0 += block) {
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
          AnySums<true, kRun>(a0, a0 + k, wg, k, &s0, &s1);
          t0 = _mm256_add_epi64(t0, _mm256_slli_epi64(s0, static_cast<int>(p)));
          t1 = _mm256_add_epi64(t1, _mm256_slli_epi64(s1, static_cast<int>(p)));
        }
      } else {
        for (int64_t p = 0; p < planes; p += kPair ? 2 : 1) {
          const uint64_t* a0 = a + (p * m + i) * k;
          if (kPair && p + 1 < planes) {
            AnySums<true, kRun>(a0, a0 + m * k, wg, k, &s0, &s1);
            t0 = _mm256_add_epi64(t0, _mm256_slli_epi64(s1, static_cast<int>(p + 1)));
          } else {
            AnySums<false, kRun>(a0, a0, wg, k, &s0, &s1);
          }
          t0 = _mm256_add_epi64(t0, _mm256_slli_epi64(s0, static_cast<int>(p)));
        }
      }
      StoreGroup(t0, out + i * n + g * 4, n - g * 4);
      if (two) StoreGroup(t1, out + (i + 1) * n + g * 4, n - g * 4);
    }
  }
  }
}
#endif

#if defined(__AVX512VPOPCNTDQ__) && defined(__AVX512F__)
// The sums of kRows rows against one group of 4 units with AVX-512's vector popcount, the rows
// spread beforehand (x: row r's pair p of words at x[r * pairs + p], the vector [a[2p] x 4,
// a[2p + 1] x 4] that SumsVpop builds with a permute at every pair): per 8 words of a row a
// load, an xor, a popcount and an add, kRows rows sharing each load of the weights. An odd last
// word is counted on 256-bit vectors from the rows themselves (a[r] + k - 1).
template <int kRows>
inline void SumsSpread(const __m512i* x, int64_t pairs, const uint64_t* wg, int64_t k,
                       const uint64_t* a, __m256i* s) {
  __m512i c[kRows];
  for (int r = 0; r < kRows; ++r) c[r] = _mm512_setzero_si512();
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512i wv = _mm512_loadu_si512(wg + 8 * p);
    for (int r = 0; r < kRows; ++r) {
      c[r] = _mm512_add_epi64(c[r], _mm512_popcnt_epi64(_mm512_xor_si512(wv, x[r * pairs + p])));
    }
  }
  for (int r = 0; r < kRows; ++r) {
    s[r] = _mm256_add_epi64(_mm512_castsi512_si256(c[r]), _mm512_extracti64x4_epi64(c[r], 1));
  }
  if (k % 2) {
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + (k - 1) * 4));
    for (int r = 0; r < kRows; ++r) {
      const __m256i row = _mm256_set1_epi64x(static_cast<long long>(a[r * k + k - 1]));
      s[r] = _mm256_add_epi64(s[r], _mm256_popcnt_epi64(_mm256_xor_si256(wv, row)));
    }
  }
}

// SumsSpread of `rows` (1 .. kRows) rows.
template <int kRows>
inline void SumsSpreadRows(int64_t rows, const __m512i* x, int64_t pairs, const uint64_t* wg,
                           int64_t k, const uint64_t* a, __m256i* s) {
  if (rows == kRows) return SumsSpread<kRows>(x, pairs, wg, k, a, s);
  if constexpr (kRows > 1) SumsSpreadRows<kRows - 1>(rows, x, pairs, wg, k, a, s);
}

// Rows per pass of CountSpread over the weights.
constexpr int kSpreadRows = 8;

// CountAvx2<-1>'s sums (one bit-plane; more planes go to CountAvx2<-1>) with the rows spread
// once into a thread-local buffer and kSpreadRows rows per pass: without the permute per pair
// of words, the loop's xor, popcount and add are its only work on the vector ports.
template <int64_t kBlock = int64_t{128} << 10>
void CountSpread(const uint64_t* a, const uint64_t* w4, int32_t* out, int64_t planes, int64_t m,
                 int64_t n, int64_t k, int64_t begin, int64_t end, int64_t gbegin, int64_t gend) {
  if (planes != 1 || k < 2) {
    return CountAvx2<-1, true, kBlock>(a, w4, out, planes, m, n, k, begin, end, gbegin, gend);
  }
  const int64_t pairs = k / 2;
  thread_local std::vector<__m512i> spread;
  spread.resize(static_cast<size_t>((end - begin) * pairs));
  const __m512i pair = _mm512_setr_epi64(0, 0, 0, 0, 1, 1, 1, 1);
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t p = 0; p < pairs; ++p) {
      spread[(i - begin) * pairs + p] = _mm512_permutexvar_epi64(pair, _mm512_castsi128_si512(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i * k + 2 * p))));
    }
  }
  int64_t block = kBlock / (32 * k);
  block = block < 1 ? 1 : block;
  for (int64_t g0 = gbegin; g0 < gend; g0 += block) {
    const int64_t g1 = g0 + block < gend ? g0 + block : gend;
    for (int64_t i = begin; i < end; i += kSpreadRows) {
      const int64_t rows = end - i < kSpreadRows ? end - i : kSpreadRows;
      const __m512i* x = spread.data() + (i - begin) * pairs;
      for (int64_t g = g0; g < g1; ++g) {
        const uint64_t* wg = w4 + g * k * 4;
        if (g + kAhead < g1) Prefetch(wg + kAhead * k * 4, k * 32);
        __m256i s[kSpreadRows];
        SumsSpreadRows<kSpreadRows>(rows, x, pairs, wg, k, a + i * k, s);
        for (int64_t r = 0; r < rows; ++r) StoreGroup(s[r], out + (i + r) * n + g * 4, n - g * 4);
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
                                  int64_t n, int64_t k, int64_t k8, int64_t begin, int64_t end,
                                  int64_t bbegin, int64_t bend) {
  const int64_t jend = 32 * bend < n ? 32 * bend : n;
  for (int64_t i = begin; i < end; ++i) {
    const uint8_t* ui = u + i * k;
    for (int64_t j = 32 * bbegin; j < jend; ++j) {
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
               int64_t k, int64_t k8, int64_t begin, int64_t end, int64_t bbegin, int64_t bend) {
  const int64_t blocks = bend;
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
    for (int64_t b = bbegin; b < blocks; ++b) {
      const uint8_t* wb = w8 + b * k8 * 32;
      if (b + 1 < blocks) Prefetch(wb + k8 * 32, k8 * 32);
      // int32 sums of units 0-7, 8-15, 16-23, 24-31 of the block.
      __m256i total[4] = {zero, zero, zero, zero};
      for (int64_t q0 = 0; q0 < k8; q0 += 256) {  // 16-bit sums of at most 2048 halves < 2^16
        const int64_t q1 = q0 + 256 < k8 ? q0 + 256 : k8;
        // 16-bit sums of the even units' bytes and of the odd units' (a mask and a shift: no
        // unpacking on the shuffle ports, which the lookups keep busy).
        __m256i le = zero, lo = zero, he = zero, ho = zero;
        const __m256i even = _mm256_set1_epi16(0x00ff);
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
          le = _mm256_add_epi16(le, _mm256_and_si256(sl, even));
          lo = _mm256_add_epi16(lo, _mm256_srli_epi16(sl, 8));
          he = _mm256_add_epi16(he, _mm256_and_si256(sh, even));
          ho = _mm256_add_epi16(ho, _mm256_srli_epi16(sh, 8));
        }
        const __m256i l0 = _mm256_unpacklo_epi16(le, lo), l1 = _mm256_unpackhi_epi16(le, lo);
        const __m256i h0 = _mm256_unpacklo_epi16(he, ho), h1 = _mm256_unpackhi_epi16(he, ho);
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

#if defined(__AVX512VBMI__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
// AVX-512 VBMI + VNNI (table lookup on 512-bit vectors): per chunk of 16 inputs, four 16-entry
// tables of the low halves side by side in one vector (entry 16 s + c = sum_{i in c} l_{4s+i},
// <= 60) and four of the high halves in another. Units 16 at a time: byte 4 u + s of an index
// vector is 16 s + unit u's weight nibble of inputs 4s .. 4s + 3, so one VPERMB looks up 16
// units times 16 inputs, and one VPDPBUSD adds each unit's four bytes (times 1, or 16 for the
// high halves) into its int32 sum: no byte sums to widen, no 16-bit sums to flush. The index
// vectors (a shift and a two-source byte permute of the weight bytes) are shared by kRows rows.
struct U8Tables {
  __m512i perm[4];       // perm[i][p] = 4 (p / 16) + i: input i of sub-table p / 16
  __mmask64 has[4];      // bit p: input i is in entry p % 16
  __m512i spread[2];     // units 0-15, 16-31: byte 4u + s <- (s < 2 ? 0 : 32) + u (+ 64: high)
  __m512i subtable;      // byte 4u + s: 16 s
};

inline U8Tables MakeU8Tables() {
  U8Tables t;
  alignas(64) uint8_t bytes[64];
  for (int i = 0; i < 4; ++i) {
    uint64_t has = 0;
    for (int p = 0; p < 64; ++p) {
      bytes[p] = static_cast<uint8_t>(4 * (p / 16) + i);
      if (((p % 16) >> i) & 1) has |= uint64_t{1} << p;
    }
    t.perm[i] = _mm512_load_si512(bytes);
    t.has[i] = has;
  }
  for (int half = 0; half < 2; ++half) {
    for (int p = 0; p < 64; ++p) {
      const int u = p / 4 + 16 * half, s = p % 4;
      bytes[p] = static_cast<uint8_t>((s < 2 ? 0 : 32) + u + (s % 2 ? 64 : 0));
    }
    t.spread[half] = _mm512_load_si512(bytes);
  }
  for (int p = 0; p < 64; ++p) bytes[p] = static_cast<uint8_t>(16 * (p % 4));
  t.subtable = _mm512_load_si512(bytes);
  return t;
}

// The low- and high-half tables of row u (k inputs) for its `chunks` chunks of 16 inputs.
inline void BuildU8Tables(const U8Tables& t, const uint8_t* u, int64_t k, int64_t chunks,
                          __m512i* lo, __m512i* hi) {
  const __m512i nibble = _mm512_set1_epi8(0x0f);
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t left = k - 16 * c;
    const __mmask64 load = left >= 16 ? 0xffff : (uint64_t{1} << left) - 1;
    const __m512i x = _mm512_maskz_loadu_epi8(load, u + 16 * c);
    const __m512i l = _mm512_and_si512(x, nibble);
    const __m512i h = _mm512_and_si512(_mm512_srli_epi16(x, 4), nibble);
    __m512i tl = _mm512_setzero_si512(), th = _mm512_setzero_si512();
    for (int i = 0; i < 4; ++i) {
      tl = _mm512_mask_add_epi8(tl, t.has[i], tl, _mm512_permutexvar_epi8(t.perm[i], l));
      th = _mm512_mask_add_epi8(th, t.has[i], th, _mm512_permutexvar_epi8(t.perm[i], h));
    }
    lo[c] = tl;
    hi[c] = th;
  }
}

// Rows i0 .. i0 + kRows - 1 against unit blocks [bbegin, bend), their tables at lo, hi (row r's
// at r * chunks).
template <int kRows>
inline void DotU8VbmiRows(const U8Tables& t, const __m512i* lo, const __m512i* hi,
                          const uint8_t* w8, int32_t* out, int64_t i0, int64_t n, int64_t k8,
                          int64_t chunks, int64_t bbegin, int64_t bend) {
  const __m512i nibble = _mm512_set1_epi8(0x0f);
  const __m512i one = _mm512_set1_epi8(1), sixteen = _mm512_set1_epi8(16);
  for (int64_t b = bbegin; b < bend; ++b) {
    const uint8_t* wb = w8 + b * k8 * 32;
    if (b + 1 < bend) Prefetch(wb + k8 * 32, k8 * 32);
    __m512i acc[kRows][2];
    for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
    for (int64_t c = 0; c < chunks; ++c) {
      // Bytes 2c, 2c + 1 (a lone last byte when k8 is odd: no read past w8; the tables are 0
      // past K, so whatever the missing byte's index, it adds 0).
      const __mmask64 load = 2 * c + 1 < k8 ? ~__mmask64{0} : __mmask64{0xffffffff};
      const __m512i w = _mm512_maskz_loadu_epi8(load, wb + 64 * c);
      const __m512i ws = _mm512_srli_epi16(w, 4);
      __m512i index[2];
      for (int half = 0; half < 2; ++half) {
        const __m512i bytes = _mm512_permutex2var_epi8(w, t.spread[half], ws);
        index[half] = _mm512_ternarylogic_epi32(bytes, nibble, t.subtable, 0xEA);  // a & b | c
      }
      for (int r = 0; r < kRows; ++r) {
        const __m512i tl = lo[r * chunks + c], th = hi[r * chunks + c];
        for (int half = 0; half < 2; ++half) {
          acc[r][half] = _mm512_dpbusd_epi32(acc[r][half],
                                             _mm512_permutexvar_epi8(index[half], tl), one);
          acc[r][half] = _mm512_dpbusd_epi32(acc[r][half],
                                             _mm512_permutexvar_epi8(index[half], th), sixteen);
        }
      }
    }
    const int64_t left = n - 32 * b;
    for (int half = 0; half < 2; ++half) {
      const int64_t units = left - 16 * half;
      if (units <= 0) break;
      const __mmask16 store = units >= 16 ? 0xffff : static_cast<__mmask16>((1u << units) - 1);
      for (int r = 0; r < kRows; ++r) {
        _mm512_mask_storeu_epi32(out + (i0 + r) * n + 32 * b + 16 * half, store, acc[r][half]);
      }
    }
  }
}

constexpr int kU8Rows = 4;  // rows sharing each index vector

void DotU8Vbmi(const uint8_t* u, const uint8_t* w8, int32_t* out, int64_t m, int64_t n,
               int64_t k, int64_t k8, int64_t begin, int64_t end, int64_t bbegin, int64_t bend) {
  static const U8Tables t = MakeU8Tables();
  const int64_t chunks = (k8 + 1) / 2;
  thread_local std::vector<__m512i> tables;
  tables.resize(static_cast<size_t>(2 * kU8Rows * chunks));
  __m512i* lo = tables.data();
  __m512i* hi = lo + kU8Rows * chunks;
  for (int64_t i = begin; i < end; i += kU8Rows) {
    const int64_t rows = end - i < kU8Rows ? end - i : kU8Rows;
    for (int64_t r = 0; r < rows; ++r) {
      BuildU8Tables(t, u + (i + r) * k, k, chunks, lo + r * chunks, hi + r * chunks);
    }
    if (rows == kU8Rows) {
      DotU8VbmiRows<kU8Rows>(t, lo, hi, w8, out, i, n, k8, chunks, bbegin, bend);
    } else {
      for (int64_t r = 0; r < rows; ++r) {
        DotU8VbmiRows<1>(t, lo + r * chunks, hi + r * chunks, w8, out, i + r, n, k8, chunks,
                         bbegin, bend);
      }
    }
  }
}
#endif

// ------------------------------------------------------------------------------------ threads
//
// A product large enough for more than one thread is cut into chunks (rows, or for few rows,
// ranges of units) taken from a shared counter by the calling thread and by persistent helper
// threads (cores - 1 of them, started on first need). After a task a helper spins for a while
// ($BAYESBINN_JAX_XNOR_SPIN_US, default kSpinMicros) waiting for the next one, so the layers of
// one network call find it awake, then sleeps on a condition variable. The calling thread starts
// at once and takes whatever chunks the helpers have not: a helper that a loaded machine does
// not schedule costs nothing but the wake-up.

constexpr int64_t kSpinMicros = 100;

int64_t Cores() {
  // hardware_concurrency() reads /sys (some 15 us a call here): once per process.
  static const int64_t kCores = [] {
    const int64_t c = static_cast<int64_t>(std::thread::hardware_concurrency());
    return c < 1 ? int64_t{1} : c;
  }();
  return kCores;
}

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
  int64_t cores = Cores();
  if (const char* limit = std::getenv("BAYESBINN_JAX_XNOR_THREADS")) {
    const int64_t value = std::atoll(limit);
    if (value > 0) cores = value;
  }
  int64_t threads = work / per_thread;
  threads = threads > cores ? cores : threads;
  threads = threads > parts ? parts : threads;
  return threads < 1 ? 1 : threads;
}

// Whether a product too small to split wakes the helpers for the products after it: one of at
// least 1/16 of a thread's work ($BAYESBINN_JAX_XNOR_NUDGE=0: never).
bool Nudging(int64_t work, int64_t per_thread) {
  const char* env = std::getenv("BAYESBINN_JAX_XNOR_NUDGE");
  if (env && std::atoi(env) == 0) return false;
  return 16 * work >= per_thread;
}

inline void Pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

struct Task {
  std::function<void(int64_t)> fn;
  int64_t chunks = 0;
  int64_t helpers = 0;                  // helpers that may join (the thread cap less one)
  std::atomic<int64_t> joined{0};
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  void Work() {
    for (;;) {
      const int64_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks) return;
      fn(c);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

class Pool {
 public:
  explicit Pool(int64_t helpers) {
    if (const char* spin = std::getenv("BAYESBINN_JAX_XNOR_SPIN_US")) spin_us_ = std::atoll(spin);
    for (int64_t t = 0; t < helpers; ++t) std::thread([this] { Loop(); }).detach();
  }

  // Runs task->fn over its chunks on the calling thread and up to task->helpers helpers.
  void Run(const std::shared_ptr<Task>& task) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = task;
      generation_.fetch_add(1, std::memory_order_release);
      if (sleeping_ > 0) wake_.notify_all();
    }
    task->Work();
    for (int64_t spins = 0; task->done.load(std::memory_order_acquire) < task->chunks; ++spins) {
      if (spins < 4096) Pause(); else std::this_thread::yield();
    }
  }

  // Wakes sleeping helpers without work, so that they spin through the next products of the
  // call (a futex wake costs the caller a few microseconds, a helper some tens to wake up).
  void Nudge() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (sleeping_ == 0) return;
    task_ = std::make_shared<Task>();
    generation_.fetch_add(1, std::memory_order_release);
    wake_.notify_all();
  }

 private:
  void Loop() {
    uint64_t seen = 0;
    for (;;) {
      uint64_t g = generation_.load(std::memory_order_acquire);
      const auto start = std::chrono::steady_clock::now();
      for (int64_t spins = 1; g == seen; ++spins) {
        if (spins % 8 == 0 && std::chrono::steady_clock::now() - start >
                                   std::chrono::microseconds(spin_us_)) {
          std::unique_lock<std::mutex> lock(mutex_);
          ++sleeping_;
          wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
          --sleeping_;
        } else {
          // Yielding, not pausing: on an idle core this returns at once; on a loaded machine
          // it gives the core to whatever else is runnable (the calling thread among them).
          std::this_thread::yield();
        }
        g = generation_.load(std::memory_order_acquire);
      }
      seen = g;
      std::shared_ptr<Task> task;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        task = task_;
      }
      if (task->joined.fetch_add(1, std::memory_order_relaxed) < task->helpers) task->Work();
    }
  }

  int64_t spin_us_ = kSpinMicros;
  std::atomic<uint64_t> generation_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  int64_t sleeping_ = 0;
  std::shared_ptr<Task> task_;
};

// A child of fork() has no helper threads: it runs every task on the calling thread.
std::atomic<bool> forked{false};

Pool* GetPool() {
  // Never destroyed: detached helpers may still be spinning on it at exit.
  static Pool* pool = [] {
    pthread_atfork(nullptr, nullptr, [] { forked.store(true); });
    return new Pool(Cores() - 1);
  }();
  return pool;
}

// fn(begin, end, gbegin, gend) over rows [0, m) and units in `groups` groups (of 4 or 32),
// on up to `threads` threads: about 4 chunks per thread, rows split in multiples of `align`
// while there are enough of them, else each row's groups split too.
template <typename Fn>
void Split(int64_t m, int64_t groups, int64_t threads, int64_t align, bool nudge, Fn fn) {
  if (forked.load(std::memory_order_relaxed)) threads = 1;
  if (threads <= 1) {
    if (nudge && Cores() > 1 && !forked.load(std::memory_order_relaxed)) GetPool()->Nudge();
    fn(0, m, 0, groups);
    return;
  }
  const int64_t target = 4 * threads;
  const int64_t row_parts = (m + align - 1) / align;
  int64_t row_chunk, group_chunk;
  if (row_parts >= target) {
    row_chunk = (row_parts + target - 1) / target * align;
    group_chunk = groups;
  } else {
    row_chunk = align;
    const int64_t per_row = (target + row_parts - 1) / row_parts;
    group_chunk = (groups + per_row - 1) / per_row;
    group_chunk = group_chunk < 1 ? 1 : group_chunk;
  }
  const int64_t row_chunks = (m + row_chunk - 1) / row_chunk;
  const int64_t group_chunks = (groups + group_chunk - 1) / group_chunk;
  auto task = std::make_shared<Task>();
  task->chunks = row_chunks * group_chunks;
  task->helpers = threads - 1;
  task->fn = [=](int64_t c) {
    const int64_t r = (c / group_chunks) * row_chunk, g = (c % group_chunks) * group_chunk;
    fn(r, r + row_chunk < m ? r + row_chunk : m, g, g + group_chunk < groups ? g + group_chunk : groups);
  };
  GetPool()->Run(task);
}

// $BAYESBINN_JAX_XNOR_VARIANT, the measured alternative asked for ("" when unset; read at each
// call, for measurements).
std::string Variant() {
  const char* env = std::getenv("BAYESBINN_JAX_XNOR_VARIANT");
  return env ? env : "";
}

// Whether the uint8 product may use AVX-512 VBMI + VNNI where the build has them: the variants
// "u8_avx2" and "avx2" ask for the AVX2 lookups.
bool U8Wide() {
  const std::string variant = Variant();
  return variant != "u8_avx2" && variant != "avx2";
}

// The uint8 product of rows [begin, end) and blocks of 32 units [bbegin, bend) (AVX-512 VBMI +
// VNNI when `wide`, else AVX2, else scalar).
void DotU8Rows(const uint8_t* u, const uint8_t* w8, int32_t* out, int64_t m, int64_t n, int64_t k,
               int64_t k8, int64_t begin, int64_t end, int64_t bbegin, int64_t bend, bool wide) {
#if defined(__AVX512VBMI__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
  if (wide) return DotU8Vbmi(u, w8, out, m, n, k, k8, begin, end, bbegin, bend);
#endif
#if defined(__AVX2__)
  DotU8Avx2(u, w8, out, m, n, k, k8, begin, end, bbegin, bend);
#else
  DotU8Scalar(u, w8, out, m, n, k, k8, begin, end, bbegin, bend);
#endif
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
  const int64_t blocks = (n + 31) / 32;
  const int64_t threads = Threads(m * n * k, kProductsPerThread, m * blocks);
  const bool nudge = Nudging(m * n * k, kProductsPerThread);
  const bool wide = U8Wide();
  Split(m, blocks, threads, 1, nudge, [=](int64_t begin, int64_t end, int64_t bbegin, int64_t bend) {
    DotU8Rows(up, wp, op, m, n, k, k8, begin, end, bbegin, bend, wide);
  });
  return ffi::Error::Success();
}

// A count of rows [begin, end) and unit groups [gbegin, gend) (CountScalar's arguments).
using CountFn = void (*)(const uint64_t*, const uint64_t*, int32_t*, int64_t, int64_t, int64_t,
                         int64_t, int64_t, int64_t, int64_t, int64_t);

// The count $BAYESBINN_JAX_XNOR_VARIANT picks (read at each call; benchmarks/packed_inference.py
// measures them): "scalar64", "scalar32" (word width), "avx2" (the AVX2 default: Harley-Seal from
// kHarleySealWords words per row on, else nibble lookups), "avx2_lookup" (nibble lookups only),
// "avx2_hs" (Harley-Seal only), "avx2_rows1" (one row per pass), "avx2_reduce1" (a widening
// reduction per word), "avx2_unblocked" (all weights against each row pair in turn),
// "avx512_vpop256" (AVX-512's vector popcount on 256-bit vectors). Unset or unknown: the fastest
// this build has: 512-bit vector popcount with AVX-512 VPOPCNTDQ, else the AVX2 default, else
// scalar; two rows per pass, 128 KiB weight blocks.
CountFn SelectCount() {
  const std::string variant = Variant();
  if (variant == "scalar64") return CountScalar;
  if (variant == "scalar32") return CountScalar32;
#if defined(__AVX2__)
  if (variant == "avx2") return CountAvx2<-3, true>;
  if (variant == "avx2_lookup") return CountAvx2<31, true>;
  if (variant == "avx2_rows1") return CountAvx2<-3, false>;
  if (variant == "avx2_reduce1") return CountAvx2<1, true>;
  if (variant == "avx2_hs") return CountAvx2<0, true>;
  if (variant == "avx2_unblocked") return CountAvx2<-3, true, 0>;
  if (variant == "avx512_vpop256") return CountAvx2<-2, true>;
  if (variant == "avx512_permute") return CountAvx2<-1, true>;
#if defined(__AVX512VPOPCNTDQ__) && defined(__AVX512F__)
  return CountSpread<>;
#else
  return CountAvx2<-1, true>;
#endif
#else
  return CountScalar;
#endif
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
  const int64_t groups = (n + 3) / 4;
  const int64_t threads = Threads(planes * m * n * k, kWordsPerThread, ((m + 1) / 2) * groups);
  const bool nudge = Nudging(planes * m * n * k, kWordsPerThread);
  const CountFn count = SelectCount();
  Split(m, groups, threads, 2, nudge, [=](int64_t begin, int64_t end, int64_t gbegin, int64_t gend) {
    count(ap, wp, op, planes, m, n, k, begin, end, gbegin, gend);
  });
  return ffi::Error::Success();
}

// One row's words [qbegin, qend) of bits value[j] <= limit[j] (kAtLeast: value[j] >= limit[j])
// for units j < n; 0 past n.
template <bool kAtLeast>
void PackCompare(const int32_t* value, const int32_t* limit, uint32_t* out, int64_t n,
                 int64_t qbegin, int64_t qend) {
  for (int64_t q = qbegin; q < qend; ++q) {
    const int64_t j0 = 32 * q;
    uint32_t word = 0;
#if defined(__AVX2__)
    if (j0 + 32 <= n) {
      for (int64_t e = 0; e < 4; ++e) {
        const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(value + j0 + 8 * e));
        const __m256i l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(limit + j0 + 8 * e));
        // The lanes that fail the comparison: value > limit (kAtLeast: limit > value).
        const __m256i fail = kAtLeast ? _mm256_cmpgt_epi32(l, c) : _mm256_cmpgt_epi32(c, l);
        const uint32_t failed =
            static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(fail)));
        word |= (~failed & 0xffu) << (8 * e);
      }
      out[q] = word;
      continue;
    }
#endif
    for (int64_t b = 0; b < 32 && j0 + b < n; ++b) {
      const bool pass = kAtLeast ? value[j0 + b] >= limit[j0 + b] : value[j0 + b] <= limit[j0 + b];
      word |= static_cast<uint32_t>(pass) << b;
    }
    out[q] = word;
  }
}

// Rows of the counts held at once per thread before they are packed (an L2-sized buffer).
constexpr int64_t kBitsRows = 32;

// Rows [begin, end) and words [qbegin, qend) of bits count[m, j] <= limit[m % r, j] into out
// (`words` uint32 per row): each block of up to kBitsRows rows is counted from `rows(r0, r1)`,
// the block's uint64 words (`planes` bit-planes `plane_rows` rows apart), into a thread-local
// buffer, then packed. XnorBits and XnorConvBits differ only in where the rows come from.
template <typename RowsFn>
void CountBelowAndPack(CountFn count, RowsFn rows, int64_t planes, int64_t plane_rows,
                       const uint64_t* w4,
                       const int32_t* limit, uint32_t* out, int64_t n, int64_t k, int64_t r,
                       int64_t words, int64_t begin, int64_t end, int64_t qbegin, int64_t qend) {
  thread_local std::vector<int32_t> counts;
  counts.resize(static_cast<size_t>(kBitsRows * n));
  const int64_t groups = (n + 3) / 4;
  const int64_t gbegin = 8 * qbegin, gend = 8 * qend < groups ? 8 * qend : groups;
  for (int64_t r0 = begin; r0 < end; r0 += kBitsRows) {
    const int64_t r1 = r0 + kBitsRows < end ? r0 + kBitsRows : end;
    count(rows(r0, r1), w4, counts.data(), planes, plane_rows, n, k, 0, r1 - r0, gbegin, gend);
    for (int64_t i = r0; i < r1; ++i) {
      PackCompare<false>(counts.data() + (i - r0) * n, limit + (i % r) * n, out + i * words, n,
                         qbegin, qend);
    }
  }
}

ffi::Error XnorBitsImpl(ffi::Buffer<ffi::U32> a, ffi::Buffer<ffi::U32> w,
                        ffi::Buffer<ffi::S32> limit, ffi::ResultBuffer<ffi::U32> out) {
  // a, w as XnorCount; limit: (R, N) int32 with M a multiple of R (row m reads limit[m % R]);
  // out: (M, ceil(N / 32)) uint32.
  auto ad = a.dimensions();
  auto wd = w.dimensions();
  auto ld = limit.dimensions();
  auto od = out->dimensions();
  if (ad.size() != 3 || wd.size() != 3 || ld.size() != 2 || od.size() != 2 || ad[2] % 2 != 0 ||
      wd[1] * 2 != ad[2] || wd[2] != 8 || od[0] != ad[1] || ld[0] < 1 || ad[1] % ld[0] != 0 ||
      wd[0] * 4 < ld[1] || od[1] != (ld[1] + 31) / 32) {
    return ffi::Error::InvalidArgument(
        "xnor_bits: expected a (P, M, K) uint32 with K even, w (ceil(N / 4), K / 2, 8) uint32, "
        "limit (R, N) int32 with M a multiple of R, out (M, ceil(N / 32)) uint32");
  }
  const int64_t planes = ad[0], m = ad[1], k = ad[2] / 2, n = ld[1], r = ld[0], words = od[1];
  const auto* ap = reinterpret_cast<const uint64_t*>(a.typed_data());
  const auto* wp = reinterpret_cast<const uint64_t*>(w.typed_data());
  const int32_t* lp = limit.typed_data();
  uint32_t* op = out->typed_data();
  const int64_t threads = Threads(planes * m * n * k, kWordsPerThread, ((m + 1) / 2) * words);
  const bool nudge = Nudging(planes * m * n * k, kWordsPerThread);
  const CountFn count = SelectCount();
  // Chunks of whole words (8 groups of 4 units), so no two threads write one word.
  Split(m, words, threads, 2, nudge, [=](int64_t begin, int64_t end, int64_t qbegin, int64_t qend) {
    // Rows r0.. of a in place (the planes keep their stride m k).
    auto rows = [=](int64_t r0, int64_t) { return ap + r0 * k; };
    CountBelowAndPack(count, rows, planes, m, wp, lp, op, n, k, r, words, begin, end, qbegin, qend);
  });
  return ffi::Error::Success();
}

ffi::Error DotU8BitsImpl(ffi::Buffer<ffi::U8> u, ffi::Buffer<ffi::U8> w,
                         ffi::Buffer<ffi::S32> limit, ffi::ResultBuffer<ffi::U32> out) {
  // u, w as DotU8; limit: (R, N) int32 with M a multiple of R; out: (M, ceil(N / 32)) uint32,
  // bit b of out[m, q]: 2 dot[m, 32 q + b] - sum_k u[m, k] >= limit[m % R, 32 q + b].
  auto ud = u.dimensions();
  auto wd = w.dimensions();
  auto ld = limit.dimensions();
  auto od = out->dimensions();
  if (ud.size() != 2 || wd.size() != 3 || ld.size() != 2 || od.size() != 2 || wd[2] != 32 ||
      wd[1] != (ud[1] + 7) / 8 || ld[0] < 1 || ud[0] % ld[0] != 0 || wd[0] * 32 < ld[1] ||
      od[0] != ud[0] || od[1] != (ld[1] + 31) / 32) {
    return ffi::Error::InvalidArgument(
        "dot_u8_bits: expected u (M, K) uint8, w (ceil(N / 32), ceil(K / 8), 32) uint8, limit "
        "(R, N) int32 with M a multiple of R, out (M, ceil(N / 32)) uint32");
  }
  const int64_t m = ud[0], k = ud[1], k8 = wd[1], n = ld[1], r = ld[0], words = od[1];
  const uint8_t* up = u.typed_data();
  const uint8_t* wp = w.typed_data();
  const int32_t* lp = limit.typed_data();
  uint32_t* op = out->typed_data();
  const int64_t threads = Threads(m * n * k, kProductsPerThread, m * words);
  const bool nudge = Nudging(m * n * k, kProductsPerThread);
  const bool wide = U8Wide();
  // Chunks of rows and of whole words (blocks of 32 units, as the product's).
  Split(m, words, threads, 1, nudge, [=](int64_t begin, int64_t end, int64_t qbegin, int64_t qend) {
    thread_local std::vector<int32_t> sums;
    sums.resize(static_cast<size_t>(kBitsRows * n));
    const int64_t j0 = 32 * qbegin, j1 = 32 * qend < n ? 32 * qend : n;
    for (int64_t r0 = begin; r0 < end; r0 += kBitsRows) {
      const int64_t r1 = r0 + kBitsRows < end ? r0 + kBitsRows : end;
      DotU8Rows(up + r0 * k, wp, sums.data(), r1 - r0, n, k, k8, 0, r1 - r0, qbegin, qend, wide);
      for (int64_t i = r0; i < r1; ++i) {
        const uint8_t* ui = up + i * k;
        int32_t total = 0;
        for (int64_t t = 0; t < k; ++t) total += ui[t];
        int32_t* row = sums.data() + (i - r0) * n;
        for (int64_t j = j0; j < j1; ++j) row[j] = 2 * row[j] - total;
        PackCompare<true>(row, lp + (i % r) * n, op + i * words, n, qbegin, qend);
      }
    }
  });
  return ffi::Error::Success();
}

// A convolution's window over a (B, H, W, C words) feature map: output row i is position
// (oh, ow) = divmod(i % positions, wo) of image i / positions.
struct Window {
  int64_t height, width, ch, kh, kw, sh, sw, pt, pl, wo, positions;
  bool odd;  // kh kw C is odd: the patch row ends in one zero word (K is even)
};

// Output row i's patch into dst: tap (a, c) reads pixel (oh sh + a - pt, ow sw + c - pl), zero
// words outside the image; a window row inside the image is one copy.
void GatherPatch(const uint32_t* x, const Window& g, int64_t i, uint32_t* dst) {
  const int64_t b = i / g.positions, p = i % g.positions, oh = p / g.wo, ow = p % g.wo;
  const auto pixel = [&](int64_t ih, int64_t iw) { return x + ((b * g.height + ih) * g.width + iw) * g.ch; };
  for (int64_t a = 0; a < g.kh; ++a) {
    const int64_t ih = oh * g.sh + a - g.pt, iw0 = ow * g.sw - g.pl;
    if (ih >= 0 && ih < g.height && iw0 >= 0 && iw0 + g.kw <= g.width) {  // kw pixels in a row
      std::memcpy(dst, pixel(ih, iw0), static_cast<size_t>(g.kw * g.ch) * sizeof(uint32_t));
      dst += g.kw * g.ch;
      continue;
    }
    for (int64_t c = 0; c < g.kw; ++c, dst += g.ch) {
      const int64_t iw = iw0 + c;
      if (ih < 0 || ih >= g.height || iw < 0 || iw >= g.width) {
        std::memset(dst, 0, static_cast<size_t>(g.ch) * sizeof(uint32_t));
      } else {
        std::memcpy(dst, pixel(ih, iw), static_cast<size_t>(g.ch) * sizeof(uint32_t));
      }
    }
  }
  if (g.odd) *dst = 0;
}

ffi::Error XnorConvBitsImpl(ffi::Buffer<ffi::U32> x, ffi::Buffer<ffi::U32> w,
                            ffi::Buffer<ffi::S32> limit, ffi::ResultBuffer<ffi::U32> out,
                            int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt,
                            int64_t pl, int64_t ho, int64_t wo) {
  // x: (B, H, W, C) uint32 words of the input's channels; w as XnorCount over the patches'
  // K = kh kw C words (tap-major, (a, c, channel word); one zero word more when odd); limit:
  // (ho wo, N) int32; out: (B ho wo, ceil(N / 32)) uint32, rows in (b, oh, ow) order. Output
  // position (oh, ow)'s tap (a, c) reads x[b, oh sh + a - pt, ow sw + c - pl] (0 outside).
  auto xd = x.dimensions();
  auto wd = w.dimensions();
  auto ld = limit.dimensions();
  auto od = out->dimensions();
  const bool shape_ok = xd.size() == 4 && wd.size() == 3 && ld.size() == 2 && od.size() == 2 &&
                        wd[2] == 8 && kh > 0 && kw > 0 && sh > 0 && sw > 0 && ho >= 0 &&
                        wo >= 0 && ld[0] == ho * wo && od[0] == xd[0] * ho * wo &&
                        wd[0] * 4 >= ld[1] && od[1] == (ld[1] + 31) / 32;
  const int64_t taps_words = kh * kw * (xd.size() == 4 ? xd[3] : 0);
  if (!shape_ok || wd[1] * 2 != taps_words + taps_words % 2 || ld[0] < 1) {
    return ffi::Error::InvalidArgument(
        "xnor_conv_bits: expected x (B, H, W, C) uint32, w (ceil(N / 4), ceil(kh kw C / 2), 8) "
        "uint32, limit (ho wo, N) int32, out (B ho wo, ceil(N / 32)) uint32");
  }
  const int64_t height = xd[1], width = xd[2], ch = xd[3], m = od[0], n = ld[1], r = ld[0];
  const int64_t k = wd[1], words = od[1];
  const uint32_t* xp = x.typed_data();
  const auto* wp = reinterpret_cast<const uint64_t*>(w.typed_data());
  const int32_t* lp = limit.typed_data();
  uint32_t* op = out->typed_data();
  const int64_t threads = Threads(m * n * k, kWordsPerThread, ((m + 1) / 2) * words);
  const bool nudge = Nudging(m * n * k, kWordsPerThread);
  const Window window{height, width, ch, kh, kw, sh, sw, pt, pl, wo, r, taps_words % 2 == 1};
  const CountFn count = SelectCount();
  Split(m, words, threads, 2, nudge, [=](int64_t begin, int64_t end, int64_t qbegin, int64_t qend) {
    thread_local std::vector<uint64_t> patches;
    patches.resize(static_cast<size_t>(kBitsRows * k));
    auto rows = [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i) {
        GatherPatch(xp, window, i, reinterpret_cast<uint32_t*>(patches.data() + (i - r0) * k));
      }
      return static_cast<const uint64_t*>(patches.data());
    };
    CountBelowAndPack(count, rows, 1, kBitsRows, wp, lp, op, n, k, r, words, begin, end, qbegin,
                      qend);
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(BayesbinnXnorBits, XnorBitsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::U32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(BayesbinnDotU8Bits, DotU8BitsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::U32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(BayesbinnXnorConvBits, XnorConvBitsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::U32>>()
                                  .Attr<int64_t>("kh")
                                  .Attr<int64_t>("kw")
                                  .Attr<int64_t>("sh")
                                  .Attr<int64_t>("sw")
                                  .Attr<int64_t>("pt")
                                  .Attr<int64_t>("pl")
                                  .Attr<int64_t>("ho")
                                  .Attr<int64_t>("wo"));
