"""CPU time of every reduction policy, one commit against another in the same run.

    python benchmarks/bench_reductions_cpu.py OLD_TREE NEW_TREE [--n 10000] [--rounds 3]
        [--only 'Sum D=1' ArgMin ...]

OLD_TREE and NEW_TREE are checkouts of lazykeops (e.g. `git worktree add /tmp/old <commit>`).
Each round runs every workload in a fresh process of each tree, alternating old and new,
one thread, kernels compiled beforehand (each tree gets its own cache). Prints the median
time of each and the ratio new / old: the policies' accumulation (Sum, LogSumExp with and
without weights, SumSoftMaxWeight, Min/ArgMin, KMin/ArgKMin) is what differs between
trees, so the formula is a cheap one (a squared distance in D = 3) to keep it visible.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

WORKLOADS = {  # name: (reduction, formula2 or None, K or None, formula dim)
    "Sum D=1": ("Sum", None, None, 1),
    "Sum D=3": ("Sum", None, None, 3),
    "LogSumExp": ("LogSumExp", None, None, 1),
    "LogSumExp, 2 weights": ("LogSumExp", "W", None, 1),
    "SumSoftMaxWeight E=2": ("SumSoftMaxWeight", "W", None, 1),
    "ArgMin": ("ArgMin", None, None, 1),
    "Min_ArgMin D=3": ("Min_ArgMin", None, None, 3),
    "ArgKMin K=10": ("ArgKMin", None, 10, 1),
    "KMin K=50": ("KMin", None, 50, 1),
}

CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from lazykeops.torch import Genred
name, red, f2, k, dim, n = json.loads(sys.argv[1])
torch.manual_seed(0)
x, y, w = torch.rand(n, 3), torch.rand(n, 3), torch.rand(n, 2)
formula = "-SqDist(X,Y)" if dim == 1 else "-(X-Y)*(X-Y)"
kw = {"formula2": f2} if f2 else {}
if k:
    kw["opt_arg"] = k
g = Genred(formula, ["X = Vi(3)", "Y = Vj(3)", "W = Vj(2)"], reduction_op=red, axis=1, **kw)
g(x, y, w)
times = []
for _ in range(5):
    t0 = time.perf_counter(); g(x, y, w); times.append(time.perf_counter() - t0)
print(json.dumps(sorted(times)[2]))
"""


def run(tree, cache, workload, n):
    env = dict(os.environ, PYTHONPATH=tree, LAZYKEOPS_VERBOSE="0", LAZYKEOPS_CACHE_DIR=cache,
               OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([*workload, n])], env=env,
                         check=True, capture_output=True, text=True, cwd=tempfile.gettempdir())
    return json.loads(out.stdout.split()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, help="workload names to run")
    args = parser.parse_args()
    workloads = {k: v for k, v in WORKLOADS.items() if args.only is None or k in args.only}
    caches = {tree: tempfile.mkdtemp(prefix="lk-bench-") for tree in (args.old, args.new)}
    times = {(name, tree): [] for name in workloads for tree in caches}
    for _ in range(args.rounds):
        for name, spec in workloads.items():
            for tree in (args.old, args.new):
                times[name, tree].append(run(tree, caches[tree], (name, *spec), args.n))
            # As it goes, so that a run cut short (a device call's time limit) still tells.
            print(f"round {len(times[name, args.new])}: {name}: old "
                  f"{times[name, args.old][-1] * 1e3:.1f} ms, new "
                  f"{times[name, args.new][-1] * 1e3:.1f} ms", flush=True)
    print(f"N = M = {args.n:,}, float32, 1 thread, median of {args.rounds} processes "
          f"(each the median of 5 calls)")
    print("| workload | old (ms) | new (ms) | new / old |\n|---|---|---|---|")
    for name in workloads:
        old = statistics.median(times[name, args.old]) * 1e3
        new = statistics.median(times[name, args.new]) * 1e3
        print(f"| {name} | {old:.1f} | {new:.1f} | {new / old:.3f} |")
    # Kept for benchmarks/compare_cpu_kernels.py: the trees' compiled loops side by side.
    print(f"kernel caches: old {caches[args.old]}, new {caches[args.new]}")


if __name__ == "__main__":
    main()
