"""`python -m lazykeops`: a self-check of the whole pipeline on this machine, and the
cache's commands.

Without a command (`main`): compiles (or loads from the cache) one Gaussian kernel sum,
runs it on 100,000 points in 3D, checks a sample of rows against dense torch in float64,
and prints the timings, the engine and the cache directory; then the same on the GPU where
torch sees one and a CUDA compiler (NVRTC or nvcc) is found (1,000,000 points). Exits with
status 1 if a check fails.

`python -m lazykeops warmup [--device cpu|cuda] [--dtypes ...] [--dims ...] [--kinds ...]
[--apis ...] [--jobs N]` builds the common kernels into the cache ahead of time
(compile/warmup.py); `python -m lazykeops cache [--prune-older-than DAYS | --clear]` lists
the cache, or prunes or empties it (compile/cache_admin.py). Arguments are checked before
torch is imported; a bad one exits with status 2 and a message, as argparse does.
"""

import argparse
import os
import sys
import time


def check(device, n, sample=200):
    """Run and check the Gaussian kernel sum on `device`; True if it matches dense torch."""
    import torch

    from .torch import generic_sum

    g = torch.Generator(device=device).manual_seed(0)
    x, y = torch.rand(n, 3, device=device, generator=g), torch.rand(n, 3, device=device, generator=g)
    b = torch.randn(n, 1, device=device, generator=g)
    gamma = torch.tensor([10.0], device=device)

    start = time.perf_counter()
    conv = generic_sum("Exp(-G * SqDist(X, Y)) * B", "A = Vi(1)",
                       "G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "B = Vj(1)")
    conv(gamma, x[:10], y[:10], b[:10])  # compile or load now, so that the timing is the run
    ready = time.perf_counter() - start

    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    sync()
    start = time.perf_counter()
    a = conv(gamma, x, y, b)
    sync()
    elapsed = time.perf_counter() - start

    rows = torch.randperm(n, device=device)[:sample]
    dense = torch.exp(-gamma.double() * torch.cdist(x[rows].double(), y.double()) ** 2) @ b.double()
    err = ((a[rows].double() - dense).abs().max() / dense.abs().max()).item()

    engine = f"CPU engine (OpenMP, {torch.get_num_threads()} threads)" if device == "cpu" \
        else f"CUDA engine ({torch.cuda.get_device_name(device)})"
    print(f"lazykeops self-check: Gaussian kernel sum, N = M = {n:,}, D = 3, float32")
    print(f"  engine        : {engine}")
    print(f"  kernel ready  : {ready:.2f} s (compile or cache load)")
    print(f"  run           : {elapsed:.3f} s ({n * n / elapsed / 1e9:.2f} Gpair/s)")
    print(f"  check         : {sample} rows vs dense torch float64, max rel. error {err:.1e}")
    ok = err < 1e-4
    print("  result        :", "OK" if ok else "FAILED")
    return ok


def main():
    import torch

    from .compile.cache import cache_dir
    from .compile.nvrtc import compiler

    ok = check("cpu", 100_000)
    if torch.cuda.is_available() and compiler() is not None:
        ok = check("cuda", 1_000_000) and ok
    print(f"cache: {cache_dir()}")
    return 0 if ok else 1


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _days(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number of days >= 0, got {text!r}")
    return value


def parser():
    from .compile import warmup

    top = argparse.ArgumentParser(
        prog="python -m lazykeops",
        description="Without a command: the self-check (compile, run and check a Gaussian "
                    "kernel sum on the CPU, and on the GPU where there is one).")
    commands = top.add_subparsers(dest="command", metavar="{warmup,cache}")
    warm = commands.add_parser(
        "warmup", help="build the common kernels into the cache ahead of time",
        description="Build the common kernels (and their gradients with respect to x) into "
                    "the cache, in parallel; see docs/kernels.md.")
    warm.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    warm.add_argument("--dtypes", nargs="+", metavar="DTYPE",
                      choices=warmup.DTYPES + warmup.CUDA_ONLY_DTYPES,
                      default=list(warmup.DTYPES),
                      help="of " + ", ".join(warmup.DTYPES + warmup.CUDA_ONLY_DTYPES) +
                           " (half precisions on cuda only); default: %(default)s")
    warm.add_argument("--dims", nargs="+", type=_positive_int, metavar="D",
                      default=list(warmup.DIMS), help="dims of the points; default: "
                                                      "%(default)s")
    warm.add_argument("--kinds", nargs="+", metavar="KIND", choices=warmup.KINDS,
                      default=list(warmup.KINDS),
                      help="of " + ", ".join(warmup.KINDS) + "; default: all")
    warm.add_argument("--apis", nargs="+", metavar="API", choices=warmup.APIS,
                      default=list(warmup.APIS),
                      help="the spellings to warm, of " + ", ".join(warmup.APIS) +
                           "; default: all")
    warm.add_argument("--jobs", type=_positive_int, metavar="N", default=None,
                      help="kernels built at once; default: the number of CPU cores "
                           f"({os.cpu_count()})")
    cache = commands.add_parser(
        "cache", help="list the kernel cache, or prune or empty it",
        description="List the kernel cache (kernels, precompiled preludes, failed sources).")
    what = cache.add_mutually_exclusive_group()
    what.add_argument("--prune-older-than", type=_days, metavar="DAYS",
                      help="remove the kernels not used for DAYS days")
    what.add_argument("--clear", action="store_true", help="remove everything")
    return top


def _unique(values):
    return list(dict.fromkeys(values))  # `--dims 3 3` warms D = 3 once


def _warmup(args, top):
    from .compile import warmup
    from .compile.cache import cache_dir

    half = [d for d in args.dtypes if d in warmup.CUDA_ONLY_DTYPES]
    if args.device == "cpu" and half:
        top.error(f"--dtypes {' '.join(half)}: the CPU computes half precisions with its "
                  "float32 kernels; warm float32 instead")
    problem = warmup.check_device(args.device)
    if problem:
        print(f"lazykeops: error: {problem}", file=sys.stderr)
        return 1
    os.environ["LAZYKEOPS_VERBOSE"] = "0"  # no "compiling ..." lines under the progress line
    root = cache_dir()
    report = warmup.warm_up(args.device, _unique(args.dtypes), _unique(args.dims),
                            _unique(args.kinds), _unique(args.apis), args.jobs)
    print(warmup.summary(report, args.device))
    print(f"cache: {root}")
    return 1 if report.failures else 0


def _cache(args):
    from .compile import cache_admin
    from .compile.cache import cache_dir

    root = cache_dir()
    if args.clear:
        entries, size = cache_admin.clear(root)
        print(f"removed everything in {root}: {entries} kernel entries, "
              f"{cache_admin.human_size(size)}")
    elif args.prune_older_than is not None:
        kernels, preludes = cache_admin.prune(root, args.prune_older_than)
        for (removed, freed, kept), what in ((kernels, "kernel entries"),
                                             (preludes, "precompiled preludes")):
            print(f"removed {removed} {what} not used for {args.prune_older_than:g} days "
                  f"({cache_admin.human_size(freed)}); kept {kept}")
    else:
        print(cache_admin.describe(root))
    return 0


def cli(argv=None):
    """`python -m lazykeops [warmup|cache] ...`; the exit status. (`main` stays the
    self-check alone: pykeops's check_health calls it, whatever the process's argv.)"""
    from .errors import LazyKeOpsError

    top = parser()
    args = top.parse_args(argv)
    try:
        if args.command == "warmup":
            return _warmup(args, top)
        if args.command == "cache":
            return _cache(args)
    except LazyKeOpsError as err:  # an unusable cache directory, named with the fix
        print(f"lazykeops: error: {err}", file=sys.stderr)
        return 1
    return main()


if __name__ == "__main__":
    sys.exit(cli())
