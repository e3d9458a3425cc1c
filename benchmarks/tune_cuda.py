"""Compare configurations of the CUDA engine (threads per block, rows per thread, scheme)
on a few workloads of benchmarks/gpu.py, float32, medians after a warm-up.

    python benchmarks/tune_cuda.py [--configs "256:0 128:0 256:1 256:2"] [--quick]
                                   [--narrow] [--schemes auto]

Each config is BLOCK:RPT (RPT 0 = the engine's choice), see LK_CUDA_BLOCK / LK_CUDA_RPT in
lazykeops/csrc/lk_cuda_tiles.cuh. Prints one table row per workload, one column per config
and scheme (auto, GPU_1D). --narrow: the narrow formulas whose rows per thread the engine
chooses by their words per row (D = 3 sums, LogSumExp, Min, ArgKMin, a gradient, float16
and float64 data) instead of the wide set.
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


def narrow_workloads():
    g = torch.Generator(device="cuda").manual_seed(0)
    gauss = "Exp(-SqDist(X,Y)) * B"
    matern52 = ("(IntCst(1) + Sqrt(IntCst(5)*SqDist(X,Y)) + IntCst(5)*SqDist(X,Y)/IntCst(3))"
                " * Exp(-Sqrt(IntCst(5)*SqDist(X,Y))) * B")
    rows = [  # name, formula, reduction, K, N = M, D, columns of B, dtype
        ("Gaussian", gauss, "Sum", None, 10**6, 3, 1, torch.float32),
        ("Gaussian * P", "Exp(-SqDist(X,Y) * P) * B", "Sum", None, 10**6, 3, 1, torch.float32),
        ("Gaussian, B of 3", gauss, "Sum", None, 10**6, 3, 3, torch.float32),
        ("LogSumExp", "B - SqDist(X,Y)", "LogSumExp", None, 10**6, 3, 1, torch.float32),
        ("Laplace", "Exp(-Sqrt(SqDist(X,Y))) * B", "Sum", None, 10**6, 3, 1, torch.float32),
        ("Min", "SqDist(X,Y)", "Min", None, 10**6, 3, 1, torch.float32),
        ("Matern 5/2", matern52, "Sum", None, 10**5, 3, 1, torch.float32),
        ("Gaussian D=8", gauss, "Sum", None, 10**5, 8, 1, torch.float32),
        ("Gaussian float16", gauss, "Sum", None, 10**5, 3, 1, torch.float16),
        ("Gaussian float64", gauss, "Sum", None, 10**5, 3, 1, torch.float64),
        ("Min", "SqDist(X,Y)", "Min", None, 10**5, 3, 1, torch.float32),
        ("ArgKMin K=10", "SqDist(X,Y)", "ArgKMin", 10, 10**5, 3, 1, torch.float32),
        ("Gaussian gradient", f"Grad({gauss}, X, E)", "Sum", None, 10**5, 3, 1, torch.float32),
        ("Gaussian", gauss, "Sum", None, 10**4, 3, 1, torch.float32),
        ("LogSumExp", "B - SqDist(X,Y)", "LogSumExp", None, 10**4, 3, 1, torch.float32),
    ]
    for name, formula, red, k, n, d, e, dtype in rows:
        def data(*shape, scale=1.0):
            return (torch.rand(*shape, device="cuda", generator=g) * scale).to(dtype)
        aliases = [f"X = Vi({d})", f"Y = Vj({d})"]
        args = [data(n, d, scale=d ** -0.5), data(n, d, scale=d ** -0.5)]
        if "B" in formula:
            aliases.append(f"B = Vj({e})"); args.append(data(n, e) - 0.5)
        if "P" in formula:
            aliases.append("P = Pm(1)"); args.append(torch.tensor([0.7], device="cuda", dtype=dtype))
        if "E)" in formula:
            aliases.append("E = Vi(1)"); args.append(data(n, 1) - 0.5)
        label = f"{name} N={n:.0e}" + (f" D={d}" if d != 3 and "D=" not in name else "")
        yield label, formula, aliases, red, k, args


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", default="256:0 128:0 512:0 256:1")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--narrow", action="store_true")
    parser.add_argument("--schemes", default="auto,GPU_1D")
    opts = parser.parse_args()
    os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")
    os.environ.setdefault("LAZYKEOPS_CACHE_DIR", tempfile.mkdtemp(prefix="lk-tune-"))
    from lazykeops.compile import codegen
    from lazykeops.torch import Genred

    configs = [tuple(int(v) for v in c.split(":")) for c in opts.configs.split()]
    columns = [(c, scheme) for c in configs for scheme in opts.schemes.split(",")]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| workload | " + " | ".join(f"{b}:{r} {s}" for (b, r), s in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    rows = narrow_workloads() if opts.narrow else workloads(opts.quick)
    for name, formula, aliases, red, k, args in rows:
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
