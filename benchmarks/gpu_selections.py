"""GPU timings of the reductions whose inner loop tests every term (LogSumExp, ArgMin,
ArgKMin, Min): for A/B runs of two versions of the engine, e.g. before and after a change
of lk_reductions.h, one process per version, interleaved:

    for v in old new old new; do PYTHONPATH=$v python benchmarks/gpu_selections.py --label $v; done

Prints one line per workload: label, workload, median ms (compile excluded).
"""

import argparse

import torch

from gpu import timed  # benchmarks/gpu.py: median of runs after a warm-up


def workloads():
    from lazykeops.torch import LazyTensor

    g = torch.Generator(device="cuda").manual_seed(0)

    def points(n, d):
        return torch.rand(n, d, device="cuda", generator=g) / d ** 0.5

    def pairs(n, m, d):
        x, y = points(n, d), points(m, d)
        return LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])

    X, Y = pairs(1_000_000, 1_000_000, 3)
    Xs, Ys = pairs(100_000, 100_000, 3)
    Xk, C = pairs(1_000_000, 1024, 3)
    Xw, Cw = pairs(1_000_000, 1024, 64)
    b = torch.randn(1_000_000, 1, device="cuda", generator=g)
    B = LazyTensor(b[None, :, :])
    return [
        ("LogSumExp 1e6 D=3", lambda: (B - ((X - Y) ** 2).sum(-1)).logsumexp(dim=1)),
        ("ArgKMin K=10 1e5 D=3", lambda: ((Xs - Ys) ** 2).sum(-1).argKmin(10, dim=1)),
        ("ArgKMin K=10 1e6 D=3", lambda: ((X - Y) ** 2).sum(-1).argKmin(10, dim=1)),
        ("k-means ArgMin 1e6 x 1024 D=3", lambda: ((Xk - C) ** 2).sum(-1).argmin(dim=1)),
        ("k-means ArgMin 1e6 x 1024 D=64", lambda: ((Xw - Cw) ** 2).sum(-1).argmin(dim=1)),
        ("Min 1e5 D=3", lambda: ((Xs - Ys) ** 2).sum(-1).min(dim=1)),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", default="lazykeops")
    args = parser.parse_args()
    for name, fn in workloads():
        print(f"{args.label:8s} {name:32s} {timed(fn, 7) * 1e3:10.3f} ms", flush=True)


if __name__ == "__main__":
    main()
