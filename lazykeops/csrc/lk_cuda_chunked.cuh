// lk_cuda_chunked.cuh: the chunked variant of the CUDA kernel, for formulas over wide
// variables; one instantiation of the kernel skeleton (lk_cuda_kernel.cuh).
//
// A formula rendered with a chunk plan (lazykeops/compile/chunking.py) defines WIDE (the
// components of its wide i- and j-variables), NCHUNKED sums over those components,
// chunk_full / chunk_tail (which add one chunk of components to each sum) and an `eval`
// that reads each sum as part<m>().
//
// A thread owns one row, its narrow i-variables in registers (the row source:
// RegisterRows over NarrowArgs). The term evaluator ChunkTerms, for each tile of TILE
// terms: the narrow j-variables go to shared memory once; then, chunk after chunk of CHUNK
// components, the wide variables' chunk (of the tile's terms and of the block's rows) goes
// to shared memory, the thread's own row's chunk from there to registers, and every term's
// partial sums (TILE x NCHUNKED registers) grow by that chunk. Last, `eval` runs once per
// term on the finished sums and the narrow variables, and its value goes to the reduction.
#pragma once

#include "lk_cuda_kernel.cuh"

namespace lk {

template <class F, class R, class T>
struct ChunkConfig {
  static constexpr int CL = CHUNK;
  static constexpr int BLOCK = LK_CUDA_BLOCK;
  static constexpr int RPT = 1;
  static constexpr int ROWS = BLOCK;
  using Layout = StridedRows<BLOCK>;
  static constexpr int MIN_BLOCKS = 0;
  static constexpr int TILE = 32;  // terms per tile: TILE * NCHUNKED partial sums per thread
  static constexpr int PAD = 16 / sizeof(T);
  static constexpr int DIN = narrow_offset<F>(CAT_I, F::NARGS);
  static constexpr int DJN = narrow_offset<F>(CAT_J, F::NARGS);
  static constexpr int DP = packed_size<F>(CAT_P);
  static constexpr bool P_IN_SHARED = params_in_shared<F, T>();
  static constexpr int DPS = P_IN_SHARED ? DP : 0;  // parameter scalars in shared memory
  static constexpr int NWI = wide_index<F>(CAT_I, F::NARGS);
  static constexpr int NWJ = wide_index<F>(CAT_J, F::NARGS);
  static constexpr int DJNP = (DJN + PAD - 1) / PAD * PAD;
  static constexpr int WSTRIDE = (NWJ * CL + PAD - 1) / PAD * PAD;
  // The block's wide i-variables' chunk, one row per thread: an odd row stride keeps the
  // threads' reads on distinct banks.
  static constexpr int XSTRIDE = NWI * CL + 1;
  static constexpr size_t SHARED =
      ((size_t)TILE * (DJNP + WSTRIDE) + (NWI > 0 ? (size_t)BLOCK * XSTRIDE : 0) + DPS) * sizeof(T);
};

// The term evaluator of the chunked variant. Shared memory: the tile's narrow j-variables
// (TILE rows of DJNP), the chunk of its wide j-variables (TILE rows of WSTRIDE), the chunk
// of the block's wide i-variables (BLOCK rows of XSTRIDE), then the parameters.
template <class F, class C, class T, class S>
struct ChunkTerms {
  static constexpr int TILE = C::TILE;
  static constexpr int SHARED_SCALARS =
      C::TILE * (C::DJNP + C::WSTRIDE) + (C::NWI > 0 ? C::BLOCK * C::XSTRIDE : 0);

