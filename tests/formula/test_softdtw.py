"""SoftDTW_SqDist (lazykeops/formula/softdtw.py) and LazyTensor.softdtw_sqdist, compiled,
against a plain dynamic-programming soft-DTW written here in float64 (the textbook
formulation with an infinite border, R[0, 0] = 0) and torch.autograd of it: values,
gradients in x, y and gamma through a Gaussian-of-soft-DTW reduction, a batch, series long
enough for the checkpointed backward pass, the refusals, and the CUDA emission (nvcc)."""

import pytest
import torch

from lazykeops.errors import LazyKeOpsError
from lazykeops.torch import Genred, LazyTensor
from tests.compile.nvcc_checks import NVCC, compile_all

F64 = dict(dtype=torch.float64)


def soft_dtw(x, y, gamma):
    """Soft-DTW of the rows of x (P, n) against those of y (P, m), gamma (P,) or a float:
    R[i, j] = (x_i - y_j)^2 + softmin(R[i-1, j-1], R[i-1, j], R[i, j-1]) on an (n+1, m+1)
    table whose border is "infinite" except R[0, 0] = 0. Vectorised over the P pairs. The
    border is 1e10, not inf: its softmin weight underflows to exactly 0 either way, and
    the gamma derivative stays 0 * 1e10 / gamma^2 = 0 rather than 0 * inf = NaN."""
    n, m = x.shape[-1], y.shape[-1]
    gamma = torch.as_tensor(gamma, **F64).expand(x.shape[0])
    inf = torch.full_like(x[:, 0], 1e10)
    prev = [torch.zeros_like(inf)] + [inf] * m
    for i in range(1, n + 1):
        cur = [inf]
        for j in range(1, m + 1):
            options = torch.stack([prev[j - 1], prev[j], cur[j - 1]], dim=-1)
            soft = -gamma * torch.logsumexp(-options / gamma[:, None], dim=-1)
            cur.append((x[:, i - 1] - y[:, j - 1]) ** 2 + soft)
        prev = cur
    return prev[m]


def pairs(x, y):
    """All (i, j) pairs of rows, flattened: (N*M, n) and (N*M, m)."""
    return (x[:, None, :].expand(-1, y.shape[0], -1).reshape(-1, x.shape[1]),
            y[None, :, :].expand(x.shape[0], -1, -1).reshape(-1, y.shape[1]))


def data(n_rows, n, m_rows, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n_rows, n, generator=g, **F64),
            torch.randn(m_rows, m, generator=g, **F64))


def test_values_match_the_dp_and_the_string_api():
    x, y = data(5, 6, 4, 3)
    f = Genred("SoftDTW_SqDist(X, Y, G)", ["X = Vi(6)", "Y = Vj(3)", "G = Pm(1)"], axis=1,
               reduction_op="Sum")
    gamma = torch.tensor([0.7], **F64)
    expected = soft_dtw(*pairs(x, y), 0.7).reshape(5, 4)
    torch.testing.assert_close(f(x, y, gamma)[:, 0], expected.sum(1), rtol=1e-12, atol=1e-12)
    # x as the j-variable: the recursion runs along the other series
    lazy = LazyTensor(y[:, None, :]).softdtw_sqdist(LazyTensor(x[None, :, :]), 0.7)
    torch.testing.assert_close(lazy.sum(dim=1)[:, 0], soft_dtw(*pairs(y, x), 0.7)
                               .reshape(4, 5).sum(1), rtol=1e-12, atol=1e-12)


def test_known_values():
    """One-element series: the squared difference; small gamma: close to the hard DTW."""
    x = torch.tensor([[1.0, 2.0, 3.0]], **F64)
    y = torch.tensor([[1.0, 3.0]], **F64)
    one = LazyTensor(torch.tensor([[2.5]], **F64)[:, None, :])
    other = LazyTensor(torch.tensor([[0.5]], **F64)[None, :, :])
    assert one.softdtw_sqdist(other, 1.0).sum(dim=1).item() == pytest.approx(4.0, abs=1e-14)
    # hard DTW of (1, 2, 3) and (1, 3): 0 + min(1, 1) + 0 = 1
    hard = LazyTensor(x[:, None, :]).softdtw_sqdist(LazyTensor(y[None, :, :]), 1e-3)
    assert hard.sum(dim=1).item() == pytest.approx(1.0, abs=2e-3)


def test_gaussian_of_softdtw_gradients_in_x_y_and_gamma():
    x, y = data(4, 5, 3, 7, seed=1)
    gamma = torch.tensor([0.6], **F64)
    leaves = [t.clone().requires_grad_() for t in (x, y, gamma)]
    xl, yl, gl = leaves
    K = (-LazyTensor(xl[:, None, :]).softdtw_sqdist(LazyTensor(yl[None, :, :]),
                                                    LazyTensor(gl))).exp()
    out = K.sum(dim=1)
    grads = torch.autograd.grad((out[:, 0] * torch.arange(1.0, 5.0, **F64)).sum(), leaves)

    ref_leaves = [t.clone().requires_grad_() for t in (x, y, gamma)]
    px, py = pairs(ref_leaves[0], ref_leaves[1])
    ref = torch.exp(-soft_dtw(px, py, ref_leaves[2].expand(px.shape[0]))).reshape(4, 3).sum(1)
    expected = torch.autograd.grad((ref * torch.arange(1.0, 5.0, **F64)).sum(), ref_leaves)
    torch.testing.assert_close(out[:, 0], ref.detach(), rtol=1e-12, atol=1e-14)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_gradcheck_with_gamma_indexed_by_i():
    x, y = data(3, 4, 2, 3, seed=2)
    gamma = 0.3 + torch.rand(3, 1, generator=torch.Generator().manual_seed(3), **F64)

    def f(x, y, gamma):
        sdtw = LazyTensor(x[:, None, :]).softdtw_sqdist(LazyTensor(y[None, :, :]),
                                                         LazyTensor(gamma[:, None, :]))
        return sdtw.sum(dim=1)

    inputs = tuple(t.clone().requires_grad_() for t in (x, y, gamma))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


