// lk_cuda_driver.h: the host side of the CUDA engine for kernels NVRTC compiled
// (compile/nvrtc.py), built once per machine as plain C++ (compile/driver.py): it loads a
// formula's cubin on each device through the CUDA driver API, reads the launch sizes the
// module holds (lk_sizes[], lk_cuda_engine.cuh: LK_CUDA_DEVICE_ENTRY), plans the split
// (lk_cuda_plan.h, as the nvcc libraries do) and launches the reduction and the merge with
// cuLaunchKernel, their parameters laid out as the kernels declare them (lk_cuda_kernel.cuh:
// reduce, merge_splits). The driver library (libcuda.so.1, there with every NVIDIA driver)
// is opened at run time: nothing here needs CUDA's headers or links to CUDA.
//
// The generated source opens with runtime/abi.py's prelude and the engine constants, then
// includes this header and expands LK_DRIVER_ENTRY.
#pragma once

#include <dlfcn.h>

#include <cstring>
#include <mutex>

#include "lk_cuda_plan.h"
#include "lk_ranges.h"

namespace lk {
namespace driver {

// The driver API's types and the few entry points used, as cuda.h declares them.
using CUresult = int;
using CUdevice = int;
using CUcontext = void*;
using CUmodule = void*;
using CUfunction = void*;
using CUstream = void*;
using CUdeviceptr = unsigned long long;
enum {
  ATTR_MULTIPROCESSOR_COUNT = 16,                     // CU_DEVICE_ATTRIBUTE_...
  ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97,
  FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,        // CU_FUNC_ATTRIBUTE_...
};

struct Api {
  CUresult (*init)(unsigned);
  CUresult (*primary_ctx_retain)(CUcontext*, CUdevice);
  CUresult (*ctx_get_current)(CUcontext*);
  CUresult (*ctx_set_current)(CUcontext);
  CUresult (*device_get)(CUdevice*, int);
  CUresult (*device_get_attribute)(int*, int, CUdevice);
  CUresult (*module_load_data)(CUmodule*, const void*);
  CUresult (*module_get_function)(CUfunction*, CUmodule, const char*);
  CUresult (*module_get_global)(CUdeviceptr*, size_t*, CUmodule, const char*);
  CUresult (*memcpy_dtoh)(void*, CUdeviceptr, size_t);
  CUresult (*occupancy)(int*, CUfunction, int, size_t);
  CUresult (*func_set_attribute)(CUfunction, int, int);
  CUresult (*launch_kernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                            unsigned, unsigned, CUstream, void**, void**);
  bool ok = false;
};

// The library that holds the driver's entry points: tests/engine/cpp/driver.cpp defines
// it as nullptr, the program itself, which defines a recording stand-in for each.
#ifndef LK_CUDA_DRIVER_LIBRARY
#define LK_CUDA_DRIVER_LIBRARY "libcuda.so.1"
#endif

// The driver's entry points, resolved once; `ok` false without a driver.
inline const Api& api() {
  static const Api a = [] {
    Api r{};
    void* lib = dlopen(LK_CUDA_DRIVER_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return r;
    auto get = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      return fn != nullptr;
    };
    r.ok = get(r.init, "cuInit") && get(r.primary_ctx_retain, "cuDevicePrimaryCtxRetain") &&
           get(r.ctx_get_current, "cuCtxGetCurrent") &&
           get(r.ctx_set_current, "cuCtxSetCurrent") && get(r.device_get, "cuDeviceGet") &&
           get(r.device_get_attribute, "cuDeviceGetAttribute") &&
           get(r.module_load_data, "cuModuleLoadData") &&
           get(r.module_get_function, "cuModuleGetFunction") &&
           get(r.module_get_global, "cuModuleGetGlobal_v2") &&
           get(r.memcpy_dtoh, "cuMemcpyDtoH_v2") &&
           get(r.occupancy, "cuOccupancyMaxActiveBlocksPerMultiprocessor") &&
           get(r.func_set_attribute, "cuFuncSetAttribute") &&
           get(r.launch_kernel, "cuLaunchKernel") && r.init(0) == 0;
    return r;
  }();
  return a;
}

constexpr int MAX_DEVICES = 64;
// lk_sizes[] of a module, in this order (compile/nvrtc.py: SIZES).
enum { S_BLOCK, S_ROWS, S_SHARED, S_TILE, S_STATE_BYTES, S_ACC_PER_TILE, S_BLOCK_SPARSE,
       S_NARGS, S_COUNT };

// A formula's module on one device.
struct Loaded {
  CUfunction reduce = nullptr, merge = nullptr;
  long long sizes[S_COUNT] = {};
  int64_t resident = 0;  // blocks of `reduce` the device holds at once
  int shared_limit = 0;  // the device's opt-in shared memory per block
};

}  // namespace driver
}  // namespace lk

