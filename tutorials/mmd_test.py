"""A kernel two-sample test: the maximum mean discrepancy, with a permutation p-value.

Given x_1, ..., x_n drawn from P and y_1, ..., y_m drawn from Q, both in R^d, we test
H0: P = Q against any alternative. A characteristic kernel k, here the Gaussian
k(u, v) = exp(-|u - v|^2 / (2 h^2)), embeds each distribution as its mean function
mu_P = E k(X, .), and the squared distance between the embeddings,

    MMD^2(P, Q) = E k(X, X') + E k(Y, Y') - 2 E k(X, Y),

is zero if and only if P = Q. Its unbiased estimate is a U-statistic: each expectation is
replaced by the average over pairs of distinct observations,

    MMD_u^2 = S_xx / (n (n-1)) + S_yy / (m (m-1)) - 2 S_xy / (n m),

where S_xx = sum_{i != j} k(x_i, x_j), S_yy likewise, and S_xy = sum_{i,j} k(x_i, y_j).
Removing the diagonal i = j matters: the terms k(x_i, x_i) = 1 do not estimate E k(X, X'),
and keeping them biases the statistic upwards by about 1/n + 1/m (the "V-statistic").
Under H0, MMD_u^2 is centred on zero and can be negative.

The bandwidth h is the median heuristic: the median distance between points of the pooled
sample, taken on a random subsample of it to keep the cost low. Because it is computed
from the pooled sample with a subsample that does not look at the labels, it is unchanged
when the labels are permuted, which keeps the permutation test exact.

The null distribution of MMD_u^2 is not a simple one (an infinite weighted sum of
chi-squares). The permutation test sidesteps it: under H0 the N = n + m pooled points are
exchangeable, so relabelling them at random, recomputing the statistic B times, and
counting how often it reaches the observed value gives the p-value

    p = (1 + #{b : T_b >= T_obs}) / (1 + B),

which is valid at every sample size: P(p <= alpha) <= alpha under H0. With continuous data
(no ties) it is uniform on {1/(B+1), ..., 1}, which figure 1 checks over many repeated
null experiments, with a Kolmogorov-Smirnov test against the uniform law. Figure 2 shows
the power, P(p <= 0.05), against a mean shift, growing with the sample size.

How we compute B + 1 statistics without an N x N matrix. Let K be the pooled kernel matrix
(symbolic here, never stored), 1 the vector of ones and a in {0, 1}^N the indicator of the
points labelled "x" by one permutation (b = 1 - a labels the y's). With K_ii = 1,

    S_xx = a'Ka - n,    S_xy = a'K1 - a'Ka,    S_yy = 1'K1 - 2 a'K1 + a'Ka - m,

so each relabelling needs only the two numbers a'Ka and a'K1, and these come from the
matrix-vector products Ka and K1. We stack the vector 1, the observed labelling and the B
permuted labellings as the columns of an N x (B + 2) matrix A and compute K @ A in one
lazykeops reduction: each kernel value exp(-|z_i - z_j|^2 / (2 h^2)) is evaluated once and
multiplied by the B + 2 columns, a cost of N^2 (B + 2) multiply-adds and O(N B) memory.
(Signs s = 2a - 1 in {-1, +1} would do as well: s'Ks = 1'K1 - 4 a'K1 + 4 a'Ka is the same
information; for n = m, s'Ks / n^2 is the biased V-statistic, diagonal included, and the
unbiased one still needs a'K1 apart, hence the column of ones.)

The three sums above subtract numbers of size N^2 to get a result of size about N, so we
work in float64, on the GPU too. The observed statistic is also computed directly from the
three block sums S_xx, S_yy, S_xy (three lazykeops kernel sums), which the test compares
with a dense float64 computation.
"""

import argparse
import os
import time

import numpy as np
import torch

from lazykeops.torch import LazyTensor

NAME = "mmd_test"
D = 2  # dimension of the samples
ALPHA = 0.05  # level of the test, for the power curve
DTYPE = torch.float64


def gaussian_kernel(u, v, gamma):
    """Symbolic (len(u), len(v)) matrix exp(-gamma |u_i - v_j|^2), gamma a (1,) tensor."""
    U, V = LazyTensor(u[:, None, :]), LazyTensor(v[None, :, :])
    # gamma is a parameter, not a constant of the formula: one compiled kernel for all h.
    return (-((U - V) ** 2).sum(-1) * LazyTensor(gamma)).exp()


