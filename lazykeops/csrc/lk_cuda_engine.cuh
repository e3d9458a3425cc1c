// lk_cuda_engine.cuh: the CUDA engine.
//
// The generated source defines `struct LkFormula` and `using LkReduction = ...` (the same
// text as for the CPU engine), then includes this header and instantiates
// LK_CUDA_ENTRY(T, S): T the compute type (float or double), S the storage type of the
// arrays (T itself, or __half / __nv_bfloat16 computed in float). "i" is the output index,
// "j" the reduced one. All indices are int64.
//
// One kernel serves both schemes. A block owns BLOCK * RPT output rows (RPT rows per
// thread: the rows of a thread share each j-term read from shared memory, and their
// evaluations are independent instructions the scheduler interleaves); the j-variables
// stream through shared memory in tiles of TILE terms, loaded by the whole block with
// coalesced reads. Each row folds the terms into an accumulator in T held in registers
// (the policy's Acc), and the accumulator into the policy's State (double for sums).
//   1D scheme (nsplit = 1): the block covers all of j and writes the finalized outputs.
//   split scheme (nsplit > 1): gridDim.y splits j in nsplit ranges; each block writes its
//     rows' States to a workspace, and merge_splits combines them with the policy's merge
//     (pairs (max, sum) for LogSumExp, sorted lists for KMin) and finalizes. For few rows
//     and many terms, where the 1D grid would leave most of the GPU idle.
// Batches run on gridDim.z (looping past 65535).
//
// Large j-variables shrink TILE so that a tile fits in shared memory (up to the device's
// opt-in limit); TILE rows are padded to 16 bytes so that reads vectorise. Small
// parameters join the tile in shared memory; larger ones (up to millions of components)
// are read from global memory at each use, as wide i-variables are. Formulas whose wide
// variables enter only through sums over their components run chunk by chunk instead
// (lk_cuda_chunked.cuh).
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

#include "lk_cuda_chunked.cuh"

namespace lk {

// ---------------------------------------------------------------- host side
// The kernel and configuration for a formula: chunked when it was rendered with WIDE.
template <class F, class R, class T, class S, bool CHUNKED = IsChunked<F>::value>
struct Engine {
  using C = CudaConfig<F, R, T>;
  static auto kernel() { return reduce_tiles<F, R, T, S>; }
};
template <class F, class R, class T, class S>
struct Engine<F, R, T, S, true> {
  using C = ChunkConfig<F, R, T>;
  static auto kernel() { return reduce_chunked<F, R, T, S>; }
};

enum { SCHEME_AUTO = 0, SCHEME_1D = 1, SCHEME_SPLIT = 2 };
constexpr int64_t WORKSPACE_LIMIT = 64ll << 20;  // bytes of partial States, at most

template <class F, class R, class T, class S>
int64_t row_blocks(int64_t nx) {
  using C = typename Engine<F, R, T, S>::C;
  return (nx + (int64_t)C::BLOCK * C::RPT - 1) / ((int64_t)C::BLOCK * C::RPT);
}

// How many j-ranges to split the reduction into. Auto, for sums: split only when the 1D
// grid has fewer than eight waves of resident blocks, into enough ranges for eight waves
// (the last, partial wave then costs little); each range of at least two tiles, within
// WORKSPACE_LIMIT. Forced split: at least two ranges when there are two terms.
template <class F, class R, class T, class S>
int64_t plan_splits(int64_t nbatch, int64_t nx, int64_t ny, int scheme) {
  using C = typename Engine<F, R, T, S>::C;
  if (scheme == SCHEME_1D || nx == 0 || ny == 0) return 1;
  // Resident blocks per device, asked once per device (the queries cost microseconds).
  static int64_t cached[64] = {0};
  int dev = 0;
  cudaGetDevice(&dev);
  int64_t resident = dev < 64 ? cached[dev] : 0;
  if (resident == 0) {
    int sms = 1, per_sm = 1;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, Engine<F, R, T, S>::kernel(),
                                                  C::BLOCK, C::SHARED);
    resident = (int64_t)sms * (per_sm > 0 ? per_sm : 1);
    if (dev < 64) cached[dev] = resident;
  }
  const int64_t blocks = row_blocks<F, R, T, S>(nx) * (nbatch < 65535 ? nbatch : 65535);
  // Selections (ACC_PER_TILE false) pay for each range: its list refills from empty, and
  // while it fills, some thread of every warp inserts at nearly every term. They split
  // only a GPU less than half busy, into one wave.
  const int64_t target = R::ACC_PER_TILE ? 8 * resident : resident;
  const int64_t threshold = R::ACC_PER_TILE ? target : resident / 2;
  int64_t n = blocks >= threshold ? 1 : (target + blocks - 1) / blocks;
  const int64_t by_tiles = ny / (2 * C::TILE);
  n = n < by_tiles ? n : by_tiles;
  if (scheme == SCHEME_SPLIT) n = n > 2 ? n : 2;
  const int64_t by_memory = WORKSPACE_LIMIT / ((int64_t)sizeof(typename R::State) * nx * nbatch);
  n = n < by_memory ? n : by_memory;
  n = n < ny ? n : ny;
  n = n < 65535 ? n : 65535;
  return n > 1 ? n : 1;
}

