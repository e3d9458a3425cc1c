"""Cost of gradients (issue 4): a Gaussian conv at N = M = 20,000, D = 3 on the CPU,
forward alone against forward + backward with respect to x and y (and pykeops's
forward + grad x when importable).

    python benchmarks/bench_autograd.py [--n 20000]
"""

import argparse
import os
import tempfile

import torch
from bench_cpu import median_time  # benchmarks/ is on sys.path when run as a script


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    n = parser.parse_args().n
    os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")
    os.environ.setdefault("LAZYKEOPS_CACHE_DIR", tempfile.mkdtemp(prefix="lk-bench-"))
    from lazykeops.torch import Genred

    formula = "Exp(-G*SqDist(X,Y)) * B"
    aliases = ["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"]
    torch.manual_seed(0)
    g = torch.tensor([1.0])
    x = torch.rand(n, 3, requires_grad=True)
    y = torch.rand(n, 3, requires_grad=True)
    b = torch.randn(n, 1)
    conv = Genred(formula, aliases, axis=1)

    def forward():
        with torch.no_grad():
            conv(g, x, y, b)

    def forward_backward():
        torch.autograd.grad(conv(g, x, y, b).sum(), (x, y))

    rows = {}
    forward_backward()
    rows["forward"] = median_time(forward)
    rows["forward + grad x, y"] = median_time(forward_backward)
    try:
        from pykeops.torch import Genred as PkGenred

        pk = PkGenred(formula, aliases, axis=1)
        torch.autograd.grad(pk(g, x, y, b, backend="CPU").sum(), (x,))
        rows["pykeops forward"] = median_time(lambda: pk(g, x.detach(), y.detach(), b,
                                                         backend="CPU"))
        rows["pykeops forward + grad x"] = median_time(
            lambda: torch.autograd.grad(pk(g, x, y, b, backend="CPU").sum(), (x,)))
    except Exception:  # pykeops absent or broken on this machine
        pass
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, N = M = {n:,}, D = 3")
    print("| Gaussian conv, float32 | time | vs forward |\n|---|---|---|")
    for name, t in rows.items():
        base = rows["pykeops forward"] if name.startswith("pykeops") else rows["forward"]
        print(f"| {name} | {t:.3f} s | {t / base:.2f}x |")


if __name__ == "__main__":
    main()
