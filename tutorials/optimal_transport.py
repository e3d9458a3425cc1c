"""Entropic optimal transport between two point clouds, by log-domain Sinkhorn iterations.

Optimal transport compares two probability distributions by the cheapest way of moving
the mass of one onto the other. For two discrete measures, alpha = sum_i a_i delta_{x_i}
(the source, N points) and beta = sum_j b_j delta_{y_j} (the target, M points), a
*transport plan* is an N x M matrix P >= 0 whose rows sum to a and columns to b: P_ij is
the mass sent from x_i to y_j, so P is a coupling of the two laws. With the cost
C_ij = |x_i - y_j|^2 / 2 the optimal cost min_P <P, C> is half the squared Wasserstein-2
distance W_2^2(alpha, beta) / 2, a distance between laws that sees their geometry (two
Diracs at distance d are at W_2 distance d, where total variation or KL saturate).

That linear programme costs O(N^3); adding an entropic penalty makes it smooth and cheap:

    OT_eps(alpha, beta) = min_P  <P, C> + eps KL(P | a b^T).

The minimiser has the form P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps) for two dual
potentials f, g, and the dual problem is max_{f,g} <a, f> + <b, g> - eps <a b^T, exp((f + g - C)/eps) - 1>.
Maximising it over f with g fixed, then over g with f fixed, is Sinkhorn's algorithm;
each half-step is a *soft-min* of the cost, a LogSumExp reduction over the other cloud:

    f_i = - eps log sum_j exp((g_j - C_ij) / eps + log b_j),
    g_j = - eps log sum_i exp((f_i - C_ij) / eps + log a_i).

Written in the log domain it never overflows, even for small eps, and with lazykeops each
half-step is one reduction over a symbolic N x M table: memory stays O(N + M). After a
g-step the columns of P sum exactly to b; the error left on the rows, |P 1 - a|_1, is the
stopping rule. Convergence is slow when eps is small against the spread of C, so we use
*epsilon-scaling* (annealing): start with eps of the order of the squared diameter of the
data, where one step nearly solves the problem, and divide eps by a constant factor at
each step, warm-starting from the previous potentials, until the target eps; then iterate
at that eps. As eps -> 0, OT_eps tends to the unregularised cost; eps is a blur radius of
about sqrt(eps) in the units of x.

The plan itself is drawn only for a small instance (it has N x M entries): lines between
x_i and y_j for its strongest couplings. At large N it is used through reductions, as in
the *Wasserstein gradient flow*: moving the source points along minus the gradient of
OT_eps(alpha, beta) with respect to their positions. The gradient, obtained here by torch
autograd through one last soft-min (the envelope theorem makes the potentials'
dependence on x irrelevant at the optimum), is a_i (x_i - T(x_i)) with T(x_i) =
sum_j P_ij y_j / a_i the barycentric projection of x_i; a step of size tau on x_i (after
dividing by its mass a_i) moves it a fraction tau of the way to T(x_i), so the source
cloud flows onto the target. (The entropic bias makes OT_eps(beta, beta) > 0; the
debiased Sinkhorn divergence corrects that, and is not needed for the picture.)

Check: on a problem of a few hundred points in float64, the transport cost <P, C> of our
converged plan agrees with POT's `ot.sinkhorn2(a, b, C, eps, method="sinkhorn_log")`
(which also returns <P, C> of the entropic plan, not the dual objective) to about 1e-10
relative. That cost is computed by `kernel_product` in its `sinkhorn_cost` mode (a
Gaussian kernel exp(-|x - y|^2 / (2 eps)) is the Gibbs kernel exp(-C / eps)).
"""

import argparse
import math
import os
import time

import torch

from lazykeops.torch import LazyTensor
from lazykeops.torch.kernels import Kernel, kernel_product

FULL = dict(n=20_000, m=20_000, eps=1e-3, n_check=300, n_flow=5_000, n_frames=6)
QUICK = dict(n=300, m=300, eps=1e-2, n_check=300, n_flow=300, n_frames=6)
CHECK_EPS = 1e-2  # the POT comparison: POT's dense log-domain loop converges in seconds there


def two_clouds(n, m, seed=0, dtype=torch.float64):
    """The source: a noisy ring on the left; the target: two Gaussian blobs on the right,
    of unequal weights in number of points. Both are samples in random order (any prefix is
    a sample of the same law)."""
    gen = torch.Generator().manual_seed(seed)
    angle = 2 * math.pi * torch.rand(n, generator=gen, dtype=dtype)
    radius = 0.25 + 0.03 * torch.randn(n, generator=gen, dtype=dtype)
    x = torch.stack([0.3 + radius * angle.cos(), 0.5 + radius * angle.sin()], dim=1)
    upper = torch.rand(m, generator=gen) < 0.65
    centres = torch.where(upper[:, None], torch.tensor([0.75, 0.7], dtype=dtype),
                          torch.tensor([0.8, 0.25], dtype=dtype))
    y = centres + 0.07 * torch.randn(m, 2, generator=gen, dtype=dtype)
    return x, y


