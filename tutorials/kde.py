"""Kernel density estimation in 2-D, with the bandwidth chosen by leave-one-out likelihood.

The Gaussian kernel density estimate of a sample x_1, ..., x_n in R^d is

    f_h(x) = 1/n  sum_j  phi_h(x - x_j),    phi_h(u) = (2 pi h^2)^(-d/2) exp(-|u|^2 / (2 h^2)),

a mixture of n small Gaussians, one on each observation. It makes no parametric
assumption; everything rests on the bandwidth h. A small h follows the sample too closely
(a spike on every point, high variance), a large h smooths the structure away (bias).

Likelihood cross-validation picks h by predicting each observation from the others. The
leave-one-out estimate at x_i is

    f_{h,-i}(x_i) = 1/(n-1)  sum_{j != i}  phi_h(x_i - x_j),

and CV(h) = 1/n sum_i log f_{h,-i}(x_i) is an estimate, up to a constant, of the expected
log-likelihood of a new observation, i.e. minus the Kullback-Leibler divergence from the
true density to f_h. Leaving x_i out matters: with it, the self term phi_h(0) grows without
bound as h -> 0 and the "best" bandwidth would be zero. We maximise CV(h) over a grid and
compare with Scott's rule of thumb h = sigma n^(-1/(d+4)), which is optimal for Gaussian
data; our sample (a curved "banana" and a round cluster) is far from Gaussian, so the two
can differ.

Both sums are written in the log domain: log f_{h,-i}(x_i) is a LogSumExp over j of
-|x_i - x_j|^2 / (2 h^2), minus log(n-1) and (d/2) log(2 pi h^2). In a sparse region every
term exp(-|x_i - x_j|^2 / (2 h^2)) underflows to zero for a small h, and the plain sum
would return log 0 = -inf; the LogSumExp factors out the largest term and stays finite.

How to leave x_i out? One could compute the full sum, which includes exp(0) = 1, and
subtract 1: log(S - 1) with S = exp(LSE). But where x_i is isolated, S - 1 is a tiny number
obtained as the difference of two numbers close to 1, and the subtraction cancels most of
its digits (all of them in float32). Instead we put a mask in the exponent: we carry the
index i as a variable and add -1e30 to the term when i = j, so that it vanishes exactly
(exp(-1e30) = 0) and never enters the sum. Masking by index rather than by "distance > 0"
also keeps genuine ties, x_j = x_i with j != i, in the sum as it should.

All bandwidths are cross-validated in one pass over the n^2 pairs: the exponent is a
vector with one component per bandwidth, and the LogSumExp reduction works component by
component. The density on a plotting grid, and the check against scikit-learn's
KernelDensity, use a second LogSumExp with the chosen h. No n x n matrix is ever stored.
"""

import argparse
import math
import os
import time

import numpy as np
import torch

from lazykeops.torch import LazyTensor

NAME = "kde"
D = 2  # dimension of the sample


def sample(n, seed=0, dtype=torch.float64):
    """A banana (a Gaussian bent along a parabola) and, with weight 1/4, a round cluster."""
    gen = torch.Generator().manual_seed(seed)
    n_blob = n // 4
    z = torch.randn(n - n_blob, 2, generator=gen, dtype=torch.float64)
    banana = torch.stack([1.5 * z[:, 0], 0.4 * z[:, 1] + 0.35 * (2.25 * z[:, 0] ** 2 - 2.25)], 1)
    blob = 0.3 * torch.randn(n_blob, 2, generator=gen, dtype=torch.float64) + torch.tensor([0.0, 2.5])
    x = torch.cat([banana, blob])
    return x[torch.randperm(n, generator=gen)].to(dtype)


def log_normaliser(h, m):
    """log of 1 / (m (2 pi h^2)^(d/2)): the constant in front of a sum of m kernels."""
    return -math.log(m) - 0.5 * D * torch.log(2 * math.pi * h**2)


def loo_log_density(x, bandwidths):
    """(n, B) array: log f_{h,-i}(x_i) for each observation i and each bandwidth h."""
    n = x.shape[0]
    # Indices as floats, exact up to 2^24 in float32: enough for any sample we handle here.
    index = torch.arange(n, dtype=x.dtype, device=x.device)[:, None]
    X_i, X_j = LazyTensor(x[:, None, :]), LazyTensor(x[None, :, :])
    I, J = LazyTensor(index[:, None, :]), LazyTensor(index[None, :, :])
    gamma = LazyTensor(1 / (2 * bandwidths**2))  # a parameter vector: one entry per h
    sq_dist = ((X_i - X_j) ** 2).sum(-1)
    is_self = (0.5 - (I - J).abs()).step()  # 1 when i = j, 0 otherwise
    exponent = -sq_dist * gamma - 1e30 * is_self  # (n, n, B), symbolic
    return exponent.logsumexp(dim=1) + log_normaliser(bandwidths, n - 1)


def log_density(points, x, h):
    """log f_h at each row of points, for the sample x and the bandwidth h."""
    P, X_j = LazyTensor(points[:, None, :]), LazyTensor(x[None, :, :])
    gamma = LazyTensor(torch.as_tensor([1 / (2 * h**2)], dtype=x.dtype, device=x.device))
    lse = (-((P - X_j) ** 2).sum(-1) * gamma).logsumexp(dim=1)[:, 0]
    return lse + log_normaliser(torch.as_tensor(h, dtype=x.dtype), x.shape[0]).to(x.device)


