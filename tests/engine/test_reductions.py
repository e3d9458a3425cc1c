"""Every reduction, over both axes, against dense torch in float64; numerics of the sums
and of LogSumExp; int64 index outputs."""

import pytest
import torch

from lazykeops.torch import Genred

N, M = 23, 37  # not multiples of the SIMD width or of the tile

def aliases(dim):
    return [f"X = Vi({dim})", f"Y = Vj({dim})", "B = Vj(2)", "G = Pm(1)"]


ALIASES = aliases(3)


def dense_inputs(dtype=torch.float64, dim=3, m=M):
    torch.manual_seed(0)
    scale = (3 / dim) ** 0.5  # distances of the same order at any dim
    return (torch.randn(N, dim, dtype=dtype) * scale, torch.randn(m, dim, dtype=dtype) * scale,
            torch.rand(m, 2, dtype=dtype) + 0.5, torch.tensor([0.7], dtype=dtype))


# (reduction, formula, formula2, K, dense formula on x (N,1,3), y (1,M,3), b (1,M,2), g,
#  dense weights or None)
CASES = [
    ("Sum", "Exp(-G*SqDist(X,Y)) * B", None, None,
     lambda x, y, b, g: torch.exp(-g * ((x - y) ** 2).sum(-1, keepdim=True)) * b, None),
    ("LogSumExp", "-G*SqDist(X,Y)", None, None,
     lambda x, y, b, g: -g * ((x - y) ** 2).sum(-1, keepdim=True), None),
    ("LogSumExp", "X*Y", None, None, lambda x, y, b, g: x * y, None),  # componentwise
    ("LogSumExp", "-G*SqDist(X,Y)", "B", None,
     lambda x, y, b, g: -g * ((x - y) ** 2).sum(-1, keepdim=True), lambda x, y, b, g: b),
    ("SumSoftMaxWeight", "-SqDist(X,Y)", "B", None,
     lambda x, y, b, g: -((x - y) ** 2).sum(-1, keepdim=True), lambda x, y, b, g: b),
]
for _red in ("Min", "Max", "ArgMin", "ArgMax", "Min_ArgMin", "Max_ArgMax"):
    CASES.append((_red, "X - Y", None, None, lambda x, y, b, g: x - y, None))
for _red in ("KMin", "ArgKMin", "KMin_ArgKMin"):
    CASES.append((_red, "SqDist(X,Y)", None, 4,
                  lambda x, y, b, g: ((x - y) ** 2).sum(-1, keepdim=True), None))
    CASES.append((_red, "X - Y", None, 3, lambda x, y, b, g: x - y, None))


def _ids(case):
    return f"{case[0]}[{case[1]}{'|' + case[2] if case[2] else ''}]"


def check_reduction(case, axis, device="cpu", dim=3, m=M):
    """Run one case of CASES (or of the same form) with inputs on `device`, X and Y of
    `dim` components, and compare with dense torch."""
    from lazykeops.formula.reductions import lookup

    red, formula, formula2, k, dense_f, dense_w = case
    x, y, b, g = dense_inputs(dim=dim, m=m)
    F = dense_f(x[:, None], y[None], b[None], g)
    W = dense_w(x[:, None], y[None], b[None], g).expand(N, m, -1) if dense_w else None
    if axis == 0:  # reduce over i: the output is indexed by j; put i on the reduced axis
        F, W = F.transpose(0, 1), (W.transpose(0, 1) if W is not None else None)
    expected = [r for r in lookup(red).reference(F, W, k) if r is not None]
    routine = Genred(formula, aliases(dim), reduction_op=red, axis=axis, opt_arg=k,
                     formula2=formula2)
    out = routine(*[t.to(device) for t in (x, y, b, g)])
    outs = out if isinstance(out, tuple) else (out,)
    assert len(outs) == len(expected)
    for got, want in zip(outs, expected):
        assert got.device.type == torch.device(device).type
        got, want = got.cpu(), want.reshape(got.shape)
        if want.dtype == torch.int64:
            assert got.dtype == torch.int64
            assert torch.equal(got, want)
        else:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_reduction_matches_dense_torch(case, axis):
    check_reduction(case, axis)


