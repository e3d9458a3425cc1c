"""Gradients of block-sparse reductions (runtime/ranges.py): backward passes use the
transposed half of the ranges. torch.autograd.gradcheck in float64 for the sum-like
reductions over both axes (the CPU engine's fused DualSum included), selection gradients
(Min, KMin) against dense masked torch autograd, and a second order."""

import pytest
import torch

from lazykeops.torch import Genred, LazyTensor
from tests.runtime.ranges_cases import mask_of, six, structure

N, M = 19, 17
ALIASES = ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"]


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = (torch.randn(n, 3, generator=g, dtype=torch.float64) for n in (N, M))
    b = torch.rand(M, 2, generator=g, dtype=torch.float64) + 0.5  # weights: positive
    return [t.requires_grad_() for t in (x, y, b)]


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("red, formula, formula2", [
    ("Sum", "Exp(-SqDist(X,Y)) * B", None),
    ("LogSumExp", "-SqDist(X,Y)", "B"),
    ("SumSoftMaxWeight", "-SqDist(X,Y)", "B"),
])
def test_gradcheck_sum_like(red, formula, formula2, axis):
    struct = structure(N, M, seed=11)
    ranges = six(struct)
    routine = Genred(formula, ALIASES, reduction_op=red, axis=axis, formula2=formula2)
    x, y, b = inputs()
    # Rows with no term give constants (0, -inf, NaN): compare where the output is finite.
    out = routine(x, y, b, ranges=ranges).detach()
    finite = torch.isfinite(out)

    def f(x, y, b):
        r = routine(x, y, b, ranges=ranges)
        return torch.where(finite, r, torch.zeros_like(r))

    assert torch.autograd.gradcheck(f, (x, y, b))


def test_gradient_matches_dense_masked_autograd():
    struct = structure(N, M, seed=12)
    mask = mask_of(struct, N, M)
    ranges = six(struct)
    x, y, b = inputs(1)
    routine = Genred("Exp(-SqDist(X,Y)) * B", ALIASES, reduction_op="Sum", axis=1)
    g_out = torch.randn(N, 2, dtype=torch.float64)
    got = torch.autograd.grad(routine(x, y, b, ranges=ranges), (x, y, b), g_out)
    K = torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) * mask
    want = torch.autograd.grad(K @ b, (x, y, b), g_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_selection_gradients_flow_through_the_kept_pairs_only():
    struct = structure(N, M, seed=13)
    mask = mask_of(struct, N, M)
    ranges = six(struct)
    x, y, _ = inputs(2)
    X, Y = LazyTensor(x[:, None]), LazyTensor(y[None])
    D = ((X - Y) ** 2).sum(-1)
    kept = mask.any(1)

    def dense():
        return ((x[:, None] - y[None]) ** 2).sum(-1).masked_fill(~mask, float("inf"))

    for got, want in ((D.min(dim=1, ranges=ranges), dense().min(1, keepdim=True).values),
                      (D.Kmin(3, dim=1, ranges=ranges),
                       dense().topk(3, 1, largest=False).values)):
        w = torch.randn(want.shape, dtype=torch.float64).masked_fill(want.isinf(), 0)
        gx, gy = torch.autograd.grad((got.masked_fill(got.isinf(), 0) * w).sum(), (x, y))
        ref = torch.autograd.grad((want.masked_fill(want.isinf(), 0) * w).sum(), (x, y))
        torch.testing.assert_close(gx, ref[0])
        torch.testing.assert_close(gy, ref[1])
        assert (gx[~kept] == 0).all()


def test_second_order():
    struct = structure(N, M, seed=14)
    mask = mask_of(struct, N, M)
    ranges = six(struct)
    x, y, b = inputs(3)
    routine = Genred("Exp(-SqDist(X,Y)) * B", ALIASES, reduction_op="Sum", axis=1)
    gx, = torch.autograd.grad(routine(x, y, b, ranges=ranges).sum(), x, create_graph=True)
    hy, = torch.autograd.grad((gx ** 2).sum(), y)
    K = torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) * mask
    rx, = torch.autograd.grad((K @ b).sum(), x, create_graph=True)
    ry, = torch.autograd.grad((rx ** 2).sum(), y)
    torch.testing.assert_close(hy, ry)
