"""Kernel smoothing: Nadaraya-Watson regression with a cross-validated bandwidth, and
mean-shift mode seeking.

**Nadaraya-Watson regression.** Given pairs (x_1, y_1), ..., (x_n, y_n) with
y_i = m(x_i) + noise, the Nadaraya-Watson estimate of the regression function is a locally
weighted average of the responses,

    m_h(x) = sum_j K_h(x, x_j) y_j / sum_j K_h(x, x_j),   K_h(x, x') = exp(-|x - x'|^2 / (2 h^2)),

the local-constant least-squares fit: m_h(x) minimises sum_j K_h(x, x_j) (y_j - c)^2 over c.
The kernel's normalising constant cancels in the ratio. As for a density estimate,
everything rests on the bandwidth h: a small h interpolates the noise (variance), a large
h flattens the curve towards the mean of the y_j (bias).

We choose h by leave-one-out cross-validation: predict each response from the others,

    m_{h,-i}(x_i) = sum_{j != i} K_h(x_i, x_j) y_j / sum_{j != i} K_h(x_i, x_j),
    CV(h) = 1/n sum_i (y_i - m_{h,-i}(x_i))^2,

an estimate of the prediction error of m_h on a new observation (plus the noise
variance). Without leaving y_i out, the self term K_h(x_i, x_i) = 1 dominates as h -> 0,
the fit reproduces y_i and the error would be minimal at h = 0.

How to remove the i = j term? The diagonal term is known, so one could compute the full
sums and subtract it: (S_y - y_i) / (S_1 - 1). But for a small h and an isolated x_i,
S_1 is 1 plus a tiny number, and the subtraction cancels most of that number's digits.
Instead we carry the index i as a variable and add -1e30 to the exponent when i = j, so
that the term is exactly exp(-1e30) = 0 and never enters the sums. Masking by index
rather than by "x_j != x_i" keeps genuine ties (x_j = x_i with j != i) in the sums, as
it should.

Numerator and denominator come out of one reduction: we reduce the vector [y_j, 1]
weighted by K_h, i.e. `K @ [y, 1]`. For the cross-validation the exponent is moreover a
vector with one component per bandwidth (the bandwidths are a parameter vector), and the
outer product of that vector of weights with [y_j, 1] is summed over j, so a single pass
over the n^2 pairs gives the leave-one-out fits for the whole grid. The ratio
form is 0/0 where every weight underflows (a point farther than about 38 h from all the
others, in float64); the grid here starts well above that. No n x n matrix is stored.

**Mean shift.** The modes of the Gaussian kernel density estimate
f_h(z) ~ sum_j K_h(z, x_j) are fixed points of the map

    z <- sum_j K_h(z, x_j) x_j / sum_j K_h(z, x_j),

the Nadaraya-Watson "regression" of the points on themselves: the step is the gradient of
log f_h scaled by h^2, so the iteration climbs the density with an adaptive step and
converges to a mode (or, exceptionally, a saddle point). Started from every observation,
it sends each to the mode of its basin of attraction, which defines a clustering with no
prescribed number of clusters: h alone decides how many modes there are. We stop when no
point moves by more than 1e-6 h (1e-4 h in float32, whose rounding is about that), then
merge the end points lying within h / 10 of each other: each group is one mode. Again
each step is one reduction, `K @ [x, 1]`.

Check: the fits agree with a dense float64 torch computation to 1e-10 (the test), and the
modes found on three well-separated blobs are near the blob centres. scikit-learn's
`MeanShift` only offers a *flat* kernel (the mean of the points within distance h), so its
modes are not the Gaussian modes: we compare the number of modes and their positions
loosely (within h / 5), not to 1e-3. Its loop over the starting points is slow (about
10 ms each), so it starts from 30 of the observations (`seeds=`, with
`bin_seeding=False`: the seeds are observations, not the centres of a coarse grid).
"""

import argparse
import os
import time

import numpy as np
import torch

from lazykeops.torch import LazyTensor

