"""Peak memory of a CPU backward pass (issue 11): forward + backward of a Gaussian kernel
sum through LazyTensors, with respect to x and y (one DualSum pass over the M columns),
in a child process per thread count, so that each figure is that run's own peak RSS.

    python benchmarks/cpu_memory.py [--n 10000] [--m 10000000] [--threads 1 2]

The child compiles the kernels on small arrays first (compilers run in their own
processes), allocates the inputs, reads its peak RSS, then runs forward + backward and
reads it again. The difference is what the pass itself needed: the outputs (the forward
values, x.grad and y.grad, and the engine's column output that becomes y.grad) and the
engine's buffers.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
import torch
from lazykeops.torch import LazyTensor

n, m, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)


def run(x, y, b):
    K = (-((LazyTensor(x[:, None]) - LazyTensor(y[None])) ** 2).sum(-1)).exp()
    (K @ b).sum().backward()


def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KB on Linux


def inputs(n, m):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, generator=g).requires_grad_()
    y = torch.rand(m, 3, generator=g).requires_grad_()
    return x, y, torch.randn(m, 1, generator=g)


run(*inputs(100, 200))  # compiles (or loads) the kernels
x, y, b = inputs(n, m)
before = peak()
start = time.perf_counter()
run(x, y, b)
seconds = time.perf_counter() - start
print(json.dumps({"inputs": sum(t.numel() * t.element_size() for t in (x, y, b)),
                  "before": before, "after": peak(), "seconds": seconds}))
"""


def measure(n, m, threads, env):
    res = subprocess.run([sys.executable, "-c", CHILD, str(n), str(m), str(threads)],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"child exited with {res.returncode}:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--m", type=int, default=10_000_000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("LAZYKEOPS_VERBOSE", "0")
    env.setdefault("LAZYKEOPS_CACHE_DIR", tempfile.mkdtemp(prefix="lk-bench-"))
    mb = 1 << 20
    print(f"Gaussian kernel sum, forward + backward (x, y), float32, N = {args.n:,}, "
          f"M = {args.m:,}, D = 3")
    print("| threads | inputs | peak RSS before | peak RSS after | pass needed | time |")
    print("|---|---|---|---|---|---|")
    for threads in args.threads:
        r = measure(args.n, args.m, threads, env)
        print(f"| {threads} | {r['inputs'] / mb:.0f} MB | {r['before'] / mb:.0f} MB | "
              f"{r['after'] / mb:.0f} MB | {(r['after'] - r['before']) / mb:.0f} MB | "
              f"{r['seconds']:.1f} s |")


if __name__ == "__main__":
    main()
