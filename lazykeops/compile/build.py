"""Compile generated sources, cache them on disk by content hash (layout and trust rules:
`cache.py`), and load each library once per process.

CPU kernels: one call of the C++ compiler (CXX, else c++) that compiles and links, with
the engine's prelude precompiled once per cache (`pch.py`). On the 2-core CPU machine a
new dense Sum took 0.70 s through torch.utils.cpp_extension's Ninja build (writing and
running the ninja file, linking against torch's libraries, which the plain-C entry point
does not use), 0.42 s by one direct call, 0.30 s with the precompiled prelude. CUDA
kernels (the compiler chosen by compile/nvrtc.py's `compiler()`): NVRTC in-process to a
cubin (compile/nvrtc.py; compile/driver.py runs it and builds the formula's two entries),
or nvcc through torch.utils.cpp_extension's Ninja build.

The key hashes named entries (`key_entries`): the source, the engine headers, the
lazykeops version, the compiler, the flags, torch's version ("no torch" in a numpy user's
process where `import torch` fails; CUDA kernels need torch, whose cpp_extension drives
nvcc) and the CPU (kernels are built with -march=native) or the GPU architecture.

Guarantees:
- Concurrency: a build happens in a private folder inside the cache and is published by
  one atomic rename, under an exclusive file lock per key, so that several processes asking
  for the same new kernel build it once and never see a half-written entry; threads of one
  process asking for it wait for each other and load it once.
- Use: loading an entry sets its folder's mtime, so that `python -m lazykeops cache
  --prune-older-than DAYS` (cache_admin.py) removes the kernels not used for that long.
- Trust: an entry is loaded only if its manifest names this key and these key entries, its
  library matches the manifest's sha256 and is a whole ELF file; anything else is removed
  and rebuilt (never dlopen'ed).
- No side effects on the process: the environment is left alone (the GPU architecture is
  passed as an nvcc flag), and a library is built without being loaded by torch
  (`torch.ops.loaded_libraries` does not grow): ctypes opens it, once.
- No debris: build folders of killed builders are removed by the next build; sources the
  compiler rejected go to `<cache>/failed/` (the newest few), named in the CompileError.
- Integer overflow the compiler can see in generated code fails the build
  (-Werror=overflow); other warnings (of the engine headers) do not.
- A cache that is a file or is not writable gives a LazyKeOpsError naming the directory
  and LAZYKEOPS_CACHE_DIR.
"""

import ctypes
import hashlib
import inspect
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import CompileError
from .cache import (cache_dir, discard, keep_failed_source, key_lock, new_build_dir,
                    trusted_library, unwritable, write_manifest)
from .pch import prelude_header, split_prelude

CSRC = Path(__file__).resolve().parent.parent / "csrc"
CPU_CFLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
              "-fvisibility=hidden", "-DNDEBUG", "-Werror=overflow")
CPU_LDFLAGS = ("-fopenmp",)
CUDA_FLAGS = ("-O3", "-std=c++17", "-DNDEBUG", "-Xcompiler=-fvisibility=hidden")

# Counters the tests and benchmarks read: how many kernels this process built / loaded.
stats = {"builds": 0, "loads": 0}
_STATS_LOCK = threading.Lock()  # bumped from several threads (CUDA side-by-side builds, warm-up)

_LOADED = {}  # key -> KernelLibrary, for this process
# key -> threading.Lock: threads of this process first asking for one kernel wait for each
# other, so that it is loaded (and counted) once; the key's file lock orders processes.
_THREAD_LOCKS = {}


class KernelLibrary:
    """A loaded kernel: `launch` is its one C entry point, lk_launch(LkLaunch*)
    (runtime/abi.py, csrc/lk_launch.h); CUDA libraries also have `plan`, their split
    planner, and `block_rows`, the output rows of one thread block. A library of another ABI version or struct layout raises AttributeError,
    which the loader treats as a damaged entry: rebuilt, not called."""

    def __init__(self, path, key, target):
        from ..runtime.abi import ABI_VERSION, LAUNCH_BYTES, bind_entry_points, bind_planner

        self.path = path
        self.key = key
        self._dll = ctypes.CDLL(str(path))
        self.launch, version, size = bind_entry_points(self._dll)
        if (version, size) != (ABI_VERSION, LAUNCH_BYTES):
            raise AttributeError(f"{path}: launch ABI {version} ({size}-byte struct), "
                                 f"expected {ABI_VERSION} ({LAUNCH_BYTES} bytes)")
        if target != "cpu":  # the split planner of the CUDA engine, for tests and tools
            self.plan = bind_planner(self._dll)
            rows = self._dll.lk_block_rows
            rows.restype = ctypes.c_int64
            self.block_rows = int(rows())


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


NO_TORCH = "no torch"  # the key's torch entry in a process without torch


