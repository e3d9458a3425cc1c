// lk_cuda_check.cuh: instantiates a generated formula and its reduction policy in device
// code, so that codegen errors for CUDA show up without a GPU (nvcc -c only).
// The generated source defines LkFormula and LkReduction, then includes this header.
// The CUDA engine proper (tiles in shared memory, split scheme) replaces it later.
#pragma once

#include <cstdint>

#include "lk_math.h"
#include "lk_reductions.h"

namespace lk {

// Reads every argument from one flat array: argument POS starts at offset 1024 * POS.
template <class T>
struct FlatDeviceIn {
  const T* data;
  template <int POS>
  __device__ T var(int k) const { return data[1024 * POS + k]; }
};

template <class F, class R, class T>
__global__ void check_formula_kernel(const T* data, T* vals, int64_t* idx) {
  T r[F::DIMOUT];
  F::template eval<T>(FlatDeviceIn<T>{data}, r);
  typename R::State st, other;
  R::init(st);
  R::init(other);
  R::merge(st, other);
  R::finalize(st, vals, idx);
  vals[0] += r[0];
}

}  // namespace lk

template __global__ void lk::check_formula_kernel<LkFormula, LkReduction, LK_CHECK_T>(
    const LK_CHECK_T*, LK_CHECK_T*, int64_t*);
