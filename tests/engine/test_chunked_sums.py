"""The CPU engine's chunked sums (compile/chunking.py, csrc/lk_cpu_engine.h): formulas over
variables of more than CPU_WIDE_ABOVE components get their sums over those components
chunk by chunk. Checked against dense torch in float64 at widths around the chunk length
and far past the unrolling limit, for every reduction over both axes, with wide
parameters and several sums, in batches, through gradients; and the formulas that must
not be chunked."""

import pytest
import torch

from lazykeops.compile.chunking import CHUNK, CPU_WIDE_ABOVE, plan_chunks
from lazykeops.compile.codegen import render_source
from lazykeops.compile.spec import KernelSpec
from lazykeops.formula import var
from lazykeops.formula.aliases import parse_aliases
from lazykeops.formula.reductions import lookup
from lazykeops.formula.parser import parse_formula
from lazykeops.torch import Genred, LazyTensor
from tests.engine.test_reductions import _ids, aliases, check_reduction

N, M = 29, 700  # M spans two tiles of terms, N a block of rows and a partial one


def wide_inputs(dim, n=N, m=M, e=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, dim, generator=g, dtype=torch.float64) / dim ** 0.5,
            torch.rand(m, dim, generator=g, dtype=torch.float64) / dim ** 0.5,
            torch.randn(m, e, generator=g, dtype=torch.float64))


def parsed(formula, alias_texts):
    table = parse_aliases(alias_texts)
    nodes = {a.name: var(a.pos, a.dim, a.cat) for a in table}
    return (parse_formula(formula, nodes),), tuple((a.cat, a.dim) for a in table)


def cpu_plan(formula, alias_texts):
    return plan_chunks(*parsed(formula, alias_texts), "float32", "cpu")


def test_the_cpu_threshold():
    gauss = "Exp(-SqDist(X,Y)) * B"
    narrow = [f"X = Vi({CPU_WIDE_ABOVE})", f"Y = Vj({CPU_WIDE_ABOVE})", "B = Vj(2)"]
    wide = [f"X = Vi({CPU_WIDE_ABOVE + 1})", f"Y = Vj({CPU_WIDE_ABOVE + 1})", "B = Vj(2)"]
    assert cpu_plan(gauss, narrow) is None
    assert cpu_plan(gauss, wide) is not None
    assert cpu_plan("Exp(-SqDist(X,Y)) * Elem(X, 0) * B", wide) is None  # X outside a sum
    source = render_source(KernelSpec(*parsed(gauss, wide), "Sum", None, "float32"))
    assert "lk_cpu_engine.h" in source and "chunk_full" in source


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("dim", [CHUNK + 1, 2 * CHUNK, 200, 1024])
def test_wide_gaussian_convolution(dim, dtype):
    """A chunk and a tail of one, whole chunks, and past the unrolling limit."""
    x, y, b = wide_inputs(dim)
    routine = Genred("Exp(-SqDist(X,Y)) * B", [f"X = Vi({dim})", f"Y = Vj({dim})", "B = Vj(2)"],
                     axis=1)
    got = routine(*[t.to(dtype) for t in (x, y, b)])
    want = torch.exp(-torch.cdist(x, y) ** 2) @ b
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


DIM = 40  # one full chunk and a tail of 8


def sqdist(x, y):
    return ((x - y) ** 2).sum(-1, keepdim=True)


# Every reduction on chunked sums, in the form of test_reductions.CASES.
CASES = [
    ("Sum", "Exp(-G*SqDist(X,Y)) * B", None, None,
     lambda x, y, b, g: torch.exp(-g * sqdist(x, y)) * b, None),
    ("LogSumExp", "-G*SqDist(X,Y)", None, None, lambda x, y, b, g: -g * sqdist(x, y), None),
    ("LogSumExp", "-G*SqDist(X,Y)", "B", None,
     lambda x, y, b, g: -g * sqdist(x, y), lambda x, y, b, g: b),
    ("SumSoftMaxWeight", "-G*SqDist(X,Y)", "B", None,
     lambda x, y, b, g: -g * sqdist(x, y), lambda x, y, b, g: b),
]
CASES += [(red, "G*SqDist(X,Y) - Sum(X*Y)", None, None,
           lambda x, y, b, g: g * sqdist(x, y) - (x * y).sum(-1, keepdim=True), None)
          for red in ("Min", "Max", "ArgMin", "ArgMax", "Min_ArgMin", "Max_ArgMax")]