def test_batched_reduction():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 1, 5, generator=g, **F64)
    y = torch.randn(2, 1, 3, 4, generator=g, **F64)
    out = (-LazyTensor(x).softdtw_sqdist(LazyTensor(y), 0.5)).exp().sum(dim=2)
    assert out.shape == (2, 4, 1)
    for b in range(2):
        ref = torch.exp(-soft_dtw(*pairs(x[b, :, 0], y[b, 0]), 0.5)).reshape(4, 3).sum(1)
        torch.testing.assert_close(out[b, :, 0], ref, rtol=1e-12, atol=1e-14)


# One order only (CI time): x shorter than y; op_samples has a case of x longer than y.
@pytest.mark.parametrize("n, m", [(40, 118)])
def test_long_series_use_the_checkpointed_gradient(n, m):
    """40 x 118 does not fit the full-table limit: 11 blocks of 11 columns (the last one
    of 8), recomputed from checkpoints; with n > m the recursion runs along y."""
    x, y = data(2, n, 1, m, seed=5)
    xl, yl = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = LazyTensor(xl[:, None, :]).softdtw_sqdist(LazyTensor(yl[None, :, :]), 2.0).sum(dim=1)
    gx, gy = torch.autograd.grad(out.sum(), [xl, yl])
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    ref = soft_dtw(*pairs(xr, yr), 2.0)
    ex, ey = torch.autograd.grad(ref.sum(), [xr, yr])
    torch.testing.assert_close(out[:, 0], ref.detach(), rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(gx, ex, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(gy, ey, rtol=1e-9, atol=1e-11)


def test_refusals_before_compiling():
    x, y = data(2, 3, 2, 3)
    X, Y = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
    with pytest.raises(LazyKeOpsError, match="gamma must have dimension 1"):
        X.softdtw_sqdist(Y, LazyTensor(torch.ones(2, **F64)))
    with pytest.raises(LazyKeOpsError, match="gamma must have dimension 1"):
        Genred("SoftDTW_SqDist(X, Y, X)", ["X = Vi(3)", "Y = Vj(3)"], axis=1)
    # 400 x 400: the value fits (one column), the gradient's buffers do not
    big = torch.zeros(1, 400, **F64, requires_grad=True)
    value = LazyTensor(big[:, None, :]).softdtw_sqdist(LazyTensor(big.detach()[None]), 1.0)
    with pytest.raises(LazyKeOpsError, match="recursion buffers"):
        value.sum(dim=1).sum().backward()


def test_second_derivatives_are_refused_clearly():
    x, y = data(2, 3, 2, 4)
    xl = x.clone().requires_grad_()
    out = LazyTensor(xl[:, None, :]).softdtw_sqdist(LazyTensor(y[None, :, :]), 0.5).sum(dim=1)
    (gx,) = torch.autograd.grad(out.sum(), [xl], create_graph=True)
    with pytest.raises(LazyKeOpsError, match="second derivatives of SoftDTW_SqDist"):
        torch.autograd.grad(gx.sum(), [xl])


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("dtype", ["float32"])  # the emission does not depend on T (CI time)
def test_cuda_emission_compiles(tmp_path, dtype):
    """Value and (checkpointed) gradient in one kernel, for sm_90, without a GPU."""
    from lazykeops.compile.codegen import render_source
    from lazykeops.compile.spec import KernelSpec
    from lazykeops.formula import CAT_I, CAT_J, CAT_P, make, var

    x, y, g = var(0, 40, CAT_I), var(1, 118, CAT_J), var(2, 1, CAT_P)
    formula = make("Concat", make("SoftDTW_SqDist", x, y, g),
                   make("SoftDTW_SqDist_Grad", x, y, g))
    spec = KernelSpec((formula,), ((CAT_I, 40), (CAT_J, 118), (CAT_P, 1)), "Sum", None, dtype,
                      target="cuda")
    path = tmp_path / "softdtw.cu"
    path.write_text(render_source(spec))
    [(_, returncode, stderr)] = compile_all([path], host_first=False)  # device code only
    assert returncode == 0, stderr[-3000:]


def test_numpy_front_end_in_float32():
    from lazykeops.numpy import LazyTensor as NumpyLazyTensor

    x, y = data(3, 4, 5, 6, seed=6)
    X = NumpyLazyTensor(x.float().numpy()[:, None, :])
    Y = NumpyLazyTensor(y.float().numpy()[None, :, :])
    out = X.softdtw_sqdist(Y, 0.8).sum(axis=1)
    assert out.dtype == "float32" and out.shape == (3, 1)
    expected = soft_dtw(*pairs(x, y), 0.8).reshape(3, 5).sum(1)
    torch.testing.assert_close(torch.from_numpy(out[:, 0]).double(), expected, rtol=2e-5,
                               atol=1e-5)
