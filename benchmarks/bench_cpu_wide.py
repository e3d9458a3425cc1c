"""CPU engine at large D: the chunked sums and outputs (compile/chunking.py) against the
unchunked path (`eval`'s own loops over the components, as before chunking reached the CPU)
and dense torch, float32.

    python benchmarks/bench_cpu_wide.py [--quick]

Gaussian conv sum_j exp(-|x_i - y_j|^2) b_j, the same with WeightedSqDist (a diagonal
weight), argKmin K=10 of |x_i - y_j|^2, and the conv's forward + gradient in x, at
N = M = 5,000, D from 3 to 1,024. Medians of 3 runs after a warm one (compile excluded);
runs over a second are timed once. Prints a table for benchmarks/RESULTS.md.
"""

import argparse
import statistics
import time

import torch

import lazykeops.compile.chunking as chunking
from lazykeops.torch import Genred

N = 5000


def timed(fn):
    fn()
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first > 1.0:
        return first
    times = [first]
    for _ in range(2):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def workloads(d):
    g = torch.Generator().manual_seed(d)
    x = torch.rand(N, d, generator=g) / d ** 0.5
    y = torch.rand(N, d, generator=g) / d ** 0.5
    b = torch.randn(N, 1, generator=g)
    w = torch.rand(d, generator=g) + 0.5
    dims = [f"X = Vi({d})", f"Y = Vj({d})"]
    conv = Genred("Exp(-SqDist(X,Y)) * B", dims + ["B = Vj(1)"], axis=1)
    weighted = Genred("Exp(-WeightedSqDist(W,X,Y)) * B", dims + ["B = Vj(1)", f"W = Pm({d})"],
                      axis=1)
    knn = Genred("SqDist(X,Y)", dims, reduction_op="ArgKMin", axis=1, opt_arg=10)
    xg = x.clone().requires_grad_()

    def grad_x(kernel_sum):
        return torch.autograd.grad(kernel_sum(xg).sum(), xg)

    return [("Gaussian conv", lambda: conv(x, y, b),
             lambda: torch.exp(-torch.cdist(x, y) ** 2) @ b),
            ("weighted Gaussian conv", lambda: weighted(x, y, b, w),
             lambda: torch.exp(-torch.cdist(x * w.sqrt(), y * w.sqrt()) ** 2) @ b),
            ("argKmin K=10", lambda: knn(x, y),
             lambda: (torch.cdist(x, y) ** 2).topk(10, 1, largest=False).indices),
            # The gradient's output has D components, c_ij (x_i - y_j): a chunked output.
            ("conv forward + grad x", lambda: grad_x(lambda xg: conv(xg, y, b)),
             lambda: grad_x(lambda xg: torch.exp(-torch.cdist(xg, y) ** 2) @ b))]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="D = 3, 64, 512 only")
    dims = [3, 64, 512] if parser.parse_args().quick else [3, 17, 32, 64, 128, 200, 512, 1024]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, N = M = {N:,}, float32")
    print("| workload | D | chunked | Gpair/s | unchunked | speed-up | dense torch |")
    print("|---|---|---|---|---|---|---|")
    threshold = chunking.CPU_WIDE_ABOVE
    for d in dims:
        # New routines for each setting: a routine keeps the kernel it first loaded.
        chunking.CPU_WIDE_ABOVE = 1 << 30  # every variable narrow: the unchunked path
        unchunked_runs = [run for _, run, _ in workloads(d)]
        chunking.CPU_WIDE_ABOVE = threshold
        for (name, run, dense), plain in zip(workloads(d), unchunked_runs):
            chunked = timed(run)
            chunking.CPU_WIDE_ABOVE = 1 << 30
            unchunked = timed(plain)
            chunking.CPU_WIDE_ABOVE = threshold
            label = "(same path)" if d <= threshold else f"{unchunked * 1e3:.0f} ms"
            speedup = "" if d <= threshold else f"{unchunked / chunked:.1f}x"
            print(f"| {name} | {d} | {chunked * 1e3:.1f} ms | {N * N / chunked / 1e9:.3f} | "
                  f"{label} | {speedup} | {timed(dense) * 1e3:.0f} ms |", flush=True)


if __name__ == "__main__":
    main()
