"""NVRTC, the CUDA compiler in a library: a formula's device code to a cubin in-process,
without nvcc and its host pass (issue 17's first call on the GPU).

This module owns the choice of the CUDA compiler (`compiler()`: LAZYKEOPS_CUDA_COMPILER,
NVRTC by default where it is found), finding libnvrtc (the one that comes with torch's CUDA
wheels, a CUDA toolkit's, or LAZYKEOPS_NVRTC), its version, and one compile: a device-only
source (codegen.render_source(spec, device_only=True), or the split merge's
codegen.render_merge_source(spec)) with the name expressions of its kernels, to a cubin
and the kernels' lowered (mangled) names. compile/driver.py loads and launches the cubins.

Measured on the 2-core CPU machine (benchmarks/compile_cuda.py, RESULTS.md): median 0.185 s
over ten formulas, the reduction and the merge in one program (a Gaussian sum 0.16 s, a
tensor-core k-means assignment 0.46 s) against 0.52 s for `nvcc -cubin` and 1.33 s for nvcc
with its host pass; the reduction alone (the merge is shared: compile/driver.py) 0.11 s for
the Gaussian sum. Options: -Ofc=min ("fast compile") saves a quarter of the time but its
kernels ran 1.1-2x slower on the H200 (benchmarks/nvrtc_kernels.py).
"""

import ctypes
import glob
import os
import threading
from dataclasses import dataclass
from functools import lru_cache

from ..errors import LazyKeOpsError
from .build import CSRC
from .codegen import CUDA_TYPES

# lk_sizes[] of a compiled module (csrc/lk_cuda_engine.cuh: LK_CUDA_DEVICE_ENTRY), in order.
# (lk_cuda_driver.h reads them by these positions.)
SIZES = ("block", "rows", "shared_bytes", "tile", "state_bytes", "acc_per_tile",
         "block_sparse", "nargs")

# The options of every compile, besides the architecture and the include folders (part of
# the cache key: compile/build.py). -default-device: the engine headers' host-only helpers
# (the CPU engine's tile loops) are parsed as device functions, never called, rather than
# refused.
OPTIONS = ("-std=c++17", "-DNDEBUG", "-default-device")

_LOCK = threading.Lock()
_LIB = []  # the loaded library, once found (a list: set once under _LOCK)


class NvrtcError(LazyKeOpsError):
    """A compile NVRTC refused, or no NVRTC to compile with."""


def _search(wheel_patterns, home_patterns):
    """Paths matching the patterns under the nvidia wheels' folders (nvidia-cuda-nvrtc,
    nvidia-cuda-runtime: what torch's CUDA builds depend on), then under CUDA_HOME,
    CUDA_PATH and /usr/local/cuda."""
    try:
        import nvidia
        roots = list(nvidia.__path__)
    except ImportError:
        roots = []
    for root in roots:
        for pattern in wheel_patterns:
            yield from sorted(glob.glob(os.path.join(root, pattern)))
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            for pattern in home_patterns:
                yield from sorted(glob.glob(os.path.join(home, pattern)))


def _candidates():
    """Where libnvrtc may be, most specific first."""
    explicit = os.environ.get("LAZYKEOPS_NVRTC")
    if explicit:
        yield explicit
    yield from _search(("cu*/lib/libnvrtc.so.*", "cuda_nvrtc/lib/libnvrtc.so.*"),
                       ("lib64/libnvrtc.so*",))


def _headers():
    """Folders that may hold CUDA's device headers (cuda_fp16.h, ...), which NVRTC needs
    from a toolkit or the nvidia-cuda-runtime wheel."""
    yield from _search(("cu*/include", "cuda_runtime/include"), ("include", "targets/*/include"))


@lru_cache(maxsize=None)
def cuda_include():
    """The folder of cuda_fp16.h for NVRTC; NvrtcError if there is none."""
    for folder in _headers():
        if os.path.exists(os.path.join(folder, "cuda_fp16.h")):
            return folder
    raise NvrtcError("NVRTC needs CUDA's device headers (cuda_fp16.h): none found in a "
                     "CUDA toolkit (CUDA_HOME) or the nvidia-cuda-runtime wheel")


def library():
    """The loaded libnvrtc; NvrtcError if none is found."""
    with _LOCK:
        if _LIB:
            return _LIB[0]
        tried = []
        for path in _candidates():
            if not os.path.exists(path) or os.path.basename(path).startswith("libnvrtc.alt"):
                continue
            # libnvrtc opens its builtins library by name: loaded first from the same
            # folder, it is found without LD_LIBRARY_PATH.
            for builtins in sorted(glob.glob(os.path.join(os.path.dirname(path),
                                                          "libnvrtc-builtins.so.*"))):
                if ".alt." not in builtins:
                    ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                tried.append(f"{path}: {e}")
                continue
            lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            _LIB.append(lib)
            return lib
        raise NvrtcError("no libnvrtc found (pip install nvidia-cuda-nvrtc, or set "
                         "LAZYKEOPS_NVRTC to the library's path)" +
                         ("; tried: " + "; ".join(tried) if tried else ""))


