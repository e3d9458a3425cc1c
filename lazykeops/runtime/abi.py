"""The C interface of every generated library: one entry point taking one versioned struct.

`lk_launch(const LkLaunch*)` replaces positional entry points whose argument lists had to
change in five places for each new runtime argument. The struct (csrc/lk_launch.h) carries
the sizes, the argument and output pointers, the output slice, the CPU threads, the CUDA
scheme, stream and workspace, block-sparse ranges (runtime/ranges.py), and a field for what
comes next (a shard offset), zero when unused. This module is the one place that defines the ABI version
and the status codes: `source_prelude()` emits them as #defines at the top of each generated
source, so C++ and Python cannot disagree; the library reports both (version, struct size)
at load, and a library of another ABI is rebuilt, never called.
"""

import ctypes

ABI_VERSION = 2

# What lk_launch returns. NEEDS_WORKSPACE: the CUDA split scheme needs `workspace_bytes`
# bytes of scratch (written back into the struct); call again with that much.
STATUS = {
    "OK": 0,
    "FAILED": 1,  # a C++ exception (CPU) or a CUDA error at launch
    "SHARED_MEMORY": 2,  # one j-term does not fit in the GPU's shared memory
    "CUDA_ATTRIBUTE": 3,  # the kernel's shared memory size could not be raised
    "ABI_MISMATCH": 4,  # the caller's struct is not this library's
    "NEEDS_WORKSPACE": 5,
    "RANGES_MISMATCH": 6,  # ranges given to a dense library, or none to a block-sparse one
    "MODULE_LOAD": 7,  # the CUDA driver refused NVRTC's cubin (compile/driver.py: why)
}
OK, FAILED, SHARED_MEMORY = STATUS["OK"], STATUS["FAILED"], STATUS["SHARED_MEMORY"]
NEEDS_WORKSPACE, MODULE_LOAD = STATUS["NEEDS_WORKSPACE"], STATUS["MODULE_LOAD"]

# backend= -> the CUDA engine's scheme: auto, one block per row range (1D), split j ranges.
SCHEMES = {"auto": 0, "GPU": 0, "GPU_1D": 1, "GPU_2D": 2}


class LkLaunch(ctypes.Structure):
    """Mirror of `struct LkLaunch` in csrc/lk_launch.h (same order, same types)."""

    _fields_ = [
        ("abi_version", ctypes.c_int32),
        ("struct_bytes", ctypes.c_int32),
        ("nbatch", ctypes.c_int64),
        ("nout", ctypes.c_int64),
        ("nred", ctypes.c_int64),
        ("args", ctypes.c_void_p),
        ("batch_strides", ctypes.c_void_p),
        ("vals", ctypes.c_void_p),
        ("idx", ctypes.c_void_p),
        ("cols", ctypes.c_void_p),
        ("vals_width", ctypes.c_int64),
        ("vals_offset", ctypes.c_int64),
        ("idx_width", ctypes.c_int64),
        ("idx_offset", ctypes.c_int64),
        ("nthreads", ctypes.c_int32),
        ("scheme", ctypes.c_int32),
        ("stream", ctypes.c_void_p),
        ("workspace", ctypes.c_void_p),
        ("workspace_bytes", ctypes.c_int64),
        ("row_bounds", ctypes.c_void_p),
        ("interval_offsets", ctypes.c_void_p),
        ("intervals", ctypes.c_void_p),
        ("block_ends", ctypes.c_void_p),
        ("nclusters", ctypes.c_int64),
        ("nintervals", ctypes.c_int64),
        ("range_sets", ctypes.c_int64),
        ("range_blocks", ctypes.c_int64),
        ("max_cluster_terms", ctypes.c_int64),
        ("shard_offset", ctypes.c_int64),
    ]


LAUNCH_BYTES = ctypes.sizeof(LkLaunch)


def source_prelude():
    """The lines that open every generated source: the ABI's #defines, then the struct."""
    lines = [f"#define LK_ABI_VERSION {ABI_VERSION}"]
    lines += [f"#define LK_STATUS_{name} {code}" for name, code in STATUS.items()]
    return "\n".join([*lines, '#include "lk_launch.h"'])


def bind_entry_points(dll):
    """(lk_launch, abi version, struct size) of a loaded library; AttributeError if it
    has no lk_launch (a library of an older layout)."""
    launch = dll.lk_launch
    launch.argtypes = [ctypes.POINTER(LkLaunch)]
    launch.restype = ctypes.c_int
    version, size = dll.lk_abi_version, dll.lk_launch_bytes
    version.restype = size.restype = ctypes.c_int64
    return launch, int(version()), int(size())


def new_launch(nbatch, nout, nred):
    """An LkLaunch of this ABI for these sizes, every other field zero."""
    a = LkLaunch()
    a.abi_version, a.struct_bytes = ABI_VERSION, LAUNCH_BYTES
    a.nbatch, a.nout, a.nred = nbatch, nout, nred
    return a


def bind_planner(dll):
    """plan(nbatch, nout, nred, scheme) -> the number of j-ranges a CUDA library's
    lk_launch splits these sizes into (lk_plan)."""
    entry = dll.lk_plan
    entry.argtypes = [ctypes.POINTER(LkLaunch)]
    entry.restype = ctypes.c_int64

    def plan(nbatch, nout, nred, scheme=0):
        a = new_launch(nbatch, nout, nred)
        a.scheme = scheme
        return int(entry(ctypes.byref(a)))

    return plan
