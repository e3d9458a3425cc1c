"""Ahead-of-time warm-up: build the common kernels into the cache before a user needs them
(`python -m lazykeops warmup`), so that a first call loads instead of compiling.

This module owns the list of warmed spellings (SPELLINGS), the jobs they make, the thread
pool that runs them and the progress display; building and caching stay in build.py.

What is warmed. The cache key is the generated source, and the source follows the
formula's spelling, not its meaning: `kernel_product`'s "gaussian(x,y)", the string
formula "Exp(-G*SqDist(X,Y)) * B" and the LazyTensor expression
`(-((X - Y) ** 2).sum(-1) / s).exp() @ b` are three kernels, `.sqnorm2()` instead of
`** 2).sum(-1)` a fourth, and `/ 2` (an integer, written into the formula) another than
`/ s` (a float, passed as a parameter). So each spelling below is the one a page of docs/
or a script of tutorials/ teaches, called the way it shows, with weights b of one column
(M, 1); D (the points' dim) and the dtype vary. Values never matter: floats are
parameters, and N, M are runtime sizes.

Gradients. Each differentiable spelling runs forward and backward with x (the i-indexed
points) requiring a gradient, so that the backward pass's kernel is built by the very
code that builds it in a user's call, rather than by a guess of the gradient formula.
Other gradients (with respect to y, b, gamma) are other kernels, built on first use.

Parallelism. One job per (kind, D, dtype), its spellings in turn, jobs on a thread pool:
the time goes to compiler subprocesses, which run without the GIL. Concurrent first
calls are safe: each key's build is under its file lock (cache.key_lock, which also
orders threads: each takes its own lock file descriptor), the prelude's too (pch.py), and
build.load_kernel has a per-key thread lock for the dict of loaded kernels.
"""

import os
import sys
import threading
import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor, as_completed

KINDS = ("gaussian", "laplace", "matern", "cauchy", "logsumexp", "argkmin")
APIS = ("kernel_product", "genred", "lazytensor")
DIMS = (1, 2, 3, 4)
DTYPES = ("float32", "float64")
CUDA_ONLY_DTYPES = ("float16", "bfloat16")  # the CPU computes these with float32 kernels
K = 10  # ArgKMin's K, as in the README and tutorials/knn.py
N, M = 12, 16  # tiny: only the kernels matter (M >= K)

# kernels: how many kernels one call builds (forward, plus the backward's for x);
# where: the docs or tutorials that teach it.
Spelling = namedtuple("Spelling", "kind api where kernels run")
Job = namedtuple("Job", "kind dim dtype spellings")
Failure = namedtuple("Failure", "job spelling error")
Report = namedtuple("Report", "kernels built cached seconds failures")


def _d2(t):
    return ((t.X - t.Y) ** 2).sum(-1)


def _kernel_product(name, mode="sum"):
    def run(t):
        return t.kernels.kernel_product({"id": t.kernels.Kernel(name), "gamma": t.g},
                                        t.x, t.y, t.b, mode=mode)
    return run


def _matern52_tutorial(t):  # tutorials/gp_regression.py's matern52, then K @ b
    u = (5 * _d2(t) + 1e-30).sqrt()
    return ((1 + u + u * u / 3) * (-u).exp()) @ t.b


def _geomloss_lse(t):
    # GeomLoss's online Sinkhorn (p = 2), as lazykeops serves it through install_as_pykeops
    return t.api.generic_logsumexp("( B - (P * (SqDist(X,Y) / IntCst(2)) ) )", "A = Vi(1)",
                                   f"X = Vi({t.dim})", f"Y = Vj({t.dim})", "B = Vj(1)",
                                   "P = Pm(1)")(t.x, t.y, t.h, t.g)


def _readme_gaussian(t):
    return t.api.generic_sum("Exp(-G*SqDist(X,Y)) * B", "A = Vi(1)", "G = Pm(1)",
                             f"X = Vi({t.dim})", f"Y = Vj({t.dim})", "B = Vj(1)")(
        t.g, t.x, t.y, t.b)


