// lk_cuda_plan.h: the CUDA engine's launch planning, over the sizes of a kernel (host
// code): how many thread blocks cover the rows, and how many ranges of j the split scheme
// cuts the reduction into. The host side of each nvcc-built library (lk_cuda_engine.cuh)
// plans with it; so will a host side built once for the kernels NVRTC compiles
// (compile/nvrtc.py), which reads the sizes from the module. The includer has included
// lk_launch.h (LkLaunch).
#pragma once

#include "lk_std.h"

namespace lk {

enum { SCHEME_AUTO = 0, SCHEME_1D = 1, SCHEME_SPLIT = 2 };
constexpr int64_t WORKSPACE_LIMIT = 64ll << 20;  // bytes of partial States, at most

// What planning reads of a kernel: the output rows of a thread block, the terms of a
// tile, the bytes of a reduction State, and whether the policy folds per tile (sums).
struct KernelSizes {
  int64_t rows, tile, state_bytes;
  bool acc_per_tile;
};

// Thread blocks per batch: of all rows (dense), or what runtime/ranges.py counted for the
// clusters of the largest range set (block-sparse).
inline int64_t row_blocks_for(const KernelSizes& k, const LkLaunch* a) {
  if (a->row_bounds != nullptr) return a->range_blocks;
  return (a->nout + k.rows - 1) / k.rows;
}

// How many j-ranges to split the reduction into. Auto, for sums: split only when the 1D
// grid has fewer than eight waves of resident blocks, into enough ranges for eight waves
// (the last, partial wave then costs little); each range of at least two tiles, within
// WORKSPACE_LIMIT. Forced split: at least two ranges when there are two terms. A
// block-sparse reduction splits each block's terms: the most a cluster has count here.
// `resident()`: the kernel's blocks the device holds at once (asked only when needed).
template <class Resident>
int64_t plan_splits_for(const KernelSizes& k, const LkLaunch* a, Resident resident_blocks) {
  const int64_t nbatch = a->nbatch, nout = a->nout, scheme = a->scheme;
  const int64_t nred = a->row_bounds != nullptr ? a->max_cluster_terms : a->nred;
  if (scheme == SCHEME_1D || nout == 0 || nred == 0) return 1;
  const int64_t resident = resident_blocks();
  const int64_t blocks = row_blocks_for(k, a) * (nbatch < 65535 ? nbatch : 65535);
  // Selections (acc_per_tile false) pay for each range: its list refills from empty, and
  // while it fills, some thread of every warp inserts at nearly every term. They split
  // only a GPU less than half busy, into one wave.
  const int64_t target = k.acc_per_tile ? 8 * resident : resident;
  const int64_t threshold = k.acc_per_tile ? target : resident / 2;
  int64_t n = blocks >= threshold ? 1 : (target + blocks - 1) / blocks;
  const int64_t by_tiles = nred / (2 * k.tile);
  n = n < by_tiles ? n : by_tiles;
  if (scheme == SCHEME_SPLIT) n = n > 2 ? n : 2;
  const int64_t by_memory = WORKSPACE_LIMIT / (k.state_bytes * nout * nbatch);
  n = n < by_memory ? n : by_memory;
  n = n < nred ? n : nred;
  n = n < 65535 ? n : 65535;
  return n > 1 ? n : 1;
}

}  // namespace lk
