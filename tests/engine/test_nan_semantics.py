"""NaN and infinite terms in every reduction behave as in torch: Sum, LogSumExp (with and
without weights) and SumSoftMaxWeight give NaN; Min/Max and ArgMin/ArgMax select the first
NaN; KMin/ArgKMin order NaN after the numbers (torch.topk). One deliberate difference: a
LogSumExp row with a +inf term is +inf even when another term is NaN (torch: NaN), which
keeps NaN tests out of the accumulator's per-term loop. Rows of 3,000 terms span several
tiles of the CPU engine and several blocks and split ranges of the GPU one."""

import math

import pytest
import torch

from lazykeops.torch import LazyTensor

M, K = 3000, 3
NAN, INF = float("nan"), float("inf")
GPU = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])


def scenarios():
    """name -> a row of M terms, float64."""
    base = torch.linspace(-3.0, 3.0, M, dtype=torch.float64).sin() * 2
    rows = {}

    def row(name, **where):
        r = base.clone()
        for index, value in where.items():
            r[int(index[1:])] = value
        rows[name] = r

    rows["all NaN"] = torch.full((M,), NAN, dtype=torch.float64)
    rows["all -inf"] = torch.full((M,), -INF, dtype=torch.float64)
    row("one NaN late", j2500=NAN)
    row("NaN first", j0=NAN)
    row("+inf and NaN", j3=INF, j2000=NAN)
    row("NaN and +inf", j3=NAN, j2000=INF)
    row("two +inf", j7=INF, j1000=INF)
    row("one +inf", j1500=INF)
    rows["-inf and NaN"] = torch.where(torch.arange(M) == 2999, NAN, -INF).double()
    tail = base.clone()
    tail[M - 500:] = NAN
    rows["NaN tail"] = tail
    return rows


ROWS = scenarios()
WEIGHTS = torch.linspace(0.5, 2.0, M, dtype=torch.float64)[:, None]


def lazy_row(values, dtype, device):
    """The LazyTensor f_1j = 1 * v_j, reduced over j (one row, M terms)."""
    one = torch.ones(1, 1, 1, dtype=dtype, device=device)
    return LazyTensor(one) * LazyTensor(values.to(dtype).to(device)[None, :, None])


def inf_wins(value, row):
    """The LogSumExp of a row with a +inf term is +inf in lazykeops, NaN terms or not."""
    return torch.full_like(value, INF) if (row == INF).any() else value


REDUCTIONS = {
    "sum": (lambda f, w: f.sum(dim=1), lambda r, w: r.sum()),
    "logsumexp": (lambda f, w: f.logsumexp(dim=1),
                  lambda r, w: inf_wins(torch.logsumexp(r, 0), r)),
    "logsumexp weight": (lambda f, w: f.logsumexp(dim=1, weight=LazyTensor(w[None])),
                         lambda r, w: inf_wins(torch.logsumexp(r + w[:, 0].log(), 0), r)),
    "sumsoftmaxweight": (lambda f, w: f.sumsoftmaxweight(LazyTensor(w[None]), dim=1),
                         lambda r, w: (torch.softmax(r, 0) * w[:, 0]).sum()),
    "min": (lambda f, w: f.min(dim=1), lambda r, w: r.min()),
    "max": (lambda f, w: f.max(dim=1), lambda r, w: r.max()),
    "argmin": (lambda f, w: f.argmin(dim=1), lambda r, w: r.argmin()),
    "argmax": (lambda f, w: f.argmax(dim=1), lambda r, w: r.argmax()),
    "kmin": (lambda f, w: f.Kmin(K, dim=1), lambda r, w: r.topk(K, largest=False).values),
    "argkmin": (lambda f, w: f.argKmin(K, dim=1), lambda r, w: r.topk(K, largest=False).indices),
}


def same(got, expected):
    got, expected = got.flatten().double().cpu(), expected.flatten().double()
    return got.shape == expected.shape and all(
        (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=1e-5)
        for a, b in zip(got.tolist(), expected.tolist()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", ["cpu", GPU])
@pytest.mark.parametrize("reduction", list(REDUCTIONS))
def test_nan_and_inf_terms_as_in_torch(reduction, device, dtype):
    lazy, dense = REDUCTIONS[reduction]
    w = WEIGHTS.to(dtype).to(device)
    wrong = []
    for name, row in ROWS.items():
        # torch's own float32 reference: the values are exact in float32 or NaN/inf.
        expected = dense(row.to(dtype), WEIGHTS.to(dtype))
        got = lazy(lazy_row(row, dtype, device), w)
        if not same(got, expected):
            wrong.append(f"{name}: got {got.flatten().tolist()}, torch "
                         f"{expected.flatten().tolist()}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("backend", ["GPU_1D", "GPU_2D"])
@pytest.mark.parametrize("reduction", ["logsumexp", "min", "argmax", "argkmin"])
def test_nan_terms_in_both_gpu_schemes(reduction, backend):
    lazy, dense = REDUCTIONS[reduction]
    for name, row in ROWS.items():
        f = lazy_row(row, torch.float32, "cuda")
        got = {"logsumexp": lambda: f.logsumexp(dim=1, backend=backend),
               "min": lambda: f.min(dim=1, backend=backend),
               "argmax": lambda: f.argmax(dim=1, backend=backend),
               "argkmin": lambda: f.argKmin(K, dim=1, backend=backend)}[reduction]()
        assert same(got, dense(row.float(), None)), name


@pytest.mark.parametrize("device", ["cpu", GPU])
def test_a_nan_weight_spoils_only_its_own_component(device):
    """Found by the fuzzer: one NaN weight made every component NaN."""
    row = ROWS["one +inf"].clone()
    row[1500] = 0.5  # no infinite term
    w = torch.rand(M, 3, dtype=torch.float64) + 0.5
    w[1234, 1] = NAN
    f = lazy_row(row, torch.float64, device)
    W = LazyTensor(w.to(device)[None])
    lse = f.logsumexp(dim=1, weight=W).flatten().cpu()
    softmax = f.sumsoftmaxweight(W, dim=1).flatten().cpu()
    assert same(lse, torch.logsumexp(row[:, None] + w.log(), 0))
    assert same(softmax, (torch.softmax(row, 0)[:, None] * w).sum(0))
    assert torch.isnan(lse[1]) and not torch.isnan(lse[[0, 2]]).any()


@pytest.mark.parametrize("device", ["cpu", GPU])
def test_step_of_nan_is_zero_as_in_torch(device):
    row = torch.tensor([NAN, -1.0, -0.0, 0.0, 2.0], dtype=torch.float64)
    one = torch.ones(1, 1, 1, dtype=torch.float64, device=device)
    f = (LazyTensor(one) * LazyTensor(row.to(device)[None, :, None])).step()
    assert f.sum(dim=1).item() == (row >= 0).sum().item() == 3