def median_bandwidth(z, gen, n_sub=500):
    """The median heuristic: median pairwise distance in a random subsample of z."""
    sub = z[torch.randperm(z.shape[0], generator=gen)[:n_sub].to(z.device)]
    return float(torch.pdist(sub).median())  # n_sub (n_sub - 1) / 2 distances, i < j


def gamma_of(h, z):
    return torch.tensor([1 / (2 * h * h)], dtype=z.dtype, device=z.device)


def mmd2_block_sums(x, y, h):
    """Unbiased MMD^2 from the three kernel sums S_xx, S_yy, S_xy (diagonal removed)."""
    n, m = x.shape[0], y.shape[0]
    gamma = gamma_of(h, x)
    s_xx = gaussian_kernel(x, x, gamma).sum(dim=1).sum() - n  # k(x_i, x_i) = 1, n times
    s_yy = gaussian_kernel(y, y, gamma).sum(dim=1).sum() - m
    s_xy = gaussian_kernel(x, y, gamma).sum(dim=1).sum()
    return float(s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2 * s_xy / (n * m))


def mmd2_dense(x, y, h):
    """The same statistic from the full kernel matrices, in float64: a reference."""
    x, y = x.double(), y.double()

    def k(u, v):
        return torch.exp(-torch.cdist(u, v) ** 2 / (2 * h * h))

    n, m = x.shape[0], y.shape[0]
    kxx, kyy = k(x, x), k(y, y)
    s_xx = kxx.sum() - kxx.diagonal().sum()
    s_yy = kyy.sum() - kyy.diagonal().sum()
    return float(s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2 * k(x, y).sum() / (n * m))


def label_matrix(n, m, n_perm, gen, device):
    """N x (B + 2) matrix: a column of ones, the observed labels, B random relabellings."""
    N = n + m
    perms = torch.argsort(torch.rand(n_perm, N, generator=gen), dim=1)
    A = torch.zeros(N, n_perm + 2, dtype=DTYPE)
    A[:, 0] = 1
    A[:n, 1] = 1  # the observed labelling: the x's come first in the pooled sample
    # Column 2 + b marks the n points that permutation b calls "x".
    A[perms[:, :n].T, torch.arange(2, n_perm + 2)[None, :]] = 1
    return A.to(device)


def permutation_statistics(x, y, h, n_perm, gen):
    """MMD_u^2 for the observed labelling and for n_perm relabellings, via one K @ A."""
    n, m = x.shape[0], y.shape[0]
    z = torch.cat([x, y])
    A = label_matrix(n, m, n_perm, gen, z.device)
    KA = gaussian_kernel(z, z, gamma_of(h, z)) @ A  # (N, B + 2), the only N^2 work
    one_K_one = KA[:, 0].sum()
    aKa = (A[:, 1:] * KA[:, 1:]).sum(0)  # a'Ka for every labelling a
    aK1 = A[:, 1:].T @ KA[:, 0]  # a'K1
    s_xx = aKa - n
    s_xy = aK1 - aKa
    s_yy = one_K_one - 2 * aK1 + aKa - m
    t = s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2 * s_xy / (n * m)
    return t[0], t[1:]


def mmd_test(x, y, n_perm, gen):
    """(MMD_u^2, permutation p-value, bandwidth) for the samples x and y."""
    h = median_bandwidth(torch.cat([x, y]), gen)
    t_obs, t_perm = permutation_statistics(x, y, h, n_perm, gen)
    p = (1 + int((t_perm >= t_obs).sum())) / (1 + n_perm)
    return float(t_obs), p, h


def draw(n, shift, gen, device):
    """n points from N(0, I_d) and n from N(shift e_1, I_d)."""
    x = torch.randn(n, D, generator=gen, dtype=DTYPE)
    y = torch.randn(n, D, generator=gen, dtype=DTYPE)
    y[:, 0] += shift
    return x.to(device), y.to(device)


