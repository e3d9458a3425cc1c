"""First call of a new formula (build + load + run) and the cached call after it, lazykeops
against pykeops 2.3, on the CPU or the GPU.

    python benchmarks/first_call.py [--device cpu|cuda] [--pykeops-python PYTHON]
        [--no-pykeops]

Each library runs in its own child process with an empty cache of its own (lazykeops:
LAZYKEOPS_CACHE_DIR; pykeops: set_build_folder), first one warm-up formula, whose time is
the library's one-off cost on a new machine (lazykeops: its precompiled engine prelude on
the CPU; pykeops: its nvrtc helper or its base module), then ten distinct formulas: Gaussian,
Laplace, Cauchy and Matern 3/2 sums, a Gaussian sum with D = 1 weights of float64, LogSumExp,
ArgKMin (K = 5), Min, Max_ArgMax, and the gradient of a Gaussian sum written with Grad.
Each formula holds an integer constant of its own for this run (IntCst: pykeops's
formula strings take no float literal), so that nothing was built before.
Prints one table: the first and the cached call of each, and the medians.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ALIASES = ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "E = Vi(1)"]
FORMULAS = [  # (name, formula with {c}, reduction, opt_arg, dtype)
    ("Gaussian sum", "Exp(-SqDist(X,Y) * {c}) * B", "Sum", None, "float32"),
    ("Laplace sum", "Exp(-Sqrt(SqDist(X,Y) * {c})) * B", "Sum", None, "float32"),
    ("Cauchy sum", "Inv(IntCst(1) + SqDist(X,Y) * {c}) * B", "Sum", None, "float32"),
    ("Matern 3/2 sum", "(IntCst(1) + Sqrt(SqDist(X,Y) * {c})) * Exp(-Sqrt(SqDist(X,Y) * {c})) * B",
     "Sum", None, "float32"),
    ("Gaussian sum, float64", "Exp(-SqDist(X,Y) * {c}) * B", "Sum", None, "float64"),
    ("LogSumExp", "-SqDist(X,Y) * {c}", "LogSumExp", None, "float32"),
    ("ArgKMin K=5", "SqDist(X,Y) * {c}", "ArgKMin", 5, "float32"),
    ("Min", "SqDist(X,Y) * {c}", "Min", None, "float32"),
    ("Max_ArgMax", "-SqDist(X,Y) * {c}", "Max_ArgMax", None, "float32"),
    ("gradient of a Gaussian sum", "Grad(Exp(-SqDist(X,Y) * {c}) * B, X, E)", "Sum", None,
     "float32"),
]
WARM_UP = ("warm-up (one-off)", "SqDist(X,Y) * B * {c}", "Sum", None, "float32")


def worker(library, device, cache):
    import torch

    if library == "lazykeops":
        os.environ["LAZYKEOPS_CACHE_DIR"] = cache
        os.environ["LAZYKEOPS_VERBOSE"] = "0"
        from lazykeops.torch import Genred
    else:
        import pykeops

        pykeops.set_verbose(False)
        pykeops.set_build_folder(cache)
        from pykeops.torch import Genred
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    salt = uuid.uuid4().int % 10 ** 6  # this run's constants: never built before
    for k, (name, formula, red, opt, dtype) in enumerate([WARM_UP, *FORMULAS]):
        dt = getattr(torch, dtype)
        x, y = (torch.rand(1000, 3, dtype=dt, device=device) for _ in range(2))
        b, e = torch.rand(1000, 1, dtype=dt, device=device), torch.rand(1000, 1, dtype=dt,
                                                                          device=device)
        # An integer constant: pykeops's formula strings take no float literal.
        c = f"IntCst({2 + (salt + 7919 * k) % 10 ** 6})"
        routine = Genred(formula.format(c=c), ALIASES, reduction_op=red, axis=1,
                         **({"opt_arg": opt} if opt else {}))
        times = []
        for _ in range(2):
            start = time.perf_counter()
            routine(x, y, b, e)
            sync()
            times.append(time.perf_counter() - start)
        print(json.dumps({"name": name, "first": times[0], "cached": times[1]}), flush=True)


def run_child(library, device, python):
    with tempfile.TemporaryDirectory(prefix=f"first-call-{library}-") as cache:
        proc = subprocess.run([python, __file__, "--worker", library, "--device", device,
                               "--cache", cache], capture_output=True, text=True)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            results[entry["name"]] = entry
    if proc.returncode:
        print(f"{library}'s process exited with code {proc.returncode}:\n{proc.stderr[-2000:]}")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--pykeops-python", default=sys.executable)
    parser.add_argument("--no-pykeops", action="store_true")
    parser.add_argument("--worker", choices=["lazykeops", "pykeops"], help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.device, args.cache)
    ours = run_child("lazykeops", args.device, sys.executable)
    theirs = {} if args.no_pykeops else run_child("pykeops", args.device, args.pykeops_python)
    print(f"first call of a new formula on {args.device} (build + load + run, N = M = 1000), "
          "then the same call cached")
    print("| formula | lazykeops first | lazykeops cached | pykeops first | pykeops cached |")
    print("|---|---|---|---|---|")
    cell = lambda r, n, f: f"{r[n][f]:.3f} s" if n in r else "-"  # noqa: E731
    for name, *_ in [WARM_UP, *FORMULAS]:
        print(f"| {name} | {cell(ours, name, 'first')} | {cell(ours, name, 'cached')} | "
              f"{cell(theirs, name, 'first')} | {cell(theirs, name, 'cached')} |")
    for label, results in (("lazykeops", ours), ("pykeops", theirs)):
        firsts = [results[n]["first"] for n, *_ in FORMULAS if n in results]
        if firsts:
            print(f"{label}: median first call {statistics.median(firsts):.3f} s over "
                  f"{len(firsts)} formulas")


if __name__ == "__main__":
    main()
