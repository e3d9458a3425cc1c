"""The tensor-core variant of the CUDA engine (csrc/lk_cuda_mma.cuh) against float64
references: distances and scalar products under every reduction family, both axes, ragged
sizes (N, M, D not multiples of the tiles), batch dims, half precisions, data far from the
origin, torch's float32 matmul setting, and gradients through it. Skipped without a
device of compute capability 8.0 or more (CI)."""

import pytest
import torch

import lazykeops
from lazykeops.compile.tensor_cores import mode_for, plan_tensor_cores
from lazykeops.torch import Genred, LazyTensor

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8,
    reason="no CUDA device with tensor cores")]
CUDA = "cuda"
D = 70  # a ragged K for both MMA shapes (8 and 16)


@pytest.fixture
def precision():
    """Sets torch.set_float32_matmul_precision for a test, then restores it."""
    before = torch.get_float32_matmul_precision()
    yield torch.set_float32_matmul_precision
    torch.set_float32_matmul_precision(before)


def planned(routine, dtype):
    """Whether `routine`'s forward kernel takes the tensor-core variant."""
    core = routine.core if hasattr(routine, "core") else routine
    target = "cuda:sm_%d%d" % torch.cuda.get_device_capability()
    mode = mode_for(dtype, target)
    return plan_tensor_cores(core.formulas, core.engine_args, mode) is not None


def points(n, m, d=D, shift=0.0, batch=()):
    g = torch.Generator().manual_seed(n + m + d)
    x = torch.rand(*batch, n, d, generator=g, dtype=torch.float64) * 0.3 + shift
    y = torch.rand(*batch, m, d, generator=g, dtype=torch.float64) * 0.3 + shift
    b = torch.randn(*batch, m, 3, generator=g, dtype=torch.float64)
    return x, y, b


def sqdist(x, y):
    return ((x.unsqueeze(-2) - y.unsqueeze(-3)) ** 2).sum(-1)


# (reduction, formula, dense float64 reference of (x, y, b) over the j axis, rtol)
CASES = [
    ("Sum", "Exp(-SqDist(X,Y)) * B", lambda x, y, b: torch.exp(-sqdist(x, y)) @ b, 3e-3),
    ("Sum", "Sqrt(Sum(Square(X-Y))) * B", lambda x, y, b: sqdist(x, y).sqrt() @ b, 3e-3),
    ("LogSumExp", "-SqNorm2(X-Y) * IntCst(2)",
     lambda x, y, b: torch.logsumexp(-2 * sqdist(x, y), -1, keepdim=True), 3e-3),
]


def aliases_for(axis, extra=True):
    """X indexes the output, Y the reduction, over j (axis 1) or i (axis 0)."""
    out, red = ("Vi", "Vj") if axis == 1 else ("Vj", "Vi")
    return [f"X = {out}({D})", f"Y = {red}({D})"] + ([f"B = {red}(3)"] if extra else [])


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=[c[1] for c in CASES])
def test_sums_match_float64_at_tf32(precision, case, axis):
    red, formula, reference, rtol = case
    precision("high")
    x, y, b = points(1001, 517)
    routine = Genred(formula, aliases_for(axis, "B" in formula), reduction_op=red, axis=axis)
    assert planned(routine, "float32")
    got = routine(*[t.float().to(CUDA) for t in (x, y, b)][:3 if "B" in formula else 2])
    want = reference(x, y, b)
    torch.testing.assert_close(got.double().cpu(), want, rtol=rtol, atol=rtol * want.abs().max())


