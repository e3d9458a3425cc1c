"""The reductions of the differential fuzz: how each is called, its dense reference, and
the tolerance model.

This module owns CALLS (every public spelling of every reduction), the reduction
families (BASE, INDICES_ONLY, ...), `reference` (the same reduction in torch), `magnitude`
and `tolerance` (how far rounding may move each output: the float32 reference's own
error, scaled to the group's dtype, plus a few ulps of the terms' size), `mismatches`
(NaN matches NaN, inf the same inf) and `gather` (the values at returned indices).
"""

import math

import torch

from fuzz_dense import EPS, F64

# How each reduction is called: (spelling, fn(F, W, dim, K, options)).
CALLS = {
    "Sum": (("F.sum(dim={d})", lambda F, W, d, k, o: F.sum(dim=d, **o)),
            ("F.sum({d})", lambda F, W, d, k, o: F.sum(d, **o)),
            ("F.sum(axis={d})", lambda F, W, d, k, o: F.sum(axis=d, **o)),
            ("F.sum_reduction(dim={d})", lambda F, W, d, k, o: F.sum_reduction(dim=d, **o))),
    "LogSumExp": (("F.logsumexp(dim={d})", lambda F, W, d, k, o: F.logsumexp(dim=d, **o)),
                  ("F.logsumexp_reduction(axis={d})",
                   lambda F, W, d, k, o: F.logsumexp_reduction(axis=d, **o))),
    "LogSumExpWeight": (("F.logsumexp(dim={d}, weight=W)",
                         lambda F, W, d, k, o: F.logsumexp(dim=d, weight=W, **o)),),
    "SumSoftMaxWeight": (("F.sumsoftmaxweight(W, dim={d})",
                          lambda F, W, d, k, o: F.sumsoftmaxweight(W, dim=d, **o)),
                         ("F.sumsoftmaxweight_reduction(W, axis={d})",
                          lambda F, W, d, k, o: F.sumsoftmaxweight_reduction(W, axis=d, **o))),
    "Min": (("F.min(dim={d})", lambda F, W, d, k, o: F.min(dim=d, **o)),
            ("F.min_reduction(dim={d})", lambda F, W, d, k, o: F.min_reduction(dim=d, **o))),
    "Max": (("F.max({d})", lambda F, W, d, k, o: F.max(d, **o)),
            ("F.max_reduction(axis={d})", lambda F, W, d, k, o: F.max_reduction(axis=d, **o))),
    "ArgMin": (("F.argmin(dim={d})", lambda F, W, d, k, o: F.argmin(dim=d, **o)),
               ("F.argmin_reduction(axis={d})",
                lambda F, W, d, k, o: F.argmin_reduction(axis=d, **o))),
    "ArgMax": (("F.argmax(dim={d})", lambda F, W, d, k, o: F.argmax(dim=d, **o)),
               ("F.argmax_reduction(dim={d})",
                lambda F, W, d, k, o: F.argmax_reduction(dim=d, **o))),
    "Min_ArgMin": (("F.min_argmin(dim={d})", lambda F, W, d, k, o: F.min_argmin(dim=d, **o)),
                   ("F.min_argmin_reduction(axis={d})",
                    lambda F, W, d, k, o: F.min_argmin_reduction(axis=d, **o))),
    "Max_ArgMax": (("F.max_argmax(dim={d})", lambda F, W, d, k, o: F.max_argmax(dim=d, **o)),
                   ("F.max_argmax_reduction(dim={d})",
                    lambda F, W, d, k, o: F.max_argmax_reduction(dim=d, **o))),
    "KMin": (("F.Kmin({k}, dim={d})", lambda F, W, d, k, o: F.Kmin(k, dim=d, **o)),
             ("F.Kmin_reduction(K={k}, axis={d})",
              lambda F, W, d, k, o: F.Kmin_reduction(K=k, axis=d, **o))),
    "ArgKMin": (("F.argKmin({k}, dim={d})", lambda F, W, d, k, o: F.argKmin(k, dim=d, **o)),
                ("F.argKmin_reduction({k}, dim={d})",
                 lambda F, W, d, k, o: F.argKmin_reduction(k, dim=d, **o))),
    "KMin_ArgKMin": (("F.Kmin_argKmin({k}, dim={d})",
                      lambda F, W, d, k, o: F.Kmin_argKmin(k, dim=d, **o)),
                     ("F.Kmin_argKmin_reduction(K={k}, dim={d})",
                      lambda F, W, d, k, o: F.Kmin_argKmin_reduction(K=k, dim=d, **o))),
}
REDUCTIONS = tuple(CALLS)
SUM_SCHEMES = ("auto", "block_sum", "kahan_scheme", "direct_sum")
ACCS = ("auto", "float32", "float64")
GRAD_REDUCTIONS = ("Sum", "SumSoftMaxWeight", "Min", "LogSumExp", "KMin", "LogSumExpWeight",
                   "Max", "Min_ArgMin")
