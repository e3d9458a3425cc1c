"""A Gaussian mixture in 2-D fitted by the EM algorithm, with both steps as lazykeops reductions.

A mixture of K Gaussians with full covariances has the density

    f(x) = sum_k pi_k N(x | mu_k, Sigma_k),

    log N(x | mu, Sigma) = -log(2 pi) - 1/2 log det Sigma - 1/2 (x - mu)^T Sigma^{-1} (x - mu)

in the plane (d = 2). Maximum likelihood asks for the weights pi_k, means mu_k and
covariances Sigma_k that maximise the mean log-likelihood of the sample,

    l(theta) = 1/N sum_i log sum_k pi_k N(x_i | mu_k, Sigma_k),

which has no closed-form maximiser: the logarithm of a sum does not split. The EM
algorithm treats the component z_i that produced x_i as missing data and alternates two
steps from a starting theta:

* E-step: the posterior probability that x_i came from component k, its responsibility,

      r_ik = pi_k N(x_i | mu_k, Sigma_k) / f(x_i);

* M-step: the weighted maximum-likelihood estimates, with n_k = sum_i r_ik,

      pi_k = n_k / N,   mu_k = 1/n_k sum_i r_ik x_i,
      Sigma_k = 1/n_k sum_i r_ik x_i x_i^T - mu_k mu_k^T.

The M-step maximises the expected complete-data log-likelihood Q(theta | theta_old), and
Jensen's inequality gives l(theta) - l(theta_old) >= Q(theta | theta_old) - Q(theta_old |
theta_old) >= 0: the log-likelihood never decreases. The script checks that property at
every step (to float64 rounding). EM converges to a stationary point, usually a local
maximum that depends on the start; here the means start at K data points drawn by
k-means++ seeding, the covariances at the pooled covariance of the sample and the weights
at 1/K. The likelihood is unbounded
(a component shrinking onto one point sends it to +infinity), so in practice one adds a
small ridge to each Sigma_k (scikit-learn's reg_covar); we leave it out, which keeps the
M-step exact and the monotonicity theorem true, and is safe with thousands of points per
component.

Both steps are reductions over an N x K table of log pi_k + log N(x_i | mu_k, Sigma_k),
which lazykeops never stores. The points x_i are i-indexed variables, the component
parameters j-indexed ones (j runs over k): the mean, the precision Sigma_k^{-1} flattened
to 4 numbers, and the constant log pi_k - log(2 pi) - 1/2 log det Sigma_k. The quadratic
form is `WeightedSqDist`, the Mahalanobis distance (x - mu)^T P (x - mu) with a full
matrix P. The E-step is a LogSumExp over k, which gives log f(x_i) (their mean is l) without
overflow or underflow, however far x_i lies from the components. The M-step is a Sum over
i (a reduction along the other axis) of exp(log-term - log f(x_i)) = r_ik times the vector
(1, x_i, x_i x_i^T): one pass yields n_k, the first and the second moments of every
component. The two formulas are compiled once; the parameters are passed as tensors that
change from step to step. Responsibilities are never stored either.

Check: on the quick-size sample, scikit-learn's GaussianMixture started from the same
weights, means and precisions, with tol=0 (so it runs all max_iter steps) and reg_covar=0,
reaches the same parameters and log-likelihood: in float64 the final mean log-likelihoods
agree to about 1e-15 and the parameters to 1e-14 to 1e-12 (depending on the data), and
the log-likelihood traces agree step by step. The figure draws the 1- and 2-sigma
ellipses {x : (x - mu_k)^T Sigma_k^{-1} (x - mu_k) = r^2}, r = 1, 2, of the fitted
components (they hold 39% and 86% of a 2-D Gaussian's mass, not the 68% and 95% of one
dimension), with the true ones dotted.
"""

import argparse
import math
import os
import time

import torch

from lazykeops.torch import LazyTensor

NAME = "gmm_em"
FULL = dict(n=1_000_000, k=6, max_iter=100)
QUICK = dict(n=3_000, k=6, max_iter=50)


