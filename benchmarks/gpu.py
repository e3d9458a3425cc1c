"""GPU benchmarks (issue 5): the workloads of ../shared/ANCHORS.md on one CUDA device,
float32, medians of a few runs after a warm-up (compile excluded), with dense torch where
it fits in memory.

    python benchmarks/gpu.py [--quick]

Prints a table; copy it to benchmarks/RESULTS.md with the card's name and the date.
"""

import argparse
import os
import statistics
import tempfile
import time

import torch

GAUSS = "Exp(-SqDist(X,Y)) * B"


def timed(fn, repeat):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def data(n, d, e=1):
    g = torch.Generator(device="cuda").manual_seed(0)
    return (torch.rand(n, d, device="cuda", generator=g) / d ** 0.5,
            torch.rand(n, d, device="cuda", generator=g) / d ** 0.5,
            torch.randn(n, e, device="cuda", generator=g))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the N = 1e6, D = 64 run")
    args = parser.parse_args()
    os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")
    os.environ.setdefault("LAZYKEOPS_CACHE_DIR", tempfile.mkdtemp(prefix="lk-gpu-bench-"))
    from lazykeops.torch import Genred

    rows = []

    def record(name, n, d, seconds, dense=None):
        rows.append((name, n, d, seconds, n * n / seconds / 1e9, dense))

    def conv(d, e=1):
        return Genred(GAUSS, [f"X = Vi({d})", f"Y = Vj({d})", f"B = Vj({e})"], axis=1)

    def dense_conv(x, y, b):
        return torch.exp(-torch.cdist(x, y) ** 2) @ b

    for n, d in [(1_000, 3), (10_000, 3), (100_000, 3), (1_000_000, 3),
                 (10_000, 64), (100_000, 64), (1_000_000, 64), (10_000, 1024), (100_000, 1024)]:
        if args.quick and n == 1_000_000 and d == 64:
            continue
        x, y, b = data(n, d)
        routine = conv(d)
        repeat = 1 if n * n * d > 1e13 else 5
        dense = timed(lambda: dense_conv(x, y, b), 5) if n <= 10_000 else None
        record("Gaussian conv, E=1", n, d, timed(lambda: routine(x, y, b), repeat), dense)
    x, y, b = data(1_000_000, 3, 3)
    record("Gaussian conv, E=3", 1_000_000, 3, timed(lambda: conv(3, 3)(x, y, b), 3))
    for e in (64, 256):  # wide outputs: computed in slices of 16 columns
        x, y, b = data(100_000, 3, e)
        record(f"Gaussian conv, E={e}", 100_000, 3, timed(lambda: conv(3, e)(x, y, b), 3))
    lse = Genred("B - SqDist(X,Y)", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"],
                 reduction_op="LogSumExp", axis=1)
    for n in (100_000, 1_000_000):
        x, y, b = data(n, 3)
        record("LogSumExp", n, 3, timed(lambda: lse(x, y, b), 3))
    for d in (3, 64):
        knn = Genred("SqDist(X,Y)", [f"X = Vi({d})", f"Y = Vj({d})"], reduction_op="ArgKMin",
                     axis=1, opt_arg=10)
        x, y, _ = data(100_000, d)
        record("argKmin K=10", 100_000, d, timed(lambda: knn(x, y), 3))
    x, y, b = data(100_000, 3)
    routine = conv(3)
    x.requires_grad_(True)  # y needs no gradient here: none is computed for it
    record("Gaussian conv forward + grad x", 100_000, 3,
           timed(lambda: torch.autograd.grad(routine(x, y, b).sum(), (x,)), 3))
    y.requires_grad_(True)
    record("Gaussian conv forward + grad x, y", 100_000, 3,
           timed(lambda: torch.autograd.grad(routine(x, y, b).sum(), (x, y)), 3))
    for dtype in (torch.float16, torch.bfloat16):  # stored in half, computed in float32
        x, y, b = (t.to(dtype) for t in data(1_000_000, 3))
        record(f"Gaussian conv, E=1, {str(dtype)[6:]}", 1_000_000, 3,
               timed(lambda: conv(3)(x, y, b), 3))

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print("| workload | N = M | D | lazykeops | Gpair/s | dense torch |\n|---|---|---|---|---|---|")
    for name, n, d, seconds, rate, dense in rows:
        dense_text = f"{dense * 1e3:.3g} ms" if dense else ""
        print(f"| {name} | {n:,} | {d} | {seconds * 1e3:.3g} ms | {rate:,.0f} | {dense_text} |")


if __name__ == "__main__":
    main()
