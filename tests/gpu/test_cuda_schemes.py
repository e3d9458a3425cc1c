"""The CUDA engine's schemes, dtypes and sizes: the split scheme (backend="GPU_2D") and the
1D scheme ("GPU_1D") on every reduction over both axes, at sizes spanning many tiles and
splits, against the CPU engine; float16 and bfloat16 against float64 on the same rounded
inputs (values and gradients); wide variables (chunked sums, or read from global memory);
wide outputs; the split planner; peak memory. Skipped where no CUDA device is available
(CI)."""

import pytest
import torch

from lazykeops import LazyKeOpsError
from lazykeops.torch import Genred, LazyTensor
from tests.engine.test_reductions import ALIASES, CASES, _ids

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
CUDA = "cuda"
GAUSS = "Exp(-G*SqDist(X,Y)) * B"


def inputs(n, m, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, generator=g, dtype=dtype),
            torch.randn(m, 3, generator=g, dtype=dtype),
            torch.rand(m, 2, generator=g, dtype=dtype) + 0.5,
            torch.tensor([0.7], dtype=dtype))


def routine_of(case, axis):
    red, formula, formula2, k = case[:4]
    return Genred(formula, ALIASES, reduction_op=red, axis=axis, opt_arg=k, formula2=formula2)


def assert_same(got, want, rtol):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.is_cuda
        if w.dtype == torch.int64:
            assert torch.equal(g.cpu(), w)
        else:
            torch.testing.assert_close(g.cpu(), w, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("backend", ["GPU_1D", "GPU_2D", "auto"])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_schemes_match_the_cpu_engine(case, axis, backend):
    # 300 rows against 3000 terms: full and partial tiles; auto and GPU_2D split the terms.
    args = inputs(300, 3000) if axis == 1 else inputs(3000, 300)
    routine = routine_of(case, axis)
    want = routine(*args)
    got = routine(*[a.to(CUDA) for a in args], backend=backend)
    assert_same(got, want, 1e-10)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_split_scheme_on_few_terms(case, axis):
    # Fewer terms than a tile: GPU_2D still splits them (into ranges of a few terms).
    args = inputs(23, 37)
    routine = routine_of(case, axis)
    assert_same(routine(*[a.to(CUDA) for a in args], backend="GPU_2D"), routine(*args), 1e-10)


def test_split_scheme_with_batch_dimensions():
    x = torch.randn(3, 50, 3, dtype=torch.float64)
    y = torch.randn(2000, 3, dtype=torch.float64)
    b = torch.randn(3, 2000, 2, dtype=torch.float64)
    routine = Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"], axis=1)
    got = routine(x.to(CUDA), y.to(CUDA), b.to(CUDA), backend="GPU_2D")
    torch.testing.assert_close(got.cpu(), torch.exp(-torch.cdist(x, y.expand(3, -1, -1)) ** 2) @ b)


def test_the_planner_splits_few_rows_over_many_terms():
    routine = Genred(GAUSS, ALIASES, axis=1)
    lib = routine.core.kernel("float32", routine.core.backend.target(CUDA))
    assert lib.plan(1, 100, 1_000_000, 0) > 1        # auto: few rows, many terms
    assert lib.plan(1, 10_000_000, 10_000, 0) == 1   # auto: rows fill the GPU
    assert lib.plan(1, 100, 1_000_000, 1) == 1       # GPU_1D
    assert lib.plan(1, 100_000, 10_000, 2) >= 2      # GPU_2D
    assert lib.plan(1, 100, 1, 2) == 1               # one term cannot be split
    # The partial results of 1e7 rows split in two would pass the 64 MiB workspace cap.
    assert lib.plan(1, 10_000_000, 10_000, 2) == 1


# ---------------------------------------------------------------- half precisions
HALVES = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}  # unit roundoff


def rounded(args, dtype):
    return [a.to(dtype) for a in args]