def rotation(angle):
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def true_mixture(k, seed=0, dtype=torch.float64):
    """K elongated Gaussians with random orientations, centres in a square, unequal weights."""
    g = torch.Generator().manual_seed(seed)
    weights = 0.5 + torch.rand(k, generator=g, dtype=dtype)
    weights = weights / weights.sum()
    means = 12 * torch.rand(k, 2, generator=g, dtype=dtype)
    axes = 0.2 + 0.6 * torch.rand(k, 2, generator=g, dtype=dtype)  # standard deviations
    R = rotation(math.pi * torch.rand(k, generator=g, dtype=dtype))
    covs = R @ torch.diag_embed(axes**2) @ R.transpose(-1, -2)
    return weights, means, covs


def sample(n, mixture, seed=1):
    """n points of the mixture, in random order (so any prefix is a sample of the same law)."""
    weights, means, covs = mixture
    g = torch.Generator().manual_seed(seed)
    z = torch.multinomial(weights, n, replacement=True, generator=g)
    L = torch.linalg.cholesky(covs)
    eps = torch.randn(n, 2, 1, generator=g, dtype=means.dtype)
    return means[z] + (L[z] @ eps).squeeze(-1)


def moment_features(x):
    """The vector (1, x, vec(x x^T)) per point, whose responsibility-weighted sums are the
    M-step's sufficient statistics; it does not change during the iteration."""
    xxT = (x[:, :, None] * x[:, None, :]).reshape(-1, 4)
    return torch.cat([torch.ones_like(x[:, :1]), x, xxT], dim=1)


def log_terms(x, weights, means, covs):
    """The symbolic N x K table log pi_k + log N(x_i | mu_k, Sigma_k)."""
    K = means.shape[0]
    precisions = torch.linalg.inv(covs)
    const = weights.log() - math.log(2 * math.pi) - 0.5 * torch.logdet(covs)
    X = LazyTensor(x[:, None, :])                     # i: the points
    Mu = LazyTensor(means[None, :, :])                # j: the components
    P = LazyTensor(precisions.reshape(1, K, 4))
    C = LazyTensor(const.reshape(1, K, 1))
    return C - 0.5 * X.weightedsqdist(Mu, P)          # (x - mu)^T P (x - mu)


def e_step(x, params):
    """log f(x_i), one LogSumExp over the components per point: shape (N, 1)."""
    return log_terms(x, *params).logsumexp(dim=1)


def m_step(x, features, log_f, params):
    """New (weights, means, covariances) from one Sum over the points of r_ik (1, x, x x^T)."""
    resp = (log_terms(x, *params) - LazyTensor(log_f[:, None, :])).exp()   # r_ik
    stats = (resp * LazyTensor(features[:, None, :])).sum(dim=0)          # (K, 7)
    n_k = stats[:, :1]
    means = stats[:, 1:3] / n_k
    second = (stats[:, 3:] / n_k).reshape(-1, 2, 2)
    covs = second - means[:, :, None] * means[:, None, :]
    covs = 0.5 * (covs + covs.transpose(-1, -2))  # symmetric to the last bit
    return (n_k[:, 0] / x.shape[0], means, covs)


def kmeanspp_means(x, k, seed=0, n_seed=2_000):
    """K starting means by k-means++ seeding on the first n_seed points: each new mean is a
    point drawn with probability proportional to its squared distance to the means already
    chosen, so that two of them rarely start in the same cluster (a plain random draw of K
    points often does, and EM then settles in a poor local maximum)."""
    g = torch.Generator().manual_seed(seed)
    pool = x[:n_seed].cpu()
    means = pool[torch.randint(len(pool), (1,), generator=g)]
    for _ in range(k - 1):
        d2 = torch.cdist(pool, means).min(dim=1).values ** 2
        means = torch.cat([means, pool[torch.multinomial(d2, 1, generator=g)]])
    return means.to(x.device)


def initial_parameters(x, k):
    """Means by k-means++ seeding, each covariance the pooled covariance of the sample,
    equal weights."""
    cov = torch.cov(x.T)
    return (torch.full((k,), 1.0 / k, dtype=x.dtype, device=x.device), kmeanspp_means(x, k),
            cov.expand(k, 2, 2).clone())


