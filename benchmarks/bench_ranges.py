"""Block-sparse reductions (ranges=): lazykeops against pykeops 2.3 on the same ranges, and
against the same reductions without ranges, on the GPU (default) or the CPU.

    python benchmarks/bench_ranges.py [--device cpu] [--quick] [--no-pykeops]
        [--pykeops-python /path/to/python] [--dense-repeats R] [--online | --no-online]
        [--no-geomloss]

Workloads (float32): a truncated Gaussian conv, a LogSumExp and an ArgKMin (K = 10) on
3-D points clustered on a grid (lazykeops.torch.cluster: grid_cluster, sort_clusters,
cluster_ranges_centroids, from_matrix), keeping the cluster pairs whose centroids are
closer than a radius; a band-diagonal kernel on sorted 1-D points (clusters of 256
consecutive points, each meeting itself and its two neighbours: the mask pykeops's
users found slower than dense torch); GeomLoss's multiscale Sinkhorn (its ranges come
from GeomLoss itself, and its online mode, over every pair, gives the value it
approximates). Each library runs in its own child process, on the ranges the
parent saved (pykeops's with --pykeops-python, e.g. a virtualenv that has it); each time
is the median of 5 calls after a warm-up (compiles excluded), with a checksum of the
output so that the two can be compared (dense: the median of --dense-repeats calls, for the
CPU's long dense runs). N = M = 1e6 on the GPU (1e5 with --quick), 1e5 on the CPU (2e4
with --quick). GeomLoss's online value: by default on the GPU only (on the CPU machine it
takes minutes at 2e4 points).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

WORKLOADS = ("Gaussian conv", "LogSumExp", "ArgKMin K=10", "band-diagonal Gaussian")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats=5):
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def make_inputs(n, path, device):
    """Points, weights and ranges for every workload, saved for the children."""
    from lazykeops.torch.cluster import (cluster_ranges_centroids, from_matrix, grid_cluster,
                                         sort_clusters)

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 3, generator=g).to(device), torch.rand(n, 3, generator=g).to(device)
    b = torch.rand(n, 1, generator=g).to(device)
    voxel = 0.05 if n >= 10 ** 6 else 0.1 if n >= 10 ** 5 else 0.2
    x_lab, y_lab = grid_cluster(x, voxel), grid_cluster(y, voxel)
    x_ranges, x_c, _ = cluster_ranges_centroids(x, x_lab)
    y_ranges, y_c, _ = cluster_ranges_centroids(y, y_lab)
    x, x_lab = sort_clusters(x, x_lab)
    (y, b), y_lab = sort_clusters((y, b), y_lab)
    keep = ((x_c[:, None] - y_c[None]) ** 2).sum(-1) < (2 * voxel) ** 2
    ranges = from_matrix(x_ranges, y_ranges, keep)
    t = torch.sort(torch.rand(n, 1, generator=g), dim=0).values.to(device)
    width = 256
    nb = (n + width - 1) // width
    bounds = (torch.arange(nb + 1) * width).clamp(max=n)
    cl = torch.stack([bounds[:-1], bounds[1:]], 1).to(device)
    band = (torch.arange(nb)[:, None] - torch.arange(nb)[None]).abs() <= 1
    band_ranges = from_matrix(cl, cl, band.to(device))
    torch.save({"x": x, "y": y, "b": b, "ranges": ranges, "t": t, "band": band_ranges,
                "kept": float(keep.float().mean()), "band_kept": float(band.float().mean())},
               path)


def worker(library, path, online, sparse_config=None, dense=True, dense_repeats=5,
           geomloss=True):
    """Child process: time each workload with `library`, one JSON line each.
    `sparse_config`: "BLOCK,RPT" of lazykeops's block-sparse kernels (compile/codegen.py:
    SPARSE_CUDA_CONFIG), to compare launch configurations."""
    if library == "lazykeops":
        from lazykeops.compile import codegen
        from lazykeops.torch import Genred

        if sparse_config:
            block, rpt = sparse_config.split(",")
            codegen.SPARSE_CUDA_CONFIG = {"LK_CUDA_BLOCK": int(block), "LK_CUDA_RPT": int(rpt)}
    else:
        from pykeops.torch import Genred
    data = torch.load(path)
    x, y, b, t = data["x"], data["y"], data["b"], data["t"]
    int_type = torch.int64 if library == "lazykeops" else torch.int32
    ranges = tuple(r.to(int_type) for r in data["ranges"])
    band = tuple(r.to(int_type) for r in data["band"])
    g = torch.tensor([40.0], device=x.device)
    conv = Genred("Exp(-G*SqDist(X,Y)) * B", ["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)",
                                               "B = Vj(1)"], reduction_op="Sum", axis=1)
    lse = Genred("-G*SqDist(X,Y)", ["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)"],
                 reduction_op="LogSumExp", axis=1)
    knn = Genred("SqDist(X,Y)", ["X = Vi(3)", "Y = Vj(3)"], reduction_op="ArgKMin",
                 axis=1, opt_arg=10)
    band_conv = Genred("Exp(-G*SqDist(X,Y)) * B", ["G = Pm(1)", "X = Vi(1)", "Y = Vj(1)",
                                                    "B = Vj(1)"], reduction_op="Sum", axis=1)
    calls = {"Gaussian conv": lambda r: conv(g, x, y, b, ranges=r),
             "LogSumExp": lambda r: lse(g, x, y, ranges=r),
             "ArgKMin K=10": lambda r: knn(x, y, ranges=r).float(),
             "band-diagonal Gaussian": lambda r: band_conv(g * 1e4, t, t, b, ranges=r)}
    for name in WORKLOADS:
        r = band if name.startswith("band") else ranges
        sparse, out = timed(lambda: calls[name](r))
        finite = out[torch.isfinite(out) & (out >= 0 if name.startswith("Arg") else True)]
        dense_time = timed(lambda: calls[name](None), dense_repeats)[0] if dense else None
        print(json.dumps({"name": name, "sparse": sparse, "dense": dense_time,
                          "checksum": float(finite.double().sum())}), flush=True)
    if geomloss:
        geomloss_worker(library, x, y, online)


def geomloss_worker(library, x, y, online):
    if library == "lazykeops":
        import lazykeops

        lazykeops.install_as_pykeops()
    try:
        import geomloss
    except ImportError as err:
        print(f"no GeomLoss: {err}", file=sys.stderr)
        return
    loss = geomloss.SamplesLoss("sinkhorn", blur=0.01, scaling=0.5, backend="multiscale")
    seconds, value = timed(lambda: loss(x, y), repeats=3)
    # The same loss over every pair (GeomLoss's online mode), once: the value the multiscale
    # mode approximates.
    if online:
        online = float(geomloss.SamplesLoss("sinkhorn", blur=0.01, scaling=0.5,
                                            backend="online")(x, y))
    torch.set_grad_enabled(True)
    print(json.dumps({"name": "GeomLoss multiscale Sinkhorn", "sparse": seconds, "dense": None,
                      "checksum": float(value), "online": online or None}), flush=True)


def run_child(library, path, online, sparse_config=None, dense=True, python=sys.executable,
              dense_repeats=5, geomloss=True):
    cmd = [python, __file__, "--worker", library, "--data", path,
           "--dense-repeats", str(dense_repeats), "--online" if online else "--no-online"] + \
        ([] if geomloss else ["--no-geomloss"]) + \
        (["--sparse-config", sparse_config] if sparse_config else []) + \
        ([] if dense else ["--no-dense"])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            results[entry["name"]] = entry
    if proc.returncode or "no GeomLoss" in proc.stderr:
        print(f"{library}'s process exited with code {proc.returncode}:\n{proc.stderr[-2000:]}")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-pykeops", action="store_true")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--pykeops-python", default=sys.executable)
    parser.add_argument("--worker", choices=["lazykeops", "pykeops"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--sparse-configs", nargs="*", default=[None],
                        help="lazykeops block-sparse launch configurations to compare, as "
                             "BLOCK,RPT (default: the library's)")
    parser.add_argument("--sparse-config", help=argparse.SUPPRESS)
    parser.add_argument("--no-dense", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dense-repeats", type=int, default=5)
    parser.add_argument("--no-geomloss", action="store_true",
                        help="leave GeomLoss out (at 1e5 on the CPU machine: tens of minutes)")
    parser.add_argument("--online", action=argparse.BooleanOptionalAction, default=None,
                        help="also GeomLoss's online value (default: on the GPU)")
    args = parser.parse_args()
    online = args.online if args.online is not None else args.device == "cuda"
    if args.worker:
        return worker(args.worker, args.data, online, args.sparse_config, not args.no_dense,
                      args.dense_repeats, not args.no_geomloss)
    n = (10 ** 5 if args.quick else 10 ** 6) if args.device == "cuda" else \
        (2 * 10 ** 4 if args.quick else 10 ** 5)
    path = os.path.join(tempfile.mkdtemp(prefix="lk-ranges-"), "inputs.pt")
    make_inputs(n, path, args.device)
    data = torch.load(path)
    theirs = {} if args.no_pykeops else run_child("pykeops", path, online,
                                                    python=args.pykeops_python,
                                                    dense_repeats=args.dense_repeats,
                                                    geomloss=not args.no_geomloss)
    for k, config in enumerate(args.sparse_configs):  # dense times once
        ours = run_child("lazykeops", path, online, config, dense=k == 0,
                         dense_repeats=args.dense_repeats, geomloss=not args.no_geomloss)
        print_table(ours, theirs, n, data, config)


def print_table(ours, theirs, n, data, config):
    where = torch.cuda.get_device_name() if data["x"].is_cuda else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"{where}, N = M = {n:,}, float32; cluster pairs kept: "
          f"{data['kept']:.2%} (3-D grid), {data['band_kept']:.2%} (band); lazykeops "
          f"block-sparse kernels: {config or 'default'} (BLOCK,RPT)")
    print("| workload | lazykeops ranges | lazykeops dense | pykeops ranges | pykeops dense "
          "| pykeops / lazykeops (ranges) | checksums (lazykeops, pykeops) |")
    print("|---|---|---|---|---|---|---|")
    ms = lambda s: f"{s * 1e3:.2f} ms" if s is not None else "-"  # noqa: E731
    for name in (*WORKLOADS, "GeomLoss multiscale Sinkhorn"):
        a, p = ours.get(name), theirs.get(name)
        if a is None:
            continue
        ratio = f"{p['sparse'] / a['sparse']:.2f}" if p else "-"
        print(f"| {name} | {ms(a['sparse'])} | {ms(a['dense'])} | "
              f"{ms(p['sparse']) if p else '-'} | {ms(p['dense']) if p else '-'} | {ratio} | "
              f"{a['checksum']:.6g}, {p['checksum'] if p else float('nan'):.6g} |")
    for library, results in (("lazykeops", ours), ("pykeops", theirs)):
        entry = results.get("GeomLoss multiscale Sinkhorn")
        if entry and entry["online"] is not None:
            print(f"GeomLoss on {library}: multiscale {entry['checksum']:.8g}, online "
                  f"{entry['online']:.8g}, difference {entry['checksum'] - entry['online']:.3g}")


if __name__ == "__main__":
    main()
