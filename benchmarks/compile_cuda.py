"""Compile time of one formula's CUDA kernels, without a GPU (issue 17 items 1 and 6):
NVRTC on the device-only source (compile/nvrtc.py) against nvcc on the same formula,
device code only (`-cubin`) and whole (`-c`, host pass included: what a first call builds
today through Ninja, less the link), for the ten formulas of benchmarks/first_call.py and a
tensor-core k-means assignment, all for sm_90.

    python benchmarks/compile_cuda.py [--repeat 3]

Medians of `repeat` compiles per formula and tool (each compile starts from nothing: no
cache is involved). Prints one table for RESULTS.md.
"""

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from first_call import ALIASES, FORMULAS  # benchmarks/ is on sys.path when run as a script


def cases():
    from lazykeops.torch import Genred

    for name, formula, red, k, dtype in FORMULAS:
        routine = Genred(formula.format(c="IntCst(2)"), ALIASES, reduction_op=red, axis=1,
                         opt_arg=k)
        yield name, routine.core.kernel_spec(dtype, "cuda:sm_90")
    torch.set_float32_matmul_precision("high")
    kmeans = Genred("SqDist(X,Y)", ["X = Vi(64)", "Y = Vj(64)"], reduction_op="ArgMin", axis=1)
    yield "k-means D=64, tensor cores (TF32)", kmeans.core.kernel_spec("float32", "cuda:sm_90")
    torch.set_float32_matmul_precision("highest")


def nvcc_seconds(source, folder, host):
    from lazykeops.compile.build import CSRC, CUDA_FLAGS

    path = Path(folder) / "kernel.cu"
    path.write_text(source)
    mode = ["-c", "-o", str(path.with_suffix(".o"))] if host else \
        ["-cubin", "-o", str(path.with_suffix(".cubin"))]
    start = time.perf_counter()
    subprocess.run(["nvcc", *CUDA_FLAGS, "-arch=sm_90", "-Xcompiler=-fPIC", "-I", str(CSRC),
                    str(path), *mode], check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    from lazykeops.compile import nvrtc
    from lazykeops.compile.codegen import render_source

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    print(f"NVRTC {'.'.join(map(str, nvrtc.version()))}")
    print("| formula | NVRTC s | nvcc -cubin s | nvcc -c s |\n|---|---|---|---|")
    columns = [[], [], []]
    with tempfile.TemporaryDirectory() as folder:
        for name, spec in cases():
            device, whole = render_source(spec, device_only=True), render_source(spec)
            names = nvrtc.kernel_names(spec)

            def rtc():
                start = time.perf_counter()
                nvrtc.compile_cubin(device, names, "90")
                return time.perf_counter() - start
            times = [statistics.median(run() for _ in range(opts.repeat)) for run in
                     (rtc, lambda: nvcc_seconds(whole, folder, False),
                      lambda: nvcc_seconds(whole, folder, True))]
            for column, t in zip(columns, times):
                column.append(t)
            print(f"| {name} | " + " | ".join(f"{t:.3f}" for t in times) + " |", flush=True)
    print("| median | " + " | ".join(f"{statistics.median(c):.3f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