extern "C" {
// One formula's kernels: the cubin of its reduction, the cubin of its reduction policy's
// split merge (built once per policy: compile/driver.py) and their kernels' lowered names
// (the caller keeps them alive and zeroes the rest), the driver's error when it refused
// them (a CUresult, -1 for launch sizes of another layout), and the modules loaded on
// each device so far (published with atomic stores).
struct LkKernels {
  const void* cubin;
  const void* merge_cubin;
  const char* reduce_name;
  const char* merge_name;
  long long load_error;
  lk::driver::Loaded* loaded[lk::driver::MAX_DEVICES];
};
}

namespace lk {
namespace driver {

// The primary context of `device` (torch's too) made current on this thread.
inline bool use_device(int device) {
  static CUcontext contexts[MAX_DEVICES] = {};
  static std::mutex lock;
  const Api& d = api();
  if (!d.ok || device < 0 || device >= MAX_DEVICES) return false;
  // The lock only until the device's context is known (a launch then takes none).
  CUcontext ctx = __atomic_load_n(&contexts[device], __ATOMIC_ACQUIRE);
  if (ctx == nullptr) {
    std::lock_guard<std::mutex> guard(lock);
    ctx = contexts[device];
    if (ctx == nullptr) {
      CUdevice dev;
      if (d.device_get(&dev, device) != 0 || d.primary_ctx_retain(&ctx, dev) != 0)
        return false;
      __atomic_store_n(&contexts[device], ctx, __ATOMIC_RELEASE);
    }
  }
  CUcontext current = nullptr;
  if (d.ctx_get_current(&current) != 0) return false;
  return current == ctx || d.ctx_set_current(ctx) == 0;
}

// The formula's modules on `device` (its reduction's and its merge's), loaded on first
// use; null on a driver error (k->load_error says which, when the modules were refused).
// A reduction that needs more shared memory than the device has loads: its launches
// report LK_STATUS_SHARED_MEMORY.
inline Loaded* loaded_on(LkKernels* k, int device) {
  if (!use_device(device)) return nullptr;
  Loaded* l = __atomic_load_n(&k->loaded[device], __ATOMIC_ACQUIRE);
  if (l != nullptr) return l;
  static std::mutex lock;
  std::lock_guard<std::mutex> guard(lock);
  l = __atomic_load_n(&k->loaded[device], __ATOMIC_ACQUIRE);
  if (l != nullptr) return l;
  const Api& d = api();
  Loaded fresh;
  CUmodule module, merge_module;
  CUdeviceptr sizes;
  size_t bytes = 0;
  CUdevice dev;
  int sms = 1, per_sm = 1;
  CUresult refused = 0;
  auto loads = [&](CUresult r) { return (refused = r) == 0; };
  if (!loads(d.module_load_data(&module, k->cubin)) ||
      !loads(d.module_get_function(&fresh.reduce, module, k->reduce_name)) ||
      !loads(d.module_load_data(&merge_module, k->merge_cubin)) ||
      !loads(d.module_get_function(&fresh.merge, merge_module, k->merge_name)) ||
      !loads(d.module_get_global(&sizes, &bytes, module, "lk_sizes")) ||
      !loads(bytes == sizeof fresh.sizes ? 0 : -1)) {
    k->load_error = refused;
    return nullptr;
  }
  if (d.memcpy_dtoh(fresh.sizes, sizes, bytes) != 0 || d.device_get(&dev, device) != 0 ||
      d.device_get_attribute(&sms, ATTR_MULTIPROCESSOR_COUNT, dev) != 0 ||
      d.device_get_attribute(&fresh.shared_limit, ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                             dev) != 0)
    return nullptr;
  const long long shared = fresh.sizes[S_SHARED];
  if (shared <= fresh.shared_limit) {
    if (shared > 48 * 1024 &&
        d.func_set_attribute(fresh.reduce, FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                             (int)shared) != 0)
      return nullptr;
    if (d.occupancy(&per_sm, fresh.reduce, (int)fresh.sizes[S_BLOCK], (size_t)shared) != 0)
      return nullptr;
  }
  fresh.resident = (int64_t)sms * (per_sm > 0 ? per_sm : 1);
  l = new Loaded(fresh);  // kept for the process's life, as the module is
  __atomic_store_n(&k->loaded[device], l, __ATOMIC_RELEASE);
  return l;
}

inline KernelSizes kernel_sizes(const Loaded& l) {
  return {l.sizes[S_ROWS], l.sizes[S_TILE], l.sizes[S_STATE_BYTES], l.sizes[S_ACC_PER_TILE] != 0};
}

// The kernels' parameters as lk_cuda_kernel.cuh declares them (ArgTable<F>: NARGS pointers
// then NARGS batch strides, at least one of each; Outputs<S>; DenseWork or SparseWork).
struct Outputs {
  void* vals;
  int64_t* idx;
  int64_t vstride, voff, istride, ioff;
};

inline int launch(LkLaunch* a, const Loaded& l) {
  const Api& d = api();
  const KernelSizes k = kernel_sizes(l);
  const int64_t nsplit = plan_splits_for(k, a, [&] { return l.resident; });
  const int64_t need = nsplit > 1 ? a->nbatch * nsplit * a->nout * k.state_bytes : 0;
  if (need > a->workspace_bytes) {
    a->workspace_bytes = need;
    return LK_STATUS_NEEDS_WORKSPACE;
  }
  if (l.sizes[S_SHARED] > l.shared_limit) return LK_STATUS_SHARED_MEMORY;
  if ((a->row_bounds != nullptr) != (l.sizes[S_BLOCK_SPARSE] != 0))
    return LK_STATUS_RANGES_MISMATCH;
  const int64_t blocks = row_blocks_for(k, a);
  if (blocks == 0) return LK_STATUS_OK;
  if (blocks > 0x7fffffffll) return LK_STATUS_FAILED;
  // ArgTable<F>, in a kernel's parameter space (4 KB: far more arguments than a formula
  // has); no heap allocation per launch.
  const int64_t nargs = l.sizes[S_NARGS] > 0 ? l.sizes[S_NARGS] : 1;
  unsigned char table[4096] = {};
  if (16 * nargs > (int64_t)sizeof table) return LK_STATUS_FAILED;
  if (l.sizes[S_NARGS] > 0) {
    std::memcpy(table, a->args, 8 * nargs);
    std::memcpy(table + 8 * nargs, a->batch_strides, 8 * nargs);
  }
  Outputs out{a->vals, a->idx, a->vals_width, a->vals_offset, a->idx_width, a->idx_offset};
  int64_t per_split = (a->nred + nsplit - 1) / nsplit;  // DenseWork
  RangeSets sets{a->row_bounds, a->interval_offsets, a->intervals, a->block_ends,
                 a->nclusters, a->nintervals, a->range_sets};    // SparseWork
  void* work = l.sizes[S_BLOCK_SPARSE] ? static_cast<void*>(&sets) : &per_split;
  void* partial = nsplit > 1 ? a->workspace : nullptr;
  int64_t nbatch = a->nbatch, nout = a->nout, nred = a->nred;
  void* params[] = {&nbatch, &nout, &nred, work, table, &out, &partial};
  const auto stream = static_cast<CUstream>(a->stream);
  if (d.launch_kernel(l.reduce, (unsigned)blocks, (unsigned)nsplit,
                      (unsigned)(nbatch < 65535 ? nbatch : 65535), (unsigned)l.sizes[S_BLOCK],
                      1, 1, (unsigned)l.sizes[S_SHARED], stream, params, nullptr) != 0)
    return LK_STATUS_FAILED;
  if (nsplit > 1) {
    const int64_t total = nbatch * nout, merge_blocks = (total + 255) / 256;
    int splits = (int)nsplit;
    void* merge_params[] = {&nbatch, &nout, &splits, &partial, &out};
    if (d.launch_kernel(l.merge, (unsigned)(merge_blocks < 65535 ? merge_blocks : 65535), 1, 1,
                        256, 1, 1, 0, stream, merge_params, nullptr) != 0)
      return LK_STATUS_FAILED;
  }
  return LK_STATUS_OK;
}

}  // namespace driver
}  // namespace lk

