"""Issue 16's side-by-side rows on one CUDA device: lazykeops against the tensor-core
libraries that do part of its job, each library in a child process of its own (one
process cannot import every library's Triton caches and settings fairly), on the same data.

    python benchmarks/peers.py [--rows kmeans,sinkhorn] [--repeats 5]

Rows:
- k-means assignment argmin_j |x_i - c_j|^2, N = 1e6, K in {1024, 4096}, D in {64, 128}:
  lazykeops ArgMin at TF32 (torch's "high") and on float16 data; Flash-KMeans
  (`flash_kmeans.assign_euclid_triton.euclid_assign_triton`, PyPI flash-kmeans) on the
  same float32 and float16 data.
- Sinkhorn, N = M = 1e5, D in {3, 64}, forward and forward + backward (gradient in x):
  GeomLoss's SamplesLoss("sinkhorn", p=2, blur=0.05, scaling=0.5, debias=False,
  backend="online") on lazykeops (lazykeops.install_as_pykeops), at TF32 and at
  "highest"; FlashSinkhorn's SamplesLoss("sinkhorn") with its defaults (blur 0.05,
  scaling 0.5, no debiasing, TF32; PyPI flash-sinkhorn). GeomLoss's cost is |x - y|^2 / 2,
  FlashSinkhorn's |x - y|^2: the same number of iterations, not the same values.

Medians of `repeats` runs after a warm-up (compile and autotuning excluded). A library
that is not importable leaves its cells empty. Prints one table for RESULTS.md.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

KMEANS = [(1_000_000, k, d) for k, d in ((1024, 64), (1024, 128), (4096, 128))]
SINKHORN = [(100_000, d) for d in (3, 64)]
LIBRARIES = ("lazykeops", "flash-kmeans", "flash-sinkhorn")


def points(torch, n, d, seed, dtype):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.rand(n, d, device="cuda", generator=g) / d ** 0.5).to(dtype)


def kmeans_rows(torch, library, repeats):
    from gpu import timed  # benchmarks/ is on sys.path when run as a script

    if library == "lazykeops":
        from lazykeops.torch import Genred
    elif library == "flash-kmeans":
        from flash_kmeans.assign_euclid_triton import euclid_assign_triton
    else:
        return
    for n, k, d in KMEANS:
        for dtype in (torch.float32, torch.float16):
            x, c = points(torch, n, d, 0, dtype), points(torch, k, d, 1, dtype)
            if library == "lazykeops":
                torch.set_float32_matmul_precision("high")
                assign = Genred("SqDist(X,Y)", [f"X = Vi({d})", f"Y = Vj({d})"],
                                reduction_op="ArgMin", axis=1)
                seconds = timed(lambda: assign(x, c), repeats)
            else:
                xb, cb = x.unsqueeze(0), c.unsqueeze(0)
                x_sq = (xb.float() ** 2).sum(-1)
                seconds = timed(lambda: euclid_assign_triton(xb, cb, x_sq), repeats)
            yield ["k-means assignment", n, k, d, str(dtype)[6:], "", seconds]


def sinkhorn_rows(torch, library, repeats):
    from gpu import timed

    if library == "lazykeops":
        import lazykeops
        lazykeops.install_as_pykeops()
        from geomloss import SamplesLoss
        settings = (("high", "tf32"), ("highest", "highest"))
        make = lambda: SamplesLoss("sinkhorn", p=2, blur=0.05, scaling=0.5, debias=False,
                                   backend="online")
    elif library == "flash-sinkhorn":
        from flash_sinkhorn import SamplesLoss
        settings = (("high", "tf32"),)
        make = lambda: SamplesLoss("sinkhorn")
    else:
        return
    for n, d in SINKHORN:
        for precision, label in settings:
            torch.set_float32_matmul_precision(precision)
            loss = make()
            x, y = points(torch, n, d, 0, torch.float32), points(torch, n, d, 1, torch.float32)
            yield ["Sinkhorn forward", n, n, d, label, "", timed(lambda: loss(x, y), repeats)]
            xg = x.clone().requires_grad_(True)

            def forward_backward():
                (grad,) = torch.autograd.grad(loss(xg, y), (xg,))
                return grad
            yield ["Sinkhorn forward + backward", n, n, d, label, "",
                   timed(forward_backward, repeats)]


def worker(library, rows, repeats):
    """Child process: one JSON line per row this library runs."""
    import torch

    os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")
    for make in (kmeans_rows if "kmeans" in rows else None,
                 sinkhorn_rows if "sinkhorn" in rows else None):
        if make is None:
            continue
        try:
            for row in make(torch, library, repeats):
                print(json.dumps(row), flush=True)
        except ImportError as err:
            print(json.dumps(["skipped", str(err)]), flush=True)


def run(library, rows, repeats):
    """{(workload, n, m, d, setting): seconds} of one library's child, and its stderr tail
    when it failed."""
    env = dict(os.environ)
    env.setdefault("LAZYKEOPS_CACHE_DIR", tempfile.mkdtemp(prefix="lk-peers-"))
    proc = subprocess.run([sys.executable, __file__, "--worker", library, "--rows", rows,
                           "--repeats", str(repeats)], capture_output=True, text=True, env=env)
    times = {}
    for line in proc.stdout.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if len(row) == 7:
            times[tuple(row[:5])] = row[6]
    return times, (None if proc.returncode == 0 else proc.stderr[-2000:])


def main(argv=None):
    """The table; `argv`: the options (sys.argv's by default; benchmarks/gpu.py --peers
    passes none)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="kmeans,sinkhorn")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.worker:
        return worker(opts.worker, opts.rows, opts.repeats)
    results = {}
    for library in LIBRARIES:
        results[library], failure = run(library, opts.rows, opts.repeats)
        if failure:
            print(f"{library}'s process failed:\n{failure}", file=sys.stderr)
    import torch

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| workload | N | M (K) | D | setting | lazykeops ms | Flash-KMeans ms | "
          "FlashSinkhorn ms |\n|---|---|---|---|---|---|---|---|")
    # In the order the rows ran (lazykeops's first), not sorted as text.
    keys = list(dict.fromkeys(k for lib in LIBRARIES for k in results[lib]))
    for key in keys:
        cells = [results[lib].get(key) for lib in LIBRARIES]
        text = [f"{c * 1e3:.3g}" if c is not None else "" for c in cells]
        print(f"| {' | '.join(map(str, key))} | " + " | ".join(text) + " |")


if __name__ == "__main__":
    main()
