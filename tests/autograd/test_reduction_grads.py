"""Gradients of every reduction, over both axes, against finite differences
(torch.autograd.gradcheck / gradgradcheck, float64), with batch dimensions; a third
derivative against torch autograd on the dense formula; torch.func transforms;
numerics at extreme values and at kinks."""

import pytest
import torch

from lazykeops.torch import Genred, LazyTensor

ALIASES = ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)"]
SUM_LIKE = [
    ("Sum", "Exp(-G*SqDist(X,Y)) * B", None, None),
    ("LogSumExp", "-G*SqDist(X,Y)", None, None),
    ("LogSumExp", "X*Y*G", None, None),                         # componentwise, dim 3
    ("LogSumExp", "-G*SqDist(X,Y)", "Exp(B)", None),            # weighted
    ("SumSoftMaxWeight", "-G*SqDist(X,Y)", "B", None),
]
SELECTIONS = [
    ("Min", "G*(X-Y)*Sum(B)", None, None),
    ("Max", "G*SqDist(X,Y)*Sum(B)", None, None),
    ("Min_ArgMin", "G*(X-Y)*Sum(B)", None, None),
    ("Max_ArgMax", "G*(X-Y)*Sum(B)", None, None),
    ("KMin", "G*SqDist(X,Y)*Sum(B)", None, 2),
    ("KMin_ArgKMin", "G*(X-Y)*Sum(B)", None, 2),
]


def inputs(batch=()):
    torch.manual_seed(0)
    return (torch.randn(*batch, 6, 3, dtype=torch.float64, requires_grad=True),
            torch.randn(5, 3, dtype=torch.float64, requires_grad=True),
            torch.randn(5, 2, dtype=torch.float64, requires_grad=True),
            torch.tensor([0.7], dtype=torch.float64, requires_grad=True))


def values_of(routine):
    def fn(*args):
        out = routine(*args)
        return out[0] if isinstance(out, tuple) else out
    return fn


def _id(case):
    return f"{case[0]}[{case[1]}{'|' + case[2] if case[2] else ''}]"


@pytest.mark.parametrize("batch", [(), (2,)], ids=["no-batch", "batch"])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("case", SUM_LIKE + SELECTIONS, ids=_id)
def test_gradcheck_every_reduction(case, axis, batch):
    # With batch=(2,), x has its own batch dimension and the other inputs broadcast.
    red, formula, formula2, k = case
    routine = Genred(formula, ALIASES, reduction_op=red, axis=axis, formula2=formula2,
                     opt_arg=k)
    args = inputs(batch)
    assert torch.autograd.gradcheck(values_of(routine), args)
    if batch and red in ("Sum", "LogSumExp", "SumSoftMaxWeight", "Min"):
        assert torch.autograd.gradgradcheck(values_of(routine), args)


@pytest.mark.parametrize("case", SUM_LIKE, ids=_id)
def test_gradgradcheck_sum_like(case):
    red, formula, formula2, k = case
    routine = Genred(formula, ALIASES, reduction_op=red, axis=1, formula2=formula2)
    assert torch.autograd.gradgradcheck(values_of(routine), inputs())


@pytest.mark.parametrize("case", [SELECTIONS[0], SELECTIONS[4]], ids=_id)
def test_gradgradcheck_selections(case):
    red, formula, formula2, k = case
    routine = Genred(formula, ALIASES, reduction_op=red, axis=1, opt_arg=k)
    assert torch.autograd.gradgradcheck(values_of(routine), inputs())


