"""The speed of the CUDA kernels NVRTC compiles (LAZYKEOPS_CUDA_COMPILER=nvrtc, issue 17)
against nvcc's, on one CUDA device: each compiler in its own child process, the processes
interleaved (A, B, A, B) so that the card's drift shows, each workload's median of a few
runs after a warm-up (compile excluded).

    python benchmarks/nvrtc_kernels.py [--options=-Ofc=min ...] [--rounds 2]

--options adds an NVRTC configuration (repeatable): extra NVRTC options (appended to
compile/nvrtc.py's OPTIONS, which the cache key holds). Prints one line per (configuration,
round, workload) and a table of medians; copy it to benchmarks/RESULTS.md.
"""

import argparse
import os
import statistics
import subprocess
import sys

# (name, formula, aliases, reduction, K, N, M, dtype, backend)
WORKLOADS = [
    ("Gaussian sum 1e6 D=3", "Exp(-SqDist(X,Y)) * B", [3, 3, 1], "Sum", None, 10 ** 6, 10 ** 6,
     "float32", "auto"),
    ("Gaussian sum 1e3 x 1e6 D=3 (split)", "Exp(-SqDist(X,Y)) * B", [3, 3, 1], "Sum", None,
     1000, 10 ** 6, "float32", "GPU_2D"),
    ("Gaussian sum 1e5 D=3 float16", "Exp(-SqDist(X,Y)) * B", [3, 3, 1], "Sum", None,
     10 ** 5, 10 ** 5, "float16", "auto"),
    ("LogSumExp 1e6 D=3", "B - SqDist(X,Y)", [3, 3, 1], "LogSumExp", None, 10 ** 6, 10 ** 6,
     "float32", "auto"),
    ("ArgKMin K=10 1e5 D=3", "SqDist(X,Y)", [3, 3], "ArgKMin", 10, 10 ** 5, 10 ** 5,
     "float32", "auto"),
    ("Min 1e5 D=3", "SqDist(X,Y)", [3, 3], "Min", None, 10 ** 5, 10 ** 5, "float32", "auto"),
    ("Matern 5/2 sum 1e5 D=3", "(IntCst(1) + Sqrt(IntCst(5) * SqDist(X,Y)) + IntCst(5) * "
     "SqDist(X,Y) / IntCst(3)) * Exp(-Sqrt(IntCst(5) * SqDist(X,Y))) * B", [3, 3, 1], "Sum",
     None, 10 ** 5, 10 ** 5, "float32", "auto"),
    ("Gaussian conv 1e5 D=64 (chunked)", "Exp(-SqDist(X,Y)) * B", [64, 64, 1], "Sum", None,
     10 ** 5, 10 ** 5, "float32", "auto"),
    ("Gaussian sum 1e5 D=3 float64", "Exp(-SqDist(X,Y)) * B", [3, 3, 1], "Sum", None,
     10 ** 5, 10 ** 5, "float64", "auto"),
    ("k-means 1e6 x 1024 D=64 TF32 (tensor cores)", "SqDist(X,Y)", [64, 64], "ArgMin", None,
     10 ** 6, 1024, "tf32", "auto"),
    ("kNN K=10 1e5 x 1e6 D=128 float16 (tensor cores)", "SqDist(X,Y)", [128, 128], "ArgKMin",
     10, 10 ** 5, 10 ** 6, "float16", "auto"),
]


def worker(compiler, options):
    import torch

    os.environ["LAZYKEOPS_CUDA_COMPILER"] = compiler
    from lazykeops.compile import nvrtc
    from lazykeops.torch import Genred

    if options:
        nvrtc.OPTIONS = (*nvrtc.OPTIONS, *options.split())
    from gpu import timed  # benchmarks/ is on sys.path when run as a script

    g = torch.Generator(device="cuda").manual_seed(0)
    for name, formula, dims, red, k, n, m, dtype, backend in WORKLOADS:
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        torch.set_float32_matmul_precision("high" if dtype == "tf32" else "highest")
        dt = torch.float32 if dtype == "tf32" else getattr(torch, dtype)
        sizes = [n, m, m]
        args = [(torch.rand(sizes[v], d, device="cuda", generator=g) / d ** 0.5).to(dt)
                for v, d in enumerate(dims)]
        names = ["X = Vi", "Y = Vj", "B = Vj"]
        routine = Genred(formula, [f"{names[v]}({d})" for v, d in enumerate(dims)],
                         reduction_op=red, axis=1, **({"opt_arg": k} if k else {}))
        t = timed(lambda: routine(*args, backend=backend), 7)
        print(f"RESULT\t{name}\t{t * 1e3:.4f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--options", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-options", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.worker_options)
    configs = [("nvcc", ""), ("nvrtc", ""), *(("nvrtc", o) for o in args.options)]
    times = {}
    for r in range(args.rounds):
        for compiler, options in configs:
            label = f"{compiler} {options}".strip()
            proc = subprocess.run([sys.executable, __file__, f"--worker={compiler}",
                                   f"--worker-options={options}"],
                                  capture_output=True, text=True)
            if proc.returncode:
                print(f"{label} exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
            for line in proc.stdout.splitlines():
                if line.startswith("RESULT\t"):
                    _, name, ms = line.split("\t")
                    times.setdefault(name, {}).setdefault(label, []).append(float(ms))
                    print(f"{label:16s} round {r} {name:50s} {float(ms):10.3f} ms", flush=True)
    labels = [f"{c} {o}".strip() for c, o in configs]
    print("| workload | " + " | ".join(f"{lab} (ms)" for lab in labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name, *_ in WORKLOADS:
        row = times.get(name, {})
        cells = [f"{statistics.median(row[lab]):.3f}" if lab in row else "-" for lab in labels]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