NAME = "kernel_smoothing"
QUICK = dict(n_reg=600, n_blobs=600, n_grid=300)
FULL_GPU = dict(n_reg=100_000, n_blobs=100_000, n_grid=2000)
FULL_CPU = dict(n_reg=10_000, n_blobs=10_000, n_grid=1000)  # n^2 costs: a tenth of the points
BLOB_CENTRES = ((0.0, 0.0), (4.0, 0.5), (1.5, 3.5))
BLOB_SD = 0.4
MEAN_SHIFT_H = 0.6
# The compile time of the CV formula grows with the number of bandwidths (about 2.5 s for
# 12, 7 s for 20 on a loaded 2-core CPU): 12 log-spaced values are enough here.
N_BANDWIDTHS = 12


# --------------------------------------------------------------------------- data


def regression_sample(n, seed=0, dtype=torch.float64):
    """x uniform on [-2, 2], y = sin(3x) + 0.3 x^2 + N(0, 0.3^2) noise."""
    gen = torch.Generator().manual_seed(seed)
    x = 4 * torch.rand(n, generator=gen, dtype=torch.float64) - 2
    y = true_regression(x) + 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)
    return x.to(dtype), y.to(dtype)


def true_regression(x):
    return torch.sin(3 * x) + 0.3 * x**2


def blob_sample(n, seed=0, dtype=torch.float64):
    """An equal-weight mixture of three isotropic Gaussians, well separated, shuffled."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor(BLOB_CENTRES, dtype=torch.float64)
    label = torch.randint(len(centres), (n,), generator=gen)
    x = centres[label] + BLOB_SD * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return x.to(dtype)


# --------------------------------------------------------------------------- Nadaraya-Watson


def with_ones(v):
    """[v, 1]: weighted by the kernel and summed, it gives numerator and denominator."""
    v = v.reshape(v.shape[0], -1)
    return torch.cat([v, torch.ones_like(v[:, :1])], 1)


def gaussian_kernel(p, x, h):
    """The symbolic matrix K_h(p_i, x_j), for points p (m, d) and x (n, d)."""
    gamma = LazyTensor(torch.as_tensor([1 / (2 * h * h)], dtype=x.dtype, device=x.device))
    sq_dist = ((LazyTensor(p[:, None, :]) - LazyTensor(x[None, :, :])) ** 2).sum(-1)
    return (-sq_dist * gamma).exp()


def nadaraya_watson(points, x, y, h):
    """m_h at each of the points (1-D), from the sample (x, y)."""
    sums = gaussian_kernel(points[:, None], x[:, None], h) @ with_ones(y)  # (m, 2)
    return sums[:, 0] / sums[:, 1]


def loo_fits(x, y, bandwidths):
    """(n, B) array: the leave-one-out fits m_{h,-i}(x_i) for each i and each h."""
    n, n_bw = x.shape[0], bandwidths.shape[0]
    # Indices as floats: exact up to 2^24 in float32, more than enough here.
    index = torch.arange(n, dtype=x.dtype, device=x.device)[:, None]
    X_i, X_j = LazyTensor(x[:, None, None]), LazyTensor(x[None, :, None])
    I, J = LazyTensor(index[:, None, :]), LazyTensor(index[None, :, :])
    V_j = LazyTensor(with_ones(y)[None, :, :])  # [y_j, 1]
    gamma = LazyTensor(1 / (2 * bandwidths**2))  # a parameter vector: one entry per h
    is_self = (0.5 - (I - J).abs()).step()  # 1 when i = j, 0 otherwise
    K = (-((X_i - X_j) ** 2) * gamma - 1e30 * is_self).exp()  # (n, n, B), symbolic
    # The outer product K_ij [y_j, 1]: (numerator, denominator) for each h, in one sum.
    sums = K.tensorprod(V_j).sum(dim=1).view(n, n_bw, 2)
    return sums[..., 0] / sums[..., 1]


def cv_error(x, y, bandwidths):
    """CV(h) = mean squared leave-one-out prediction error, for each h of the grid."""
    return ((y[:, None] - loo_fits(x, y, bandwidths)) ** 2).mean(0)


# --------------------------------------------------------------------------- mean shift


def mean_shift(x, h, tol=None, max_iter=500, n_tracked=0):
    """Moves every point to the kernel-weighted mean of the sample around it, until no
    point moves by more than tol * h. Returns the end points, the number of steps and
    the trajectories of the first n_tracked points, (steps + 1, n_tracked, 2)."""
    if tol is None:  # float32 rounding alone moves a point by ~1e-7 of its coordinates
        tol = 1e-6 if x.dtype == torch.float64 else 1e-4
    z = x.clone()
    path = [z[:n_tracked].cpu()]
    for step in range(1, max_iter + 1):
        sums = gaussian_kernel(z, x, h) @ with_ones(x)  # (n, d + 1)
        z_new = sums[:, :-1] / sums[:, -1:]
        shift = (z_new - z).norm(dim=1).max()
        z = z_new
        path.append(z[:n_tracked].cpu())
        if shift <= tol * h:
            break
    return z, step, torch.stack(path)


def merge_modes(z, radius):
    """Groups the end points lying within radius of a group's first point; returns the
    modes (the mean of each group, largest group first) and each point's group."""
    label = torch.full((z.shape[0],), -1, dtype=torch.long, device=z.device)
    modes = []
    while (label < 0).any():
        first = int(torch.nonzero(label < 0)[0])
        near = ((z - z[first]).norm(dim=1) <= radius) & (label < 0)
        label[near] = len(modes)
        modes.append(z[near].mean(0))
    modes = torch.stack(modes)
    order = torch.argsort(torch.bincount(label), descending=True)
    return modes[order], torch.argsort(order)[label]