@pytest.mark.parametrize("dtype", list(HALVES), ids=str)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_half_precision_reductions(case, axis, dtype):
    """Inputs rounded to the half type; the reference computes on those same values in
    float64. Outputs are within a few half ulps (float32 accumulation); selections of
    exactly computed values (X - Y) pick the same indices."""
    args = rounded(inputs(200, 700), dtype)
    routine = routine_of(case, axis)
    want = routine(*[a.double() for a in args])
    got = routine(*[a.to(CUDA) for a in args])
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        if w.dtype == torch.int64:
            assert g.dtype == torch.int64
            if case[1] == "X - Y":  # exact in float32: same values, same ties
                assert torch.equal(g.cpu(), w)
            continue
        assert g.dtype == dtype
        scale = w.abs().max().item()
        torch.testing.assert_close(g.cpu().double(), w, rtol=4 * HALVES[dtype],
                                   atol=4 * HALVES[dtype] * scale)


@pytest.mark.parametrize("dtype", list(HALVES), ids=str)
def test_half_precision_gradients(dtype):
    x, y, b, g = rounded(inputs(300, 400), dtype)
    routine = Genred(GAUSS, ALIASES, axis=1)
    grads = {}
    for where, kind in ((CUDA, dtype), ("cpu", torch.float64)):
        leaves = [t.to(where, kind).requires_grad_() for t in (x, y, b)]
        out = routine(*leaves, g.to(where, kind))
        out.backward(torch.ones_like(out))
        grads[where] = [t.grad for t in leaves]
    for got, want in zip(grads[CUDA], grads["cpu"]):
        assert got.dtype == dtype
        scale = want.abs().max().item()
        torch.testing.assert_close(got.cpu().double(), want, rtol=8 * HALVES[dtype],
                                   atol=8 * HALVES[dtype] * scale)


def test_half_precision_lazytensor():
    x = torch.rand(500, 3, device=CUDA, dtype=torch.float16)
    y = torch.rand(600, 3, device=CUDA, dtype=torch.float16)
    D = ((LazyTensor(x[:, None]) - LazyTensor(y[None])) ** 2).sum(-1)
    got = (-D).exp().sum(dim=1)
    want = torch.exp(-torch.cdist(x.double(), y.double()) ** 2).sum(1, keepdim=True)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.double(), want, rtol=4e-3, atol=0)