@pytest.mark.parametrize("axis", [0, 1])
def test_selections_pick_the_nearest_up_to_tf32_rounding(precision, axis):
    precision("high")
    x, y, _ = points(1000, 333)
    d = sqdist(x, y)
    best = d.topk(4, largest=False).values
    tol = 2e-3 * best.max().item()
    xs, ys = x.float().to(CUDA), y.float().to(CUDA)
    argmin = Genred("SqDist(X,Y)", aliases_for(axis, False), reduction_op="ArgMin", axis=axis)
    assert planned(argmin, "float32")
    picked = d.gather(1, argmin(xs, ys).long().cpu())
    assert (picked - best[:, :1]).max() < tol
    kmin = Genred("SqDist(X,Y)", aliases_for(axis, False), reduction_op="KMin_ArgKMin",
                  axis=axis, opt_arg=4)
    values, idx = kmin(xs, ys)
    torch.testing.assert_close(values.double().cpu(), best, rtol=0, atol=tol)
    torch.testing.assert_close(d.gather(1, idx.long().cpu()), values.double().cpu(), rtol=0,
                               atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_ties_keep_the_smallest_index_across_the_lanes_of_a_row(precision, dtype):
    # Three exact copies of each term, 333 apart: their distances are equal bit for bit,
    # reduced by different lanes of a row (columns 8 * nt + 2 * q + h), whose merge must
    # give the first copy (ArgMin) and the copies in increasing j (KMin's fold).
    precision("high")
    x, y, _ = points(1000, 333)
    xs, ys = x.to(CUDA, dtype), y.repeat(3, 1).to(CUDA, dtype)
    argmin = Genred("SqDist(X,Y)", aliases_for(1, False), reduction_op="ArgMin", axis=1)
    assert planned(argmin, str(dtype)[6:])
    assert argmin(xs, ys).max().item() < 333
    kmin = Genred("SqDist(X,Y)", aliases_for(1, False), reduction_op="KMin_ArgKMin", axis=1,
                  opt_arg=3)
    values, idx = kmin(xs, ys)
    idx = idx.long().cpu()
    copies = (idx % 333 == idx[:, :1] % 333).all(1)
    assert copies.float().mean() > 0.99
    assert (values[copies] == values[copies][:, :1]).all()
    assert (idx[copies] == idx[copies][:, :1] + torch.tensor([0, 333, 666])).all()


def test_far_from_the_origin_is_as_accurate_as_near_it(precision):
    precision("high")
    conv = Genred("Exp(-SqDist(X,Y)) * B", aliases_for(1), axis=1)
    errors = []
    for shift in (0.0, 1e3):
        x, y, b = points(700, 600, shift=shift)
        want = torch.exp(-sqdist(x, y)) @ b
        got = conv(*[t.float().to(CUDA) for t in (x, y, b)]).double().cpu()
        errors.append(((got - want).abs().max() / want.abs().max()).item())
    # float32 data at 1e3 already round the points at 6e-5: the centred kernel keeps that.
    assert errors[1] < max(10 * errors[0], 1e-3), errors


def test_highest_keeps_the_cuda_core_path_and_full_accuracy(precision):
    precision("highest")
    x, y, b = points(500, 400)
    conv = Genred("Exp(-SqDist(X,Y)) * B", aliases_for(1), axis=1)
    assert not planned(conv, "float32")
    got = conv(*[t.float().to(CUDA) for t in (x, y, b)]).double().cpu()
    torch.testing.assert_close(got, torch.exp(-sqdist(x, y)) @ b, rtol=1e-5, atol=1e-5)


def test_the_override_takes_tf32_under_torchs_highest(precision):
    precision("highest")
    x, y, b = points(500, 400)
    conv = Genred("Exp(-SqDist(X,Y)) * B", aliases_for(1), axis=1)
    with lazykeops.float32_precision("high"):
        assert planned(conv, "float32")
        got = conv(*[t.float().to(CUDA) for t in (x, y, b)]).double().cpu()
    assert not planned(conv, "float32")
    want = torch.exp(-sqdist(x, y)) @ b
    torch.testing.assert_close(got, want, rtol=3e-3, atol=3e-3 * want.abs().max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precisions_match_their_rounded_inputs(dtype):
    x, y, b = points(900, 450)
    xh, yh, bh = (t.to(dtype) for t in (x, y, b))
    conv = Genred("Exp(-SqDist(X,Y)) * B", aliases_for(1), axis=1)
    assert planned(conv, {torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype])
    got = conv(*[t.to(CUDA) for t in (xh, yh, bh)]).double().cpu()
    xd, yd, bd = (t.double() for t in (xh, yh, bh))
    want = torch.exp(-sqdist(xd, yd)) @ bd
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * want.abs().max())


def test_batch_dims_and_scalar_products(precision):
    precision("medium")
    x, y, b = points(300, 257, batch=(2, 3))
    xi, yj, bj = (LazyTensor(t.float().to(CUDA).unsqueeze(-2 - k)) for k, t in
                  ((0, x), (1, y), (1, b)))
    got = ((xi | yj) * bj).sum(3)
    want = (x @ y.mT) @ b
    torch.testing.assert_close(got.double().cpu(), want, rtol=3e-3, atol=3e-3 * want.abs().max())


def test_gradients_through_a_tensor_core_forward(precision):
    precision("high")
    x, y, b = points(400, 300)
    conv = Genred("Exp(-SqDist(X,Y)) * B", aliases_for(1), axis=1)
    xs = x.float().to(CUDA).requires_grad_(True)
    out = conv(xs, y.float().to(CUDA), b.float().to(CUDA))
    (gx,) = torch.autograd.grad((out ** 2).sum(), xs)
    xr = x.clone().requires_grad_(True)
    ref = torch.exp(-sqdist(xr, y)) @ b
    (gr,) = torch.autograd.grad((ref ** 2).sum(), xr)
    torch.testing.assert_close(gx.double().cpu(), gr, rtol=5e-3, atol=5e-3 * gr.abs().max())


@pytest.mark.parametrize("signs", ["positive", "mixed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_weighted_distances_and_products(precision, signs, dtype):
    # WeightedSqDist with a diagonal weight (a parameter of D components, which scales the
    # MMA's X operand and weighs the norms) and with a scalar one, and a weighted scalar
    # product; weights of both signs give negative "distances", which must not be clamped.
    precision("high")
    x, y, b = points(800, 333, shift=10.0)
    w = torch.rand(D, generator=torch.Generator().manual_seed(7), dtype=torch.float64) + 0.5
    if signs == "mixed":
        w[::3] *= -3.0
    args = [t.to(CUDA, dtype) for t in (x, y, b, w, torch.tensor([0.75], dtype=torch.float64))]
    xd, yd, bd, wd, gd = (t.double().cpu() for t in args)  # the inputs as rounded
    weighted = ((xd.unsqueeze(1) - yd.unsqueeze(0)) ** 2 * wd).sum(-1)
    aliases = aliases_for(1) + [f"W = Pm({D})", "G = Pm(1)"]
    name = str(dtype)[6:]
    tol = 3e-3 if dtype == torch.float32 else 6e-3
    for formula, want in [
        ("Exp(-WeightedSqDist(W,X,Y) / IntCst(8)) * B", torch.exp(-weighted / 8) @ bd),
        ("Exp(-WeightedSqDist(G,X,Y)) * B", torch.exp(-gd * sqdist(xd, yd)) @ bd),
        # / 1024: the sums (about 1e5) within float16's range
        ("Sum(W * X * Y) * B / IntCst(1024)", (xd * wd) @ yd.T @ bd / 1024),
    ]:
        routine = Genred(formula, aliases, axis=1)
        assert planned(routine, name), formula
        got = routine(*args).double().cpu()
        torch.testing.assert_close(got, want, rtol=tol, atol=tol * want.abs().max(),
                                   msg=lambda m: f"{formula}: {m}")
    argmin = Genred("WeightedSqDist(W,X,Y)", aliases_for(1, False) + [f"W = Pm({D})"],
                    reduction_op="Min_ArgMin", axis=1)
    assert planned(argmin, name)
    values, idx = argmin(args[0], args[1], args[3])
    best = weighted.min(1, keepdim=True).values
    atol = 2e-3 * (weighted.max() - weighted.min()).item()
    torch.testing.assert_close(values.double().cpu(), best, rtol=0, atol=atol)
    assert (weighted.gather(1, idx.long().cpu()) - best).max() < atol
    if signs == "mixed":
        assert best.max() < 0  # negative minima: computed, not clamped to 0


def test_nan_data_give_nan_through_the_tensor_cores(precision):
    precision("high")
    x, y, b = points(300, 200)
    x[5, 3] = float("nan")
    conv = Genred("Exp(-SqDist(X,Y)) * B", aliases_for(1), axis=1)
    got = conv(*[t.float().to(CUDA) for t in (x, y, b)]).cpu()
    assert got[5].isnan().all() and not got[:5].isnan().any() and not got[6:].isnan().any()
