// driver.cpp: the host side for NVRTC's cubins (lk_cuda_driver.h) against a recording
// stand-in of the CUDA driver defined below (the header opens the program itself:
// LK_CUDA_DRIVER_LIBRARY nullptr; the program is linked with -rdynamic). Checked: the
// module's sizes are read and the shared-memory opt-in set past 48 KB; the reduction is
// launched with the grid, block, shared memory, stream and parameter bytes its kernel
// declares (lk_cuda_kernel.cuh: reduce); the split scheme asks for its workspace first,
// then launches the reduction on it and the merge (merge_splits, from its own module);
// block-sparse work goes as RangeSets; each device gets its own modules and context;
// mismatches are refused; a cubin the driver refuses is reported with its error.
#define LK_CUDA_DRIVER_LIBRARY nullptr

#include <cstring>
#include <string>
#include <vector>

#include "harness.h"
#include "lk_launch.h"
#include "lk_cuda_driver.h"

LK_DRIVER_ENTRY

namespace fake {
long long sizes[8];
struct Launch {
  std::string fn;
  unsigned grid[3], block[3], shared;
  void* stream;
  std::vector<std::vector<unsigned char>> params;
};
std::vector<Launch> launches;
std::vector<int> reduce_bytes, merge_bytes;  // the kernels' parameter sizes, in order
int opt_in_calls = 0, opt_in_value = 0, loads = 0;
int refuse_merge = 0;  // the CUresult cuModuleLoadData returns for the merge's image
void* current = nullptr;
}  // namespace fake

extern "C" {
int cuInit(unsigned) { return 0; }
int cuDeviceGet(int* d, int ordinal) { *d = ordinal; return 0; }
int cuDevicePrimaryCtxRetain(void** c, int d) {
  *c = reinterpret_cast<void*>((uintptr_t)(0x1000 + d));
  return 0;
}
int cuCtxGetCurrent(void** c) { *c = fake::current; return 0; }
int cuCtxSetCurrent(void* c) { fake::current = c; return 0; }
int cuDeviceGetAttribute(int* v, int attr, int) {
  *v = attr == 16 ? 132 : attr == 97 ? 232448 : 0;  // SMs, opt-in shared memory per block
  return 0;
}
int cuModuleLoadData(void** m, const void* image);
int cuModuleGetFunction(void** f, void* module, const char* name);
int cuModuleGetGlobal_v2(unsigned long long* p, size_t* n, void* module, const char* name);
}

namespace {
const unsigned char CUBIN[16] = {0x7f, 'E', 'L', 'F'}, MERGE_CUBIN[16] = {0x7f, 'E', 'L', 'F'};
}

extern "C" {
int cuModuleLoadData(void** m, const void* image) {
  if (image == MERGE_CUBIN && fake::refuse_merge != 0) return fake::refuse_merge;
  ++fake::loads;
  *m = const_cast<void*>(image);
  return 0;
}
// Each kernel and the launch sizes are found in their own module only (a module is its
// image here).
int cuModuleGetFunction(void** f, void* module, const char* name) {
  if (module != (std::strcmp(name, "merge") == 0 ? MERGE_CUBIN : CUBIN)) return 500;
  *f = const_cast<char*>(name);  // the caller's string outlives the test
  return 0;
}
int cuModuleGetGlobal_v2(unsigned long long* p, size_t* n, void* module, const char* name) {
  if (std::strcmp(name, "lk_sizes") != 0 || module != CUBIN) return 500;
  *p = (unsigned long long)(uintptr_t)fake::sizes;
  *n = sizeof fake::sizes;
  return 0;
}
int cuMemcpyDtoH_v2(void* dst, unsigned long long src, size_t n) {
  std::memcpy(dst, reinterpret_cast<void*>((uintptr_t)src), n);
  return 0;
}
int cuOccupancyMaxActiveBlocksPerMultiprocessor(int* n, void*, int, size_t) {
  *n = 2;
  return 0;
}
int cuFuncSetAttribute(void*, int attr, int value) {
  if (attr == 8) {
    ++fake::opt_in_calls;
    fake::opt_in_value = value;
  }
  return 0;
}
int cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                   unsigned bz, unsigned shared, void* stream, void** params, void**) {
  fake::Launch l{static_cast<const char*>(f), {gx, gy, gz}, {bx, by, bz}, shared, stream, {}};
  const auto& bytes = l.fn == "reduce" ? fake::reduce_bytes : fake::merge_bytes;
  for (size_t i = 0; i < bytes.size(); ++i) {
    const auto* p = static_cast<const unsigned char*>(params[i]);
    l.params.emplace_back(p, p + bytes[i]);
  }
  fake::launches.push_back(l);
  return 0;
}
}