# ---------------------------------------------------------------- wide variables
def wide_inputs(dim, n=300, m=257, e=3):
    g = torch.Generator().manual_seed(dim)
    return (torch.rand(n, dim, generator=g, dtype=torch.float64) / dim ** 0.5,
            torch.rand(m, dim, generator=g, dtype=torch.float64) / dim ** 0.5,
            torch.randn(m, e, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("backend", ["auto", "GPU_2D"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("dim", [64, 128, 200, 1024, 9000])
def test_wide_variables(dim, dtype, backend):
    """D = 64 stays in registers, and 128 in float32; past 160 registers SqDist is computed
    in chunks of 32 (1024: whole chunks; 200 and 9000: a partial last chunk)."""
    x, y, b = wide_inputs(dim)
    routine = Genred("Exp(-SqDist(X,Y)) * B", [f"X = Vi({dim})", f"Y = Vj({dim})", "B = Vj(3)"],
                     axis=1)
    got = routine(*[t.to(CUDA, dtype) for t in (x, y, b)], backend=backend)
    want = torch.exp(-torch.cdist(x, y) ** 2) @ b
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(got.cpu().double(), want, rtol=tol, atol=tol)


def test_chunked_sums_with_wide_parameters_and_several_sums():
    dim = 300
    x, y, b = wide_inputs(dim, e=2)
    w = torch.rand(dim, dtype=torch.float64)
    routine = Genred("Exp(-SqDist(X,Y) - Sum(W*X*Y) + Scalprod(X, W)) * B",
                     [f"X = Vi({dim})", f"Y = Vj({dim})", "B = Vj(2)", f"W = Pm({dim})"], axis=1)
    got = routine(*[t.to(CUDA) for t in (x, y, b, w)])
    k = -torch.cdist(x, y) ** 2 - (x * w) @ y.T + (x @ w)[:, None]
    torch.testing.assert_close(got.cpu(), torch.exp(k) @ b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_chunked_nearest_neighbours_and_logsumexp(dtype):
    dim = 1024
    x, y, _ = wide_inputs(dim, n=500, m=2000)
    x, y = x.to(dtype), y.to(dtype)
    X, Y = LazyTensor(x.to(CUDA)[:, None]), LazyTensor(y.to(CUDA)[None])
    D = ((X - Y) ** 2).sum(-1)
    dist = torch.cdist(x.double(), y.double()) ** 2
    idx = D.argKmin(5, dim=1).cpu()
    # Rounding may swap near ties: the chosen neighbours' distances match the true ones.
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(dist.gather(1, idx), dist.topk(5, 1, largest=False).values,
                               rtol=tol, atol=tol)
    lse = (-D).logsumexp(dim=1).cpu().double()
    torch.testing.assert_close(lse, torch.logsumexp(-dist, 1, keepdim=True), rtol=tol, atol=tol)


def test_wide_variables_used_outside_sums_are_read_from_global_memory():
    # Elem(X, 0) uses X outside a sum: no chunking, X read at each use, Y in shared memory.
    dim = 1024
    x, y, b = wide_inputs(dim)
    routine = Genred("Exp(-SqDist(X,Y)) * Elem(X, 0) * B",
                     [f"X = Vi({dim})", f"Y = Vj({dim})", "B = Vj(3)"], axis=1)
    got = routine(*[t.to(CUDA) for t in (x, y, b)])
    torch.testing.assert_close(got.cpu(), (torch.exp(-torch.cdist(x, y) ** 2) * x[:, :1]) @ b)


WIDE_OUTPUTS = [  # (reduction, formula, weights, aliases): outputs past 32 components
    ("Sum", "Exp(-SqDist(X,Y)) * B", None, ["X = Vi(3)", "Y = Vj(3)", "B = Vj(100)"]),
    ("Sum", "Concat(X - Y, Exp(-SqDist(X,Y)) * B)", None,
     ["X = Vi(40)", "Y = Vj(40)", "B = Vj(30)"]),
    ("Min_ArgMin", "X - Y", None, ["X = Vi(40)", "Y = Vj(40)"]),
    ("Max", "X * Y", None, ["X = Vi(40)", "Y = Vj(40)"]),
    ("LogSumExp", "X - Y", None, ["X = Vi(40)", "Y = Vj(40)"]),
    ("LogSumExp", "-SqDist(X,Y)", "Exp(B)", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(50)"]),
    ("SumSoftMaxWeight", "-SqDist(X,Y)", "B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(50)"]),
]


@pytest.mark.parametrize("backend", ["auto", "GPU_2D"])
@pytest.mark.parametrize("case", WIDE_OUTPUTS, ids=lambda c: f"{c[0]}[{c[1]}]")
def test_wide_outputs_computed_in_slices(case, backend):
    red, formula, weights, aliases = case
    routine = Genred(formula, aliases, reduction_op=red, formula2=weights, axis=1)
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(n, int(a.split("(")[1][:-1]), generator=g, dtype=torch.float64)
            for n, a in zip((300, 500, 500), aliases)]
    assert_same(routine(*[a.to(CUDA) for a in args], backend=backend), routine(*args), 1e-10)


def test_a_term_too_large_for_shared_memory_is_a_clear_error():
    # Y is used outside a sum, so its 40,000 components (320 KB in float64) must fit in
    # shared memory: past the H100's 227 KB.
    dim = 40_000
    routine = Genred("SqDist(X,Y) + Elem(Y, 0)", [f"X = Vi({dim})", f"Y = Vj({dim})"], axis=1)
    x = torch.zeros(2, dim, dtype=torch.float64, device=CUDA)
    with pytest.raises(LazyKeOpsError, match="shared memory"):
        routine(x, x)


# ---------------------------------------------------------------- memory
def test_peak_memory_is_inputs_and_outputs_plus_a_small_workspace():
    n = 1_000_000
    x, y = torch.rand(n, 3, device=CUDA), torch.rand(n, 3, device=CUDA)
    b = torch.randn(n, 1, device=CUDA)
    routine = Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"], axis=1)
    routine(x[:1000], y[:1000], b[:1000])  # compile outside the measurement
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = routine(x, y, b)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base - out.numel() * out.element_size()
    assert extra <= 64 << 20, extra
