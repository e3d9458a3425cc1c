"""pykeops's LazyTensor surface beyond the maths (tensor/lazy_pykeops.py) and its
reduction keywords: every value against dense torch in float64, every refusal by name."""

import numpy as np
import pytest
import torch

from lazykeops.errors import LazyKeOpsError
from lazykeops.torch import LazyTensor, Vi, Vj

N, M, D = 30, 20, 3


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=gen, dtype=torch.float64)
    y = torch.randn(M, D, generator=gen, dtype=torch.float64)
    b = torch.randn(M, 2, generator=gen, dtype=torch.float64)
    return x, y, b


def gaussian(x, y):
    X, Y = LazyTensor(x[:, None]), LazyTensor(y[None])
    dense = torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1))
    return X, Y, (-X.sqdist(Y)).exp(), dense


def test_attributes(data):
    x, y, _ = data
    X, Y, K, _ = gaussian(x, y)
    assert K._shape == (N, M, 1) and K.shape == (N, M) and K.dim() == 3 and K.ndim == 1
    assert (X.axis, Y.axis, LazyTensor(torch.ones(2)).axis, K.axis) == (0, 1, 2, None)
    assert K.batchdims is None and K._dtype == K.dtype == "float64"
    assert LazyTensor(torch.ones(4, N, 1, D)).batchdims == (4,)
    assert K.formula == "Exp(Minus(SqDist(Var(0,3,0),Var(1,3,1))))" and K.formula2 is None
    assert [v.data_ptr() for v in K.variables] == [x.data_ptr(), y.data_ptr()]
    sym = Vi(0, 3) + Vj(2, 3)
    assert sym.symbolic_variables == ((0, 3, 0), (2, 3, 1)) and sym.new_variable_index() == 3


def test_reduction_keywords(data):
    x, y, b = data
    _, _, K, dense = gaussian(x, y)
    want = dense @ b
    for options in ({"sum_scheme": "kahan_scheme"}, {"use_double_acc": True},
                    {"backend": "CPU", "device_id": -1, "enable_chunks": False,
                     "use_fast_math": False, "dtype_acc": "float64"}):
        assert torch.allclose(K.__matmul__(b, **options), want, atol=1e-12), options
    assert torch.allclose(K.sum(dim=1, sum_scheme="direct_sum"), dense.sum(1, keepdim=True))
    deferred = K.sum(dim=1, call=False)
    assert torch.allclose(deferred(), dense.sum(1, keepdim=True))
    assert torch.allclose(K.reduction("Sum", dim=0), dense.sum(0)[:, None])
    # K and opt_arg given as 0-d tensors or numpy integers, as pykeops takes them
    idx = dense.topk(3, dim=1, largest=False).indices
    assert torch.equal(K.argKmin(torch.tensor(3), dim=1), idx)
    assert torch.equal(K.argKmin(np.int64(3), dim=1), idx)
    assert torch.equal(K.reduction("ArgKMin", opt_arg=np.int32(3), dim=1), idx)


def test_weighted_logsumexp_spellings(data):
    x, y, b = data
    _, _, K, dense = gaussian(x, y)
    w = b[:, :1].exp()
    want = torch.logsumexp(dense + w[:, 0].log(), dim=1, keepdim=True)
    W = LazyTensor(w[None])
    for got in (K.logsumexp(1, weight=W), K.logsumexp(dim=1, other=W),
                K.reduction("LogSumExp", other=W, dim=1)):
        assert torch.allclose(got, want, atol=1e-12)


def test_generic_builders(data):
    x, y, _ = data
    X, Y, _, _ = gaussian(x, y)
    diff = x[:, None] - y[None]
    assert torch.allclose(X.unary("Exp").sum(-1).sum(dim=1)[:, 0], x.exp().sum(-1))
    got = X.binary(Y, "-", is_operator=True).sqnorm2().sum(dim=1)[:, 0]
    assert torch.allclose(got, (diff ** 2).sum((1, 2)))
    got = X.binary(Y, "Subtract", rversion=True).sum(-1).sum(dim=1)[:, 0]
    assert torch.allclose(got, -diff.sum((1, 2)))
    assert torch.allclose((X.subop(Y) * X.divop(2.0)).sum(-1).sum(dim=1)[:, 0],
                          (diff * x[:, None] / 2).sum((1, 2)))
    got = (X - Y).ternary(X, Y, "IfElse").sum(-1).sum(dim=1)[:, 0]
    assert torch.allclose(got, torch.where(diff >= 0, x[:, None], y[None]).sum((1, 2)))
    with pytest.raises(LazyKeOpsError, match="dimres=5"):
        X.unary("Exp", dimres=5)
    with pytest.raises(LazyKeOpsError, match="'Nope' is not an operation"):
        X.unary("Nope")