  template <class Rows, class P, class Push>
  __device__ static LK_INLINE void tile(T* shared, const ArgTable<F>& args, int64_t b,
                                        int64_t row0, int64_t row_end, int64_t nred,
                                        const TermTile& t, const Rows& rows, P params,
                                        Push push) {
    const int64_t j0 = t.j0;
    const int n = t.n;
    constexpr int W = F::WIDE, CL = C::CL, NCH = F::NCHUNKED;
    using X = decltype(rows.in(0));
    using Y = Packed<T, NarrowArgs>;
    using In = CudaChunkIn<F, T, X, Y, P, CL>;
    T* ynarrow = shared;
    T* ywide = ynarrow + C::TILE * C::DJNP;
    T* xwide = ywide + C::TILE * C::WSTRIDE;
    __syncthreads();
    stage_narrow_terms<F, S, C::BLOCK, C::DJNP>(ynarrow, args, b, j0, n);
    T part[C::TILE][NCH];
    LK_UNROLL for (int jj = 0; jj < C::TILE; ++jj)
      LK_UNROLL for (int m = 0; m < NCH; ++m) part[jj][m] = T(0);
    for (int c0 = 0; c0 < W; c0 += CL) {
      __syncthreads();  // every thread is done with the previous chunk
      // This chunk of the wide variables: the tile's terms and the block's rows, read
      // one 32-component segment of a row per warp instruction (coalesced).
      static_for<F::NARGS>([&](auto v) {
        constexpr int V = decltype(v)::value;
        if constexpr (F::CAT[V] != CAT_P && is_wide<F>(V)) {
          constexpr bool J = F::CAT[V] == CAT_J;
          const S* src = arg<F, S>(args, V, b) + c0;
          const int64_t first = J ? j0 : row0;
          const int count = J ? n : C::BLOCK;
          T* dst = J ? ywide + wide_index<F>(CAT_J, V) * CL : xwide + wide_index<F>(CAT_I, V) * CL;
          for (int e = threadIdx.x; e < count * CL; e += C::BLOCK) {
            const int r = e / CL, k = e - r * CL;
            const int64_t last = J ? nred : row_end;
            const int64_t at = first + r < last ? first + r : last - 1;
            if (c0 + k < W) dst[r * (J ? C::WSTRIDE : C::XSTRIDE) + k] = to_compute(src[at * W + k]);
          }
        }
      });
      __syncthreads();
      T xc[C::NWI > 0 ? C::NWI : 1][CL];
      LK_UNROLL for (int w = 0; w < C::NWI; ++w)
        LK_UNROLL for (int k = 0; k < CL; ++k)
          xc[w][k] = c0 + k < W ? xwide[threadIdx.x * C::XSTRIDE + w * CL + k] : T(0);
      // The chunk functions get the tile's narrow j-variables too: a j-variable of
      // dimension 1 may enter a chunked sum (compile/chunking.py: _chunkable).
      if (c0 + CL <= W) {
        LK_UNROLL for (int jj = 0; jj < C::TILE; ++jj)
          if (jj < n)
            F::template chunk_full<T>(In{{rows.in(0), Y{ynarrow + jj * C::DJNP}, params}, xc,
                                         ywide + jj * C::WSTRIDE, c0, nullptr},
                                      part[jj]);
      } else if constexpr (W % CL != 0) {
        LK_UNROLL for (int jj = 0; jj < C::TILE; ++jj)
          if (jj < n)
            F::template chunk_tail<T>(In{{rows.in(0), Y{ynarrow + jj * C::DJNP}, params}, xc,
                                         ywide + jj * C::WSTRIDE, c0, nullptr},
                                      part[jj]);
      }
    }
    LK_UNROLL for (int jj = 0; jj < C::TILE; ++jj) {
      if (jj < n) {
        T f[F::DIMOUT];
        F::template eval<T>(
            In{{rows.in(0), Y{ynarrow + jj * C::DJNP}, params}, nullptr, nullptr, 0, part[jj]}, f);
        push(0, f, j0 + jj);
      }
    }
  }
};

template <class F, class R, class T, class S>
struct ChunkedVariant : ChunkConfig<F, R, T> {
  using C = ChunkConfig<F, R, T>;
  using Rows = RegisterRows<F, T, S, C::RPT, typename C::Layout, NarrowArgs>;
  using Terms = ChunkTerms<F, C, T, S>;
};

}  // namespace lk