CASES += [(red, "SqDist(X,Y)", None, 4, lambda x, y, b, g: sqdist(x, y), None)
          for red in ("KMin", "ArgKMin", "KMin_ArgKMin")]


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_every_reduction_over_a_chunked_sum(case, axis):
    check_reduction(case, axis, dim=DIM, m=600)


def test_several_sums_and_wide_parameters():
    dim = 300
    x, y, b = wide_inputs(dim)
    w = torch.rand(dim, dtype=torch.float64)
    routine = Genred("Exp(-SqDist(X,Y) - Sum(W*X*Y) + Scalprod(X, W)) * B",
                     [f"X = Vi({dim})", f"Y = Vj({dim})", "B = Vj(2)", f"W = Pm({dim})"], axis=1)
    k = -torch.cdist(x, y) ** 2 - (x * w) @ y.T + (x @ w)[:, None]
    torch.testing.assert_close(routine(x, y, b, w), torch.exp(k) @ b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_weighted_distances_and_norms_are_chunked_as_sums(dtype):
    # WeightedSqDist (diagonal and scalar weights) and Norm2 are sums in disguise
    # (chunking.as_sums): planned, and equal to their float64 values.
    dim = 300
    x, y, b = wide_inputs(dim)
    w = torch.rand(dim, dtype=torch.float64) - 0.2  # weights of both signs
    g = torch.tensor([0.7], dtype=torch.float64)
    aliases = [f"X = Vi({dim})", f"Y = Vj({dim})", "B = Vj(2)", f"W = Pm({dim})", "G = Pm(1)"]
    diff2 = (x[:, None] - y[None]) ** 2
    for formula, k in [("Exp(-WeightedSqDist(W,X,Y)) * B", torch.exp(-(diff2 * w).sum(-1))),
                       ("Exp(-WeightedSqDist(G,X,Y)) * B", torch.exp(-0.7 * diff2.sum(-1))),
                       ("Exp(-Norm2(X-Y)) * B", torch.exp(-diff2.sum(-1).sqrt()))]:
        assert cpu_plan(formula, aliases) is not None, formula
        got = Genred(formula, aliases, axis=1)(*[t.to(dtype) for t in (x, y, b, w, g)])
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(got.double(), k @ b, rtol=tol, atol=tol)
    assert cpu_plan("Exp(-WeightedSqDist(W,X,Y)) * B",
                    aliases[:3] + [f"W = Pm({dim * dim})"]) is None  # a full matrix: not a sum


def test_batched_lazytensor_nearest_neighbours_over_wide_embeddings():
    x = torch.rand(3, 40, 100, dtype=torch.float64)
    y = torch.rand(3, 90, 100, dtype=torch.float64)
    D = ((LazyTensor(x[:, :, None]) - LazyTensor(y[:, None])) ** 2).sum(-1)
    dist = torch.cdist(x, y) ** 2
    assert torch.equal(D.argKmin(5, dim=2), dist.topk(5, 2, largest=False).indices)
    torch.testing.assert_close(D.min(dim=1), dist.min(1, keepdim=True).values.transpose(1, 2))


def test_gradients_through_chunked_and_wide_formulas():
    # The forward and the gradient in b are chunked; the gradients in x and y have outputs
    # of DIM components (X and Y outside the sums): they take the unchunked path.
    x, y, b = wide_inputs(DIM, n=7, m=9)
    args = [t.requires_grad_() for t in (x, y, b)]

    def conv(x, y, b):
        X, Y = LazyTensor(x[:, None]), LazyTensor(y[None])
        return ((-((X - Y) ** 2).sum(-1)).exp() * LazyTensor(b[None])).sum(1)

    assert torch.autograd.gradcheck(conv, args)


@pytest.mark.parametrize("axis", [0, 1])
def test_dualsum_of_chunked_formulas(axis):
    # The one-pass reduction behind gradients, with both of its formulas chunked.
    from lazykeops.runtime.genred import GenredCore, parse_genred

    x, y, b = wide_inputs(DIM, m=300)
    g = torch.tensor([0.7], dtype=torch.float64)
    formulas, table, _ = parse_genred("Exp(-G*SqDist(X,Y)) * B", aliases(DIM),
                                      "Exp(-Sum(X*Y)) * Sum(B)")
    rows, cols = GenredCore(formulas, table, "DualSum", axis=axis)(x, y, b, g)
    F = torch.exp(-g * torch.cdist(x, y) ** 2)[:, :, None] * b[None]
    H = torch.exp(-x @ y.T)[:, :, None] * b.sum(-1)[None, :, None]
    if axis == 0:
        F, H = F.transpose(0, 1), H.transpose(0, 1)
    torch.testing.assert_close(rows, F.sum(1))
    torch.testing.assert_close(cols, H.sum(0))



def test_wide_outputs_are_planned_as_chunked_outputs_on_the_cpu_only():
    wide = aliases(DIM)
    plan = cpu_plan("Exp(-G*SqDist(X,Y)) * (X - Y)", wide)
    assert [index for index, _ in plan.outputs] == [0] and plan.rest == (None,)
    assert [s.op for s in plan.scalars] == ["Exp"]       # computed by eval, once per term
    assert [s.op for s in plan.sums] == ["SqDist"]
    formulas, args = parsed("Exp(-G*SqDist(X,Y)) * (X - Y)", wide)
    assert plan_chunks(formulas, args, "float32", "cuda") is None  # the GPU slices outputs


# (formula, dense summand on x (N,1,D), y (1,M,D), b (1,M,2), w (D,)): outputs of D
# components, with scalars from chunked sums, from narrow variables, or none at all.
WIDE_OUTPUTS = [
    ("Exp(-G*SqDist(X,Y)) * (X - Y)",
     lambda x, y, b, w: torch.exp(-0.7 * ((x - y) ** 2).sum(-1, keepdim=True)) * (x - y)),
    ("Y * Sum(X*Y) + Exp(Elem(B, 0)) * W",
     lambda x, y, b, w: y * (x * y).sum(-1, keepdim=True) + torch.exp(b[..., :1]) * w),
    ("X*Y - Y + 2", lambda x, y, b, w: x * y - y + 2),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("dim", [CHUNK + 1, 200])
@pytest.mark.parametrize("case", WIDE_OUTPUTS, ids=lambda c: c[0])
def test_chunked_outputs(case, dim, dtype):
    formula, dense = case
    x, y, b = wide_inputs(dim)
    w = torch.rand(dim, dtype=torch.float64)
    g = torch.tensor([0.7], dtype=torch.float64)
    routine = Genred(formula, [f"X = Vi({dim})", f"Y = Vj({dim})", "B = Vj(2)", "G = Pm(1)",
                               f"W = Pm({dim})"], axis=1)
    got = routine(*[t.to(dtype) for t in (x, y, b, g, w)])
    want = dense(x[:, None], y[None], b[None], w).sum(1)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * want.abs().max().item())


@pytest.mark.parametrize("axis", [0, 1])
def test_min_and_kmin_of_chunked_outputs(axis):
    x, y, _ = wide_inputs(DIM)
    F = torch.exp(-torch.cdist(x, y)[:, :, None] ** 2) * (x[:, None] - y[None])
    F = F if axis == 1 else F.transpose(0, 1)
    aliases_xy = [f"X = Vi({DIM})", f"Y = Vj({DIM})"]
    minimum = Genred("Exp(-SqDist(X,Y)) * (X - Y)", aliases_xy, reduction_op="Min", axis=axis)
    torch.testing.assert_close(minimum(x, y), F.min(1).values)
    kmin = Genred("Exp(-SqDist(X,Y)) * (X - Y)", aliases_xy, reduction_op="KMin", axis=axis,
                  opt_arg=3)
    want, _ = lookup("KMin").reference(F, None, 3)
    torch.testing.assert_close(kmin(x, y), want.reshape(F.shape[0], -1))


def test_gradients_at_large_d_match_dense_autograd():
    # D = 200: the forward's sum and the gradients' outputs all chunked, with a tail of 8.
    x, y, b = wide_inputs(200, m=300, e=1)
    dense_x, dense_y = x.clone().requires_grad_(), y.clone().requires_grad_()
    torch.exp(-torch.cdist(dense_x, dense_y) ** 2).mul(b.T).sum().backward()
    x.requires_grad_(), y.requires_grad_()
    X, Y = LazyTensor(x[:, None]), LazyTensor(y[None])
    ((-((X - Y) ** 2).sum(-1)).exp() * LazyTensor(b[None])).sum(1).sum().backward()
    torch.testing.assert_close(x.grad, dense_x.grad)
    torch.testing.assert_close(y.grad, dense_y.grad)
