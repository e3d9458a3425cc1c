"""Time the tutorials at full size, for the gallery (docs/tutorials.md).

    python benchmarks/tutorials.py --device cuda [--names kde knn ...] [--out DIR] [--quick]

Each tutorial runs as its own process, as a user would run it: first its --quick size
(all at once, in parallel, so that the kernels they share are compiled before any timing),
then its full size (or with --quick its quick size again), one at a time. The table gives
the wall time of the timed run (its process, start to end, kernels already compiled) and
the line the tutorial prints (its size, the time of its main computation, the backend).
"""

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["kde", "knn", "kmeans", "mmd_test", "gp_regression", "gmm_em", "kernel_smoothing",
         "optimal_transport", "lddmm"]


def run_tutorial(name, device, out, quick, timeout):
    """(seconds, returncode, last printed line or the error's last line)."""
    cmd = [sys.executable, os.path.join(ROOT, "tutorials", f"{name}.py"), "--device", device,
           "--out", os.path.join(out, name + ("_quick" if quick else ""))]
    if quick:
        cmd.append("--quick")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, "timeout", f"more than {timeout} s"
    seconds = time.perf_counter() - start
    lines = (proc.stdout if proc.returncode == 0 else proc.stderr).strip().splitlines()
    return seconds, proc.returncode, lines[-1] if lines else ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--names", nargs="*", default=NAMES, choices=NAMES)
    parser.add_argument("--out", default=os.path.join(ROOT, "tutorials", "figures", "full"))
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per run")
    parser.add_argument("--no-warmup", action="store_true", help="skip the parallel --quick runs")
    parser.add_argument("--quick", action="store_true", help="time the quick sizes")
    args = parser.parse_args()

    if not args.no_warmup:
        with ThreadPoolExecutor(max_workers=len(args.names)) as pool:
            quick = list(pool.map(lambda n: run_tutorial(n, args.device, args.out, True,
                                                         args.timeout), args.names))
        for name, (seconds, rc, line) in zip(args.names, quick):
            print(f"quick {name}: {seconds:.1f} s (in parallel), rc {rc}: {line}", flush=True)

    rows = []
    for name in args.names:
        seconds, rc, line = run_tutorial(name, args.device, args.out, args.quick, args.timeout)
        size = "quick" if args.quick else "full"
        print(f"{size} {name}: {seconds:.1f} s, rc {rc}: {line}", flush=True)
        rows.append((name, seconds, rc, line))

    print(f"\n| tutorial | wall s ({args.device}) | rc | its line |\n|---|---|---|---|")
    for name, seconds, rc, line in rows:
        print(f"| {name} | {seconds:.1f} | {rc} | {line} |")


if __name__ == "__main__":
    main()