def softmin(x, y, h, inv_eps):
    """-eps times the log of sum_j exp(h_j - C_ij / eps), C_ij = |x_i - y_j|^2 / 2, as one
    LogSumExp reduction over j. eps enters as a parameter tensor, so that every eps of the
    annealing and both half-steps (x and y swapped) share one compiled formula."""
    C = ((LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])) ** 2).sum(-1) / 2
    lse = (LazyTensor(h[None, :, None]) - C * LazyTensor(inv_eps)).logsumexp(dim=1)
    return -lse.view(-1) / inv_eps


def eps_schedule(x, y, eps, factor=0.5):
    """eps-scaling: from the largest cost (the squared diameter / 2) down to eps,
    dividing by 1/factor at each step."""
    points = torch.cat([x, y])
    diameter2 = ((points.max(0).values - points.min(0).values) ** 2).sum().item()
    steps = [diameter2 / 2]
    while steps[-1] * factor > eps:
        steps.append(steps[-1] * factor)
    return steps + [eps]


def sinkhorn(x, y, a, b, eps, tol=1e-12, max_iter=10_000, g=None, check_every=10):
    """Log-domain Sinkhorn with eps-scaling. Returns the potentials (f, g), the number of
    iterations at the target eps and the final row-marginal error |P 1 - a|_1 (the columns
    are exact after the last g-step), measured every check_every iterations. g may
    warm-start the iteration (then no annealing)."""
    log_a, log_b = a.log(), b.log()
    dtype = x.dtype
    if g is None:
        g = torch.zeros_like(b)
        schedule = eps_schedule(x, y, eps)
    else:
        schedule = [eps]

    def half_steps(g, e):
        inv = torch.tensor([1.0 / e], dtype=dtype, device=x.device)
        f = softmin(x, y, g / e + log_b, inv)
        g = softmin(y, x, f / e + log_a, inv)
        return f, g, inv

    for e in schedule[:-1]:
        f, g, _ = half_steps(g, e)
    n_iter, err = 0, float("inf")
    while n_iter < max_iter and err > tol:
        f, g, inv = half_steps(g, eps)
        n_iter += 1
        if n_iter % check_every:
            continue
        # The rows of the current plan sum to a_i exp((f_i - f_new_i) / eps), f_new the
        # next f-step: its distance to a is the error, at the price of one more soft-min.
        f_next = softmin(x, y, g / eps + log_b, inv)
        err = (a * (1 - ((f - f_next) / eps).exp())).abs().sum().item()
    return f, g, n_iter, err


def transport_cost(x, y, a, b, f, g, eps):
    """<P, C> = sum_ij C_ij a_i b_j exp((f_i + g_j - C_ij)/eps), by kernel_product's
    sinkhorn_cost mode: with k = exp(-|x - y|^2 / (2 eps)) = exp(-C / eps), that mode
    returns sum_j (C_ij / eps) exp(log k_ij + a_log_i + b_log_j)."""
    params = {"id": Kernel("gaussian(x,y)"),
              "gamma": torch.tensor([0.5 / eps], dtype=x.dtype, device=x.device)}
    a_log = (f / eps + a.log())[:, None]
    b_log = (g / eps + b.log())[:, None]
    return eps * kernel_product(params, x, y, a_log, b_log, mode="sinkhorn_cost").sum().item()


def dense_plan(x, y, a, b, f, g, eps):
    """The N x M plan itself, for plotting and for small problems only."""
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2
    return a[:, None] * b[None, :] * ((f[:, None] + g[None, :] - C) / eps).exp()


def pot_cost(x, y, a, b, eps):
    """The reference: POT's log-domain Sinkhorn, run to convergence, returns <P, C>."""
    import ot

    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2
    return float(ot.sinkhorn2(a.numpy(), b.numpy(), C.numpy(), eps, method="sinkhorn_log",
                              numItermax=100_000, stopThr=1e-13))


def ot_gradient(x, y, a, b, eps, g):
    """OT_eps and its gradient in x. With g the converged potential, the dual objective
    <a, f(x)> + <b, g> with f = softmin(x, y, g) has the gradient of OT_eps (envelope
    theorem), so autograd needs to go through one reduction only."""
    x = x.detach().requires_grad_(True)
    inv = torch.tensor([1.0 / eps], dtype=x.dtype, device=x.device)
    f = softmin(x, y, g / eps + b.log(), inv)
    cost = (a * f).sum() + (b * g).sum()
    (grad,) = torch.autograd.grad(cost, x)
    return cost.item(), grad


def gradient_flow(x, y, a, b, eps, n_frames, tau=0.4):
    """n_frames positions of the source cloud along the discretised flow
    x_i <- x_i - tau * grad_i OT_eps / a_i (a fraction tau of the way to T(x_i))."""
    frames, costs, g = [x.clone()], [], None
    for _ in range(n_frames - 1):
        _, g, _, _ = sinkhorn(x, y, a, b, eps, tol=1e-4, g=g)
        cost, grad = ot_gradient(x, y, a, b, eps, g)
        x = x - tau * grad / a[:, None]
        frames.append(x.clone())
        costs.append(cost)
    _, g, _, _ = sinkhorn(x, y, a, b, eps, tol=1e-4, g=g)
    costs.append(ot_gradient(x, y, a, b, eps, g)[0])
    return frames, costs