namespace {

harness::Report report;
const char REDUCE[] = "reduce", MERGE[] = "merge";

// A formula's kernels not loaded anywhere yet, whose module will report these launch
// sizes (tile 256, 16-byte States, a sum), and no launch recorded.
LkKernels module_with(long long block, long long rows, long long shared, long long sparse = 0,
                      long long nargs = 3) {
  const long long s[8] = {block, rows, shared, 256, 16, 1, sparse, nargs};
  std::memcpy(fake::sizes, s, sizeof s);
  fake::reduce_bytes = {8, 8, 8, sparse ? 56 : 8, (int)(16 * (nargs > 0 ? nargs : 1)), 48, 8};
  fake::merge_bytes = {8, 8, 4, 8, 48};
  fake::launches.clear();
  LkKernels k{};
  k.cubin = CUBIN;
  k.merge_cubin = MERGE_CUBIN;
  k.reduce_name = REDUCE;
  k.merge_name = MERGE;
  return k;
}

template <class V>
V at(const std::vector<unsigned char>& bytes, size_t offset) {
  V v;
  std::memcpy(&v, bytes.data() + offset, sizeof v);
  return v;
}

const void* ARGS[3] = {reinterpret_cast<void*>(0xa0), reinterpret_cast<void*>(0xa8),
                       reinterpret_cast<void*>(0xb0)};
const int64_t STRIDES[3] = {10, 0, 20};

LkLaunch launch_of(int64_t nbatch, int64_t nout, int64_t nred, int scheme) {
  LkLaunch a{};
  a.abi_version = LK_ABI_VERSION;
  a.struct_bytes = sizeof(LkLaunch);
  a.nbatch = nbatch;
  a.nout = nout;
  a.nred = nred;
  a.scheme = scheme;
  a.args = ARGS;
  a.batch_strides = STRIDES;
  a.vals = reinterpret_cast<void*>(0xc0);
  a.idx = reinterpret_cast<int64_t*>(0xd0);
  a.vals_width = 3;
  a.vals_offset = 1;
  a.idx_width = 4;
  a.idx_offset = 2;
  a.stream = reinterpret_cast<void*>(0x77);
  return a;
}

// The parameters every reduction launch shares: sizes, argument table, outputs.
void check_common(harness::Case& c, const fake::Launch& l, const LkLaunch& a) {
  c.equal("nbatch", 0, at<int64_t>(l.params[0], 0), a.nbatch);
  c.equal("nout", 0, at<int64_t>(l.params[1], 0), a.nout);
  c.equal("nred", 0, at<int64_t>(l.params[2], 0), a.nred);
  for (int v = 0; v < 3; ++v) {
    c.equal("arg pointer", v, (int64_t)at<uintptr_t>(l.params[4], 8 * v), (int64_t)(uintptr_t)ARGS[v]);
    c.equal("batch stride", v, at<int64_t>(l.params[4], 24 + 8 * v), STRIDES[v]);
  }
  c.equal("vals", 0, (int64_t)at<uintptr_t>(l.params[5], 0), 0xc0);
  c.equal("idx", 0, (int64_t)at<uintptr_t>(l.params[5], 8), 0xd0);
  c.equal("widths", 0, at<int64_t>(l.params[5], 16) * 1000 + at<int64_t>(l.params[5], 24), 3001);
  c.equal("idx widths", 0, at<int64_t>(l.params[5], 32) * 1000 + at<int64_t>(l.params[5], 40), 4002);
  c.truth("stream", l.stream == a.stream);
}

}  // namespace