@lru_cache(maxsize=None)
def _torch():
    """The torch module, or None where it cannot be imported (asked once: where torch is
    not installed, each import would search the path again)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def key_entries(source, target="cpu", nvrtc_names=None):
    """The named entries of the cache key, loggable one by one. `target` is "cpu" or
    "cuda:sm_XY" (the GPU architecture); `nvrtc_names`: a device-only CUDA source NVRTC
    compiles (with these kernels), whose key names NVRTC rather than nvcc."""
    from .. import __version__

    torch = _torch()
    if torch is None and target != "cpu":
        raise CompileError(f"building a kernel for {target} needs torch, which cannot be "
                           "imported (its cpp_extension drives nvcc)")

    entries = [("source", hashlib.sha256(source.encode()).hexdigest()),
               ("headers", _headers_digest()),
               ("lazykeops", __version__),
               ("compiler", _compiler_version()),
               ("torch", NO_TORCH if torch is None else torch.__version__),
               ("python", sys.version.split()[0]),
               ("target", target)]
    if target == "cpu":
        entries += [("cflags", " ".join((CPU_STD, *CPU_CFLAGS, *CPU_LDFLAGS))),
                    ("cpu", _cpu_model())]
    elif nvrtc_names is not None:
        from . import nvrtc
        entries += [("nvrtc", ".".join(map(str, nvrtc.version()))),
                    ("nvrtc_options", " ".join(nvrtc.OPTIONS)),
                    ("cuda_include", nvrtc.cuda_include()),
                    ("nvrtc_kernels", " ".join(nvrtc_names))]
    else:
        entries += [("cuda_flags", " ".join(CUDA_FLAGS)), ("nvcc", _nvcc_version()),
                    ("torch_cuda", torch.version.cuda)]
    return tuple(entries)


def cache_key(source, target="cpu", nvrtc_names=None):
    h = hashlib.sha256()
    for name, value in key_entries(source, target, nvrtc_names):
        h.update(f"{name}={value}\n".encode())
    return h.hexdigest()[:32]


def load_kernel(source, description="", target="cpu", interface=None, nvrtc_names=None,
                library=None):
    """The loaded library for `source`, building it if no valid cache entry exists;
    `interface` goes into the manifest of a new build (cache.write_manifest).
    `nvrtc_names`: `source` is device code for NVRTC, compiled with these name
    expressions to a cubin (compile/driver.py loads it). `library`: the class that loads a
    built entry (path, key, target), KernelLibrary by default."""
    key = cache_key(source, target, nvrtc_names)
    lib = _LOADED.get(key)
    if lib is None:
        with _THREAD_LOCKS.setdefault(key, threading.Lock()):  # setdefault: atomic in CPython
            lib = _LOADED.get(key)
            if lib is None:
                build = _Build(source, description, target, interface, nvrtc_names,
                               library or KernelLibrary)
                lib = _load_or_build(key, key_entries(source, target, nvrtc_names), build)
                _LOADED[key] = lib
    return lib


@dataclass(frozen=True)
class _Build:
    """What to build for a key and how to load it."""
    source: str
    description: str
    target: str
    interface: object
    nvrtc_names: object
    library: type


def _count(name):
    with _STATS_LOCK:
        stats[name] += 1


def forget_loaded():
    _LOADED.clear()


def _try_load(entry, key, entries, build):
    """Load a published cache entry if it is trusted; None if absent or damaged."""
    path = trusted_library(entry, key, entries)
    if path is None:
        return None
    try:
        lib = build.library(path, key, build.target)
    except (OSError, AttributeError):  # not loadable, or an entry point is missing
        return None
    _count("loads")
    try:  # the folder's mtime says when it was last used, for `python -m lazykeops cache`
        os.utime(entry)
    except OSError:  # a read-only cache: the kernel still loads
        pass
    return lib


def _load_or_build(key, entries, build):
    root = cache_dir()
    entry = root / key
    lib = _try_load(entry, key, entries, build)
    if lib is not None:
        return lib
    with key_lock(root, key):
        lib = _try_load(entry, key, entries, build)  # another process may have built it
        if lib is not None:
            return lib
        try:
            discard(entry)  # damaged entry: rebuild from scratch
            tmp = new_build_dir(root, key)
        except OSError as err:
            raise unwritable(root, err) from None
        try:
            _build(tmp, root, key, entries, build)
            os.rename(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _count("builds")
    lib = _try_load(entry, key, entries, build)
    if lib is None:
        raise CompileError(f"kernel {key} was built but cannot be loaded from {entry}")
    return lib


def _build(tmp, root, key, entries, build):
    source, description, target = build.source, build.description, build.target
    interface = build.interface
    src = tmp / ("kernel.cpp" if target == "cpu" else "kernel.cu")
    src.write_text(source)
    if verbose():
        print(f"[lazykeops] compiling {description or key} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        if target == "cpu":
            _cpu_build(f"lk_{key[:16]}", src, tmp, source)
        elif build.nvrtc_names is not None:
            interface = {**(interface or {}),
                         "kernels": _nvrtc_build(f"lk_{key[:16]}", tmp, build)}
        else:
            _ninja_build(f"lk_{key[:16]}", src, tmp, **_build_options(target))
    except Exception as err:  # the compiler's message is in the exception text
        kept = keep_failed_source(root, key, src)
        raise CompileError(f"compiling {description or 'a kernel'} failed; source kept at "
                           f"{kept}; first error: {_first_error(str(err))}") from None
    libs = sorted(tmp.glob("*.so")) + sorted(tmp.glob("*.cubin"))
    if not libs:
        raise CompileError(f"compiling {description or 'a kernel'} produced no library in {tmp}")
    write_manifest(tmp, libs[0], key, entries, description, interface)
    if verbose():
        print(f"[lazykeops] ... done in {time.perf_counter() - start:.2f} s", file=sys.stderr,
              flush=True)


def _nvrtc_build(name, folder, build):
    """`<folder>/<name>.cubin` from the device-only source by NVRTC; the lowered names of
    its kernels, in the order of build.nvrtc_names."""
    from . import nvrtc
    compiled = nvrtc.compile_cubin(build.source, build.nvrtc_names,
                                   build.target.split("sm_")[1], name=build.description)
    (folder / f"{name}.cubin").write_bytes(compiled.cubin)
    return [compiled.lowered[n] for n in build.nvrtc_names]


def _build_options(target):
    """Compiler and linker flags for torch's Ninja build of a CUDA kernel for `target`."""
    # nvcc for this GPU's architecture only: "cuda:sm_90" -> compute_90 / sm_90. With an
    # arch flag among the cuda flags, torch adds none of its own (which it would take from
    # TORCH_CUDA_ARCH_LIST or the visible GPUs), so the environment need not be touched;
    # older torch releases add theirs anyway, which only adds code for more architectures.
    arch = target.split("sm_")[1]
    return dict(extra_cflags=["-O3", "-fvisibility=hidden"],
                extra_cuda_cflags=[*CUDA_FLAGS, f"-gencode=arch=compute_{arch},code=sm_{arch}"],
                extra_ldflags=[], with_cuda=True)


