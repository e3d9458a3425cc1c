"""Running the cubins NVRTC compiles (compile/nvrtc.py): the CUDA engine's host side for
them (csrc/lk_cuda_driver.h), built once per machine with the C++ compiler like a CPU
kernel (it calls the CUDA driver, opened at run time: no CUDA headers or libraries at
build time), and CubinLibrary, the loaded kernels of one formula, with the interface of
build.KernelLibrary (`launch`, `plan`, `block_rows`, `key`).

A formula's kernels are two cache entries: its reduction, and the split scheme's merge of
its reduction policy, which depends on the policy and the types alone (every Sum of one
float32 value shares one), so that a new formula most often compiles its reduction only;
when both are new they compile side by side (`load_library`). Their cubins are loaded on
each device at its first launch there (the device torch has current at the call), in the
device's primary context, which torch uses too.
"""

import ctypes
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from ..runtime.abi import ABI_VERSION, LAUNCH_BYTES, LkLaunch, new_launch, source_prelude
from .build import load_kernel
from .codegen import engine_defines, render_merge_source, render_source
from .nvrtc import SIZES, kernel_names, version

MAX_DEVICES = 64  # lk_cuda_driver.h: MAX_DEVICES
# The CUresults of a refused cubin most likely here (cuda.h's names).
DRIVER_ERRORS = {-1: "(launch sizes of another layout)", 200: "CUDA_ERROR_INVALID_IMAGE",
                 209: "CUDA_ERROR_NO_BINARY_FOR_GPU", 218: "CUDA_ERROR_INVALID_PTX",
                 222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", 500: "CUDA_ERROR_NOT_FOUND"}


class LkKernels(ctypes.Structure):
    """lk_cuda_driver.h's LkKernels: the cubins, their kernels' names, the driver's error
    if it refused them, the loaded modules."""
    _fields_ = [("cubin", ctypes.c_void_p), ("merge_cubin", ctypes.c_void_p),
                ("reduce_name", ctypes.c_char_p), ("merge_name", ctypes.c_char_p),
                ("load_error", ctypes.c_longlong), ("loaded", ctypes.c_void_p * MAX_DEVICES)]


def host_source():
    """The host side's translation unit: the ABI prelude, the engine constants, the header
    and its entry macro."""
    return "\n".join(["// lazykeops: the CUDA host side for NVRTC's cubins", source_prelude(),
                      *engine_defines(), '#include "lk_cuda_driver.h"', "", "LK_DRIVER_ENTRY",
                      ""])


class DriverHost:
    """The loaded host side (a cache entry built from host_source())."""

    def __init__(self, path, key, target):
        self.path, self.key = path, key
        dll = ctypes.CDLL(str(path))
        version, size, kernels = dll.lk_abi_version, dll.lk_launch_bytes, dll.lk_kernels_bytes
        version.restype = size.restype = kernels.restype = ctypes.c_int64
        if (version(), size(), kernels()) != (ABI_VERSION, LAUNCH_BYTES,
                                              ctypes.sizeof(LkKernels)):
            raise AttributeError(f"{path}: another launch ABI")  # the loader rebuilds it
        self.launch = dll.lk_driver_launch
        self.launch.argtypes = [ctypes.POINTER(LkLaunch), ctypes.POINTER(LkKernels), ctypes.c_int]
        self.launch.restype = ctypes.c_int
        self.plan = dll.lk_driver_plan
        self.plan.argtypes = [ctypes.POINTER(LkLaunch), ctypes.POINTER(LkKernels), ctypes.c_int]
        self.plan.restype = ctypes.c_int64
        self.sizes = dll.lk_driver_sizes
        self.sizes.argtypes = [ctypes.POINTER(LkKernels), ctypes.c_int,
                               ctypes.POINTER(ctypes.c_longlong)]
        self.sizes.restype = ctypes.c_int
        self._dll = dll


_HOST = []
_HOST_LOCK = threading.Lock()


def host():
    """The host side, built on first use (cached like a kernel)."""
    with _HOST_LOCK:
        if not _HOST:
            _HOST.append(load_kernel(host_source(), "the CUDA host side for NVRTC's kernels",
                                     "cpu", library=DriverHost))
        return _HOST[0]


class CubinEntry:
    """A cache entry NVRTC built: the cubin and the lowered name of its one kernel, which
    its manifest records."""

    def __init__(self, path, key, target):
        self.path, self.key, self.target = path, key, target
        try:
            manifest = json.loads((path.parent / "manifest.json").read_text())
            (name,) = manifest["interface"]["kernels"]
        except (KeyError, TypeError, ValueError) as err:  # the loader rebuilds the entry
            raise AttributeError(f"{path}: no kernel name in the manifest ({err})") from None
        self.cubin = ctypes.create_string_buffer(path.read_bytes())
        self.name = name.encode()


_LIBRARIES = {}  # (reduction key, merge key) -> CubinLibrary: one module per device each
_LIBRARIES_LOCK = threading.Lock()


def load_library(spec, description, target, interface):
    """The CubinLibrary of `spec` for `target` ("cuda:sm_XY"), its two entries loaded from
    the cache or built; a new merge builds in a second thread while this one builds the
    reduction (NVRTC runs without the GIL)."""
    reduce_name, merge_name = kernel_names(spec)

    def merge():
        return load_kernel(render_merge_source(spec), f"the split merge of {spec.reduction}",
                           target, {"dtype": spec.dtype}, nvrtc_names=[merge_name],
                           library=CubinEntry)

    with ThreadPoolExecutor(max_workers=1) as pool:
        merged = pool.submit(merge)
        reduction = load_kernel(render_source(spec, device_only=True), description, target,
                                interface, nvrtc_names=[reduce_name], library=CubinEntry)
        merged = merged.result()
    with _LIBRARIES_LOCK:
        lib = _LIBRARIES.get((reduction.key, merged.key))
        if lib is None:
            lib = _LIBRARIES[reduction.key, merged.key] = CubinLibrary(reduction, merged)
        return lib


class CubinLibrary:
    """One formula's kernels: its reduction's entry and its merge's (CubinEntry)."""

    def __init__(self, reduction, merge):
        self.path, self.key, self.target = reduction.path, reduction.key, reduction.target
        self._entries = (reduction, merge)  # their buffers outlive the modules' loads
        self._kernels = LkKernels(ctypes.cast(reduction.cubin, ctypes.c_void_p),
                                  ctypes.cast(merge.cubin, ctypes.c_void_p),
                                  reduction.name, merge.name)
        self._host = host()
        self._block_rows = None

    def refusal(self):
        """Why the CUDA driver refused these cubins (after a launch returned MODULE_LOAD)."""
        code = self._kernels.load_error
        name = DRIVER_ERRORS.get(code, "")
        return (f"the CUDA driver refused the kernels NVRTC {'.'.join(map(str, version()))} "
                f"compiled for {self.target} (CUresult {code}{' ' + name if name else ''}): "
                "a driver older than that CUDA release cannot load them; update the driver, "
                "or set LAZYKEOPS_CUDA_COMPILER=nvcc")

    def launch(self, a_ref):
        """lk_launch's contract: LK_STATUS_OK, NEEDS_WORKSPACE with the size written, ...,
        MODULE_LOAD when the driver refuses the cubins (`refusal` says why)."""
        return self._host.launch(a_ref, ctypes.byref(self._kernels), torch.cuda.current_device())

    def plan(self, nbatch, nout, nred, scheme=0):
        """The number of j-ranges `launch` splits these sizes into (as KernelLibrary.plan)."""
        a = new_launch(nbatch, nout, nred)
        a.scheme = scheme
        return int(self._host.plan(ctypes.byref(a), ctypes.byref(self._kernels),
                                   torch.cuda.current_device()))

    def sizes(self):
        """{name: value} of the module's launch sizes (nvrtc.SIZES), loading it on the
        current device."""
        out = (ctypes.c_longlong * len(SIZES))()
        if self._host.sizes(ctypes.byref(self._kernels), torch.cuda.current_device(), out) != 0:
            raise RuntimeError(f"the CUDA driver could not load the kernel {self.path}")
        return dict(zip(SIZES, out))

    @property
    def block_rows(self):
        if self._block_rows is None:
            self._block_rows = self.sizes()["rows"]
        return self._block_rows