def _readme_knn(t):
    return t.api.Genred("SqDist(X,Y)", [f"X = Vi({t.dim})", f"Y = Vj({t.dim})"],
                        reduction_op="ArgKMin", axis=1, opt_arg=K)(t.x, t.y)


SPELLINGS = (
    Spelling("gaussian", "kernel_product", "docs/kernels.md", 2,
             _kernel_product("gaussian(x,y)")),
    Spelling("gaussian", "genred", "README, python -m lazykeops", 2, _readme_gaussian),
    Spelling("gaussian", "lazytensor", "README", 2,
             lambda t: (-_d2(t)).exp() @ t.b),
    Spelling("gaussian", "lazytensor", "a float scale s", 2,
             lambda t: (-_d2(t) / t.s).exp() @ t.b),
    Spelling("gaussian", "lazytensor", "tutorials/mmd_test.py, kernel_smoothing.py", 2,
             lambda t: (-_d2(t) * t.G).exp() @ t.b),
    Spelling("laplace", "kernel_product", "docs/kernels.md", 2,
             _kernel_product("laplacian(x,y)")),
    Spelling("laplace", "lazytensor", "a float scale s", 2,
             lambda t: (-_d2(t).sqrt() / t.s).exp() @ t.b),
    Spelling("matern", "kernel_product", "docs/kernels.md", 2,
             _kernel_product("matern32(x,y)")),
    Spelling("matern", "kernel_product", "docs/kernels.md", 2,
             _kernel_product("matern52(x,y)")),
    Spelling("matern", "lazytensor", "tutorials/gp_regression.py", 2, _matern52_tutorial),
    Spelling("cauchy", "kernel_product", "docs/kernels.md", 2,
             _kernel_product("cauchy(x,y)")),
    Spelling("cauchy", "lazytensor", "a float scale s", 2,
             lambda t: (1 / (1 + _d2(t) / t.s)) @ t.b),
    Spelling("logsumexp", "kernel_product", "docs/kernels.md (mode lse)", 2,
             _kernel_product("gaussian(x,y)", "lse")),
    Spelling("logsumexp", "genred", "GeomLoss (docs/pykeops.md)", 2, _geomloss_lse),
    Spelling("logsumexp", "lazytensor", "tutorials/optimal_transport.py", 2,
             lambda t: (t.H - _d2(t) / 2 * t.G).logsumexp(dim=1)),
    Spelling("logsumexp", "lazytensor", "tutorials/kde.py", 2,
             lambda t: (-_d2(t) * t.G).logsumexp(dim=1)),
    Spelling("argkmin", "genred", "README", 1, _readme_knn),
    Spelling("argkmin", "lazytensor", "README, tutorials/knn.py", 1,
             lambda t: _d2(t).argKmin(K, dim=1)),
)


def plan(kinds=KINDS, dims=DIMS, dtypes=DTYPES, apis=APIS):
    """The jobs, one per (kind, D, dtype) with its spellings of `apis` (none left out)."""
    jobs = []
    for kind in kinds:
        spellings = tuple(s for s in SPELLINGS if s.kind == kind and s.api in apis)
        if spellings:
            jobs += [Job(kind, dim, dtype, spellings) for dim in dims for dtype in dtypes]
    return jobs


class _Inputs:
    """The tensors and LazyTensors a spelling reads, for one job: x (N, D) requires a
    gradient; y (M, D); b, h (M, 1); g a gamma of one entry; s a float scale."""

    def __init__(self, dim, dtype, device):
        import torch

        from .. import torch as api
        from ..torch import kernels

        self.api, self.kernels, self.dim = api, kernels, dim
        gen = torch.Generator().manual_seed(dim)
        like = dict(dtype=getattr(torch, dtype))

        def rand(*shape):
            return torch.rand(*shape, generator=gen, **like).to(device)

        self.x, self.y = rand(N, dim).requires_grad_(), rand(M, dim)
        self.b, self.h, self.g, self.s = rand(M, 1), rand(M, 1), rand(1) + 1, 0.5
        self.X = api.LazyTensor(self.x[:, None, :])
        self.Y = api.LazyTensor(self.y[None, :, :])
        self.G, self.H = api.LazyTensor(self.g), api.LazyTensor(self.h[None, :, :])