// Launches on `stream`; LK_STATUS_OK, or LK_STATUS_SHARED_MEMORY if a tile does not fit
// in shared memory, LK_STATUS_CUDA_ATTRIBUTE if its size cannot be raised, LK_STATUS_FAILED
// on a CUDA error. layout: (vstride, voff, istride, ioff) of Outputs. `workspace` holds
// nbatch * nsplit * nx States when nsplit > 1.
template <class F, class R, class T, class S>
int cuda_launch(int64_t nbatch, int64_t nx, int64_t ny, const void* const* ptrs,
                const int64_t* batch_strides, S* vals, int64_t* idx, const int64_t* layout,
                int64_t nsplit, void* workspace, cudaStream_t stream) {
  using C = typename Engine<F, R, T, S>::C;
  ArgTable<F> args;
  for (int v = 0; v < F::NARGS; ++v) {
    args.ptr[v] = ptrs[v];
    args.batch_stride[v] = batch_strides[v];
  }
  auto kernel = Engine<F, R, T, S>::kernel();
  if (C::SHARED > 48 * 1024) {
    int dev = 0, limit = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (C::SHARED > (size_t)limit) return LK_STATUS_SHARED_MEMORY;
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)C::SHARED) != cudaSuccess)
      return LK_STATUS_CUDA_ATTRIBUTE;
  }
  const int64_t jchunk = (ny + nsplit - 1) / nsplit;
  auto* partial = nsplit > 1 ? static_cast<typename R::State*>(workspace) : nullptr;
  dim3 grid((unsigned)row_blocks<F, R, T, S>(nx), (unsigned)nsplit,
            (unsigned)(nbatch < 65535 ? nbatch : 65535));
  const Outputs<S> out{vals, idx, layout[0], layout[1], layout[2], layout[3]};
  kernel<<<grid, C::BLOCK, C::SHARED, stream>>>(nbatch, nx, ny, jchunk, args, out, partial);
  if (nsplit > 1) {
    const int64_t total = nbatch * nx;
    const int64_t blocks = (total + 255) / 256;
    merge_splits<F, R, T, S><<<(unsigned)(blocks < 65535 ? blocks : 65535), 256, 0, stream>>>(
        nbatch, nx, (int)nsplit, partial, out);
  }
  return cudaGetLastError() == cudaSuccess ? LK_STATUS_OK : LK_STATUS_FAILED;
}

}  // namespace lk

// The entry points each generated CUDA library exports, called through ctypes with the
// struct of lk_launch.h (included first by the generated source): it plans the split, asks
// for a workspace when the one given is too small (the caller allocates it from its own
// stream-ordered allocator and calls again), and launches.
#define LK_CUDA_ENTRY(T, S)                                                              \
  LK_ABI_EXPORTS                                                                        \
  extern "C" __attribute__((visibility("default"))) int lk_launch(LkLaunch* a) {        \
    if (!lk::launch_matches(a)) return LK_STATUS_ABI_MISMATCH;                          \
    const int64_t nsplit =                                                              \
        lk::plan_splits<LkFormula, LkReduction, T, S>(a->nbatch, a->nout, a->nred, a->scheme); \
    const int64_t need = nsplit > 1 ? a->nbatch * nsplit * a->nout *                    \
                                          (int64_t)sizeof(LkReduction::State) : 0;       \
    if (need > a->workspace_bytes) {                                                    \
      a->workspace_bytes = need;                                                        \
      return LK_STATUS_NEEDS_WORKSPACE;                                                 \
    }                                                                                   \
    const int64_t layout[4] = {a->vals_width, a->vals_offset, a->idx_width, a->idx_offset}; \
    return lk::cuda_launch<LkFormula, LkReduction, T, S>(                               \
        a->nbatch, a->nout, a->nred, a->args, a->batch_strides, static_cast<S*>(a->vals), \
        a->idx, layout, nsplit, a->workspace, static_cast<cudaStream_t>(a->stream));    \
  }                                                                                     \
  /* The split lk_launch would use for these sizes and scheme (for tests and tools). */ \
  extern "C" __attribute__((visibility("default"))) int64_t lk_plan(const LkLaunch* a) { \
    if (!lk::launch_matches(a)) return -LK_STATUS_ABI_MISMATCH;                         \
    return lk::plan_splits<LkFormula, LkReduction, T, S>(a->nbatch, a->nout, a->nred, a->scheme); \
  }
