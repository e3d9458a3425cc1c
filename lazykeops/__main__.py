"""`python -m lazykeops`: a self-check of the whole pipeline on this machine.

Compiles (or loads from the cache) one Gaussian kernel sum, runs it on 100,000 points in
3D, checks a sample of rows against dense torch in float64, and prints the timings, the
backend and the cache directory. Exits with status 1 if the check fails.
"""

import sys
import time


def main(n=100_000, sample=200):
    import torch

    from .compile.cache import cache_dir
    from .torch import generic_sum

    torch.manual_seed(0)
    x = torch.rand(n, 3)
    y = torch.rand(n, 3)
    b = torch.randn(n, 1)
    gamma = torch.tensor([10.0])

    start = time.perf_counter()
    conv = generic_sum("Exp(-G * SqDist(X, Y)) * B", "A = Vi(1)",
                       "G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "B = Vj(1)")
    conv.core.kernel("float32")  # compile or load now, so that the timing below is the run
    ready = time.perf_counter() - start

    start = time.perf_counter()
    a = conv(gamma, x, y, b)
    elapsed = time.perf_counter() - start

    rows = torch.randperm(n)[:sample]
    dense = torch.exp(-gamma.double() * torch.cdist(x[rows].double(), y.double()) ** 2) @ b.double()
    err = ((a[rows].double() - dense).abs().max() / dense.abs().max()).item()

    print(f"lazykeops self-check: Gaussian kernel sum, N = M = {n:,}, D = 3, float32")
    print("  backend       : CPU engine (OpenMP, "
          f"{torch.get_num_threads()} threads)")
    print(f"  kernel ready  : {ready:.2f} s (compile or cache load)")
    print(f"  run           : {elapsed:.3f} s ({n * n / elapsed / 1e9:.2f} Gpair/s)")
    print(f"  check         : {sample} rows vs dense torch float64, max rel. error {err:.1e}")
    print(f"  cache         : {cache_dir()}")
    ok = err < 1e-4
    print("  result        :", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
