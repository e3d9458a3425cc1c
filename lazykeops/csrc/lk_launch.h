// lk_launch.h: the one C entry point of every generated library and its argument struct.
//
// Each library exports lk_launch(const LkLaunch*), plus lk_abi_version() and
// lk_launch_bytes() that the loader checks before the first call (runtime/abi.py mirrors
// the struct with ctypes). A new runtime argument is a new field at the end of the struct
// and a new ABI version: the entry points keep their signatures. The version and the
// status codes are #defines that runtime/abi.py writes at the top of each generated
// source, so that Python and C++ read them from one place.
#pragma once

#include <cstdint>

#ifndef LK_ABI_VERSION
#error "LK_ABI_VERSION and the LK_STATUS_* codes come first in a generated source (runtime/abi.py)"
#endif
// Generated sources include this header first; the engine headers define their entry
// macros (LK_CPU_ENTRY, LK_CUDA_ENTRY) on top of it, expanded at the end of the source.

extern "C" {
struct LkLaunch {
  int32_t abi_version;   // the caller's LK_ABI_VERSION: a library refuses any other
  int32_t struct_bytes;  // sizeof(LkLaunch) on the caller's side
  int64_t nbatch, nout, nred;  // batches, output rows ("i"), reduced terms ("j")
  const void* const* args;       // one array per argument, in position order
  const int64_t* batch_strides;  // per argument: elements from one batch to the next, 0 if shared
  void* vals;                    // (nbatch, nout, vals_width) values, or null
  int64_t* idx;                  // (nbatch, nout, idx_width) indices, or null
  void* cols;                    // (nbatch, nred, COLS) column sums of a DualSum, or null
  // The slice of the outputs this launch writes (a wide output computed in slices on the
  // GPU): row stride and first component of vals and of idx.
  int64_t vals_width, vals_offset, idx_width, idx_offset;
  int32_t nthreads;  // CPU: OpenMP threads
  int32_t scheme;    // CUDA: 0 auto, 1 one block range per row range (1D), 2 split j
  void* stream;      // CUDA: the cudaStream_t to launch on
  // CUDA split scheme: scratch for the partial States. In: its size in bytes; when too
  // small, lk_launch writes the size it needs here and returns LK_STATUS_NEEDS_WORKSPACE.
  void* workspace;
  int64_t workspace_bytes;
  // Block-sparse reductions (runtime/ranges.py), all null/zero for a dense one. Each range
  // set partitions the output rows into `nclusters` clusters: cluster c is the rows
  // [row_bounds[c], row_bounds[c + 1]) and reduces over the intervals of reduced indices
  // [intervals[2k], intervals[2k + 1]), k in [interval_offsets[c], interval_offsets[c + 1]),
  // sorted and disjoint. `range_sets` is 1 (one set for every batch) or nbatch (one each);
  // set s starts at s * (nclusters + 1) in row_bounds and interval_offsets, at
  // s * 2 * nintervals in intervals.
  const int64_t* row_bounds;
  const int64_t* interval_offsets;
  const int64_t* intervals;
  // CUDA: per set, the thread blocks of clusters 0 .. c together (cumulative, nclusters
  // each; blocks of lk_block_rows() rows, cut at cluster bounds); range_blocks, the most
  // blocks of a set (the grid), and max_cluster_terms, the most terms a cluster reduces
  // over, plan the launch.
  const int64_t* block_ends;
  int64_t nclusters, nintervals, range_sets, range_blocks, max_cluster_terms;
  // Reserved for sharded launches: zero today.
  int64_t shard_offset;
};
}

namespace lk {
// What every entry point checks first: a struct of this very layout.
inline bool launch_matches(const LkLaunch* a) {
  return a != nullptr && a->abi_version == LK_ABI_VERSION &&
         a->struct_bytes == (int32_t)sizeof(LkLaunch);
}
}  // namespace lk

// The exports that describe the interface, shared by both engines' entry macros.
#define LK_ABI_EXPORTS                                                                  \
  extern "C" __attribute__((visibility("default"))) int64_t lk_abi_version() {          \
    return LK_ABI_VERSION;                                                              \
  }                                                                                     \
  extern "C" __attribute__((visibility("default"))) int64_t lk_launch_bytes() {         \
    return (int64_t)sizeof(LkLaunch);                                                   \
  }
