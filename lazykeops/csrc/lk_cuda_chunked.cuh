// lk_cuda_chunked.cuh: the CUDA engine's kernel for formulas over wide variables.
//
// Included by lk_cuda_engine.cuh. A formula rendered with a chunk plan
// (lazykeops/compile/chunking.py) defines WIDE (the components of its wide i- and
// j-variables), NCHUNKED sums over those components, chunk_full / chunk_tail (which add
// one chunk of components to each sum) and an `eval` that reads each sum as part<m>().
//
// A thread owns one row. For each tile of TILE terms: the narrow j-variables go to shared
// memory once; then, chunk after chunk of CHUNK components, the wide variables' chunk (of
// the tile's terms and of the block's rows) goes to shared memory, the thread's own rows'
// chunk from there to registers, and every term's partial sums (TILE x NCHUNKED registers)
// grow by that chunk. Last,
// `eval` runs once per term on the finished sums and the narrow variables, and its value
// goes to the reduction as in the 1D scheme. Same split of j over gridDim.y and batches
// over gridDim.z as reduce_tiles, and the same place for the parameters: shared memory
// when small, else global memory (params_in_shared).
#pragma once

#include "lk_cuda_tiles.cuh"

namespace lk {

template <class F>
LK_HD constexpr bool is_wide(int v) { return F::CAT[v] != CAT_P && F::DIM[v] == F::WIDE; }

// Offset of argument `pos` among the narrow arguments of category `cat`.
template <class F>
LK_HD constexpr int narrow_offset(int cat, int pos) {
  int o = 0;
  for (int v = 0; v < pos; ++v)
    if (F::CAT[v] == cat && !is_wide<F>(v)) o += F::DIM[v];
  return o;
}

// Index of wide argument `pos` among the wide arguments of category `cat`.
template <class F>
LK_HD constexpr int wide_index(int cat, int pos) {
  int n = 0;
  for (int v = 0; v < pos; ++v)
    if (F::CAT[v] == cat && is_wide<F>(v)) ++n;
  return n;
}

template <class F, class R, class T>
struct ChunkConfig {
  static constexpr int CL = CHUNK;
  static constexpr int BLOCK = LK_CUDA_BLOCK;
  static constexpr int RPT = 1;
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

// What chunk_full / chunk_tail and eval read their arguments through, for one (i, j) pair.
template <class F, class C, class T, class S>
struct ChunkPair {
  const T* xn;                 // the row's narrow i-variables (registers)
  const T* yn;                 // the term's narrow j-variables (shared memory)
  const T* pm;                 // the parameters, packed (shared memory), if C::P_IN_SHARED
  const S* const* prow;        // else where each parameter starts (global memory)
  const T (*xc)[C::CL];        // the row's wide i-variables, this chunk (registers)
  const T* yw;                 // the term's wide j-variables, this chunk (shared memory)
  int c0;                      // the chunk's first component
  const T* sums;               // the term's sums (registers)

