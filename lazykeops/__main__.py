"""`python -m lazykeops`: a self-check of the whole pipeline on this machine.

Compiles (or loads from the cache) one Gaussian kernel sum, runs it on 100,000 points in
3D, checks a sample of rows against dense torch in float64, and prints the timings, the
engine and the cache directory; then the same on the GPU where torch sees one and nvcc is
installed (1,000,000 points). Exits with status 1 if a check fails.
"""

import sys
import time


def check(device, n, sample=200):
    """Run and check the Gaussian kernel sum on `device`; True if it matches dense torch."""
    import torch

    from .torch import generic_sum

    g = torch.Generator(device=device).manual_seed(0)
    x, y = torch.rand(n, 3, device=device, generator=g), torch.rand(n, 3, device=device, generator=g)
    b = torch.randn(n, 1, device=device, generator=g)
    gamma = torch.tensor([10.0], device=device)

    start = time.perf_counter()
    conv = generic_sum("Exp(-G * SqDist(X, Y)) * B", "A = Vi(1)",
                       "G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "B = Vj(1)")
    conv(gamma, x[:10], y[:10], b[:10])  # compile or load now, so that the timing is the run
    ready = time.perf_counter() - start

    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    sync()
    start = time.perf_counter()
    a = conv(gamma, x, y, b)
    sync()
    elapsed = time.perf_counter() - start

    rows = torch.randperm(n, device=device)[:sample]
    dense = torch.exp(-gamma.double() * torch.cdist(x[rows].double(), y.double()) ** 2) @ b.double()
    err = ((a[rows].double() - dense).abs().max() / dense.abs().max()).item()

    engine = f"CPU engine (OpenMP, {torch.get_num_threads()} threads)" if device == "cpu" \
        else f"CUDA engine ({torch.cuda.get_device_name(device)})"
    print(f"lazykeops self-check: Gaussian kernel sum, N = M = {n:,}, D = 3, float32")
    print(f"  engine        : {engine}")
    print(f"  kernel ready  : {ready:.2f} s (compile or cache load)")
    print(f"  run           : {elapsed:.3f} s ({n * n / elapsed / 1e9:.2f} Gpair/s)")
    print(f"  check         : {sample} rows vs dense torch float64, max rel. error {err:.1e}")
    ok = err < 1e-4
    print("  result        :", "OK" if ok else "FAILED")
    return ok


def main():
    import torch

    from .compile.build import nvcc_available
    from .compile.cache import cache_dir

    ok = check("cpu", 100_000)
    if torch.cuda.is_available() and nvcc_available():
        ok = check("cuda", 1_000_000) and ok
    print(f"cache: {cache_dir()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