// The exports of the host side: the ABI's (LK_ABI_EXPORTS), and per call the formula's
// kernels and the device (torch's current one) to run on.
#define LK_DRIVER_ENTRY                                                                  \
  LK_ABI_EXPORTS                                                                        \
  extern "C" __attribute__((visibility("default"))) int64_t lk_kernels_bytes() {         \
    return (int64_t)sizeof(LkKernels);                                                  \
  }                                                                                     \
  extern "C" __attribute__((visibility("default"))) int lk_driver_launch(                \
      LkLaunch* a, LkKernels* k, int device) {                                          \
    if (!lk::launch_matches(a)) return LK_STATUS_ABI_MISMATCH;                          \
    const lk::driver::Loaded* l = lk::driver::loaded_on(k, device);                     \
    if (l == nullptr) return k->load_error != 0 ? LK_STATUS_MODULE_LOAD : LK_STATUS_FAILED; \
    return lk::driver::launch(a, *l);                                                   \
  }                                                                                     \
  /* The launch sizes (lk_sizes[], S_COUNT of them) into `out`; 0, or -1 on an error. */ \
  extern "C" __attribute__((visibility("default"))) int lk_driver_sizes(                 \
      LkKernels* k, int device, long long* out) {                                       \
    const lk::driver::Loaded* l = lk::driver::loaded_on(k, device);                     \
    if (l == nullptr) return -1;                                                        \
    std::memcpy(out, l->sizes, sizeof l->sizes);                                        \
    return 0;                                                                           \
  }                                                                                     \
  /* The split lk_driver_launch would use (for tests and tools); negative on an error. */ \
  extern "C" __attribute__((visibility("default"))) int64_t lk_driver_plan(              \
      const LkLaunch* a, LkKernels* k, int device) {                                    \
    if (!lk::launch_matches(a)) return -LK_STATUS_ABI_MISMATCH;                         \
    const lk::driver::Loaded* l = lk::driver::loaded_on(k, device);                     \
    if (l == nullptr) return -LK_STATUS_FAILED;                                         \
    return lk::plan_splits_for(lk::driver::kernel_sizes(*l), a, [&] { return l->resident; }); \
  }
