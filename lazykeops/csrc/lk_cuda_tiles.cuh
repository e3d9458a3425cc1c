// lk_cuda_tiles.cuh: the device side of the CUDA engine's tiled kernel (lk_cuda_engine.cuh
// describes the scheme): storage conversions, the launch configuration of a formula, the
// "In" of a row and a shared-memory tile (CudaPair), the argument and output tables, the
// kernel reduce_tiles and the merge of split ranges. No host code: lk_cuda_engine.cuh
// chooses, plans and launches.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "lk_layout.h"
#include "lk_math.h"
#include "lk_reductions.h"

// Tuning knobs (benchmarks/tune_cuda.py): threads per block; rows per thread (0: chosen
// from the formula's register needs).
#ifndef LK_CUDA_BLOCK
#define LK_CUDA_BLOCK 256
#endif
#ifndef LK_CUDA_RPT
#define LK_CUDA_RPT 0
#endif
// i-variables of up to this many 32-bit registers per thread stay in registers; past it
// they are read from global memory (compile/chunking.py chunks the wider ones first: same
// limit). On the H100, D = 160 in registers ran 2.7x faster than in chunks, D = 256 spilled.
#ifndef LK_CUDA_X_REGISTERS
#define LK_CUDA_X_REGISTERS 160
#endif
// Parameters of up to this many bytes (in the compute type) are copied to shared memory,
// where every thread reads the same address (a broadcast); past it they are read from
// global memory (cached): they would take the tile's shared memory, and past the
// device's limit per block (227 KB on the H100) they could not be copied at all.
#ifndef LK_CUDA_P_SHARED
#define LK_CUDA_P_SHARED 8192
#endif

namespace lk {

// ---------------------------------------------------------------- storage conversions
template <class T> __device__ LK_INLINE T to_compute(T v) { return v; }
__device__ LK_INLINE float to_compute(__half v) { return __half2float(v); }
__device__ LK_INLINE float to_compute(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class S, class T> __device__ LK_INLINE S to_storage(T v) { return S(v); }
template <> __device__ LK_INLINE __half to_storage<__half, float>(float v) {
  return __float2half_rn(v);
}
template <> __device__ LK_INLINE __nv_bfloat16 to_storage<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}

// ---------------------------------------------------------------- configuration
// Whether both kernels stage the parameters in shared memory (LK_CUDA_P_SHARED).
template <class F, class T>
LK_HD constexpr bool params_in_shared() {
  return (int64_t)packed_size<F>(CAT_P) * (int64_t)sizeof(T) <= LK_CUDA_P_SHARED;
}

template <class F, class R, class T>
struct CudaConfig {
  static constexpr int DI = packed_size<F>(CAT_I);
  static constexpr int DJ = packed_size<F>(CAT_J);
  static constexpr int DP = packed_size<F>(CAT_P);
  static constexpr int BLOCK = LK_CUDA_BLOCK;
  static constexpr int PAD = 16 / sizeof(T);
  static constexpr int DJP = (DJ + PAD - 1) / PAD * PAD;  // row stride of a tile
  // Two rows per thread while their i-variables and accumulators stay small in registers.
  static constexpr int ACC = (int)(sizeof(typename R::template Acc<T>) / sizeof(T));
  static constexpr int RPT = LK_CUDA_RPT > 0 ? LK_CUDA_RPT : (DI + ACC + F::DIMOUT <= 24) ? 2 : 1;
  // Wider i-variables are read from global memory (cached) at each use: a copy in a
  // thread's local memory would reserve DI scalars for every thread the GPU can hold.
  static constexpr bool X_IN_REGISTERS = DI * RPT * (int)sizeof(T) <= LK_CUDA_X_REGISTERS * 4;
  static constexpr bool P_IN_SHARED = params_in_shared<F, T>();
  static constexpr int DPS = P_IN_SHARED ? DP : 0;  // parameter scalars in shared memory
  // Tiles of BLOCK terms within 48 KB, fewer terms for wide rows (down to 1).
  static constexpr int SMEM_SOFT = 48 * 1024;
  static constexpr int FIT = (SMEM_SOFT / (int)sizeof(T) - DPS) / (DJP > 0 ? DJP : 1);
  static constexpr int TILE = DJP == 0 ? BLOCK : (FIT >= BLOCK ? BLOCK : (FIT > 1 ? FIT : 1));
  static constexpr size_t SHARED = ((size_t)TILE * DJP + DPS) * sizeof(T);
};

// What the generated `eval` reads its arguments through, for one (i, j) pair.
template <class F, class T, class S, bool XREG, bool PSH>
struct CudaPair {
  const T* xi;           // the row's i-variables, packed (registers), if XREG
  const S* const* xrow;  // else where each i-variable's row starts (global memory)
  const T* yj;           // the term's j-variables (shared memory)
  const T* pm;           // the parameters, packed (shared memory), if PSH
  const S* const* prow;  // else where each parameter starts (global memory)