def test_gradcheck_with_broadcast_batch_dimensions():
    routine = Genred("Exp(-G*SqDist(X,Y)) * B", ALIASES, axis=1)
    x, y, b, g = inputs(batch=(2,))
    assert torch.autograd.gradcheck(routine, (x, y, b, g))
    bb = torch.randn(2, 5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(routine, (x.detach()[:1].requires_grad_(), y, bb, g))


def test_lazytensor_gradients_with_batch_dims():
    x = torch.randn(2, 6, 1, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 1, 5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)

    def conv(x, y, b):
        K = (-((LazyTensor(x) - LazyTensor(y)) ** 2).sum(-1)).exp()
        return K @ b

    def nearest(x, y):
        return ((LazyTensor(x) - LazyTensor(y)) ** 2).sum(-1).Kmin(2, dim=2)

    assert torch.autograd.gradcheck(conv, (x, y, b))
    assert torch.autograd.gradcheck(nearest, (x, y))


def test_indices_have_no_gradient():
    x, y, b, g = inputs()
    idx = Genred("SqDist(X,Y)", ["X = Vi(3)", "Y = Vj(3)"], reduction_op="ArgKMin", axis=1,
                 opt_arg=2)(x, y)
    assert idx.dtype == torch.int64 and not idx.requires_grad
    vals, idx = Genred("SqDist(X,Y)", ["X = Vi(3)", "Y = Vj(3)"], reduction_op="Min_ArgMin",
                       axis=1)(x, y)
    assert vals.requires_grad and not idx.requires_grad


def test_third_derivative_matches_dense_torch():
    torch.manual_seed(2)
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 2, dtype=torch.float64)
    routine = Genred("Exp(-SqDist(X,Y)) * Sin(Sum(X))", ["X = Vi(2)", "Y = Vj(2)"], axis=1)

    def dense(x):
        return (torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) *
                torch.sin(x.sum(-1, keepdim=True))).sum(1, keepdim=True)

    def third(fn):
        (g1,) = torch.autograd.grad(fn(x).pow(2).sum(), x, create_graph=True)
        (g2,) = torch.autograd.grad((g1 * g1).sum(), x, create_graph=True)
        (g3,) = torch.autograd.grad(g2.sin().sum(), x)
        return g3

    torch.testing.assert_close(third(lambda x: routine(x, y)), third(dense))


def test_torch_func_transforms():
    torch.manual_seed(3)
    routine = Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"], axis=1)
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.randn(5, 3, dtype=torch.float64)
    b = torch.randn(5, 2, dtype=torch.float64)

    def ours(x):
        return routine(x, y, b)

    def dense(x):
        return torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) @ b

    func = torch.func
    torch.testing.assert_close(func.grad(lambda x: ours(x).sum())(x),
                               func.grad(lambda x: dense(x).sum())(x))
    torch.testing.assert_close(func.jacrev(ours)(x), func.jacrev(dense)(x))
    torch.testing.assert_close(func.jacfwd(ours)(x), func.jacrev(dense)(x))
    torch.testing.assert_close(func.hessian(lambda x: ours(x).sum())(x),
                               func.hessian(lambda x: dense(x).sum())(x))
    xs = torch.randn(4, 6, 3, dtype=torch.float64)
    torch.testing.assert_close(func.vmap(ours)(xs), torch.stack([dense(v) for v in xs]))
    u = torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(func.jvp(ours, (x,), (u,))[1], func.jvp(dense, (x,), (u,))[1])


def test_logsumexp_gradients_stay_finite_at_large_values():
    x = torch.tensor([[1e4], [-1e4], [0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.linspace(-3, 3, 20, dtype=torch.float64)[:, None].requires_grad_()
    routine = Genred("X * Y", ["X = Vi(1)", "Y = Vj(1)"], reduction_op="LogSumExp", axis=1)
    gx, gy = torch.autograd.grad(routine(x, y).sum(), (x, y))
    ref = torch.autograd.grad(torch.logsumexp(x * y.T, 1).sum(), (x, y))
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    torch.testing.assert_close((gx, gy), ref)


@pytest.mark.parametrize("formula, dense", [
    ("Norm2(X-Y)", lambda d: d.norm(dim=-1, keepdim=True)),
    ("Sqrt(SqDist(X,Y))", lambda d: (d ** 2).sum(-1, keepdim=True).sqrt()),
])
def test_gradient_at_a_kink_is_zero_not_nan(formula, dense):
    x = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(2, 3, dtype=torch.float64)
    (g,) = torch.autograd.grad(Genred(formula, ["X = Vi(3)", "Y = Vj(3)"], axis=1)(x, y).sum(),
                               x)
    assert torch.equal(g, torch.zeros_like(g))


def test_gradients_of_a_kernel_of_x_minus_y_share_one_evaluation():
    # With respect to x and y only, the DualSum columns are minus its rows: the kernel is
    # rendered with the row formula alone (DualSumRed<..., 0, -1>).
    from lazykeops.compile.codegen import render_source
    from lazykeops.compile.spec import KernelSpec

    routine = Genred("Exp(-G*SqDist(X,Y)) * B", ALIASES, axis=1)
    x, y, b, g = inputs()
    b, g = b.detach(), g.detach()
    assert torch.autograd.gradcheck(lambda x, y: routine(x, y, b, g), (x, y))
    (dual,) = [c for c in routine.core.derived.values() if c.reduction.name == "DualSum"]
    spec = KernelSpec(dual.formulas, dual.engine_args, "DualSum", None, "float64")
    assert ", 0, -1>" in render_source(spec)
