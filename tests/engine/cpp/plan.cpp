// plan.cpp: the CUDA engine's split planner (lk_cuda_plan.h) on the host, over sizes given
// by hand: the 1D scheme and empty sizes never split nor ask for the resident blocks; sums
// split a GPU with fewer than eight waves into eight, selections one less than half busy
// into one wave; each range keeps two tiles; a forced split has two ranges; the workspace
// limit and nred cap it; block-sparse launches plan on their grid and largest cluster.
#include "harness.h"

#include "lk_launch.h"
#include "lk_cuda_plan.h"

namespace {

harness::Report report;

LkLaunch launch(int64_t nbatch, int64_t nout, int64_t nred, int scheme = lk::SCHEME_AUTO) {
  LkLaunch a{};
  a.nbatch = nbatch;
  a.nout = nout;
  a.nred = nred;
  a.scheme = scheme;
  return a;
}

// The plan of `a` for these sizes on a device holding `resident` blocks; `asked` counts
// the queries.
int64_t plan(const lk::KernelSizes& k, const LkLaunch& a, int64_t resident, int* asked) {
  return lk::plan_splits_for(k, &a, [&] {
    ++*asked;
    return resident;
  });
}

void check(const char* name, const lk::KernelSizes& k, const LkLaunch& a, int64_t resident,
           int64_t want, int want_asked) {
  harness::Case c(name);
  int asked = 0;
  c.equal("nsplit", 0, plan(k, a, resident, &asked), want);
  c.equal("resident queries", 0, asked, want_asked);
  report.add(c);
}

}  // namespace

int main() {
  const lk::KernelSizes sum{256, 256, 16, true}, select{256, 256, 24, false};
  // 1000 rows: 4 blocks of 256.
  check("one_d_never_splits", sum, launch(1, 1000, 1000000, lk::SCHEME_1D), 264, 1, 0);
  check("no_rows_no_split", sum, launch(1, 0, 1000000), 264, 1, 0);
  // Eight waves of 264 blocks over 4 blocks: ceil(2112 / 4) = 528 ranges (of 1e6 / 528
  // terms, more than two tiles; 528 * 1000 * 16 bytes within 64 MB).
  check("sums_fill_eight_waves", sum, launch(1, 1000, 1000000), 264, 528, 1);
  // 1e6 rows: 3907 blocks, past eight waves of 264 (2112): no split.
  check("busy_gpu_no_split", sum, launch(1, 1000000, 1000000), 264, 1, 1);
  // Selections: one wave (264 / 4 = 66), only below half a wave.
  check("selections_one_wave", select, launch(1, 1000, 1000000), 264, 66, 1);
  check("selections_half_busy_no_split", select, launch(1, 40000, 1000000), 264, 1, 1);
  // Two tiles per range: 10000 terms / 512 = 19 ranges.
  check("two_tiles_per_range", sum, launch(1, 1000, 10000), 264, 19, 1);
  // Forced split: at least two ranges, at most nred.
  check("forced_split_two", sum, launch(1, 1000000, 1000000, lk::SCHEME_SPLIT), 264, 2, 1);
  check("forced_split_two_terms", sum, launch(1, 1000, 2, lk::SCHEME_SPLIT), 264, 2, 1);
  check("forced_split_one_term", sum, launch(1, 1000, 1, lk::SCHEME_SPLIT), 264, 1, 1);
  // Workspace: 64 MB / (16 bytes * 1000 rows * 1000 batches) = 4 ranges.
  check("workspace_limit", sum, launch(1000, 1000, 1000000, lk::SCHEME_SPLIT), 100000000, 4, 1);
  // Block-sparse: the grid counted by runtime/ranges.py (2 blocks) and the largest
  // cluster's terms (300: no two tiles of 256, no split).
  LkLaunch sparse = launch(1, 1000, 1000000);
  int64_t bounds[2] = {0, 1000};
  sparse.row_bounds = bounds;
  sparse.range_blocks = 2;
  sparse.max_cluster_terms = 300;
  check("sparse_small_clusters", sum, sparse, 264, 1, 1);
  sparse.max_cluster_terms = 100000;  // 2112 / 2 = 1056 ranges, 100000 / 512 = 195 cap
  check("sparse_large_cluster", sum, sparse, 264, 195, 1);
  {
    harness::Case c("row_blocks");
    LkLaunch a = launch(1, 1000, 10);
    c.equal("dense", 0, lk::row_blocks_for(sum, &a), 4);
    c.equal("sparse", 0, lk::row_blocks_for(sum, &sparse), 2);
    report.add(c);
  }
  return report.exit_code();
}