def sklearn_modes(x, h, n_seeds=30):
    """scikit-learn's (flat-kernel) mean shift on x, started from its first n_seeds points:
    its per-seed Python loop takes about 10 ms a seed, too slow to start from them all."""
    from sklearn.cluster import MeanShift

    x = x.cpu().double().numpy()
    ms = MeanShift(bandwidth=h, bin_seeding=False, seeds=x[:n_seeds]).fit(x)
    return ms.cluster_centers_


def nearest_distances(a, b):
    """For each row of a, the distance to the nearest row of b (small arrays, numpy)."""
    return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1).min(1)


# --------------------------------------------------------------------------- figures


def plot_regression(x, y, grid, fits, bandwidths, cv, h_cv, path):
    import matplotlib.pyplot as plt

    fig, (ax, ax_cv) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw=dict(width_ratios=[3, 2]))
    shown = slice(0, 3000)  # the sample is in random order: its head is a fair subsample
    ax.scatter(x[shown], y[shown], s=3, c="0.6", label="data")
    ax.plot(grid, true_regression(torch.as_tensor(grid)).numpy(), "k--", lw=1, label="true m(x)")
    for (label, h), fit, colour in zip(fits.keys(), fits.values(), ["C0", "C3", "C2"]):
        ax.plot(grid, fit, color=colour, lw=1.5, label=f"{label}, h = {h:.3g}")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize=8)
    ax.set_title(f"Nadaraya-Watson, n = {len(x)}")
    ax_cv.semilogx(bandwidths, cv, "o-", ms=3)
    ax_cv.axvline(h_cv, color="C0", label=f"CV choice h = {h_cv:.3g}")
    ax_cv.set_xlabel("bandwidth h")
    ax_cv.set_ylabel("leave-one-out mean squared error")
    ax_cv.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_mean_shift(x, modes, labels, paths, h, path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.5))
    shown = slice(0, 5000)
    ax.scatter(x[shown, 0], x[shown, 1], s=3, c=labels[shown], cmap="tab10", vmin=0, vmax=9,
               alpha=0.5)
    n_tracked = paths.shape[1]
    for k in range(n_tracked):
        ax.plot(paths[:, k, 0], paths[:, k, 1], color="0.2", lw=0.5, alpha=0.6)
    ax.scatter(modes[:, 0], modes[:, 1], marker="*", s=250, c="k", label="modes")
    ax.set_title(f"mean shift, h = {h}: {len(modes)} modes, {n_tracked} trajectories shown")
    ax.set_aspect("equal")
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# --------------------------------------------------------------------------- run


