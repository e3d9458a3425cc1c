"""Tensor cores (issue 16) on one CUDA device: k-means assignment, Gaussian convolution and
kNN over wide variables, lazykeops at torch's "highest" float32 setting (CUDA cores), at
"high" (TF32 tensor cores) and on float16 data, against dense torch and Flash-KMeans
(when importable) in the same run; each with its deviation from the "highest" result.

    python benchmarks/bench_tensor_cores.py [--pykeops] [--tune [CONFIG ...] [--rows R,...]] [--narrow]

Medians of a few runs after a warm-up (compile excluded). --pykeops adds pykeops 2.3's
float32 time in a child process (../shared/wheels); --tune times tile configurations
instead (the macros of csrc/lk_cuda_mma.cuh, e.g. `--tune "" LK_TC_MT=1,LK_TC_TILE=64
--rows 0,5`: the default and one other, on WORKLOADS 0 and 5), --narrow each formula with
and without tensor cores at D = 16 to 48. Prints a table for RESULTS.md.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import torch

from gpu import timed  # benchmarks/ is on sys.path when run as a script


def data(n, m, d, e=1):
    g = torch.Generator(device="cuda").manual_seed(0)
    return (torch.rand(n, d, device="cuda", generator=g) / d ** 0.5,
            torch.rand(m, d, device="cuda", generator=g) / d ** 0.5,
            torch.randn(m, e, device="cuda", generator=g))


# (name, formula, reduction, K, N, M, D)
WORKLOADS = [
    ("k-means assignment", "SqDist(X,Y)", "ArgMin", None, 1_000_000, 1024, 64),
    ("k-means assignment", "SqDist(X,Y)", "ArgMin", None, 1_000_000, 1024, 128),
    ("k-means assignment", "SqDist(X,Y)", "ArgMin", None, 1_000_000, 4096, 128),
    ("Gaussian conv", "Exp(-SqDist(X,Y)) * B", "Sum", None, 100_000, 100_000, 64),
    ("Gaussian conv", "Exp(-SqDist(X,Y)) * B", "Sum", None, 100_000, 100_000, 128),
    ("kNN K=10", "SqDist(X,Y)", "ArgKMin", 10, 100_000, 1_000_000, 128),
]


def routine_of(genred, w):
    name, formula, red, k, n, m, d = w
    aliases = [f"X = Vi({d})", f"Y = Vj({d})", "B = Vj(1)"][:3 if "B" in formula else 2]
    return genred(formula, aliases, reduction_op=red, axis=1, opt_arg=k)


def args_of(w, dtype=torch.float32):
    x, y, b = data(*w[4:])
    return [t.to(dtype) for t in (x, y, b)][:3 if "B" in w[1] else 2]


def dense(w, args):
    """Dense torch, in row chunks of at most 2^31 matrix entries."""
    name, _, red, k, n, m, d = w
    x, y = args[0], args[1]
    step = max(1, (1 << 31) // m)

    def run():
        outs = []
        for s in range(0, n, step):
            xs = x[s:s + step]
            d2 = (xs * xs).sum(1, keepdim=True) - 2 * xs @ y.T + (y * y).sum(1)
            if red == "ArgMin":
                outs.append(d2.argmin(1))
            elif red == "ArgKMin":
                outs.append(d2.topk(k, 1, largest=False).indices)
            else:
                outs.append(torch.exp(-d2) @ args[2])
        return torch.cat(outs)
    return run


def deviation(w, out, ref):
    """Sums: relative max error against `ref`; selections: share of rows that differ."""
    if w[2] == "Sum":
        return f"{((out.float() - ref).abs().max() / ref.abs().max()).item():.1e}"
    same = (out.long() == ref.long()).all(-1) if out.dim() > 1 else out.long() == ref.long()
    return f"{1 - same.float().mean().item():.1e} rows"


def pykeops_worker():
    from pykeops.torch import Genred

    for w in WORKLOADS:
        routine, args = routine_of(Genred, w), args_of(w)
        print(json.dumps([list(w), timed(lambda: routine(*args), 3)]), flush=True)


def pykeops_times():
    if importlib.util.find_spec("pykeops") is None:
        return {}
    proc = subprocess.run([sys.executable, __file__, "--pykeops-worker"], capture_output=True,
                          text=True)
    times = {}
    for line in proc.stdout.splitlines():
        try:
            w, seconds = json.loads(line)
            times[tuple(w)] = seconds
        except ValueError:
            continue
    return times


def flash_kmeans(w, dtype):
    if w[0] != "k-means assignment" or importlib.util.find_spec("flash_kmeans") is None:
        return None
    from flash_kmeans.assign_euclid_triton import euclid_assign_triton

    x, c = (t.to(dtype).unsqueeze(0) for t in args_of(w)[:2])
    x_sq = (x.float() ** 2).sum(-1)
    return timed(lambda: euclid_assign_triton(x, c, x_sq), 5)


# Configurations tried by a bare --tune (macros of csrc/lk_cuda_mma.cuh; {}: the default).
CONFIGS = [{}, {"LK_TC_MT": 1}, {"LK_TC_TILE": 64}, {"LK_TC_MIN_BLOCKS": 1}, {"LK_TC_WARPS": 4}]


def tune(configs, rows):
    """Each workload of `rows` (indices into WORKLOADS) under each configuration."""
    from lazykeops import LazyKeOpsError
    from lazykeops.compile import codegen
    from lazykeops.torch import Genred

    torch.set_float32_matmul_precision("high")
    names = [" ".join(f"{k[6:]}={v}" for k, v in c.items()) or "default" for c in configs]
    print("| workload | D | dtype | " + " | ".join(names) + " |\n|---|---|---|" +
          "---|" * len(configs))
    for w in (WORKLOADS[r] for r in rows):
        for dtype in (torch.float32, torch.float16):
            cells = []
            for config in configs:
                codegen.CUDA_TUNING.clear()
                codegen.CUDA_TUNING.update(config)
                routine, args = routine_of(Genred, w), args_of(w, dtype)
                try:
                    cells.append(f"{timed(lambda: routine(*args), 5) * 1e3:.3g}")
                except LazyKeOpsError:  # past the shared memory of a block
                    cells.append("-")
            print(f"| {w[0]} | {w[6]} | {str(dtype)[6:]} | " + " | ".join(cells) + " |",
                  flush=True)
    codegen.CUDA_TUNING.clear()


def narrow():
    """Narrow variables: each formula without and with its tensor-core plan (TF32 for
    float32 data), at D = 16, 32, 48: where the plan starts to pay (MIN_WIDTH)."""
    import lazykeops.compile.tensor_cores as tc
    from lazykeops.torch import Genred

    print("| D | workload | dtype | CUDA cores ms | tensor cores ms |\n|---|---|---|---|---|")
    for d in (16, 32, 48):
        for w in (("k-means", "SqDist(X,Y)", "ArgMin", None, 1_000_000, 1024, d),
                  ("Gaussian conv", "Exp(-SqDist(X,Y)) * B", "Sum", None, 100_000, 100_000, d)):
            for dtype in (torch.float32, torch.float16):
                args, cells = args_of(w, dtype), []
                for precision, min_width in (("highest", 1 << 30), ("high", d)):
                    torch.set_float32_matmul_precision(precision)
                    tc.MIN_WIDTH = min_width
                    routine = routine_of(Genred, w)
                    routine.core._kernels.clear()  # float16: the same key with and without
                    cells.append(timed(lambda: routine(*args), 5) * 1e3)
                print(f"| {d} | {w[0]} | {str(dtype)[6:]} | {cells[0]:.3g} | {cells[1]:.3g} |",
                      flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pykeops", action="store_true")
    parser.add_argument("--tune", nargs="*", metavar="MACRO=V,...",
                        help="time tile configurations (default: CONFIGS)")
    parser.add_argument("--rows", default="0,1,3", help="--tune's workloads (WORKLOADS indices)")
    parser.add_argument("--narrow", action="store_true", help="D = 16..48, with and without")
    parser.add_argument("--pykeops-worker", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.pykeops_worker:
        return pykeops_worker()
    os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")
    os.environ.setdefault("LAZYKEOPS_CACHE_DIR", tempfile.mkdtemp(prefix="lk-tc-bench-"))
    if opts.tune is not None:
        configs = [dict((kv.split("=")[0], int(kv.split("=")[1])) for kv in c.split(",") if kv)
                   for c in opts.tune] or CONFIGS
        return tune(configs, [int(r) for r in opts.rows.split(",")])
    if opts.narrow:
        return narrow()
    from lazykeops.torch import Genred

    rows = []
    for w in WORKLOADS:
        routine, args = routine_of(Genred, w), args_of(w)
        cells = {}
        torch.set_float32_matmul_precision("highest")
        ref = routine(*args)
        cells["highest"] = timed(lambda: routine(*args), 3)
        torch.set_float32_matmul_precision("high")
        out = routine(*args)
        cells["tf32"] = timed(lambda: routine(*args), 5)
        cells["tf32 dev"] = deviation(w, out, ref)
        half = args_of(w, torch.float16)
        out = routine(*half)
        cells["f16"] = timed(lambda: routine(*half), 5)
        cells["f16 dev"] = deviation(w, out, ref)
        cells["dense tf32"] = timed(dense(w, args), 3)
        torch.set_float32_matmul_precision("highest")
        cells["flash f32"] = flash_kmeans(w, torch.float32)
        cells["flash f16"] = flash_kmeans(w, torch.float16)
        rows.append((w, cells))
        print(w, cells, flush=True)
    pk = pykeops_times() if opts.pykeops else {}

    def ms(v):
        return f"{v * 1e3:.3g}" if isinstance(v, float) else (v or "")
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print("| workload | N | M | D | highest ms | TF32 ms (dev.) | f16 ms (dev.) | dense TF32 ms"
          " | Flash-KMeans f32 / f16 ms | pykeops ms |\n|---|---|---|---|---|---|---|---|---|---|")
    for w, c in rows:
        print(f"| {w[0]} | {w[4]:.0e} | {w[5]} | {w[6]} | {ms(c['highest'])} | {ms(c['tf32'])}"
              f" ({c['tf32 dev']}) | {ms(c['f16'])} ({c['f16 dev']}) | {ms(c['dense tf32'])} | "
              f"{ms(c['flash f32'])} / {ms(c['flash f16'])} | {ms(pk.get(tuple(w)))} |")


if __name__ == "__main__":
    main()
