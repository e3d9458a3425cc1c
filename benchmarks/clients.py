"""pykeops-based libraries on lazykeops (through install_as_pykeops) and on the real pykeops:
GeomLoss (Sinkhorn online p=2, a Gaussian kernel loss, forward + backward) and GPyTorch
(KeOps RBF and Matern 5/2 K @ v, an exact GP's marginal log likelihood, forward + backward).

Each library runs in its own child process (one cannot import both as `pykeops`); the
pykeops child may use another Python (`--pykeops-python`, e.g. a virtualenv that has
pykeops) or a PYTHONPATH entry where pykeops's wheels are unpacked (`--pykeops-path`).
A row's "first" is its first call (compiles or loads its kernels); "median" is the
median of `--repeats` calls after a warm-up. The ratio is pykeops's median over
lazykeops's: above 1, lazykeops is faster.

    python benchmarks/clients.py [--device cuda] [--scale 1.0] [--repeats 5]
        [--pykeops-python /path/to/python] [--pykeops-path DIR]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# N on the CPU; CUDA runs take 10x more points (--scale multiplies both).
SIZES = {"sinkhorn": 2_000, "multiscale": 20_000, "gaussian": 4_000, "rbf": 4_000,
         "matern": 4_000, "gp": 2_000}
# (the exact GP needs N >= 800 to run on KeOps: keep --scale >= 0.4 on the CPU)
GPU_FACTOR = 10


def timed(fn, repeats, sync):
    """(first call, median of `repeats` calls after one warm-up), in seconds."""
    def once():
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    first = once()
    once()
    return first, statistics.median(once() for _ in range(repeats))


def geomloss_workloads(torch, device, n):
    from geomloss import SamplesLoss

    g = torch.Generator(device="cpu").manual_seed(0)

    def loss_backward(name, size, backend="online", points=torch.randn, **options):
        x = points(size, 3, generator=g).to(device).requires_grad_()
        y = (points(size, 3, generator=g) + 0.5).to(device)
        loss = SamplesLoss(name, backend=backend, **options)
        return lambda: torch.autograd.grad(loss(x, y), [x])

    return {
        f"GeomLoss Sinkhorn p=2 online, N=M={n['sinkhorn']:,}, fwd+bwd":
            loss_backward("sinkhorn", n["sinkhorn"], p=2, blur=0.05, scaling=0.7),
        f"GeomLoss gaussian kernel loss, N=M={n['gaussian']:,}, fwd+bwd":
            loss_backward("gaussian", n["gaussian"], blur=0.5),
        # Block-sparse ranges= on GeomLoss's own clusters (uniform points in a cube).
        f"GeomLoss Sinkhorn p=2 multiscale, N=M={n['multiscale']:,}, fwd+bwd":
            loss_backward("sinkhorn", n["multiscale"], backend="multiscale", points=torch.rand,
                          p=2, blur=0.01, scaling=0.5),
    }


def gpytorch_workloads(torch, device, n):
    import gpytorch
    from gpytorch.kernels import keops

    g = torch.Generator(device="cpu").manual_seed(0)

    def matmul(kernel, size):
        x = torch.rand(size, 3, generator=g).to(device)
        v = torch.randn(size, 4, generator=g).to(device)
        kernel = kernel.to(device)

        def run():
            with torch.no_grad(), gpytorch.settings.max_cholesky_size(0):
                return kernel(x) @ v
        return run

    class GP(gpytorch.models.ExactGP):
        def __init__(self, x, y):
            super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
            self.mean = gpytorch.means.ConstantMean()
            self.covar = gpytorch.kernels.ScaleKernel(keops.MaternKernel(nu=2.5))

        def forward(self, t):
            return gpytorch.distributions.MultivariateNormal(self.mean(t), self.covar(t))

    x = torch.rand(n["gp"], 2, generator=g)
    y = torch.sin(6 * x[:, 0]) + 0.1 * torch.randn(n["gp"], generator=g)
    x, y = x.to(device), y.to(device)
    model = GP(x, y).to(device)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)

    def mll_backward():
        torch.manual_seed(0)  # the same CG probe vectors on every call and both sides
        # N >= max_cholesky_size (800): KeOps and CG. Not max_cholesky_size(0): GPyTorch
        # would then hand its diagonal (1 x 1 kernels) to KeOps too, and fail to densify it.
        with gpytorch.settings.max_cg_iterations(50):
            torch.autograd.grad(-mll(model(x), y), list(model.parameters()))

    return {
        f"GPyTorch KeOps RBF K @ v, N={n['rbf']:,}, v (N, 4)": matmul(keops.RBFKernel(), n["rbf"]),
        f"GPyTorch KeOps Matern 5/2 K @ v, N={n['matern']:,}, v (N, 4)":
            matmul(keops.MaternKernel(nu=2.5), n["matern"]),
        f"GPyTorch exact GP MLL (Matern 5/2, CG), N={n['gp']:,}, fwd+bwd": mll_backward,
    }


def child(library, device, scale, repeats):
    """Run every workload on `library`; print {row: [first, median]} as JSON."""
    os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")
    os.environ.setdefault("PYKEOPS_VERBOSE", "0")
    if library == "lazykeops":
        import lazykeops
        lazykeops.install_as_pykeops()
    import pykeops
    import torch

    served_by_lazykeops = hasattr(pykeops, "lazykeops_version")
    assert served_by_lazykeops == (library == "lazykeops"), f"pykeops is {pykeops.__file__}"
    factor = scale * (GPU_FACTOR if device == "cuda" else 1)
    n = {k: max(int(v * factor), 1) for k, v in SIZES.items()}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = {}
    for make in (geomloss_workloads, gpytorch_workloads):
        for name, fn in make(torch, device, n).items():
            try:
                rows[name] = timed(fn, repeats, sync)
            except Exception as err:  # one broken row must not hide the others
                rows[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
    origin = (f"lazykeops {pykeops.lazykeops_version}" if served_by_lazykeops
              else pykeops.__file__)
    info = (f"pykeops {pykeops.__version__} ({origin}), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")
    print("RESULT " + json.dumps({"rows": rows, "info": info}))


def run_child(python, library, args, extra_path=None):
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, env.get("PYTHONPATH")]))
    cmd = [python, os.path.abspath(__file__), "--child", library, "--device", args.device,
           "--scale", str(args.scale), "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/tmp")
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise SystemExit(f"{library} child failed ({out.returncode}):\n{out.stderr[-3000:]}")


def cell(value, index):
    return f"{value[index]:.3f}" if isinstance(value, list) else "error"


def table(ours, theirs):
    lines = ["| workload | lazykeops first (s) | lazykeops median (s) | pykeops first (s) "
             "| pykeops median (s) | pykeops / lazykeops |", "|---|---|---|---|---|---|"]
    for name, mine in ours["rows"].items():
        other = theirs["rows"].get(name, "missing")
        ratio = (f"{other[1] / mine[1]:.2f}" if isinstance(mine, list) and isinstance(other, list)
                 else "-")
        lines.append(f"| {name} | {cell(mine, 0)} | {cell(mine, 1)} | {cell(other, 0)} "
                     f"| {cell(other, 1)} | {ratio} |")
    for name, value in {**ours["rows"], **theirs["rows"]}.items():
        if not isinstance(value, list):
            lines.append(f"\n{name}: {value}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pykeops-python", default=sys.executable)
    parser.add_argument("--pykeops-path", default=None, help="PYTHONPATH entry with pykeops")
    parser.add_argument("--child", choices=["lazykeops", "pykeops"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.device, args.scale, args.repeats)
    ours = run_child(sys.executable, "lazykeops", args)
    theirs = run_child(args.pykeops_python, "pykeops", args, args.pykeops_path)
    print(f"device {args.device}, repeats {args.repeats}, scale {args.scale}")
    print(f"lazykeops side: {ours['info']}\npykeops side: {theirs['info']}\n")
    print(table(ours, theirs))


if __name__ == "__main__":
    main()
