"""Compare configurations of the CUDA engine (threads per block, rows per thread, scheme)
on a few workloads of benchmarks/gpu.py, float32, medians after a warm-up.

    python benchmarks/tune_cuda.py [--configs "256:0 128:0 256:1 256:2"] [--quick]

Each config is BLOCK:RPT (RPT 0 = the engine's choice), see LK_CUDA_BLOCK / LK_CUDA_RPT in
lazykeops/csrc/lk_cuda_engine.cuh. Prints one table row per workload, one column per config
and scheme (auto, GPU_1D).
"""

import argparse
import os
import tempfile

import torch

from gpu import timed  # benchmarks/gpu.py, beside this script


def workloads(quick):
    g = torch.Generator(device="cuda").manual_seed(0)

    def pts(n, d):
        return torch.rand(n, d, device="cuda", generator=g) / d ** 0.5

    gauss = ("Exp(-SqDist(X,Y)) * B", "Sum", None)
    rows = [("conv D=3", 100_000, 3, gauss), ("conv D=3", 1_000_000, 3, gauss),
            ("conv D=64", 100_000, 64, gauss),
            ("LSE D=3", 1_000_000, 3, ("B - SqDist(X,Y)", "LogSumExp", None)),
            ("argKmin D=64", 100_000, 64, ("SqDist(X,Y)", "ArgKMin", 10)),
            ("argKmin D=3", 100_000, 3, ("SqDist(X,Y)", "ArgKMin", 10)),
            ("conv D=128 (chunked)", 100_000, 128, gauss),
            ("conv D=1024 (chunked)", 10_000, 1024, gauss),
            ("conv D=1024 (chunked)", 100_000, 1024, gauss)]
    if quick:
        rows = [r for r in rows if r[1] <= 100_000]
    for name, n, d, (formula, red, k) in rows:
        args = [pts(n, d), pts(n, d)] + ([torch.randn(n, 1, device="cuda", generator=g)]
                                         if "B" in formula else [])
        aliases = [f"X = Vi({d})", f"Y = Vj({d})", "B = Vj(1)"][:len(args)]
        yield f"{name} N={n:.0e}", formula, aliases, red, k, args


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", default="256:0 128:0 512:0 256:1")
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")
    os.environ.setdefault("LAZYKEOPS_CACHE_DIR", tempfile.mkdtemp(prefix="lk-tune-"))
    from lazykeops.compile import codegen
    from lazykeops.torch import Genred

    configs = [tuple(int(v) for v in c.split(":")) for c in opts.configs.split()]
    columns = [(c, scheme) for c in configs for scheme in ("auto", "GPU_1D")]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| workload | " + " | ".join(f"{b}:{r} {s}" for (b, r), s in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, formula, aliases, red, k, args in workloads(opts.quick):
        cells = []
        for (block, rpt), scheme in columns:
            codegen.CUDA_TUNING.clear()
            codegen.CUDA_TUNING.update(LK_CUDA_BLOCK=block, LK_CUDA_RPT=rpt)
            routine = Genred(formula, aliases, reduction_op=red, axis=1, opt_arg=k)
            cells.append(f"{timed(lambda: routine(*args, backend=scheme), 3) * 1e3:.3g} ms")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    codegen.CUDA_TUNING.clear()


if __name__ == "__main__":
    main()
