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
// and its two variants, tiled (lk_cuda_tiles.cuh) and chunked (lk_cuda_chunked.cuh).
#pragma once

#include <type_traits>

#include "lk_cuda_chunked.cuh"
#include "lk_cuda_tiles.cuh"

namespace lk {

// ---------------------------------------------------------------- host side
// The kernel variant of a formula (its row source, range and term evaluator, and the
// sizes it launches with): chunked when it was rendered with WIDE, else tiled.
template <class F, class R, class T, class S>
struct Engine {
  using C = std::conditional_t<IsChunked<F>::value, ChunkedVariant<F, R, T, S>,
                               TiledVariant<F, R, T, S>>;
  static auto kernel() { return reduce<F, R, T, S, C>; }
};

enum { SCHEME_AUTO = 0, SCHEME_1D = 1, SCHEME_SPLIT = 2 };
constexpr int64_t WORKSPACE_LIMIT = 64ll << 20;  // bytes of partial States, at most

template <class F, class R, class T, class S>
int64_t row_blocks(int64_t nout) {
  using C = typename Engine<F, R, T, S>::C;
  return (nout + (int64_t)C::BLOCK * C::RPT - 1) / ((int64_t)C::BLOCK * C::RPT);
}

// How many j-ranges to split the reduction into. Auto, for sums: split only when the 1D
// grid has fewer than eight waves of resident blocks, into enough ranges for eight waves
// (the last, partial wave then costs little); each range of at least two tiles, within
// WORKSPACE_LIMIT. Forced split: at least two ranges when there are two terms.
template <class F, class R, class T, class S>
int64_t plan_splits(int64_t nbatch, int64_t nout, int64_t nred, int scheme) {
  using C = typename Engine<F, R, T, S>::C;
  if (scheme == SCHEME_1D || nout == 0 || nred == 0) return 1;
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
  const int64_t blocks = row_blocks<F, R, T, S>(nout) * (nbatch < 65535 ? nbatch : 65535);
  // Selections (ACC_PER_TILE false) pay for each range: its list refills from empty, and
  // while it fills, some thread of every warp inserts at nearly every term. They split
  // only a GPU less than half busy, into one wave.
  const int64_t target = R::ACC_PER_TILE ? 8 * resident : resident;
  const int64_t threshold = R::ACC_PER_TILE ? target : resident / 2;
  int64_t n = blocks >= threshold ? 1 : (target + blocks - 1) / blocks;
  const int64_t by_tiles = nred / (2 * C::TILE);
  n = n < by_tiles ? n : by_tiles;
  if (scheme == SCHEME_SPLIT) n = n > 2 ? n : 2;
  const int64_t by_memory = WORKSPACE_LIMIT / ((int64_t)sizeof(typename R::State) * nout * nbatch);
  n = n < by_memory ? n : by_memory;
  n = n < nred ? n : nred;
  n = n < 65535 ? n : 65535;
  return n > 1 ? n : 1;
}

// Launches on `stream`; LK_STATUS_OK, or LK_STATUS_SHARED_MEMORY if a tile does not fit
// in shared memory, LK_STATUS_CUDA_ATTRIBUTE if its size cannot be raised, LK_STATUS_FAILED
// on a CUDA error. layout: (vstride, voff, istride, ioff) of Outputs. `workspace` holds
// nbatch * nsplit * nout States when nsplit > 1.
template <class F, class R, class T, class S>
int cuda_launch(int64_t nbatch, int64_t nout, int64_t nred, const void* const* ptrs,
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
  const int64_t jchunk = (nred + nsplit - 1) / nsplit;
  auto* partial = nsplit > 1 ? static_cast<typename R::State*>(workspace) : nullptr;
  dim3 grid((unsigned)row_blocks<F, R, T, S>(nout), (unsigned)nsplit,
            (unsigned)(nbatch < 65535 ? nbatch : 65535));
  const Outputs<S> out{vals, idx, layout[0], layout[1], layout[2], layout[3]};
  const typename C::Range range{nred, jchunk};
  kernel<<<grid, C::BLOCK, C::SHARED, stream>>>(nbatch, nout, nred, range, args, out, partial);
  if (nsplit > 1) {
    const int64_t total = nbatch * nout;
    const int64_t blocks = (total + 255) / 256;
    merge_splits<F, R, T, S><<<(unsigned)(blocks < 65535 ? blocks : 65535), 256, 0, stream>>>(
        nbatch, nout, (int)nsplit, partial, out);
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