def plot_null(p_values, ks_p, n, n_perm, path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(p_values, bins=10, range=(0, 1), density=True, color="C0", alpha=0.8)
    ax.axhline(1, color="k", ls="--", label="uniform density")
    ax.set_xlabel("permutation p-value")
    ax.set_ylabel("density")
    ax.set_title(f"H0: P = Q, n = m = {n}, B = {n_perm}, {len(p_values)} experiments\n"
                 f"Kolmogorov-Smirnov test of uniformity: p = {ks_p:.2f}")
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_power(ns, power, n_rep, shift, path):
    import matplotlib.pyplot as plt

    ns, power = np.asarray(ns), np.asarray(power)
    se = np.sqrt(power * (1 - power) / n_rep)  # binomial standard error of each estimate
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(ns, power, yerr=2 * se, fmt="o-", capsize=3, label="MMD permutation test")
    ax.axhline(ALPHA, color="C3", ls="--", label=f"level alpha = {ALPHA}")
    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("sample size n = m")
    ax.set_ylabel("power P(p <= alpha)")
    ax.set_title(f"mean shift {shift} along one axis, d = {D}; {n_rep} experiments per n, +/- 2 s.e.")
    ax.legend(loc="upper left")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def run(quick=False, device="cpu", out_dir=None):
    import matplotlib

    matplotlib.use("Agg")
    from scipy.stats import kstest

    out_dir = out_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures", NAME)
    os.makedirs(out_dir, exist_ok=True)
    if quick:
        n_null, n_rep_null, ns, n_rep = 50, 100, [10, 20, 40, 80], 25
    else:
        n_null, n_rep_null, ns, n_rep = 500, 500, [10, 20, 40, 80, 160, 320, 640], 200
    # B is the same for every test of a run: the number of columns of A is part of the
    # compiled formula, so a single kernel serves all of them.
    n_perm = 99 if quick else 499
    shift = 0.5
    gen = torch.Generator().manual_seed(0)

    # The estimate, three ways: block sums, the K @ A trick, and a dense float64 reference.
    x, y = draw(n_null, shift, gen, device)
    h = median_bandwidth(torch.cat([x, y]), gen)
    mmd2_blocks = mmd2_block_sums(x, y, h)
    mmd2_perm_trick = float(permutation_statistics(x, y, h, n_perm, gen)[0])
    mmd2_ref = mmd2_dense(x.cpu(), y.cpu(), h)

    # (1) Null: P = Q, repeated experiments; the p-values should be uniform.
    p_null = np.array([mmd_test(*draw(n_null, 0.0, gen, device), n_perm, gen)[1]
                       for _ in range(n_rep_null)])
    ks_p = float(kstest(p_null, "uniform").pvalue)

    # (2) Power against the mean shift as n grows.
    power = []
    for n in ns:
        p = np.array([mmd_test(*draw(n, shift, gen, device), n_perm, gen)[1] for _ in range(n_rep)])
        power.append(float(np.mean(p <= ALPHA)))

    figures = [os.path.join(out_dir, "mmd_null_pvalues.png"), os.path.join(out_dir, "mmd_power.png")]
    plot_null(p_null, ks_p, n_null, n_perm, figures[0])
    plot_power(ns, power, n_rep, shift, figures[1])
    return {
        "n": n_null,
        "n_perm": n_perm,
        "bandwidth": h,
        "mmd2_block_sums": mmd2_blocks,
        "mmd2_perm_trick": mmd2_perm_trick,
        "mmd2_dense": mmd2_ref,
        "mmd2_abs_err": max(abs(mmd2_blocks - mmd2_ref), abs(mmd2_perm_trick - mmd2_ref)),
        "null_p_values": p_null,
        "ks_pvalue": ks_p,
        "null_rejection_rate": float(np.mean(p_null <= ALPHA)),
        "ns": ns,
        "power": power,
        "figures": figures,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples, a few seconds")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", default=None, help="folder for the figures")
    args = parser.parse_args()
    start = time.perf_counter()
    r = run(quick=args.quick, device=args.device, out_dir=args.out)
    elapsed = time.perf_counter() - start
    print(f"mmd_test: n = m = {r['n']} under H0 ({len(r['null_p_values'])} tests, B = {r['n_perm']}), "
          f"power for n in {r['ns']}: {r['power']}, KS p = {r['ks_pvalue']:.2f}; "
          f"{elapsed:.1f} s on {args.device}")


if __name__ == "__main__":
    main()
