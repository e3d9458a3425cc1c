"""CPU benchmarks of the core pipeline (issue 2): compile time, cache load time, per-call
overhead, and throughput against dense torch and, when importable, pykeops.

    python benchmarks/bench_cpu.py [--quick]

Prints one table; medians of several runs. Results go to benchmarks/RESULTS.md by hand,
with the machine and the date.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

import torch

GAUSS = "Exp(-G*SqDist(X,Y)) * B"


def aliases(d, e=1):
    return ["G = Pm(1)", f"X = Vi({d})", f"Y = Vj({d})", f"B = Vj({e})"]


def median_time(fn, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_compile(repeat):
    """A formula never seen before: build + first run, in this process."""
    from lazykeops.torch import Genred

    x, y, b = torch.rand(1000, 3), torch.rand(1000, 3), torch.rand(1000, 1)
    times = []
    for _ in range(repeat):
        c = f"{uuid.uuid4().int % 100000}.5"
        start = time.perf_counter()
        Genred(f"Exp(-G*SqDist(X,Y)) * B + {c}", aliases(3), axis=1)(torch.tensor([1.0]), x, y, b)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


CHILD = textwrap.dedent("""
    import time, torch
    from lazykeops.torch import Genred
    x, y, b = torch.rand(100, 3), torch.rand(100, 3), torch.rand(100, 1)
    start = time.perf_counter()
    Genred("Exp(-G*SqDist(X,Y)) * B", ["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"],
           axis=1)(torch.tensor([1.0]), x, y, b)
    print(time.perf_counter() - start)
""")


def bench_cached_load(repeat):
    """A cached formula in a fresh process: parse + load + first call (imports excluded)."""
    env = dict(os.environ, LAZYKEOPS_VERBOSE="0")
    subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, capture_output=True)
    times = [float(subprocess.run([sys.executable, "-c", CHILD], env=env, check=True,
                                  capture_output=True, text=True).stdout.split()[-1])
             for _ in range(repeat)]
    return statistics.median(times)


def gauss_inputs(n, d, dtype=torch.float32):
    torch.manual_seed(0)
    return (torch.tensor([1.0 / d], dtype=dtype), torch.rand(n, d, dtype=dtype),
            torch.rand(n, d, dtype=dtype), torch.randn(n, 1, dtype=dtype))


def bench_overhead(repeat=2000):
    from lazykeops.torch import Genred

    g, x, y, b = gauss_inputs(100, 3)
    conv = Genred(GAUSS, aliases(3), axis=1)
    conv(g, x, y, b)
    start = time.perf_counter()
    for _ in range(repeat):
        conv(g, x, y, b)
    return (time.perf_counter() - start) / repeat


def dense_gauss(g, x, y, b):
    return torch.exp(-g * torch.cdist(x, y) ** 2) @ b


def pykeops_gauss(d):
    try:
        from pykeops.torch import Genred as PkGenred
    except Exception:  # not installed, or fails to import on this machine
        return None
    return PkGenred(GAUSS, aliases(d), axis=1)


def bench_throughput(n, d, repeat):
    from lazykeops.torch import Genred

    g, x, y, b = gauss_inputs(n, d)
    conv = Genred(GAUSS, aliases(d), axis=1)
    conv(g, x, y, b)
    rows = {"lazykeops": median_time(lambda: conv(g, x, y, b), repeat)}
    rows["dense torch"] = median_time(lambda: dense_gauss(g, x, y, b), 1)
    pk = pykeops_gauss(d)
    if pk is not None:
        pk(g, x, y, b, backend="CPU")
        rows["pykeops 2.3"] = median_time(lambda: pk(g, x, y, b, backend="CPU"), repeat)
    return rows


def bench_other(n, repeat):
    from lazykeops.torch import Genred

    g, x, y, b = gauss_inputs(n, 3)
    lse = Genred("-SqDist(X,Y) + B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"],
                 reduction_op="LogSumExp", axis=1)
    knn = Genred("SqDist(X,Y)", ["X = Vi(3)", "Y = Vj(3)"], reduction_op="ArgKMin", axis=1,
                 opt_arg=10)
    lse(x, y, b)
    knn(x, y)
    return {"LogSumExp": median_time(lambda: lse(x, y, b), repeat),
            "argKmin K=10": median_time(lambda: knn(x, y), repeat)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 3 if args.quick else 5
    os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")
    os.environ.setdefault("LAZYKEOPS_CACHE_DIR", tempfile.mkdtemp(prefix="lk-bench-"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cache "
          f"{os.environ['LAZYKEOPS_CACHE_DIR']}")
    print("| measure | value |\n|---|---|")
    print(f"| new formula: compile + first run (median of {repeat}) | "
          f"{bench_compile(repeat):.2f} s |")
    print(f"| cached formula, fresh process: load + first call | "
          f"{bench_cached_load(repeat) * 1e3:.0f} ms |")
    print(f"| per-call overhead, Gaussian conv N = M = 100 | {bench_overhead() * 1e6:.1f} us |")
    n = 20_000
    for d in (3, 64):
        for name, t in bench_throughput(n, d, repeat).items():
            print(f"| Gaussian conv N = M = {n:,}, D = {d}, float32, {name} | {t:.3f} s "
                  f"({n * n / t / 1e9:.2f} Gpair/s) |")
    for name, t in bench_other(n, repeat).items():
        print(f"| {name} N = M = {n:,}, D = 3, float32, lazykeops | {t:.3f} s "
              f"({n * n / t / 1e9:.2f} Gpair/s) |")


if __name__ == "__main__":
    main()