def test_float32_sum_over_a_million_terms_is_accurate():
    torch.manual_seed(1)
    x = torch.rand(3, 1)
    y = torch.rand(1_000_000, 1)
    b = torch.rand(1_000_000, 1)
    routine = Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(1)", "Y = Vj(1)", "B = Vj(1)"],
                     axis=1)
    got = routine(x, y, b).double()
    want = (torch.exp(-(x.double() - y.double().T) ** 2) * b.double().T).sum(1, keepdim=True)
    rel = ((got - want).abs() / want.abs()).max().item()
    assert rel < 1e-6, rel


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logsumexp_is_stable_at_large_values(dtype):
    x = torch.tensor([[1e4], [-1e4], [0.0]], dtype=dtype)
    y = torch.linspace(-3, 3, 50, dtype=dtype)[:, None]
    routine = Genred("X + Y", ["X = Vi(1)", "Y = Vj(1)"], reduction_op="LogSumExp", axis=1)
    got = routine(x, y)
    want = torch.logsumexp(x.double() + y.double().T, dim=1, keepdim=True)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)


def test_logsumexp_of_only_minus_infinity_is_minus_infinity():
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.rand(40, 1, dtype=torch.float64) + 0.5
    routine = Genred("Log(X*Y)", ["X = Vi(1)", "Y = Vj(1)"], reduction_op="LogSumExp", axis=1)
    got = routine(x, y)
    assert got[0, 0].item() == float("-inf")
    torch.testing.assert_close(got[1], torch.logsumexp(torch.log(y[:, 0]), 0, keepdim=True))


def test_arg_reductions_return_int64_past_float32_precision():
    # pykeops stores indices as floats: beyond 2^24 they round. Here the winner sits at
    # an odd index above 2^24, which a float32 index could not represent.
    m = 2 ** 24 + 3
    y = torch.zeros(m, 1)
    y[m - 2] = -1.0
    routine = Genred("Y + X", ["X = Vi(1)", "Y = Vj(1)"], reduction_op="ArgMin", axis=1)
    idx = routine(torch.zeros(1, 1), y)
    assert idx.dtype == torch.int64
    assert idx.item() == m - 2


@pytest.mark.parametrize("scheme", ["block_sum", "kahan_scheme", "direct_sum"])
def test_sum_schemes_agree(scheme):
    x, y, b, g = dense_inputs(torch.float32)
    routine = Genred("Exp(-G*SqDist(X,Y)) * B", ALIASES, axis=1, sum_scheme=scheme)
    want = torch.exp(-g.double() * torch.cdist(x.double(), y.double()) ** 2) @ b.double()
    torch.testing.assert_close(routine(x, y, b, g).double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", [0, 1])
def test_dualsum_sums_one_formula_over_j_and_the_other_over_i(axis):
    # Internal reduction behind gradients: rows = sum_j f, cols = sum_i h, in one pass.
    from lazykeops.runtime.genred import GenredCore, parse_genred

    x, y, b, g = dense_inputs()
    formulas, aliases, text = parse_genred("Exp(-G*SqDist(X,Y)) * B", ALIASES, "X * Sum(B)")
    core = GenredCore(formulas, aliases, "DualSum", axis=axis)
    rows, cols = core(x, y, b, g)
    F = torch.exp(-g * ((x[:, None] - y[None]) ** 2).sum(-1, keepdim=True)) * b[None]
    H = x[:, None] * b[None].sum(-1, keepdim=True)
    if axis == 0:
        F, H = F.transpose(0, 1), H.transpose(0, 1)
    torch.testing.assert_close(rows, F.sum(1))
    torch.testing.assert_close(cols, H.sum(0))