  template <int POS>
  __device__ LK_INLINE T var(int k) const {
    constexpr int cat = F::CAT[POS];
    if constexpr (cat == CAT_I) return xn[narrow_offset<F>(CAT_I, POS) + k];
    else if constexpr (cat == CAT_J) return yn[narrow_offset<F>(CAT_J, POS) + k];
    else return param<POS>(k);
  }
  template <int POS>
  __device__ LK_INLINE T wvar(int k) const {
    if constexpr (F::CAT[POS] == CAT_I) return xc[wide_index<F>(CAT_I, POS)][k];
    else return yw[wide_index<F>(CAT_J, POS) * C::CL + k];
  }
  template <int POS>
  __device__ LK_INLINE T pvar(int k) const { return param<POS>(c0 + k); }
  template <int POS>
  __device__ LK_INLINE T param(int k) const {
    if constexpr (C::P_IN_SHARED) return pm[packed_offset<F>(CAT_P, POS) + k];
    else return to_compute(prow[POS][k]);
  }
  template <int M>
  __device__ LK_INLINE T part() const { return sums[M]; }
};

template <class F, class R, class T, class S>
__global__ void __launch_bounds__(LK_CUDA_BLOCK)
reduce_chunked(int64_t nbatch, int64_t nx, int64_t ny, int64_t jchunk, ArgTable<F> args,
               Outputs<S> out, typename R::State* partial) {
  using C = ChunkConfig<F, R, T>;
  using Pair = ChunkPair<F, C, T, S>;
  constexpr int W = F::WIDE, CL = C::CL, NCH = F::NCHUNKED;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  T* ynarrow = reinterpret_cast<T*>(shared_raw);
  T* ywide = ynarrow + C::TILE * C::DJNP;
  T* xwide = ywide + C::TILE * C::WSTRIDE;
  T* pshared = xwide + (C::NWI > 0 ? C::BLOCK * C::XSTRIDE : 0);
  const int64_t row0 = (int64_t)blockIdx.x * C::BLOCK;
  const int64_t row = row0 + threadIdx.x;
  const int64_t i = row < nx ? row : nx - 1;  // rows past the end compute, never write
  const int64_t jbeg = blockIdx.y * jchunk;
  const int64_t jend = jbeg + jchunk < ny ? jbeg + jchunk : ny;

  for (int64_t b = blockIdx.z; b < nbatch; b += gridDim.z) {
    __syncthreads();
    T xn[C::DIN > 0 ? C::DIN : 1];
    const S* prow[F::NARGS > 0 ? F::NARGS : 1];
    static_for<F::NARGS>([&](auto v) {
      constexpr int V = decltype(v)::value;
      constexpr int cat = F::CAT[V], dim = F::DIM[V];
      const S* src = arg<F, S>(args, V, b);
      if constexpr (cat == CAT_P) {
        constexpr int off = packed_offset<F>(CAT_P, V);
        if constexpr (C::P_IN_SHARED)
          for (int k = threadIdx.x; k < dim; k += C::BLOCK) pshared[off + k] = to_compute(src[k]);
        else
          prow[V] = src;
      } else if constexpr (cat == CAT_I && !is_wide<F>(V)) {
        for (int k = 0; k < dim; ++k) xn[narrow_offset<F>(CAT_I, V) + k] = to_compute(src[i * dim + k]);
      }
    });
    typename R::State st;
    typename R::template Acc<T> acc;
    R::init(st);
    R::acc_init(acc);
    for (int64_t j0 = jbeg; j0 < jend; j0 += C::TILE) {
      const int n = (int)(jend - j0 < C::TILE ? jend - j0 : C::TILE);
      __syncthreads();
      static_for<F::NARGS>([&](auto v) {
        constexpr int V = decltype(v)::value;
        if constexpr (F::CAT[V] == CAT_J && !is_wide<F>(V)) {
          constexpr int dim = F::DIM[V], off = narrow_offset<F>(CAT_J, V);
          const S* src = arg<F, S>(args, V, b) + j0 * dim;
          for (int e = threadIdx.x; e < n * dim; e += C::BLOCK) {
            const int jj = e / dim;
            ynarrow[jj * C::DJNP + off + (e - jj * dim)] = to_compute(src[e]);
          }
        }
      });
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
            const int rows = J ? n : C::BLOCK;
            T* dst = J ? ywide + wide_index<F>(CAT_J, V) * CL : xwide + wide_index<F>(CAT_I, V) * CL;
            for (int e = threadIdx.x; e < rows * CL; e += C::BLOCK) {
              const int r = e / CL, k = e - r * CL;
              const int64_t at = first + r < (J ? ny : nx) ? first + r : (J ? ny : nx) - 1;
              if (c0 + k < W) dst[r * (J ? C::WSTRIDE : C::XSTRIDE) + k] = to_compute(src[at * W + k]);
            }
          }
        });
        __syncthreads();
        T xc[C::NWI > 0 ? C::NWI : 1][CL];
        LK_UNROLL for (int w = 0; w < C::NWI; ++w)
          LK_UNROLL for (int k = 0; k < CL; ++k)
            xc[w][k] = c0 + k < W ? xwide[threadIdx.x * C::XSTRIDE + w * CL + k] : T(0);
        if (c0 + CL <= W) {
          LK_UNROLL for (int jj = 0; jj < C::TILE; ++jj)
            if (jj < n)
              F::template chunk_full<T>(
                  Pair{xn, ynarrow + jj * C::DJNP, pshared, prow, xc, ywide + jj * C::WSTRIDE, c0,
                       nullptr},
                  part[jj]);
        } else if constexpr (W % CL != 0) {
          LK_UNROLL for (int jj = 0; jj < C::TILE; ++jj)
            if (jj < n)
              F::template chunk_tail<T>(
                  Pair{xn, ynarrow + jj * C::DJNP, pshared, prow, xc, ywide + jj * C::WSTRIDE, c0,
                       nullptr},
                  part[jj]);
        }
      }
      LK_UNROLL for (int jj = 0; jj < C::TILE; ++jj) {
        if (jj < n) {
          T f[F::DIMOUT];
          F::template eval<T>(
              Pair{xn, ynarrow + jj * C::DJNP, pshared, prow, nullptr, nullptr, 0, part[jj]}, f);
          R::acc_push(acc, f, j0 + jj);
        }
      }
      if constexpr (R::ACC_PER_TILE) {
        R::acc_fold(st, acc);
        R::acc_init(acc);
      }
    }
    if (row < nx) {
      if constexpr (!R::ACC_PER_TILE) R::acc_fold(st, acc);
      if (partial)
        partial[(b * gridDim.y + blockIdx.y) * nx + row] = st;
      else
        write_outputs<F, R, T, S>(st, out, b * nx + row);
    }
  }
}

}  // namespace lk
