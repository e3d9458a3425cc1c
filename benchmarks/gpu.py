"""GPU benchmarks (issue 5): the workloads of ../shared/ANCHORS.md on one CUDA device,
float32 unless named, medians of a few runs after a warm-up (compile excluded), with dense
torch where it fits in memory, and pykeops when it is importable.

    python benchmarks/gpu.py [--quick] [--peers]

pykeops runs in a child process (pykeops 2.3 segfaults on CUDA 13 machines): its column
reads "crashed" when that process dies. Prints a table; copy it to benchmarks/RESULTS.md
with the card's name and the date.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
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


def data(n, d, e=1, dtype=torch.float32):
    g = torch.Generator(device="cuda").manual_seed(0)
    return (torch.rand(n, d, device="cuda", generator=g).to(dtype) / d ** 0.5,
            torch.rand(n, d, device="cuda", generator=g).to(dtype) / d ** 0.5,
            torch.randn(n, e, device="cuda", generator=g).to(dtype))


def forward_workloads(quick):
    """(name, n, d, formula, aliases, reduction, K, E) of the reductions both libraries run."""
    rows = []
    for n, d in [(1_000, 3), (10_000, 3), (100_000, 3), (1_000_000, 3), (10_000, 64),
                 (100_000, 64), (1_000_000, 64), (10_000, 1024), (100_000, 1024)]:
        if not (quick and n == 1_000_000 and d == 64):
            rows.append(("Gaussian conv, E=1", n, d, GAUSS, None, "Sum", None, 1))
    rows.append(("Gaussian conv, E=3", 1_000_000, 3, GAUSS, None, "Sum", None, 3))
    for e in (64, 256):  # wide outputs: computed in slices of 16 columns
        rows.append((f"Gaussian conv, E={e}", 100_000, 3, GAUSS, None, "Sum", None, e))
    for n in (100_000, 1_000_000):
        rows.append(("LogSumExp", n, 3, "B - SqDist(X,Y)", None, "LogSumExp", None, 1))
    for d in (3, 64):
        rows.append(("argKmin K=10", 100_000, d, "SqDist(X,Y)", 2, "ArgKMin", 10, 1))
    return rows


def run_forward(genred, workload):
    name, n, d, formula, nargs, red, k, e = workload
    aliases = [f"X = Vi({d})", f"Y = Vj({d})", f"B = Vj({e})"][:nargs or 3]
    routine = genred(formula, aliases, reduction_op=red, axis=1, opt_arg=k)
    args = data(n, d, e)[:nargs or 3]
    return timed(lambda: routine(*args), 1 if n * n * d > 1e13 else (5 if n <= 100_000 else 3))


def pykeops_worker(quick):
    """Child process: time each forward workload with pykeops, one JSON line each."""
    from pykeops.torch import Genred

    for workload in forward_workloads(quick):
        print(json.dumps([workload[0], workload[1], workload[2],
                          run_forward(Genred, workload)]), flush=True)


def pykeops_times(quick):
    """({(name, n, d): seconds}, None) from a child process, or with its exit code
    instead of None when it died (what it printed before still counts)."""
    if importlib.util.find_spec("pykeops") is None:
        return {}, None
    proc = subprocess.run([sys.executable, __file__, "--pykeops-worker"] +
                          (["--quick"] if quick else []), capture_output=True, text=True)
    times = {}
    for line in proc.stdout.splitlines():
        try:
            name, n, d, seconds = json.loads(line)
            times[(name, n, d)] = seconds
        except ValueError:
            continue
    return times, (None if proc.returncode == 0 else proc.returncode)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the N = 1e6, D = 64 run")
    parser.add_argument("--peers", action="store_true",
                        help="then the tensor-core peers' table (benchmarks/peers.py)")
    parser.add_argument("--pykeops-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pykeops_worker:
        return pykeops_worker(args.quick)
    os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")
    os.environ.setdefault("LAZYKEOPS_CACHE_DIR", tempfile.mkdtemp(prefix="lk-gpu-bench-"))
    from lazykeops.torch import Genred

    rows = []  # (name, n, d, seconds, dense seconds or None)
    for workload in forward_workloads(args.quick):
        name, n, d, formula = workload[:4]
        dense = None
        if formula == GAUSS and n <= 10_000:
            x, y, b = data(n, d, workload[-1])
            dense = timed(lambda: torch.exp(-torch.cdist(x, y) ** 2) @ b, 5)
        rows.append((name, n, d, run_forward(Genred, workload), dense))
    conv = Genred(GAUSS, ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"], axis=1)
    x, y, b = data(100_000, 3)
    x.requires_grad_(True)  # y needs no gradient here: none is computed for it
    rows.append(("Gaussian conv forward + grad x", 100_000, 3,
                 timed(lambda: torch.autograd.grad(conv(x, y, b).sum(), (x,)), 3), None))
    y.requires_grad_(True)
    rows.append(("Gaussian conv forward + grad x, y", 100_000, 3,
                 timed(lambda: torch.autograd.grad(conv(x, y, b).sum(), (x, y)), 3), None))
    for dtype in (torch.float16, torch.bfloat16):  # stored in half, computed in float32
        x, y, b = data(1_000_000, 3, 1, dtype)
        rows.append((f"Gaussian conv, E=1, {str(dtype)[6:]}", 1_000_000, 3,
                     timed(lambda: conv(x, y, b), 3), None))
    pykeops, crash = pykeops_times(args.quick)

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    if crash is not None:
        print(f"pykeops's process exited with code {crash} after {len(pykeops)} workloads")
    print("| workload | N = M | D | lazykeops | Gpair/s | pykeops | dense torch |\n"
          "|---|---|---|---|---|---|---|")
    ran_by_pykeops = {w[:3] for w in forward_workloads(args.quick)}
    for name, n, d, seconds, dense in rows:
        theirs = pykeops.get((name, n, d))
        crashed = crash is not None and (name, n, d) in ran_by_pykeops
        pk = f"{theirs * 1e3:.3g} ms" if theirs else ("crashed" if crashed else "")
        dense_text = f"{dense * 1e3:.3g} ms" if dense else ""
        print(f"| {name} | {n:,} | {d} | {seconds * 1e3:.3g} ms | {n * n / seconds / 1e9:,.0f} "
              f"| {pk} | {dense_text} |")
    if args.peers:
        import peers  # benchmarks/ is on sys.path when run as a script
        peers.main([])


if __name__ == "__main__":
    main()