  template <int POS>
  __device__ LK_INLINE T var(int k) const {
    constexpr int cat = F::CAT[POS];
    constexpr int off = packed_offset<F>(cat, POS);
    if constexpr (cat == CAT_I) {
      if constexpr (XREG) return xi[off + k];
      else return to_compute(xrow[POS][k]);
    } else if constexpr (cat == CAT_J) {
      return yj[off + k];
    } else {
      if constexpr (PSH) return pm[off + k];
      else return to_compute(prow[POS][k]);
    }
  }
};

// Argument pointers and batch strides, passed by value to the kernel.
template <class F>
struct ArgTable {
  const void* ptr[F::NARGS > 0 ? F::NARGS : 1];
  int64_t batch_stride[F::NARGS > 0 ? F::NARGS : 1];
};

template <class F, class S>
__device__ LK_INLINE const S* arg(const ArgTable<F>& a, int v, int64_t b) {
  return static_cast<const S*>(a.ptr[v]) + b * a.batch_stride[v];
}

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

// Where the outputs go: output row t (= batch * nx + i) writes its values at
// vals[t * vstride + voff ...] and its indices at idx[t * istride + ioff ...]. The strides
// exceed the policy's widths when a wide output is computed in slices of components, one
// kernel per slice (runtime/cuda.py).
template <class S>
struct Outputs {
  S* vals;
  int64_t* idx;
  int64_t vstride, voff, istride, ioff;
};

template <class F, class R, class T, class S>
__device__ LK_INLINE void write_outputs(const typename R::State& st, const Outputs<S>& out,
                                        int64_t t) {
  T v[R::VALS > 0 ? R::VALS : 1];
  R::finalize(st, v, out.idx + t * out.istride + out.ioff);
  S* vals = out.vals + t * out.vstride + out.voff;
  for (int k = 0; k < R::VALS; ++k) vals[k] = to_storage<S>(v[k]);
}

template <class F, class R, class T, class S>
__global__ void __launch_bounds__(LK_CUDA_BLOCK)
reduce_tiles(int64_t nbatch, int64_t nx, int64_t ny, int64_t jchunk, ArgTable<F> args,
             Outputs<S> out, typename R::State* partial) {
  using C = CudaConfig<F, R, T>;
  using Acc = typename R::template Acc<T>;
  using Pair = CudaPair<F, T, S, C::X_IN_REGISTERS, C::P_IN_SHARED>;
  constexpr int RPT = C::RPT;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  T* tile = reinterpret_cast<T*>(shared_raw);
  T* pshared = tile + C::TILE * C::DJP;
  const int64_t first_row = (int64_t)blockIdx.x * C::BLOCK * RPT + threadIdx.x;
  const int64_t jbeg = blockIdx.y * jchunk;
  const int64_t jend = jbeg + jchunk < ny ? jbeg + jchunk : ny;

  for (int64_t b = blockIdx.z; b < nbatch; b += gridDim.z) {
    __syncthreads();  // the previous batch is done with the shared memory
    T xi[RPT][C::X_IN_REGISTERS && C::DI > 0 ? C::DI : 1];
    const S* xrow[RPT][F::NARGS > 0 ? F::NARGS : 1];
    const S* prow[F::NARGS > 0 ? F::NARGS : 1];
    static_for<F::NARGS>([&](auto v) {
      constexpr int V = decltype(v)::value;
      constexpr int cat = F::CAT[V], dim = F::DIM[V], off = packed_offset<F>(cat, V);
      const S* src = arg<F, S>(args, V, b);
      if constexpr (cat == CAT_P) {
        if constexpr (C::P_IN_SHARED)
          for (int k = threadIdx.x; k < dim; k += C::BLOCK) pshared[off + k] = to_compute(src[k]);
        else
          prow[V] = src;
      } else if constexpr (cat == CAT_I) {
        for (int r = 0; r < RPT; ++r) {
          // Rows past the end compute on the last row and are never written.
          const int64_t i = first_row + r * C::BLOCK < nx ? first_row + r * C::BLOCK : nx - 1;
          xrow[r][V] = src + i * dim;
          if constexpr (C::X_IN_REGISTERS)
            for (int k = 0; k < dim; ++k) xi[r][off + k] = to_compute(src[i * dim + k]);
        }
      }
    });
    typename R::State st[RPT];
    Acc acc[RPT];
    for (int r = 0; r < RPT; ++r) {
      R::init(st[r]);
      R::acc_init(acc[r]);
    }
    for (int64_t j0 = jbeg; j0 < jend; j0 += C::TILE) {
      const int n = (int)(jend - j0 < C::TILE ? jend - j0 : C::TILE);
      __syncthreads();
      load_tile<F, C, T, S>(tile, args, b, j0, n);
      __syncthreads();
      auto term = [&](int jj) {
        const T* yj = tile + jj * C::DJP;
        LK_UNROLL for (int r = 0; r < RPT; ++r) {
          T f[F::DIMOUT];
          F::template eval<T>(Pair{xi[r], xrow[r], yj, pshared, prow}, f);
          R::acc_push(acc[r], f, j0 + jj);
        }
      };
      if (n == C::TILE) {
#pragma unroll 4
        for (int jj = 0; jj < C::TILE; ++jj) term(jj);
      } else {
        for (int jj = 0; jj < n; ++jj) term(jj);
      }
      if constexpr (R::ACC_PER_TILE) {
        for (int r = 0; r < RPT; ++r) {
          R::acc_fold(st[r], acc[r]);
          R::acc_init(acc[r]);
        }
      }
    }
    for (int r = 0; r < RPT; ++r) {
      const int64_t i = first_row + r * C::BLOCK;
      if (i >= nx) continue;
      if constexpr (!R::ACC_PER_TILE) R::acc_fold(st[r], acc[r]);
      if (partial)
        partial[(b * gridDim.y + blockIdx.y) * nx + i] = st[r];
      else
        write_outputs<F, R, T, S>(st[r], out, b * nx + i);
    }
  }
}

// The split scheme's second step: one thread per (batch, row) merges its nsplit States in
// order of j (ties keep the smaller index) and writes the outputs.
template <class F, class R, class T, class S>
__global__ void merge_splits(int64_t nbatch, int64_t nx, int nsplit,
                             const typename R::State* partial, Outputs<S> out) {
  const int64_t total = nbatch * nx;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = t / nx, i = t - b * nx;
    typename R::State st = partial[b * nsplit * nx + i];
    for (int s = 1; s < nsplit; ++s) R::merge(st, partial[(b * nsplit + s) * nx + i]);
    write_outputs<F, R, T, S>(st, out, t);
  }
}

}  // namespace lk