COMPILER_SETTINGS = ("auto", "nvrtc", "nvcc")


def compiler():
    """The compiler of this process's CUDA kernels: "nvrtc" or "nvcc", as
    LAZYKEOPS_CUDA_COMPILER asks: "auto" (the default) takes NVRTC where libnvrtc and
    CUDA's device headers are found, else nvcc; None where the one asked for (for "auto",
    either) is missing (`missing_compiler` says what to install)."""
    asked = os.environ.get("LAZYKEOPS_CUDA_COMPILER", "auto")
    if asked not in COMPILER_SETTINGS:
        raise LazyKeOpsError(f"LAZYKEOPS_CUDA_COMPILER must be one of {COMPILER_SETTINGS}, "
                             f"got {asked!r}")
    if asked != "nvcc" and available():
        return "nvrtc"
    from .build import nvcc_available

    if asked != "nvrtc" and nvcc_available():
        return "nvcc"
    return None


def missing_compiler():
    """What to install when compiler() is None, for error messages."""
    nvrtc = "libnvrtc (pip install nvidia-cuda-nvrtc, which torch's CUDA wheels bring; or " \
        "set LAZYKEOPS_NVRTC to its path) with CUDA's headers"
    nvcc = "nvcc (install the CUDA toolkit or set CUDA_HOME)"
    asked = os.environ.get("LAZYKEOPS_CUDA_COMPILER", "auto")
    if asked == "auto":
        return f"no CUDA compiler was found: neither {nvrtc}, nor {nvcc}"
    return f"LAZYKEOPS_CUDA_COMPILER={asked}, but no " + (nvrtc if asked == "nvrtc" else nvcc) \
        + " was found"


def chosen():
    """Whether CUDA kernels are compiled by NVRTC (compiler())."""
    return compiler() == "nvrtc"


@lru_cache(maxsize=None)
def available():
    """Whether libnvrtc and CUDA's device headers are found (asked once per process: each
    GPU call checks that it has a compiler, and the headers' search globs folders)."""
    try:
        library()
        cuda_include()
        return True
    except NvrtcError:
        return False


def version():
    """(major, minor) of the loaded NVRTC."""
    lib = library()
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(lib, lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


def _check(lib, status, what):
    if status != 0:
        raise NvrtcError(f"{what}: {lib.nvrtcGetErrorString(status).decode()}")


def kernel_names(spec):
    """The name expressions of a spec's kernels: the reduction (its engine's variant and
    work source) in codegen.render_source(spec, device_only=True), and the split merge in
    codegen.render_merge_source(spec)."""
    types = ", ".join(CUDA_TYPES[spec.dtype])
    args = f"LkFormula, LkReduction, {types}"
    engine = f"lk::Engine<{args}>"
    return (f"&lk::reduce<{args}, {engine}::C, {engine}::W>",
            f"&lk::merge_splits<LkReduction, {types}>")


@dataclass(frozen=True)
class Compiled:
    cubin: bytes
    lowered: dict  # name expression -> mangled name in the cubin
    log: str


def compile_cubin(source, names, arch, name="lazykeops_kernel.cu", options=()):
    """`source` (device code) compiled for sm_`arch` (e.g. "90") to a cubin, with the
    lowered names of the name expressions `names`. NvrtcError with the compiler's first
    error (and the log's start) when it fails."""
    lib = library()
    prog = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(),
                                       0, None, None), "nvrtcCreateProgram")
    try:
        for expr in names:
            _check(lib, lib.nvrtcAddNameExpression(prog, expr.encode()),
                   "nvrtcAddNameExpression")
        opts = [f"--gpu-architecture=sm_{arch}", *OPTIONS, f"-I{CSRC}", f"-I{cuda_include()}",
                *options]
        argv = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        status = lib.nvrtcCompileProgram(prog, len(opts), argv)
        log = _log(lib, prog)
        if status != 0:
            errors = [line for line in log.splitlines() if "error" in line]
            first = errors[0].strip() if errors else lib.nvrtcGetErrorString(status).decode()
            raise NvrtcError(f"NVRTC could not compile {name}: {first}\n{log[:4000]}")
        size = ctypes.c_size_t()
        _check(lib, lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
        cubin = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
        lowered = {}
        for expr in names:
            out = ctypes.c_char_p()
            _check(lib, lib.nvrtcGetLoweredName(prog, expr.encode(), ctypes.byref(out)),
                   "nvrtcGetLoweredName")
            lowered[expr] = out.value.decode()
        return Compiled(cubin.raw, lowered, log)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _log(lib, prog):
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    buf = ctypes.create_string_buffer(max(size.value, 1))
    lib.nvrtcGetProgramLog(prog, buf)
    return buf.value.decode(errors="replace")