def test_symbolic_operators(data):
    x, y, _ = data
    X, Y, K, _ = gaussian(x, y)

    def kernel_sum(xi):
        return torch.exp(-((xi - y) ** 2).sum(-1)).sum()

    hessians = torch.stack([torch.autograd.functional.hessian(kernel_sum, x[i]) for i in range(4)])
    assert torch.allclose(K.laplacian(X).sum(dim=1)[:4, 0],
                          hessians.diagonal(dim1=1, dim2=2).sum(-1), atol=1e-12)
    jac = (X * Y).grad_matrix(X).sum(dim=1).reshape(N, D, D)
    assert torch.allclose(jac, torch.diag(y.sum(0)).expand(N, D, D))
    assert torch.allclose((X * Y).divergence(X).sum(dim=1)[:, 0], y.sum().expand(N))
    trace = (X * Y * 2.0).trace_operator(Y)
    assert "Var(1," not in trace.formula  # linear in Y: Y leaves the formula
    assert torch.allclose(trace.sum(dim=1)[:, 0], 2 * M * x.sum(1))
    dm = X.difference_matrix(Y).sum(dim=1).reshape(N, D, D)
    assert torch.allclose(dm, M * x[:, :, None] - y.sum(0)[None, None, :])
    assert X.factorize(Y) is X and K.auto_factorize() is K


def test_refusals_name_the_argument(data):
    x, y, b = data
    _, _, K, _ = gaussian(x, y)
    with pytest.raises(LazyKeOpsError, match="'foo'"):
        K.sum(dim=1, foo=3)
    with pytest.raises(LazyKeOpsError, match="6-tuple"):
        K.__matmul__(b, ranges=(1, 2))
    with pytest.raises(LazyKeOpsError, match="device_id=1"):
        K.sum(dim=1, device_id=1)
    with pytest.raises(LazyKeOpsError, match="K of"):
        K.argKmin(2.5, dim=1)
    with pytest.raises(LazyKeOpsError, match="use_double_acc=True and dtype_acc"):
        K.sum(dim=1, use_double_acc=True, dtype_acc="float32")
    with pytest.raises(LazyKeOpsError, match="reduction 'MaxSumShiftExp'"):
        K.reduction("MaxSumShiftExp", dim=1)
    with pytest.raises(LazyKeOpsError, match="fixvariables"):
        K.fixvariables()
    with pytest.raises(LazyKeOpsError, match="not a reduction"):
        K()


def test_numpy_arrays_defer_to_lazytensors():
    from lazykeops.numpy import LazyTensor as NumpyLazyTensor

    x = np.arange(6.0).reshape(2, 1, 3)
    result = np.ones(3) + NumpyLazyTensor(x)
    assert isinstance(result, NumpyLazyTensor)
    assert np.allclose(result.sum(dim=0), (x + 1).sum(0))


def test_solve_the_pykeops_ways(data):
    x, _, b = data
    x, b = x[:M], b
    X, Y, K, dense = gaussian(x, x)
    want = torch.linalg.solve(0.5 * torch.eye(M, dtype=torch.float64) + dense, b)
    V = Vj(2, 2)
    for got in (K.solve(b, alpha=0.5), K.solve(LazyTensor(b[:, None]), alpha=0.5),
                (K * V).solve(LazyTensor(b[:, None]), var=V, alpha=0.5),
                K.solve(b, alpha=0.5, call=False)(),
                K.solve(b, alpha=0.5, sum_scheme="kahan_scheme", backend="CPU")):
        assert torch.allclose(got, want, atol=1e-8)
    with pytest.raises(LazyKeOpsError, match="symbolic j-variable"):
        K.solve(b, var=X)


def test_backend_attribute(data):
    x, y, _ = data
    _, _, K, dense = gaussian(x, y)
    K.backend = "CPU"
    assert torch.allclose(K.sum(dim=1), dense.sum(1, keepdim=True))
    K.backend = "GPU_5D"
    with pytest.raises(LazyKeOpsError, match="GPU_5D"):
        K.sum(dim=1)


def test_tuple_is_a_symbolic_variable(data):
    x, y, _ = data
    K = (-LazyTensor((0, 3, 0)).sqdist(LazyTensor((1, 3, 1)))).exp().sum(dim=1)
    want = torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1)).sum(1, keepdim=True)
    assert torch.allclose(K(x, y), want)
    for bad in ((1.0, 2.0), (0, 3), (0, 3, 5), (-1, 3, 0)):
        with pytest.raises(LazyKeOpsError, match="symbolic variable"):
            LazyTensor(bad)


def test_solve_with_a_zero_column(data):
    """A zero right-hand side column is solved by 0, not reported as indefinite."""
    x, _, b = data
    _, _, K, dense = gaussian(x[:M], x[:M])
    rhs = torch.cat([b[:, :1], torch.zeros(M, 1, dtype=torch.float64)], 1)
    want = torch.linalg.solve(0.5 * torch.eye(M, dtype=torch.float64) + dense, rhs)
    got = K.solve(rhs, alpha=0.5)
    assert torch.allclose(got, want, atol=1e-8) and torch.equal(got[:, 1], torch.zeros(M, dtype=torch.float64))
    from lazykeops.numpy import LazyTensor as NumpyLazyTensor

    xn = x[:M].numpy()
    Kn = (-NumpyLazyTensor(xn[:, None]).sqdist(NumpyLazyTensor(xn[None]))).exp()
    assert np.allclose(Kn.solve(rhs.numpy(), alpha=0.5), want.numpy(), atol=1e-8)