def plot(x, y, plan, frames, costs, out_dir, n_lines=600):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    # The strongest couplings: the n_lines largest entries of the plan, darker when heavier.
    values, flat = plan.flatten().topk(n_lines)
    i, j = flat // plan.shape[1], flat % plan.shape[1]
    segments = torch.stack([x[i], y[j]], dim=1).cpu().numpy()
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.add_collection(LineCollection(segments, colors="0.3", linewidths=0.6,
                                     alpha=(values / values.max()).clamp(0.1, 1).cpu().numpy()))
    ax.scatter(x[:, 0].cpu(), x[:, 1].cpu(), s=6, c="tab:blue", label="source x_i")
    ax.scatter(y[:, 0].cpu(), y[:, 1].cpu(), s=6, c="tab:red", label="target y_j")
    ax.set_aspect("equal")
    ax.legend(loc="lower left")
    ax.set_title(f"entropic transport plan: its {n_lines} strongest couplings")
    plan_png = os.path.join(out_dir, "plan.png")
    fig.savefig(plan_png, dpi=100, bbox_inches="tight")
    plt.close(fig)

    cols = 3
    rows = -(-len(frames) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    yc = y.cpu()
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= len(frames):
            continue
        xk = frames[k].cpu()
        ax.scatter(yc[:, 0], yc[:, 1], s=1, c="tab:red", alpha=0.3, linewidths=0)
        ax.scatter(xk[:, 0], xk[:, 1], s=1, c="tab:blue", linewidths=0)
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(0.0, 1.0)
        ax.set_aspect("equal")
        ax.set_title(f"step {k}: OT_eps = {costs[k]:.2e}", fontsize=9)
    fig.suptitle("Wasserstein gradient flow of the source (blue) towards the target (red)")
    flow_png = os.path.join(out_dir, "flow.png")
    fig.savefig(flow_png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [plan_png, flow_png]


def uniform(n, like):
    return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)


def run(quick=False, device="cpu", out_dir=None):
    size = QUICK if quick else FULL
    if out_dir is None:
        out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures",
                               "optimal_transport")
    os.makedirs(out_dir, exist_ok=True)

    # float64 throughout: the comparison with POT is at 1e-6 and beyond, and the
    # annealing reaches eps = 1e-3, where float32 log-domain iterations still work but
    # blur the last digits.
    x, y = two_clouds(size["n"], size["m"])
    xd, yd = x.to(device), y.to(device)
    a, b = uniform(size["n"], xd), uniform(size["m"], yd)

    # Compile the soft-min outside the timing (two rows: one row would be read as a parameter).
    softmin(xd[:2], yd, b.log(), torch.tensor([1.0], dtype=xd.dtype, device=device))
    t0 = time.perf_counter()
    f, g, n_iter, err = sinkhorn(xd, yd, a, b, size["eps"], tol=1e-6)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    cost = transport_cost(xd, yd, a, b, f, g, size["eps"])
    dual = ((a * f).sum() + (b * g).sum()).item()

    # The check, on a prefix of the clouds on the CPU, at a larger eps (POT's dense loop).
    nc = size["n_check"]
    xc, yc = x[:nc], y[:nc]
    ac, bc = uniform(nc, xc), uniform(nc, yc)
    fc, gc, check_iter, check_err = sinkhorn(xc, yc, ac, bc, CHECK_EPS)
    check_cost = transport_cost(xc, yc, ac, bc, fc, gc, CHECK_EPS)
    ref_cost = pot_cost(xc, yc, ac, bc, CHECK_EPS)
    plan = dense_plan(xc, yc, ac, bc, fc, gc, CHECK_EPS)
    plan_marginal_err = ((plan.sum(1) - ac).abs().sum() + (plan.sum(0) - bc).abs().sum()).item()

    nf = size["n_flow"]
    frames, costs = gradient_flow(xd[:nf], yd[:nf], uniform(nf, xd), uniform(nf, yd),
                                  size["eps"], size["n_frames"])

    figures = plot(xc, yc, plan, frames, costs, out_dir)
    return dict(n=size["n"], m=size["m"], eps=size["eps"], n_iter=n_iter,
                marginal_err=err, cost=cost, dual=dual, seconds=seconds, device=device,
                check_n=nc, check_eps=CHECK_EPS, check_iter=check_iter,
                check_marginal_err=check_err, check_cost=check_cost, pot_cost=ref_cost,
                cost_rel_diff=abs(check_cost - ref_cost) / ref_cost,
                plan_marginal_err=plan_marginal_err, flow_costs=costs, figures=figures)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small size, a few seconds")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", default=None, help="directory for the figures")
    args = parser.parse_args()
    r = run(quick=args.quick, device=args.device, out_dir=args.out)
    print(f"optimal transport: N={r['n']} to M={r['m']} points in 2-D, eps={r['eps']:g}, "
          f"{r['n_iter']} Sinkhorn iterations after eps-scaling: {r['seconds']:.2f} s, "
          f"backend {r['device']}")


if __name__ == "__main__":
    main()
