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
    from lazykeops.tensor.genred import GenredCore, parse_genred

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
