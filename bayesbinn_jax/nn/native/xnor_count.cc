// xnor/popcount matrix product for bayesbinn_jax.nn.xnor_kernel (XLA FFI, CPU).
//
// out[m, n] = sum_k popcount(a[m, k] XOR w[n, k]) over uint32 words; the words are
// read two at a time as uint64 (little-endian, the same bit layout) when K is even.
// Blocks of 4 rows of `a` share each load of a row of `w`; `w` is walked in blocks of
// units that stay in the L1/L2 caches while the rows of `a` pass over them.
#include <cstdint>
#include <cstring>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

inline int64_t Pop(uint64_t x) { return __builtin_popcountll(x); }

template <typename Word>
void Count(const Word* a, const Word* w, int32_t* out, int64_t m, int64_t n, int64_t k) {
  constexpr int64_t kUnitBlock = 64;
  for (int64_t n0 = 0; n0 < n; n0 += kUnitBlock) {
    const int64_t n1 = n0 + kUnitBlock < n ? n0 + kUnitBlock : n;
    int64_t i = 0;
    for (; i + 4 <= m; i += 4) {
      const Word* a0 = a + (i + 0) * k;
      const Word* a1 = a + (i + 1) * k;
      const Word* a2 = a + (i + 2) * k;
      const Word* a3 = a + (i + 3) * k;
      for (int64_t j = n0; j < n1; ++j) {
        const Word* wj = w + j * k;
        int64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0;
        for (int64_t t = 0; t < k; ++t) {
          const Word v = wj[t];
          c0 += Pop(a0[t] ^ v);
          c1 += Pop(a1[t] ^ v);
          c2 += Pop(a2[t] ^ v);
          c3 += Pop(a3[t] ^ v);
        }
        out[(i + 0) * n + j] = static_cast<int32_t>(c0);
        out[(i + 1) * n + j] = static_cast<int32_t>(c1);
        out[(i + 2) * n + j] = static_cast<int32_t>(c2);
        out[(i + 3) * n + j] = static_cast<int32_t>(c3);
      }
    }
    for (; i < m; ++i) {
      const Word* ai = a + i * k;
      for (int64_t j = n0; j < n1; ++j) {
        const Word* wj = w + j * k;
        int64_t c0 = 0, c1 = 0;
        int64_t t = 0;
        for (; t + 2 <= k; t += 2) {
          c0 += Pop(ai[t] ^ wj[t]);
          c1 += Pop(ai[t + 1] ^ wj[t + 1]);
        }
        if (t < k) c0 += Pop(ai[t] ^ wj[t]);
        out[i * n + j] = static_cast<int32_t>(c0 + c1);
      }
    }
  }
}

ffi::Error XnorCountImpl(ffi::Buffer<ffi::U32> a, ffi::Buffer<ffi::U32> w,
                         ffi::ResultBuffer<ffi::S32> out) {
  auto ad = a.dimensions();
  auto wd = w.dimensions();
  if (ad.size() != 2 || wd.size() != 2 || ad[1] != wd[1]) {
    return ffi::Error::InvalidArgument("xnor_count: expected a (M, K) and w (N, K) uint32");
  }
  const int64_t m = ad[0], k = ad[1], n = wd[0];
  const uint32_t* ap = a.typed_data();
  const uint32_t* wp = w.typed_data();
  int32_t* op = out->typed_data();
  if (k % 2 == 0) {
    // Aligned to 8 bytes by XLA's allocator (buffers are at least 16-byte aligned).
    Count(reinterpret_cast<const uint64_t*>(ap), reinterpret_cast<const uint64_t*>(wp), op, m, n,
          k / 2);
  } else {
    Count(ap, wp, op, m, n, k);
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BayesbinnXnorCount, XnorCountImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());
