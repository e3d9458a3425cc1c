// lk_cuda_engine.cuh: the CUDA engine (1D scheme).
//
// The generated source defines `struct LkFormula` and `using LkReduction = ...` (the same
// text as for the CPU engine), then includes this header and instantiates
// LK_CUDA_ENTRY(T). "i" is the output index, "j" the reduced one.
//
// 1D scheme: each thread owns one output row i, its i-variables in registers and its
// reduction state in registers; the j-variables stream through shared memory in tiles of
// blockDim.x terms (each thread of the block loads one term), and every thread folds
// every term of the tile into its state with the policy's push(). Batches run on
// gridDim.y (looping past 65535). All indices are int64. The split scheme for few rows
// and the chunking over large dimensions are the next steps (issue 5).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "lk_layout.h"
#include "lk_math.h"
#include "lk_reductions.h"

namespace lk {

// What the generated `eval` reads its arguments through, for one (i, j) pair.
template <class F, class T>
struct CudaPair {
  const T* xi;  // the row's i-variables (registers / local memory)
  const T* yj;  // the term's j-variables (shared memory)
  const T* pm;  // the parameters (shared memory)

  template <int POS>
  __device__ LK_INLINE T var(int k) const {
    constexpr int cat = F::CAT[POS];
    constexpr int off = packed_offset<F>(cat, POS);
    if constexpr (cat == CAT_I) return xi[off + k];
    else if constexpr (cat == CAT_J) return yj[off + k];
    else return pm[off + k];
  }
};

// Argument pointers and batch strides, passed by value to the kernel.
template <class F>
struct ArgTable {
  const void* ptr[F::NARGS > 0 ? F::NARGS : 1];
  int64_t batch_stride[F::NARGS > 0 ? F::NARGS : 1];
};

template <class F, class T>
__device__ LK_INLINE const T* arg(const ArgTable<F>& a, int v, int64_t b) {
  return static_cast<const T*>(a.ptr[v]) + b * a.batch_stride[v];
}

template <class F, class R, class T>
__global__ void reduce_1d(int64_t nbatch, int64_t nx, int64_t ny, ArgTable<F> args,
                          T* vals, int64_t* idx) {
  constexpr int DI = packed_size<F>(CAT_I);
  constexpr int DJ = packed_size<F>(CAT_J);
  constexpr int DP = packed_size<F>(CAT_P);
  extern __shared__ __align__(16) unsigned char shared_raw[];
  T* yshared = reinterpret_cast<T*>(shared_raw);
  T* pshared = yshared + (int64_t)blockDim.x * DJ;
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;

  for (int64_t b = blockIdx.y; b < nbatch; b += gridDim.y) {
    __syncthreads();  // the previous batch is done with the shared memory
    T xi[DI > 0 ? DI : 1];
    static_for<F::NARGS>([&](auto v) {
      constexpr int V = decltype(v)::value;
      constexpr int cat = F::CAT[V], dim = F::DIM[V], off = packed_offset<F>(cat, V);
      const T* src = arg<F, T>(args, V, b);
      if constexpr (cat == CAT_P) {
        for (int k = threadIdx.x; k < dim; k += blockDim.x) pshared[off + k] = src[k];
      } else if constexpr (cat == CAT_I) {
        if (i < nx)
          for (int k = 0; k < dim; ++k) xi[off + k] = src[i * dim + k];
      }
    });
    typename R::State st;
    R::init(st);
    for (int64_t j0 = 0; j0 < ny; j0 += blockDim.x) {
      __syncthreads();
      const int64_t j = j0 + threadIdx.x;
      if (j < ny)
        static_for<F::NARGS>([&](auto v) {
          constexpr int V = decltype(v)::value;
          constexpr int dim = F::DIM[V], off = packed_offset<F>(CAT_J, V);
          if constexpr (F::CAT[V] == CAT_J) {
            const T* src = arg<F, T>(args, V, b) + j * dim;
            for (int k = 0; k < dim; ++k) yshared[(int64_t)threadIdx.x * DJ + off + k] = src[k];
          }
        });
      __syncthreads();
      if (i < nx) {
        const int n = (int)((ny - j0) < blockDim.x ? (ny - j0) : blockDim.x);
        if constexpr (TileSummable<R>::value) {
          T part[F::DIMOUT];
          for (int k = 0; k < F::DIMOUT; ++k) part[k] = T(0);
          for (int jj = 0; jj < n; ++jj) {
            T r[F::DIMOUT];
            F::template eval<T>(CudaPair<F, T>{xi, yshared + (int64_t)jj * DJ, pshared}, r);
            for (int k = 0; k < F::DIMOUT; ++k) part[k] += r[k];
          }
          R::push(st, part, j0);
        } else {
          for (int jj = 0; jj < n; ++jj) {
            T r[F::DIMOUT];
            F::template eval<T>(CudaPair<F, T>{xi, yshared + (int64_t)jj * DJ, pshared}, r);
            R::push(st, r, j0 + jj);
          }
        }
      }
    }
    if (i < nx) R::finalize(st, vals + (b * nx + i) * R::VALS, idx + (b * nx + i) * R::IDXS);
  }
}

// Launches on `stream`; 0 on success, 2 if the j-variables do not fit in shared memory,
// 3 on a CUDA error.
template <class F, class R, class T>
int cuda_launch(int64_t nbatch, int64_t nx, int64_t ny, const void* const* ptrs,
                const int64_t* batch_strides, T* vals, int64_t* idx, cudaStream_t stream) {
  constexpr int DJ = packed_size<F>(CAT_J);
  constexpr int DP = packed_size<F>(CAT_P);
  ArgTable<F> args;
  for (int v = 0; v < F::NARGS; ++v) {
    args.ptr[v] = ptrs[v];
    args.batch_stride[v] = batch_strides[v];
  }
  int block = 192;
  while (block > 32 && (size_t)(block * DJ + DP) * sizeof(T) > 48 * 1024) block /= 2;
  const size_t shared = (size_t)(block * DJ + DP) * sizeof(T);
  if (shared > 48 * 1024) return 2;
  const int64_t nblocks = (nx + block - 1) / block;
  dim3 grid((unsigned)nblocks, (unsigned)(nbatch < 65535 ? nbatch : 65535));
  reduce_1d<F, R, T><<<grid, block, shared, stream>>>(nbatch, nx, ny, args, vals, idx);
  return cudaGetLastError() == cudaSuccess ? 0 : 3;
}

}  // namespace lk

// The one symbol each generated CUDA library exports, called through ctypes.
#define LK_CUDA_ENTRY(T)                                                                \
  extern "C" __attribute__((visibility("default"))) int lk_run_cuda(                   \
      int64_t nbatch, int64_t nx, int64_t ny, const void* const* args,                 \
      const int64_t* batch_strides, void* vals, int64_t* idx, void* stream) {          \
    return lk::cuda_launch<LkFormula, LkReduction, T>(                                 \
        nbatch, nx, ny, args, batch_strides, static_cast<T*>(vals), idx,               \
        static_cast<cudaStream_t>(stream));                                            \
  }