def scott_bandwidth(x):
    """Scott's rule: the average marginal standard deviation times n^(-1/(d+4))."""
    return float(x.std(0).mean()) * x.shape[0] ** (-1 / (D + 4))


def sklearn_log_density(points, x, h):
    from sklearn.neighbors import KernelDensity

    kde = KernelDensity(kernel="gaussian", bandwidth=h).fit(x.cpu().double().numpy())
    return kde.score_samples(points.cpu().double().numpy())


def plot_density(x, grid_x, grid_y, logf, h, path):
    import matplotlib.pyplot as plt

    shown = x[:5000].cpu().numpy()  # the sample is shuffled: its head is a fair subsample
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(shown[:, 0], shown[:, 1], s=1, c="0.6", alpha=0.5)
    density = np.exp(logf)
    # Levels from 2% of the peak up: the zero level would only trace the grid's edge.
    levels = np.linspace(0.02, 0.95, 8) * density.max()
    cs = ax.contour(grid_x, grid_y, density, levels=levels, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="estimated density", format="%.2f")
    ax.set_title(f"n = {x.shape[0]} ({len(shown)} shown), CV bandwidth h = {h:.3g}")
    ax.set_aspect("equal")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_cv(bandwidths, cv, h_cv, h_scott, path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogx(bandwidths, cv, "o-", label="leave-one-out log-likelihood")
    ax.axvline(h_cv, color="C1", label=f"CV choice h = {h_cv:.3g}")
    ax.axvline(h_scott, color="C2", ls="--", label=f"Scott's rule h = {h_scott:.3g}")
    ax.set_xlabel("bandwidth h")
    ax.set_ylabel("mean log f_{h,-i}(x_i)")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def run(quick=False, device="cpu", out_dir=None):
    import matplotlib

    matplotlib.use("Agg")
    out_dir = out_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures", NAME)
    os.makedirs(out_dir, exist_ok=True)
    # float64 on the CPU for a tight check; float32 on the GPU, where it is much faster.
    dtype = torch.float32 if device == "cuda" else torch.float64
    n = 3000 if quick else (1_000_000 if device == "cuda" else 100_000)
    grid_size = 60 if quick else 200
    n_check = 200

    x = sample(n, dtype=dtype).to(device)
    bandwidths = torch.logspace(-2, 0, 16, dtype=dtype, device=device)
    cv = loo_log_density(x, bandwidths).mean(0)  # CV(h) for every h of the grid
    best = int(cv.argmax())
    h_cv = float(bandwidths[best])

    # The plotting window covers the bulk of the sample, not its few most extreme points.
    q = torch.tensor([0.002, 0.998], dtype=dtype, device=device)
    lo, hi = (torch.quantile(x, q, dim=0).cpu() + torch.tensor([[-1.0], [1.0]], dtype=dtype) * 3 * h_cv)
    gx = torch.linspace(float(lo[0]), float(hi[0]), grid_size, dtype=dtype)
    gy = torch.linspace(float(lo[1]), float(hi[1]), grid_size, dtype=dtype)
    grid_x, grid_y = torch.meshgrid(gx, gy, indexing="xy")
    grid = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], 1).to(device)
    logf_grid = log_density(grid, x, h_cv)

    # Check against scikit-learn on a few observations and a few grid nodes where the
    # density is within a factor 1e6 of its peak. Far out in the tails (log f < -30 or so)
    # scikit-learn's tree-based sums lose accuracy, even with rtol = atol = 0: there they
    # are off by orders of magnitude while the LogSumExp stays exact, so they cannot serve
    # as a reference.
    gen = torch.Generator().manual_seed(1)
    inside = torch.nonzero(logf_grid > logf_grid.max() - math.log(1e6))[:, 0].cpu()
    points = torch.cat([x[torch.randperm(n, generator=gen)[:n_check].to(device)],
                        grid[inside[torch.randperm(len(inside), generator=gen)[:n_check]].to(device)]])
    ours = log_density(points, x, h_cv).cpu().double().numpy()
    theirs = sklearn_log_density(points, x, h_cv)
    rel_err = float(np.max(np.abs(ours - theirs) / np.abs(theirs)))

    figures = [os.path.join(out_dir, "kde_density.png"), os.path.join(out_dir, "kde_cv.png")]
    plot_density(x, grid_x.numpy(), grid_y.numpy(),
                 logf_grid.reshape(grid_size, grid_size).cpu().numpy(), h_cv, figures[0])
    h_scott = scott_bandwidth(x)
    plot_cv(bandwidths.cpu().numpy(), cv.cpu().numpy(), h_cv, h_scott, figures[1])
    return {
        "n": n,
        "bandwidths": bandwidths.cpu().double().numpy(),
        "cv": cv.cpu().double().numpy(),
        "h_cv": h_cv,
        "h_scott": h_scott,
        "check_points": points.cpu().double().numpy(),
        "log_density": ours,
        "sklearn_log_density": theirs,
        "max_rel_err": rel_err,
        "figures": figures,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small sample, a few seconds")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", default=None, help="folder for the figures")
    args = parser.parse_args()
    start = time.perf_counter()
    res = run(quick=args.quick, device=args.device, out_dir=args.out)
    elapsed = time.perf_counter() - start
    print(f"kde: n = {res['n']} points, 16 bandwidths, h_cv = {res['h_cv']:.3g}, "
          f"max rel. error vs sklearn = {res['max_rel_err']:.1e}; {elapsed:.1f} s on {args.device}")


if __name__ == "__main__":
    main()