WEIGHTED = ("LogSumExpWeight", "SumSoftMaxWeight")
# Reference kind of each reduction; outputs: values, indices or both.
BASE = {"Sum": "sum", "LogSumExp": "lse", "LogSumExpWeight": "lsew", "SumSoftMaxWeight": "ssmw",
        "Min": "min", "ArgMin": "min", "Min_ArgMin": "min", "Max": "max", "ArgMax": "max",
        "Max_ArgMax": "max", "KMin": "kmin", "ArgKMin": "kmin", "KMin_ArgKMin": "kmin"}
INDICES_ONLY = ("ArgMin", "ArgMax", "ArgKMin")
WITH_INDICES = ("ArgMin", "ArgMax", "ArgKMin", "Min_ArgMin", "Max_ArgMax", "KMin_ArgKMin")


def reference(base, F, W, ax, k):
    """torch reduction of F (..., N, M, D) over axis `ax`: (..., n_out, [K,] D) values."""
    if base == "sum":
        return F.sum(ax)
    if base == "lse":
        return torch.logsumexp(F, ax)
    if base == "lsew":
        return torch.logsumexp(F + torch.log(W), ax)
    if base == "ssmw":
        return (torch.softmax(F, ax) * W).sum(ax)
    if base == "min":
        return F.amin(ax)
    if base == "max":
        return F.amax(ax)
    return torch.topk(F, k, dim=ax, largest=False, sorted=True).values.movedim(ax, -2)


def magnitude(base, a, w, ax):
    """The size of what rounding acts on, per output entry (tolerances scale with it),
    from the magnitudes `a` of F and `w` of W; sums of n terms (direct_sum, say) lose up
    to ~sqrt(n) roundings more."""
    length = max(1.0, math.sqrt(a.shape[ax]) / 8)
    if base == "sum":
        return a.sum(ax) * length
    if base == "ssmw":
        return w.amax(ax) * (1 + a.amax(ax)) * length
    if base == "lsew":
        return (a.amax(ax) + 1) * length
    if base == "lse":
        return a.amax(ax) * length
    return a.amax(ax).unsqueeze(-2) if base == "kmin" else a.amax(ax)


def tolerance(exp64, exp32, scale, dtype):
    """Rounding the float32 reference exhibits (scaled to `dtype`), plus a few ulps."""
    ratio = EPS[dtype] / EPS["float32"]
    return 8 * (exp32.to(F64) - exp64).abs() * ratio + 32 * EPS[dtype] * (exp64.abs() + scale)


def mismatches(got, exp, tol, skip):
    """Entries where `got` disagrees with `exp`: NaN must match NaN, inf the same inf."""
    both_nan = torch.isnan(got) & torch.isnan(exp)
    close = (got == exp) | ((got - exp).abs() <= tol)
    return ~(both_nan | close) & ~skip


def gather(F, idx, ax, kmin):
    """F's values at the indices a reduction returned (same layout as its values)."""
    if kmin:
        return F.take_along_dim(idx.movedim(-2, ax), dim=ax).movedim(ax, -2)
    return F.take_along_dim(idx.unsqueeze(ax), dim=ax).squeeze(ax)
