"""Compile generated sources with Ninja (through torch.utils.cpp_extension), cache them on
disk by content hash, and load each library once per process.

Cache entry `<cache>/<key>/`: `kernel.cpp`, the built `.so`, and `manifest.json` with the
library's sha256. The key hashes named entries (`key_entries`): the source, the engine
headers, the lazykeops version, the compiler, the flags, torch's version and the CPU
(kernels are built with -march=native).

Concurrency: a build happens in a private temporary directory inside the cache and is
published by one atomic rename, under an exclusive file lock per key, so that several
processes asking for the same new kernel build it once and never see a half-written
entry. A library whose sha256 does not match its manifest (truncated, corrupted) is
removed and rebuilt.
"""

import ctypes
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from ..errors import CompileError
from .cache import cache_dir

CSRC = Path(__file__).resolve().parent.parent / "csrc"
CPU_CFLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
              "-fvisibility=hidden", "-DNDEBUG", "-w")
CPU_LDFLAGS = ("-fopenmp",)
CUDA_FLAGS = ("-O3", "-std=c++17", "-DNDEBUG", "-Xcompiler=-fvisibility=hidden")

# Counters the tests and benchmarks read: how many kernels this process built / loaded.
stats = {"builds": 0, "loads": 0}

_LOADED = {}  # key -> KernelLibrary, for this process


_COMMON_ARGS = [ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]


class KernelLibrary:
    """A loaded kernel: `run` is its C entry point: LK_CPU_ENTRY's lk_run (..., cols,
    nthreads) or LK_CUDA_ENTRY's lk_run_cuda (..., layout, nsplit, workspace, stream); CUDA
    libraries also export `plan` (nbatch, nx, ny, scheme) -> nsplit and `state_bytes`,
    see csrc/lk_cuda_engine.cuh."""

    def __init__(self, path, key, target):
        self.path = path
        self.key = key
        self._dll = ctypes.CDLL(str(path))
        if target == "cpu":
            self.run = self._dll.lk_run
            self.run.argtypes = _COMMON_ARGS + [ctypes.c_void_p, ctypes.c_int]
        else:
            self.run = self._dll.lk_run_cuda
            self.run.argtypes = _COMMON_ARGS + [ctypes.c_void_p, ctypes.c_int64,
                                                ctypes.c_void_p, ctypes.c_void_p]
            self.plan = self._dll.lk_plan_cuda
            self.plan.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_int]
            self.plan.restype = ctypes.c_int64
            self.state_bytes = self._dll.lk_state_bytes
            self.state_bytes.restype = ctypes.c_int64
        self.run.restype = ctypes.c_int


def verbose():
    return os.environ.get("LAZYKEOPS_VERBOSE", "1") not in ("0", "", "false")


@lru_cache(maxsize=None)
def _compiler_version():
    cxx = os.environ.get("CXX", "c++")
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True,
                              check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


@lru_cache(maxsize=None)
def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags")):
                    return line.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=None)
def _headers_digest():
    h = hashlib.sha256()
    for path in sorted([*CSRC.glob("*.h"), *CSRC.glob("*.cuh")]):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@lru_cache(maxsize=None)
def _nvcc_version():
    nvcc = shutil.which("nvcc") or os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"),
                                                "bin", "nvcc")
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False)
        return out.stdout.strip().splitlines()[-1]
    except (OSError, IndexError):
        return None


def nvcc_available():
    return _nvcc_version() is not None


def key_entries(source, target="cpu"):
    """The named entries of the cache key, loggable one by one. `target` is "cpu" or
    "cuda:sm_XY" (the GPU architecture)."""
    import torch

    from .. import __version__

    entries = [("source", hashlib.sha256(source.encode()).hexdigest()),
               ("headers", _headers_digest()),
               ("lazykeops", __version__),
               ("compiler", _compiler_version()),
               ("torch", torch.__version__),
               ("python", sys.version.split()[0]),
               ("target", target)]
    if target == "cpu":
        entries += [("cflags", " ".join(CPU_CFLAGS + CPU_LDFLAGS)), ("cpu", _cpu_model())]
    else:
        entries += [("cuda_flags", " ".join(CUDA_FLAGS)), ("nvcc", _nvcc_version()),
                    ("torch_cuda", torch.version.cuda)]
    return tuple(entries)


