// lk_cuda_tiles.cuh: the tiled variant of the CUDA kernel (lk_cuda_engine.cuh describes it),
// one instantiation of the kernel skeleton (lk_cuda_kernel.cuh): its launch configuration
// (CudaConfig), the term evaluator TileTerms (a tile of j-variables in shared memory, one
// `eval` per (row, term)) and TiledVariant, which picks the row source: registers for rows
// of up to LK_CUDA_X_REGISTERS words, global memory past it.
#pragma once

#include "lk_std.h"

#include "lk_cuda_kernel.cuh"

// Tuning knob (benchmarks/tune_cuda.py): rows per thread (0: chosen from the formula's
// register needs).
#ifndef LK_CUDA_RPT
#define LK_CUDA_RPT 0
#endif
// i-variables of up to this many 32-bit registers per thread stay in registers; past it
// they are read from global memory. compile/chunking.py chunks the wider ones first, with
// the same limit: WIDE_ABOVE_WORDS, which the generated source defines as
// LK_CUDA_X_REGISTERS (compile/codegen.py: engine_defines). On the H100, D = 160 in
// registers ran 2.7x faster than in chunks, D = 256 spilled.
#ifndef LK_CUDA_X_REGISTERS
#error "LK_CUDA_X_REGISTERS undefined: the generated source defines it (compile/codegen.py)"
#endif

namespace lk {

template <class F, class R, class T>
struct CudaConfig {
  static constexpr int DI = packed_size<F>(CAT_I);
  static constexpr int DJ = packed_size<F>(CAT_J);
  static constexpr int DP = packed_size<F>(CAT_P);
  static constexpr int BLOCK = LK_CUDA_BLOCK;
  static constexpr int PAD = 16 / sizeof(T);
  static constexpr int DJP = (DJ + PAD - 1) / PAD * PAD;  // row stride of a tile
  // Several rows per thread while their i-variables and accumulators stay small in
  // registers: each term's shared-memory load and loop step then serve more pairs. Four
  // rows for the narrowest (H200, benchmarks/RESULTS.md "Rows per thread": a D = 3
  // Gaussian sum 1.12x faster than on two rows, LogSumExp 1.02x; a Gaussian gradient, 10
  // words, 1.03x slower on four), two up to 24 words, one past it (an ArgKMin K = 10 on
  // two rows is 1.5x slower than on one).
  static constexpr int ACC = (int)(sizeof(typename R::template Acc<T>) / sizeof(T));
  static constexpr int ROW_WORDS = DI + ACC + F::DIMOUT;
  static constexpr int RPT = LK_CUDA_RPT > 0 ? LK_CUDA_RPT
                             : ROW_WORDS <= 8 ? 4 : ROW_WORDS <= 24 ? 2 : 1;
  static constexpr int ROWS = BLOCK * RPT;
  using Layout = StridedRows<BLOCK>;
  static constexpr int MIN_BLOCKS = 0;
  // Wider i-variables are read from global memory (cached) at each use (GlobalRows).
  static constexpr bool X_IN_REGISTERS = DI * RPT * (int)sizeof(T) <= LK_CUDA_X_REGISTERS * 4;
  static constexpr bool P_IN_SHARED = params_in_shared<F, T>();
  static constexpr int DPS = P_IN_SHARED ? DP : 0;  // parameter scalars in shared memory
  // Tiles of BLOCK terms within 48 KB, fewer terms for wide rows (down to 1).
  static constexpr int SMEM_SOFT = 48 * 1024;
  static constexpr int FIT = (SMEM_SOFT / (int)sizeof(T) - DPS) / (DJP > 0 ? DJP : 1);
  static constexpr int TILE = DJP == 0 ? BLOCK : (FIT >= BLOCK ? BLOCK : (FIT > 1 ? FIT : 1));
  static constexpr size_t SHARED = ((size_t)TILE * DJP + DPS) * sizeof(T);
};

// Terms j0 .. j0+n-1 of every j-variable into the tile, row jj at tile[jj * DJP]: the block's
// threads read consecutive scalars of each variable (coalesced).
template <class F, class C, class T, class S>
__device__ LK_INLINE void load_tile(T* tile, const ArgTable<F>& args, int64_t b, int64_t j0,
                                    int n) {
  static_for<F::NARGS>([&](auto v) {
    constexpr int V = decltype(v)::value;
    if constexpr (F::CAT[V] == CAT_J) {
      constexpr int dim = F::DIM[V], off = packed_offset<F>(CAT_J, V);
      const S* src = arg<F, S>(args, V, b) + j0 * dim;
      for (int e = threadIdx.x; e < n * dim; e += C::BLOCK) {
        const int jj = e / dim;
        tile[jj * C::DJP + off + (e - jj * dim)] = to_compute(src[e]);
      }
    }
  });
}

// The term evaluator of the tiled variant: the tile's j-variables to shared memory, then
// `eval` for each term and each of the thread's rows, the rows of a term one after the
// other (independent instructions the scheduler interleaves).
template <class F, class C, class T, class S>
struct TileTerms {
  static constexpr int TILE = C::TILE;
  static constexpr int SHARED_SCALARS = C::TILE * C::DJP;  // the tile

  template <class Rows, class P, class Push>
  __device__ static LK_INLINE void tile(T* shared, const ArgTable<F>& args, int64_t b, int64_t,
                                        int64_t, int64_t, const TermTile& t, const Rows& rows,
                                        P params, Push push) {
    const int64_t j0 = t.j0;
    const int n = t.n;
    __syncthreads();
    load_tile<F, C, T, S>(shared, args, b, j0, n);
    __syncthreads();
    auto term = [&](int jj) {
      const Packed<T, AllArgs> yj{shared + jj * C::DJP};
      LK_UNROLL for (int r = 0; r < C::RPT; ++r) {
        T f[F::DIMOUT];
        F::template eval<T>(CudaIn<F, T, decltype(rows.in(r)), Packed<T, AllArgs>, P>{
                                rows.in(r), yj, params}, f);
        push(r, f, j0 + jj);
      }
    };
    if (n == TILE) {
#pragma unroll 4
      for (int jj = 0; jj < TILE; ++jj) term(jj);
    } else {
      for (int jj = 0; jj < n; ++jj) term(jj);
    }
  }
};

template <class F, class R, class T, class S>
struct TiledVariant : CudaConfig<F, R, T> {
  using C = CudaConfig<F, R, T>;
  using Rows = std::conditional_t<C::X_IN_REGISTERS,
                                  RegisterRows<F, T, S, C::RPT, typename C::Layout, AllArgs>,
                                  GlobalRows<F, T, S, C::RPT, typename C::Layout>>;
  using Terms = TileTerms<F, C, T, S>;
};

}  // namespace lk