def run(quick=False, device="cpu", out_dir=None):
    import matplotlib

    matplotlib.use("Agg")
    out_dir = out_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures", NAME)
    os.makedirs(out_dir, exist_ok=True)
    size = QUICK if quick else (FULL_GPU if device == "cuda" else FULL_CPU)
    # float64 on the CPU for a tight check; float32 on the GPU, where it is much faster.
    dtype = torch.float32 if device == "cuda" else torch.float64

    # Part 1: regression, bandwidth by leave-one-out CV over a log-spaced grid.
    x, y = (t.to(device) for t in regression_sample(size["n_reg"], dtype=dtype))
    bandwidths = torch.logspace(-2, 0, N_BANDWIDTHS, dtype=dtype, device=device)
    cv = cv_error(x, y, bandwidths)
    best = int(cv.argmin())
    h_cv = float(bandwidths[best])
    grid = torch.linspace(-2, 2, size["n_grid"], dtype=dtype, device=device)
    chosen = {"CV choice": h_cv, "too small": h_cv / 8, "too large": h_cv * 8}
    fits = {(k, h): nadaraya_watson(grid, x, y, h).cpu().numpy() for k, h in chosen.items()}

    # Part 2: mean shift on three blobs, started from every point.
    xb = blob_sample(size["n_blobs"], dtype=dtype).to(device)
    h = MEAN_SHIFT_H
    z, n_steps, paths = mean_shift(xb, h, n_tracked=60)
    modes, labels = merge_modes(z, h / 10)
    modes_np = modes.cpu().double().numpy()
    sk_modes = sklearn_modes(xb[:5000], h)  # scikit-learn's flat kernel, on <= 5000 points
    centres = np.array(BLOB_CENTRES)

    figures = [os.path.join(out_dir, name) for name in ("nadaraya_watson.png", "mean_shift.png")]
    plot_regression(x.cpu().numpy(), y.cpu().numpy(), grid.cpu().numpy(), fits,
                    bandwidths.cpu().numpy(), cv.cpu().numpy(), h_cv, figures[0])
    plot_mean_shift(xb.cpu().numpy(), modes_np, labels.cpu().numpy(), paths.numpy(), h, figures[1])
    return {
        "n_reg": size["n_reg"],
        "n_blobs": size["n_blobs"],
        "bandwidths": bandwidths.cpu().double().numpy(),
        "cv": cv.cpu().double().numpy(),
        "h_cv": h_cv,
        "grid": grid.cpu().double().numpy(),
        "fit_cv": fits[("CV choice", h_cv)].astype(np.float64),
        "mean_shift_h": h,
        "mean_shift_steps": n_steps,
        "modes": modes_np,
        "mode_sizes": torch.bincount(labels).cpu().numpy(),
        "blob_centres": centres,
        "mode_to_centre": nearest_distances(modes_np, centres),
        "sklearn_modes": sk_modes,
        "mode_to_sklearn": nearest_distances(modes_np, sk_modes) if len(sk_modes) else None,
        "figures": figures,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples, a few seconds")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", default=None, help="folder for the figures")
    args = parser.parse_args()
    start = time.perf_counter()
    res = run(quick=args.quick, device=args.device, out_dir=args.out)
    elapsed = time.perf_counter() - start
    print(f"kernel_smoothing: regression n = {res['n_reg']}, {N_BANDWIDTHS} bandwidths, "
          f"h_cv = {res['h_cv']:.3g}; "
          f"mean shift n = {res['n_blobs']}, {len(res['modes'])} modes in "
          f"{res['mean_shift_steps']} "
          f"steps; {elapsed:.1f} s on {args.device}")


if __name__ == "__main__":
    main()