int main() {
  {
    harness::Case c("dense_1d_launch");
    LkKernels k = module_with(256, 512, 4096);
    LkLaunch a = launch_of(2, 1000, 5000, lk::SCHEME_1D);
    c.equal("status", 0, lk_driver_launch(&a, &k, 0), LK_STATUS_OK);
    c.equal("launches", 0, (int64_t)fake::launches.size(), 1);
    if (fake::launches.size() == 1) {
      const fake::Launch& l = fake::launches[0];
      c.truth("kernel", l.fn == "reduce");
      c.equal("grid", 0, l.grid[0] * 10000 + l.grid[1] * 100 + l.grid[2], 2 * 10000 + 100 + 2);
      c.equal("block", 0, l.block[0], 256);
      c.equal("shared", 0, l.shared, 4096);
      check_common(c, l, a);
      c.equal("per_split", 0, at<int64_t>(l.params[3], 0), 5000);
      c.equal("partial", 0, (int64_t)at<uintptr_t>(l.params[6], 0), 0);
    }
    c.truth("context of device 0 current", fake::current == reinterpret_cast<void*>(0x1000));
    c.equal("no opt-in under 48 KB", 0, fake::opt_in_calls, 0);
    long long out[8];
    c.equal("sizes", 0, lk_driver_sizes(&k, 0, out) * 1000 + out[1], 512);
    report.add(c);
  }
  {
    harness::Case c("split_asks_for_its_workspace_then_merges");
    LkKernels k = module_with(256, 512, 4096);
    // One block of rows, 1e6 terms: 8 waves of 264 resident blocks, capped by two tiles
    // per range: 1e6 / 512 = 1953 ranges of 513 terms.
    LkLaunch a = launch_of(1, 100, 1000000, lk::SCHEME_AUTO);
    c.equal("plan", 0, lk_driver_plan(&a, &k, 0), 1953);
    c.equal("status", 0, lk_driver_launch(&a, &k, 0), LK_STATUS_NEEDS_WORKSPACE);
    c.equal("workspace bytes", 0, a.workspace_bytes, (int64_t)1953 * 100 * 16);
    c.equal("no launch before", 0, (int64_t)fake::launches.size(), 0);
    a.workspace = reinterpret_cast<void*>(0xe0);
    c.equal("status", 1, lk_driver_launch(&a, &k, 0), LK_STATUS_OK);
    c.equal("launches", 0, (int64_t)fake::launches.size(), 2);
    if (fake::launches.size() == 2) {
      const fake::Launch& r = fake::launches[0];
      const fake::Launch& m = fake::launches[1];
      c.truth("order", r.fn == "reduce" && m.fn == "merge");
      c.equal("grid", 0, r.grid[0] * 10000000 + r.grid[1] * 10 + r.grid[2], 10000000 + 19531);
      check_common(c, r, a);
      c.equal("per_split", 0, at<int64_t>(r.params[3], 0), 513);
      c.equal("partial", 0, (int64_t)at<uintptr_t>(r.params[6], 0), 0xe0);
      c.equal("merge grid and block", 0, m.grid[0] * 1000 + m.block[0], 1256);
      c.equal("merge shared", 0, m.shared, 0);
      c.equal("merge nsplit", 0, at<int>(m.params[2], 0), 1953);
      c.equal("merge partial", 0, (int64_t)at<uintptr_t>(m.params[3], 0), 0xe0);
      c.equal("merge vals", 0, (int64_t)at<uintptr_t>(m.params[4], 0), 0xc0);
    }
    report.add(c);
  }
  {
    harness::Case c("shared_memory_opt_in_and_limit");
    LkKernels k = module_with(256, 256, 100000);
    LkLaunch a = launch_of(1, 1000, 1000, lk::SCHEME_1D);
    c.equal("status", 0, lk_driver_launch(&a, &k, 0), LK_STATUS_OK);
    c.equal("opt-in", 0, fake::opt_in_calls * 1000000 + fake::opt_in_value, 1100000);
    c.equal("shared", 0, fake::launches.empty() ? -1 : fake::launches[0].shared, 100000);
    LkKernels big = module_with(256, 256, 300000);  // past the device's 232448 bytes
    c.equal("status", 1, lk_driver_launch(&a, &big, 0), LK_STATUS_SHARED_MEMORY);
    c.equal("no launch", 0, (int64_t)fake::launches.size(), 0);
    report.add(c);
  }
  {
    harness::Case c("block_sparse_work_and_mismatches");
    LkKernels k = module_with(64, 64, 4096, 1);
    LkLaunch a = launch_of(1, 1000, 1000, lk::SCHEME_1D);
    c.equal("dense launch of a sparse library", 0, lk_driver_launch(&a, &k, 0),
            LK_STATUS_RANGES_MISMATCH);
    int64_t bounds[3] = {0, 500, 1000}, offsets[3] = {0, 1, 2}, intervals[4] = {0, 10, 20, 30};
    int64_t ends[2] = {8, 16};
    a.row_bounds = bounds;
    a.interval_offsets = offsets;
    a.intervals = intervals;
    a.block_ends = ends;
    a.nclusters = 2;
    a.nintervals = 2;
    a.range_sets = 1;
    a.range_blocks = 16;
    a.max_cluster_terms = 10;
    c.equal("status", 0, lk_driver_launch(&a, &k, 0), LK_STATUS_OK);
    if (fake::launches.size() == 1) {
      const fake::Launch& l = fake::launches[0];
      c.equal("grid", 0, l.grid[0], 16);
      const auto& w = l.params[3];
      c.truth("sets", at<const int64_t*>(w, 0) == bounds && at<const int64_t*>(w, 8) == offsets &&
                          at<const int64_t*>(w, 16) == intervals && at<const int64_t*>(w, 24) == ends);
      c.equal("counts", 0, at<int64_t>(w, 32) * 100 + at<int64_t>(w, 40) * 10 + at<int64_t>(w, 48), 221);
    }
    LkLaunch bad = launch_of(1, 10, 10, lk::SCHEME_1D);
    bad.abi_version = LK_ABI_VERSION + 1;
    c.equal("abi", 0, lk_driver_launch(&bad, &k, 0), LK_STATUS_ABI_MISMATCH);
    report.add(c);
  }
  {
    harness::Case c("a_module_per_device");
    LkKernels k = module_with(256, 512, 4096);
    const int before = fake::loads;
    LkLaunch a = launch_of(1, 1000, 1000, lk::SCHEME_1D);
    lk_driver_launch(&a, &k, 0);
    lk_driver_launch(&a, &k, 0);
    c.equal("one load of each module on device 0", 0, fake::loads - before, 2);
    c.equal("status on device 1", 0, lk_driver_launch(&a, &k, 1), LK_STATUS_OK);
    c.equal("their loads on device 1", 0, fake::loads - before, 4);
    c.truth("context of device 1 current", fake::current == reinterpret_cast<void*>(0x1001));
    c.equal("device past the table", 0, lk_driver_launch(&a, &k, lk::driver::MAX_DEVICES),
            LK_STATUS_FAILED);
    report.add(c);
  }
  {
    harness::Case c("a_refused_cubin_reports_the_drivers_error");
    LkKernels k = module_with(256, 512, 4096);
    fake::refuse_merge = 222;  // CUDA_ERROR_UNSUPPORTED_PTX_VERSION: a driver too old
    LkLaunch a = launch_of(1, 1000, 1000, lk::SCHEME_1D);
    c.equal("status", 0, lk_driver_launch(&a, &k, 0), LK_STATUS_MODULE_LOAD);
    c.equal("error", 0, k.load_error, 222);
    c.equal("no launch", 0, (int64_t)fake::launches.size(), 0);
    long long out[8];
    c.equal("no sizes", 0, lk_driver_sizes(&k, 0, out), -1);
    fake::refuse_merge = 0;
    report.add(c);
  }
  return report.exit_code();
}