def cache_key(source, target="cpu"):
    h = hashlib.sha256()
    for name, value in key_entries(source, target):
        h.update(f"{name}={value}\n".encode())
    return h.hexdigest()[:32]


def load_kernel(source, description="", target="cpu"):
    """The loaded library for `source`, building it if no valid cache entry exists."""
    key = cache_key(source, target)
    lib = _LOADED.get(key)
    if lib is None:
        lib = _load_or_build(key, source, description, target)
        _LOADED[key] = lib
    return lib


def forget_loaded():
    _LOADED.clear()


@contextmanager
def _file_lock(path):
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _try_load(entry, key, target):
    """Load a published cache entry if it is intact; None if absent or damaged."""
    manifest = entry / "manifest.json"
    try:
        info = json.loads(manifest.read_text())
        lib_path = entry / info["library"]
        if _sha256_file(lib_path) != info["sha256"]:
            return None
        lib = KernelLibrary(lib_path, key, target)
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    stats["loads"] += 1
    return lib


def _load_or_build(key, source, description, target):
    root = cache_dir()
    entry = root / key
    lib = _try_load(entry, key, target)
    if lib is not None:
        return lib
    with _file_lock(root / f"{key}.lock"):
        lib = _try_load(entry, key, target)  # another process may have built it meanwhile
        if lib is not None:
            return lib
        if entry.exists():
            shutil.rmtree(entry)  # damaged entry: rebuild from scratch
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key[:12]}-", dir=root))
        try:
            _build(tmp, key, source, description, target)
            os.rename(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        stats["builds"] += 1
    lib = _try_load(entry, key, target)
    if lib is None:
        raise CompileError(f"kernel {key} was built but cannot be loaded from {entry}")
    return lib


def _build(tmp, key, source, description, target):
    from torch.utils import cpp_extension

    src = tmp / ("kernel.cpp" if target == "cpu" else "kernel.cu")
    src.write_text(source)
    if verbose():
        print(f"[lazykeops] compiling {description or key} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    options = dict(extra_cflags=list(CPU_CFLAGS), extra_ldflags=list(CPU_LDFLAGS))
    if target != "cpu":  # nvcc for this GPU's architecture only: sm_90 -> "9.0"
        digits = target.split("sm_")[1]
        os.environ["TORCH_CUDA_ARCH_LIST"] = f"{digits[:-1]}.{digits[-1]}"
        options = dict(extra_cflags=["-O3", "-fvisibility=hidden"],
                       extra_cuda_cflags=list(CUDA_FLAGS))
    try:
        cpp_extension.load(name=f"lk_{key[:16]}", sources=[str(src)], build_directory=str(tmp),
                           extra_include_paths=[str(CSRC)], is_python_module=False,
                           verbose=False, **options)
    except Exception as err:  # the compiler's message is in the exception text
        kept = Path(tempfile.mkdtemp(prefix="lazykeops-failed-"))
        shutil.copy(src, kept / src.name)
        raise CompileError(f"compiling {description or 'a kernel'} failed; source kept at "
                           f"{kept / src.name}; first error: {_first_error(str(err))}") from None
    libs = sorted(tmp.glob("*.so"))
    if not libs:
        raise CompileError(f"compiling {description or 'a kernel'} produced no library in {tmp}")
    manifest = {"library": libs[0].name, "sha256": _sha256_file(libs[0]),
                "description": description,
                "key_entries": dict(key_entries(source, target))}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if verbose():
        print(f"[lazykeops] ... done in {time.perf_counter() - start:.2f} s", file=sys.stderr,
              flush=True)


def _first_error(text):
    for line in text.splitlines():
        if re.search(r"\berror\b", line) and "Error building extension" not in line:
            return line.strip()
    return text.strip().splitlines()[-1] if text.strip() else "unknown error"

