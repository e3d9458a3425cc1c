"""Per-call time of small Gaussian convs on the GPU, where the launch path dominates.

    python benchmarks/gpu_small_calls.py LABEL

For N = M = 1,000 and 10,000 (D = 3): the median of calls 2-6 after the first (as gpu.py
times them), the median of 200 synchronised calls after 20 warm-ups, and the host-side cost
per call (1000 calls queued without a sync). Run it once per tree, alternating trees over
several rounds (PYTHONPATH=<tree>), and compare rounds: one round's figures move by 30%.
"""

import statistics
import sys
import time

import torch

from lazykeops.torch import Genred


def synced_median_ms(fn, calls):
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(label):
    for n in (1_000, 10_000):
        g = Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"], axis=1)
        x, y, b = (torch.rand(n, d, device="cuda") for d in (3, 3, 1))
        call = lambda: g(x, y, b)  # noqa: E731
        call()
        torch.cuda.synchronize()
        early = synced_median_ms(call, 5)
        synced_median_ms(call, 20)
        steady = synced_median_ms(call, 200)
        start = time.perf_counter()
        for _ in range(1000):
            call()
        host = time.perf_counter() - start  # seconds for 1000 calls = ms per call
        torch.cuda.synchronize()
        print(f"small {label} N={n} early {early:.4f} ms  steady {steady:.4f} ms  "
              f"host {host:.4f} ms/call", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
