// lk_cuda_engine.cuh: the CUDA engine.
//
// The generated source defines `struct LkFormula` and `using LkReduction = ...` (the same
// text as for the CPU engine), then includes this header and instantiates
// LK_CUDA_ENTRY(T, S): T the compute type (float or double), S the storage type of the
// arrays (T itself, or __half / __nv_bfloat16 computed in float). "i" is the output index,
// "j" the reduced one. All indices are int64.
//
// One kernel serves both launch schemes. A block owns BLOCK * RPT output rows (RPT rows per
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
//
// This header is the host side: which kernel variant serves a formula, the split planner, the
// launch, and the entry macro. The device side is one kernel skeleton (lk_cuda_kernel.cuh)
// and its three variants, tiled (lk_cuda_tiles.cuh), chunked (lk_cuda_chunked.cuh) and on
// tensor cores (lk_cuda_mma.cuh).
#pragma once

#include "lk_std.h"

#include "lk_cuda_chunked.cuh"
#include "lk_cuda_mma.cuh"
#include "lk_cuda_tiles.cuh"
#ifndef __CUDACC_RTC__
#include "lk_cuda_plan.h"  // host code
#endif

namespace lk {

// ---------------------------------------------------------------- host side
// The kernel variant of a formula (its row source and term evaluator, and the sizes it
// launches with): on tensor cores when it was rendered with TC_MODE, chunked when with
// WIDE, else tiled; the work source of
// a block-sparse library (rendered with LK_BLOCK_SPARSE 1) or of a dense one.
template <class F, class R, class T, class S>
struct Engine {
  using C = std::conditional_t<
      IsTensorCore<F>::value, MmaVariant<F, R, T, S>,
      std::conditional_t<IsChunked<F>::value, ChunkedVariant<F, R, T, S>,
                         TiledVariant<F, R, T, S>>>;
  using W = std::conditional_t<LK_BLOCK_SPARSE != 0, SparseWork, DenseWork>;
  static auto kernel() { return reduce<F, R, T, S, C, W>; }
};

#ifndef __CUDACC_RTC__  // the host side below: not for NVRTC, which compiles device code
// The sizes planning reads (lk_cuda_plan.h).
template <class F, class R, class T, class S>
constexpr KernelSizes kernel_sizes() {
  using C = typename Engine<F, R, T, S>::C;
  return {C::ROWS, C::TILE, (int64_t)sizeof(typename R::State), R::ACC_PER_TILE};
}

// Output rows per thread block.
template <class F, class R, class T, class S>
constexpr int64_t block_rows() {
  return Engine<F, R, T, S>::C::ROWS;
}

template <class F, class R, class T, class S>
int64_t row_blocks(const LkLaunch* a) {
  return row_blocks_for(kernel_sizes<F, R, T, S>(), a);
}

// The split of `a` (plan_splits_for), with the device's resident blocks of this kernel
// asked once per device (the queries cost microseconds).
template <class F, class R, class T, class S>
int64_t plan_splits(const LkLaunch* a) {
  return plan_splits_for(kernel_sizes<F, R, T, S>(), a, [] {
    using C = typename Engine<F, R, T, S>::C;
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
    return resident;
  });
}

// Launches `a` on its stream; LK_STATUS_OK, or LK_STATUS_SHARED_MEMORY if a tile does not
// fit in shared memory, LK_STATUS_CUDA_ATTRIBUTE if its size cannot be raised,
// LK_STATUS_FAILED on a CUDA error. `a->workspace` holds nbatch * nsplit * nout States when
// nsplit > 1.
template <class F, class R, class T, class S>
int cuda_launch(const LkLaunch* a, int64_t nsplit) {
  using C = typename Engine<F, R, T, S>::C;
  const int64_t nbatch = a->nbatch, nout = a->nout, nred = a->nred;
  const auto stream = static_cast<cudaStream_t>(a->stream);
  ArgTable<F> args;
  for (int v = 0; v < F::NARGS; ++v) {
    args.ptr[v] = a->args[v];
    args.batch_stride[v] = a->batch_strides[v];
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
  auto* partial = nsplit > 1 ? static_cast<typename R::State*>(a->workspace) : nullptr;
  const int64_t blocks = row_blocks<F, R, T, S>(a);
  if (blocks == 0) return LK_STATUS_OK;  // no row in any cluster (runtime/ranges.py: none)
  if (blocks > 0x7fffffffll) return LK_STATUS_FAILED;
  dim3 grid((unsigned)blocks, (unsigned)nsplit, (unsigned)(nbatch < 65535 ? nbatch : 65535));
  const Outputs<S> out{static_cast<S*>(a->vals), a->idx, a->vals_width, a->vals_offset,
                       a->idx_width, a->idx_offset};
  typename Engine<F, R, T, S>::W work;
  if constexpr (LK_BLOCK_SPARSE != 0)
    work.sets = RangeSets{a->row_bounds, a->interval_offsets, a->intervals, a->block_ends,
                          a->nclusters, a->nintervals, a->range_sets};
  else
    work.per_split = (nred + nsplit - 1) / nsplit;
  kernel<<<grid, C::BLOCK, C::SHARED, stream>>>(nbatch, nout, nred, work, args, out, partial);
  if (nsplit > 1) {
    const int64_t total = nbatch * nout;
    const int64_t blocks = (total + 255) / 256;
    merge_splits<R, T, S><<<(unsigned)(blocks < 65535 ? blocks : 65535), 256, 0, stream>>>(
        nbatch, nout, (int)nsplit, partial, out);
  }
  return cudaGetLastError() == cudaSuccess ? LK_STATUS_OK : LK_STATUS_FAILED;
}

#endif  // __CUDACC_RTC__

}  // namespace lk

// The entry points each generated CUDA library exports, called through ctypes with the
// struct of lk_launch.h (included first by the generated source): it plans the split, asks
// for a workspace when the one given is too small (the caller allocates it from its own
// stream-ordered allocator and calls again), and launches.
#define LK_CUDA_ENTRY(T, S)                                                              \
  LK_ABI_EXPORTS                                                                        \
  extern "C" __attribute__((visibility("default"))) int lk_launch(LkLaunch* a) {        \
    if (!lk::launch_matches(a)) return LK_STATUS_ABI_MISMATCH;                          \
    if ((a->row_bounds != nullptr) != (LK_BLOCK_SPARSE != 0)) return LK_STATUS_RANGES_MISMATCH; \
    const int64_t nsplit = lk::plan_splits<LkFormula, LkReduction, T, S>(a);            \
    const int64_t need = nsplit > 1 ? a->nbatch * nsplit * a->nout *                    \
                                          (int64_t)sizeof(LkReduction::State) : 0;       \
    if (need > a->workspace_bytes) {                                                    \
      a->workspace_bytes = need;                                                        \
      return LK_STATUS_NEEDS_WORKSPACE;                                                 \
    }                                                                                   \
    return lk::cuda_launch<LkFormula, LkReduction, T, S>(a, nsplit);                    \
  }                                                                                     \
  /* The split lk_launch would use for these sizes and scheme (for tests and tools). */ \
  extern "C" __attribute__((visibility("default"))) int64_t lk_plan(const LkLaunch* a) { \
    if (!lk::launch_matches(a)) return -LK_STATUS_ABI_MISMATCH;                         \
    return lk::plan_splits<LkFormula, LkReduction, T, S>(a);                            \
  }                                                                                     \
  /* Output rows per thread block: runtime/ranges.py cuts clusters into such blocks. */ \
  extern "C" __attribute__((visibility("default"))) int64_t lk_block_rows() {          \
    return lk::block_rows<LkFormula, LkReduction, T, S>();                              \
  }

// The device-only translation unit that NVRTC compiles (compile/nvrtc.py: the kernels by
// name expressions) ends with this: the launch sizes a host side built once reads from
// the module, in the order of compile/nvrtc.py's SIZES.
#define LK_CUDA_DEVICE_ENTRY(T, S)                                                       \
  extern "C" __constant__ long long lk_sizes[] = {                                       \
      lk::Engine<LkFormula, LkReduction, T, S>::C::BLOCK,                                \
      lk::Engine<LkFormula, LkReduction, T, S>::C::ROWS,                                 \
      (long long)lk::Engine<LkFormula, LkReduction, T, S>::C::SHARED,                    \
      lk::Engine<LkFormula, LkReduction, T, S>::C::TILE,                                 \
      (long long)sizeof(LkReduction::State), LkReduction::ACC_PER_TILE, LK_BLOCK_SPARSE,  \
      LkFormula::NARGS};