def _ninja_build(name, src, folder, **options):
    """Build `<folder>/<name>.so` from `src` with torch's Ninja build, without loading it.

    cpp_extension.load would also dlopen the library and register its temporary build path
    in torch.ops.loaded_libraries; its build step, the private
    _write_ninja_file_and_build_library, does not. Its parameters changed across torch
    versions (SYCL ones in recent torch), so it is called by keyword, after checking its
    signature; `load` remains the fallback should it disappear or change beyond that."""
    from torch.utils import cpp_extension

    kwargs = dict(name=name, sources=[str(src)], extra_include_paths=[str(CSRC)],
                  build_directory=str(folder), verbose=False, is_standalone=False, **options)
    builder = getattr(cpp_extension, "_write_ninja_file_and_build_library", None)
    try:
        params = inspect.signature(builder).parameters if builder else {}
    except (TypeError, ValueError):
        params = {}
    sycl = {n: v for n, v in (("extra_sycl_cflags", []), ("with_sycl", False)) if n in params}
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
    if params and set(kwargs) <= set(params) and required <= {*kwargs, *sycl}:
        builder(**kwargs, **sycl)
    else:
        cpp_extension.load(is_python_module=False, **kwargs)


# The C++ standard of CPU kernels: the one the engine headers are written to.
CPU_STD = "-std=c++17"


def _cpu_compile_cmd():
    """The compiler and flags of a CPU kernel's compilation, without sources or outputs:
    the precompiled prelude is built with the same (a .gch is used only under the flags it
    was built with)."""
    return [os.environ.get("CXX", "c++"), "-fPIC", CPU_STD, f"-I{CSRC}", *CPU_CFLAGS]


def _cpu_build(name, src, folder, source):
    """Build `<folder>/<name>.so` from the CPU source `src` (the text `source`): one
    compiler call, compiled and linked at once, not linked against torch's libraries (the
    kernel's entry point is plain C), with the precompiled prelude when there is one. Should
    the compiler fail with it, the source is compiled again without: only an error of the
    source itself is reported."""
    compile_cmd = _cpu_compile_cmd()
    prelude = split_prelude(source)
    header = prelude and prelude_header(prelude, compile_cmd,
                                        (_headers_digest(), _compiler_version()))
    cmd = [*compile_cmd, str(src), "-shared", *CPU_LDFLAGS, "-o", str(folder / f"{name}.so")]
    if header is None or _run_compiler(cmd[:len(compile_cmd)] + ["-include", str(header)] +
                                       cmd[len(compile_cmd):], folder) is not None:
        error = _run_compiler(cmd, folder)
        if error is not None:
            raise RuntimeError(error)


def _run_compiler(cmd, folder):
    """Run a compiler command in `folder`; None on success, else its output."""
    try:
        done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, check=False)
    except OSError as err:
        return f"{cmd[0]}: error: cannot run the compiler: {err}"
    return None if done.returncode == 0 else done.stdout + done.stderr


def _first_error(text):
    """The compiler's (or the linker's) first error line in ninja's output."""
    for line in text.splitlines():
        if (re.search(r"\berror\b|: cannot find |undefined reference", line)
                and "Error building extension" not in line):
            return line.strip()
    return text.strip().splitlines()[-1] if text.strip() else "unknown error"
