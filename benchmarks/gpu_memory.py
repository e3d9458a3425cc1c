"""Peak GPU memory of a Gaussian conv at N = M = 10,000,000, D = 3, float32 (issue 5): the
engine may use at most inputs + outputs + 64 MiB (the split scheme's workspace cap).

    python benchmarks/gpu_memory.py [--n 10000000]

Prints the time, the peak (torch.cuda.max_memory_allocated) and its excess over inputs +
outputs; exits 1 if the excess passes 64 MiB.
"""

import argparse
import os
import sys
import tempfile
import time

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000_000)
    opts = parser.parse_args()
    os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")
    os.environ.setdefault("LAZYKEOPS_CACHE_DIR", tempfile.mkdtemp(prefix="lk-gpu-mem-"))
    from lazykeops.torch import Genred

    n = opts.n
    routine = Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"], axis=1)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand(n, 3, device="cuda", generator=g)
    y = torch.rand(n, 3, device="cuda", generator=g)
    b = torch.randn(n, 1, device="cuda", generator=g)
    routine(x[:1000], y[:1000], b[:1000])  # compile and load outside the measurement
    torch.cuda.synchronize()
    inputs = sum(t.numel() * t.element_size() for t in (x, y, b))
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = routine(x, y, b)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    outputs = out.numel() * out.element_size()
    peak = torch.cuda.max_memory_allocated()
    excess = peak - inputs - outputs
    print(f"{torch.cuda.get_device_name()}: Gaussian conv N = M = {n:,}, D = 3: {seconds:.1f} s "
          f"({n * n / seconds / 1e9:,.0f} Gpair/s); peak {peak / 2**20:.1f} MiB = inputs "
          f"{inputs / 2**20:.1f} + outputs {outputs / 2**20:.1f} + {excess / 2**20:.2f} MiB")
    sys.exit(0 if excess <= 64 << 20 else 1)


if __name__ == "__main__":
    main()