def em(x, params, max_iter):
    """max_iter EM steps. Returns the final parameters and the mean log-likelihood before
    each step and after the last one (max_iter + 1 values)."""
    features = moment_features(x)
    loglik = []
    for _ in range(max_iter):
        log_f = e_step(x, params)
        loglik.append(log_f.mean().item())
        params = m_step(x, features, log_f, params)
    loglik.append(e_step(x, params).mean().item())
    return params, loglik


def sklearn_em(x, params, max_iter):
    """The reference: scikit-learn's EM from the same parameters, tol=0 (all max_iter steps
    run), no covariance ridge."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    weights, means, covs = (p.cpu().numpy() for p in params)
    gm = GaussianMixture(n_components=len(weights), covariance_type="full", tol=0.0,
                         reg_covar=0.0, max_iter=max_iter, n_init=1,
                         init_params="random_from_data", random_state=0,
                         weights_init=weights, means_init=means,
                         precisions_init=torch.linalg.inv(params[2].cpu()).numpy())
    from threadpoolctl import threadpool_limits

    # One BLAS thread: its 2x2 solves gain nothing from threads, and on a busy machine
    # waiting threads made each of them take milliseconds.
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        # tol=0 never "converges", by design: we want exactly max_iter steps.
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(x.cpu().numpy())
    return gm


def compare_with_sklearn(x, params0, max_iter, ours=None):
    """Both EMs from the same start on x (CPU); ours = our em(x, params0, max_iter) if
    already computed. The components are matched by their means (they keep their labels
    here, but a permutation would be just as correct)."""
    from scipy.optimize import linear_sum_assignment

    (weights, means, covs), loglik = ours if ours is not None else em(x, params0, max_iter)
    gm = sklearn_em(x, params0, max_iter)
    sk_means = torch.from_numpy(gm.means_)
    _, perm = linear_sum_assignment(torch.cdist(means, sk_means).numpy())
    perm = torch.from_numpy(perm)
    sk_loglik = gm.score(x.numpy())  # mean log-likelihood at the fitted parameters
    return dict(
        check_loglik=loglik[-1], sklearn_loglik=sk_loglik,
        loglik_abs_diff=abs(loglik[-1] - sk_loglik),
        # scikit-learn's lower_bound_ is the log-likelihood before its last M-step.
        lower_bound_abs_diff=abs(loglik[-2] - gm.lower_bound_),
        permutation=perm.tolist(),
        weights_max_diff=(weights - torch.from_numpy(gm.weights_)[perm]).abs().max().item(),
        means_max_diff=(means - sk_means[perm]).abs().max().item(),
        covs_max_diff=(covs - torch.from_numpy(gm.covariances_)[perm]).abs().max().item(),
        check_n_iter=len(loglik) - 1, sklearn_n_iter=gm.n_iter_)


def ellipse_path(mean, cov, radius, n=100):
    """The curve (x - mu)^T Sigma^{-1} (x - mu) = radius^2, as an (n, 2) array."""
    t = torch.linspace(0, 2 * math.pi, n, dtype=cov.dtype)
    circle = torch.stack([t.cos(), t.sin()], dim=1)
    L = torch.linalg.cholesky(cov)  # maps the unit circle onto the 1-sigma ellipse
    return mean + radius * circle @ L.T


def plot(x, params, truth, loglik, out_dir, n_plot=20_000):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(2))[:n_plot]
    xs = x[keep].cpu()
    weights, means, covs = (p.cpu() for p in params)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    ax.scatter(xs[:, 0], xs[:, 1], s=2, c="0.6", alpha=0.4, linewidths=0)
    colours = plt.get_cmap("tab10")
    for k in range(len(weights)):
        for r, style in ((1, "-"), (2, "--")):
            e = ellipse_path(means[k], covs[k], r)
            ax.plot(e[:, 0], e[:, 1], style, color=colours(k), lw=1.6,
                    label=f"fitted, {r} sigma" if k == 0 else None)
        ax.annotate(f"{weights[k]:.2f}", means[k].tolist(), ha="center", va="center",
                    fontsize=8, color=colours(k), weight="bold",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7))
    for k in range(len(truth[0])):
        e = ellipse_path(truth[1][k], truth[2][k], 2)
        ax.plot(e[:, 0], e[:, 1], ":", color="k", lw=0.8,
                label="true, 2 sigma" if k == 0 else None)
    ax.set_aspect("equal")
    ax.set_title(f"EM fit of a {len(weights)}-component Gaussian mixture "
                 f"({len(keep)} of {x.shape[0]} points shown; labels: weights)", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    ellipses = os.path.join(out_dir, "ellipses.png")
    fig.savefig(ellipses, dpi=100, bbox_inches="tight")
    plt.close(fig)

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax.plot(range(len(loglik)), loglik, "o-", ms=2)
    ax.set_xlabel("EM step t")
    ax.set_ylabel("mean log-likelihood l_t")
    ax.set_title("EM never decreases the log-likelihood")
    # The increments on a log scale: all positive, and their decay shows the (linear)
    # convergence rate of EM.
    steps = torch.tensor(loglik, dtype=torch.float64)
    ax2.semilogy(range(1, len(loglik)), (steps[1:] - steps[:-1]).clamp(min=1e-17), "o-", ms=2)
    ax2.set_xlabel("EM step t")
    ax2.set_ylabel("l_t - l_(t-1)")
    ax2.set_title("increments")
    curve = os.path.join(out_dir, "loglik.png")
    fig.savefig(curve, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [ellipses, curve]


def run(quick=False, device="cpu", out_dir=None, verbose=False):
    size = QUICK if quick else FULL
    if out_dir is None:
        out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures", NAME)
    os.makedirs(out_dir, exist_ok=True)

    # float64: the monotonicity check and the comparison need more than float32's digits
    # (the M-step's second moment minus mu mu^T also loses some to cancellation).
    truth = true_mixture(size["k"])
    x = sample(size["n"], truth)
    params0 = initial_parameters(x, size["k"])

    xd = x.to(device)
    p0d = tuple(p.to(device) for p in params0)
    # Compile both kernels outside the timing (two rows: one would be read as a parameter).
    # (Not em(): the M-step on two points would give singular covariances.)
    m_step(xd[:2], moment_features(xd[:2]), e_step(xd[:2], p0d), p0d)
    t0 = time.perf_counter()
    params, loglik = em(xd, p0d, size["max_iter"])
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if verbose:
        for step, ll in enumerate(loglik):
            print(f"step {step:3d}  mean log-likelihood {ll:.15g}")

    # EM's theorem: l never goes down. The slack is float64 rounding in a mean of N logs.
    increments = [b - a for a, b in zip(loglik, loglik[1:])]
    monotone = all(d >= -1e-12 * max(1.0, abs(a)) for a, d in zip(loglik, increments))

    # The reference check runs on a quick-size prefix (all of x when quick) on the CPU,
    # from the same start (its own pooled covariance when the prefix is shorter).
    n_check = QUICK["n"]
    if quick and device == "cpu":
        check = compare_with_sklearn(x, params0, size["max_iter"], ours=(params, loglik))
    else:
        check = compare_with_sklearn(x[:n_check], initial_parameters(x[:n_check], size["k"]),
                                     size["max_iter"])

    figures = plot(xd, params, truth, loglik, out_dir)
    weights, means, covs = (p.cpu() for p in params)
    return dict(n=size["n"], k=size["k"], max_iter=size["max_iter"], loglik=loglik,
                loglik_non_decreasing=monotone, min_increment=min(increments),
                weights=weights, means=means, covs=covs, seconds=seconds, device=device,
                figures=figures, **check)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small size, a few seconds")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", default=None, help="directory for the figures")
    args = parser.parse_args()
    r = run(quick=args.quick, device=args.device, out_dir=args.out, verbose=True)
    print(f"gmm_em: N={r['n']} points in 2-D, K={r['k']}, {r['max_iter']} EM steps: "
          f"{r['seconds']:.2f} s, backend {r['device']}")


if __name__ == "__main__":
    main()
