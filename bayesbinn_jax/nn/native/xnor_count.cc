// xnor/popcount matrix product for bayesbinn_jax.nn.xnor_kernel (XLA FFI, CPU).
//
// out[m, n] = sum_p 2^p sum_k popcount(a[p, m, k] XOR w[n, k]) over uint32 words, read two at
// a time as uint64 (little-endian, the same bit layout; K is even). With AVX2: 4 units per
// vector, byte-wise popcount by nibble lookup; else scalar popcount.
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

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
template <bool kTwo>
inline void Sums(const uint64_t* a0, const uint64_t* a1, const uint64_t* wg, int64_t k,
                 __m256i* s0, __m256i* s1) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i c0 = zero, c1 = zero;
  int64_t t = 0;
  while (t < k) {
    const int64_t stop = t + 31 < k ? t + 31 : k;
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
void CountAvx2(const uint64_t* a, const uint64_t* w4, int32_t* out, int64_t planes, int64_t m,
               int64_t n, int64_t k, int64_t begin, int64_t end) {
  const int64_t groups = (n + 3) / 4;
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t i = begin; i < end; i += 2) {
    const bool two = i + 1 < end;
    for (int64_t g = 0; g < groups; ++g) {
      const uint64_t* wg = w4 + g * k * 4;
      __m256i t0 = zero, t1 = zero, s0, s1;
      if (two) {
        for (int64_t p = 0; p < planes; ++p) {
          const uint64_t* a0 = a + (p * m + i) * k;
          Sums<true>(a0, a0 + k, wg, k, &s0, &s1);
          t0 = _mm256_add_epi64(t0, _mm256_slli_epi64(s0, static_cast<int>(p)));
          t1 = _mm256_add_epi64(t1, _mm256_slli_epi64(s1, static_cast<int>(p)));
        }
      } else {
        for (int64_t p = 0; p < planes; p += 2) {
          const uint64_t* a0 = a + (p * m + i) * k;
          if (p + 1 < planes) {
            Sums<true>(a0, a0 + m * k, wg, k, &s0, &s1);
            t0 = _mm256_add_epi64(t0, _mm256_slli_epi64(s1, static_cast<int>(p + 1)));
          } else {
            Sums<false>(a0, a0, wg, k, &s0, &s1);
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
#endif

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
  // Rows split over the cores when the work is large (a thread costs some 20 us to start).
  const int64_t work = planes * m * n * k;
  const int64_t cores = static_cast<int64_t>(std::thread::hardware_concurrency());
  int64_t threads = work >> 21;  // about one thread per 2M uint64 words (~1 ms)
  threads = threads < 1 ? 1 : threads > cores ? cores : threads;
  threads = threads > m / 2 ? (m / 2 > 1 ? m / 2 : 1) : threads;
  auto count = [=](int64_t begin, int64_t end) {
#if defined(__AVX2__)
    CountAvx2(ap, wp, op, planes, m, n, k, begin, end);
#else
    CountScalar(ap, wp, op, planes, m, n, k, begin, end);
#endif
  };
  if (threads <= 1) {
    count(0, m);
    return ffi::Error::Success();
  }
  std::vector<std::thread> pool;
  const int64_t chunk = ((m + threads - 1) / threads + 1) / 2 * 2;
  for (int64_t begin = chunk; begin < m; begin += chunk) {
    pool.emplace_back(count, begin, begin + chunk < m ? begin + chunk : m);
  }
  count(0, chunk < m ? chunk : m);
  for (auto& t : pool) t.join();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BayesbinnXnorCount, XnorCountImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());
