"""Compiling generated CUDA sources with the local nvcc for sm_90, without a GPU (so that
codegen errors show in CI), shared by the tests that do it.

Most sources are compiled to a cubin only: the formula is device code, and nvcc's host pass
(g++ over the launch code) is two thirds of a full compile (1.8 s against 0.6 s for one
small kernel on the 2-core CPU machine). The host side is the same template for every
formula: the tests keep a full compile (`host=True`) for one source per dtype."""

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

from lazykeops.compile.build import CSRC, CUDA_FLAGS

NVCC = shutil.which("nvcc")
# torch.utils.cpp_extension compiles with these: half types must work without the implicit
# conversions they disable.
TORCH_HALF_FLAGS = ("-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__")


def nvcc_command(path, host=False):
    """The nvcc call compiling the source at `path` for sm_90: device code to a cubin, or
    (host=True) the whole translation unit to an object file."""
    mode = ["-c", "-o", str(path.with_suffix(".o"))] if host else \
        ["-cubin", "-o", str(path.with_suffix(".cubin"))]
    return [NVCC, *CUDA_FLAGS, *TORCH_HALF_FLAGS, "-arch=sm_90", "-I", str(CSRC), str(path),
            *mode]


def compile_all(paths, host_first=True, jobs=4):
    """Compile every source (the first one with its host side when `host_first`), a few at a
    time: nvcc's start-up dominates these small files. Returns [(path, returncode, stderr)]."""
    def one(item):
        n, path = item
        done = subprocess.run(nvcc_command(path, host=host_first and n == 0),
                              capture_output=True, text=True)
        return path, done.returncode, done.stderr

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, enumerate(paths)))