def run_job(job, device, progress):
    """Call each spelling of `job` once (forward, and backward where it has a gradient);
    a spelling that fails is reported and the others still run. Returns the Failures."""
    failures = []
    for spelling in job.spellings:
        left = spelling.kernels
        try:
            out = spelling.run(_Inputs(job.dim, job.dtype, device))
            progress.advance(1)
            left -= 1
            if left:  # ArgKMin's int64 indices have no gradient
                out.sum().backward()
        except Exception as err:  # noqa: BLE001 -- reported in the summary, not fatal
            failures.append(Failure(job, spelling, f"{type(err).__name__}: {err}"))
        progress.advance(left)  # the rest, built or failed
    return failures


class Progress:
    """'[lazykeops] warm-up 17/96 kernels' on `stream`: updated in place (carriage return)
    on a terminal; elsewhere (a log, CI) one line per tenth, so that logs stay short."""

    def __init__(self, total, stream=None):
        self.total, self.done, self.tenths = total, 0, 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.lock = threading.Lock()  # advanced from the job threads

    def advance(self, kernels):
        if not kernels:
            return
        with self.lock:
            self.done += kernels
            line = f"[lazykeops] warm-up {self.done}/{self.total} kernels"
            if self.tty:
                self.stream.write("\r" + line)
            elif self.done * 10 // max(self.total, 1) > self.tenths:
                self.tenths = self.done * 10 // max(self.total, 1)
                self.stream.write(line + "\n")
            self.stream.flush()

    def close(self):
        if self.tty and self.done:
            self.stream.write("\n")
            self.stream.flush()


def warm_up(device="cpu", dtypes=DTYPES, dims=DIMS, kinds=KINDS, apis=APIS, jobs=None,
            stream=None):
    """Build the kernels of `plan(kinds, dims, dtypes, apis)` on `device` ("cpu" or
    "cuda"), `jobs` at a time (default: one per CPU core). Returns a Report: kernels
    (built + cached), built, cached (found in the cache), seconds, failures."""
    from . import build

    todo = plan(kinds, dims, dtypes, apis)
    progress = Progress(sum(s.kernels for job in todo for s in job.spellings), stream)
    builds, loads = build.stats["builds"], build.stats["loads"]
    start = time.perf_counter()
    failures = []
    pool = ThreadPoolExecutor(max_workers=max(1, min(jobs or os.cpu_count() or 1,
                                                     len(todo) or 1)))
    try:
        futures = [pool.submit(run_job, job, device, progress) for job in todo]
        for future in as_completed(futures):
            failures += future.result()
    except BaseException:  # Ctrl-C: drop the jobs not started; the running ones finish
        pool.shutdown(wait=False, cancel_futures=True)
        progress.close()
        raise
    pool.shutdown()
    progress.close()
    # The counters, not the plan, say what happened: a kernel already loaded in this
    # process counts as neither, a companion kernel (CUDA output slices) as one more.
    built = build.stats["builds"] - builds
    loaded = build.stats["loads"] - loads
    return Report(loaded, built, loaded - built, time.perf_counter() - start, failures)


def check_device(device):
    """A message saying why kernels for `device` cannot be built here, or None."""
    if device == "cpu":
        return None
    import torch

    from .nvrtc import compiler, missing_compiler

    if not torch.cuda.is_available():
        return "--device cuda: torch sees no CUDA device here"
    if compiler() is None:
        return f"--device cuda: {missing_compiler()}"
    return None


def summary(report, device):
    """The closing lines: counts, time, failures."""
    lines = [f"[lazykeops] warm-up done ({device}): {report.kernels} kernels, "
             f"{report.built} built, {report.cached} already cached, "
             f"{report.seconds:.1f} s"]
    for f in report.failures:
        lines.append(f"  failed: {f.job.kind} D={f.job.dim} {f.job.dtype}, {f.spelling.api} "
                     f"spelling ({f.spelling.where}): {_first_line(f.error)}")
    return "\n".join(lines)


def _first_line(text):
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
