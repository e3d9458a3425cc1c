// lk_cuda_in.cuh: the CUDA engine's "In", what generated code reads its arguments through
// (csrc/README.md, "The In interface"), and the storage conversions it reads with.
//
// One struct, CudaIn, owns what every "In" does: `var<POS>(k)` picks the source of the
// argument's category at compile time (F::CAT[POS]). The sources are what differs between
// the kernels, each one of two kinds:
//   Packed<T, L>    a buffer of compute-type scalars (registers or shared memory) holding
//                   the arguments of a category that layout L selects, packed one after
//                   the other;
//   Pointers<T, S>  one pointer per argument into global memory (storage type S, converted
//                   at each read).
// CudaChunkIn adds what the functions of a chunked formula read: `wvar`, `pvar`, `part`.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#ifndef __CUDACC_RTC__  // NVRTC declares the CUDA built-ins itself
#include <cuda_runtime.h>
#endif

#include "lk_layout.h"
#include "lk_math.h"

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

// ---------------------------------------------------------------- layouts
// Which arguments of a category a packed buffer holds and where argument `pos` starts in
// it. All of them (lk_layout.h's packing) ...
struct AllArgs {
  template <class F> LK_HD static constexpr bool holds(int) { return true; }
  template <class F> LK_HD static constexpr int offset(int cat, int pos) {
    return packed_offset<F>(cat, pos);
  }
};

// ... or, for a chunked formula, the narrow ones: its wide i- and j-variables (DIM ==
// F::WIDE) come chunk by chunk through CudaChunkIn's wvar instead.
template <class F>
LK_HD constexpr bool is_wide(int v) { return F::CAT[v] != CAT_P && F::DIM[v] == F::WIDE; }

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

struct NarrowArgs {
  template <class F> LK_HD static constexpr bool holds(int v) { return !is_wide<F>(v); }
  template <class F> LK_HD static constexpr int offset(int cat, int pos) {
    return narrow_offset<F>(cat, pos);
  }
};

// ---------------------------------------------------------------- sources
template <class T, class L>
struct Packed {
  const T* p;
  template <class F, int POS>
  __device__ LK_INLINE T get(int k) const {
    constexpr int off = L::template offset<F>(F::CAT[POS], POS);
    return p[off + k];
  }
};

template <class T, class S>
struct Pointers {
  const S* const* row;  // row[POS]: where argument POS starts (this row's, for an i-variable)
  template <class F, int POS>
  __device__ LK_INLINE T get(int k) const { return to_compute(row[POS][k]); }
};

// ---------------------------------------------------------------- the "In"
// Built per term by brace initialisation: an aggregate of pointers, free once inlined.
template <class F, class T, class X, class Y, class P>
struct CudaIn {
  X x;  // the row's i-variables
  Y y;  // the term's j-variables
  P p;  // the parameters

  template <int POS>
  __device__ LK_INLINE T var(int k) const {
    constexpr int cat = F::CAT[POS];
    if constexpr (cat == CAT_I) return x.template get<F, POS>(k);
    else if constexpr (cat == CAT_J) return y.template get<F, POS>(k);
    else return p.template get<F, POS>(k);
  }
};

// chunk_full / chunk_tail read the current chunk of CL components of the wide variables
// (chunk-local: component k of the chunk is at k, c0 already applied); eval reads the
// finished sums. The members a call does not use are null (xc, yw for eval; sums for the
// chunk functions): generated code reads wvar / pvar only in chunk functions, part only in
// eval (compile/codegen.py).
template <class F, class T, class X, class Y, class P, int CL>
struct CudaChunkIn : CudaIn<F, T, X, Y, P> {
  const T (*xc)[CL];  // the row's wide i-variables, this chunk (registers)
  const T* yw;        // the term's wide j-variables, this chunk (shared memory)
  int c0;             // the chunk's first component
  const T* sums;      // the term's finished sums (registers)

  template <int POS>
  __device__ LK_INLINE T wvar(int k) const {
    if constexpr (F::CAT[POS] == CAT_I) return xc[wide_index<F>(CAT_I, POS)][k];
    else return yw[wide_index<F>(CAT_J, POS) * CL + k];
  }
  // A parameter as wide as the wide variables: its components of this chunk.
  template <int POS>
  __device__ LK_INLINE T pvar(int k) const { return this->p.template get<F, POS>(c0 + k); }
  template <int M>
  __device__ LK_INLINE T part() const { return sums[M]; }
};

}  // namespace lk
