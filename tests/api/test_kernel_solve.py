"""KernelSolve (torch and numpy): (alpha Id + K) a = b against a dense torch.linalg.solve
in float64, its gradients (w.r.t. the kernel's variables and b, and a double backward),
and the errors raised before any compile. The formula is test_genred_api.py's GAUSS."""

import numpy as np
import pytest
import torch

import lazykeops.numpy as lknp
import lazykeops.torch as lkt
from lazykeops import LazyKeOpsError
from lazykeops.compile import build

GAUSS = "Exp(-G*SqDist(X,Y)) * B"
ALIASES = ["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"]
N, ALPHA = 40, 0.1


def inputs(requires_grad=False):
    gen = torch.Generator().manual_seed(2)
    g = torch.tensor([0.6], dtype=torch.float64)
    x = torch.randn(N, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(N, 2, generator=gen, dtype=torch.float64)
    return [t.requires_grad_(requires_grad) for t in (g, x, b)]


def dense_solve(g, x, b):
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return torch.linalg.solve(ALPHA * torch.eye(N, dtype=x.dtype) + torch.exp(-g * sq), b)


def test_values_torch_and_numpy():
    g, x, b = inputs()
    a = lkt.KernelSolve(GAUSS, ALIASES, "B", axis=1)(g, x, x, b, alpha=ALPHA, eps=1e-12)
    torch.testing.assert_close(a, dense_solve(g, x, b), rtol=1e-9, atol=1e-9)
    an = lknp.KernelSolve(GAUSS, ALIASES, "B", 1)(g.numpy(), x.numpy(), x.numpy(),
                                                  b.numpy(), alpha=ALPHA, eps=1e-12)
    assert isinstance(an, np.ndarray)
    np.testing.assert_allclose(an, dense_solve(g, x, b).numpy(), rtol=1e-9, atol=1e-9)


def test_pykeops_default_tolerance():
    """eps=1e-6 by default, on |residual|^2 < size(b) eps^2 as in pykeops."""
    g, x, b = inputs()
    a = lkt.KernelSolve(GAUSS, ALIASES, "Var(3,2,1)", axis=1)(g, x, x, b, alpha=ALPHA)
    residual = ALPHA * a + lkt.Genred(GAUSS, ALIASES, axis=1)(g, x, x, a) - b
    assert float(residual.norm()) < (b.numel() ** 0.5) * 1e-6
    assert float((a - dense_solve(g, x, b)).abs().max()) < 1e-3


def test_gradients_and_double_backward():
    g, x, b = inputs(requires_grad=True)
    w = torch.randn(N, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    solve = lkt.KernelSolve(GAUSS, ALIASES, "B", axis=1)
    a = solve(g, x, x, b, alpha=ALPHA, eps=1e-13)  # x in both slots: both shares summed
    got = torch.autograd.grad((a * w).sum(), [g, x, b], create_graph=True)
    want = torch.autograd.grad((dense_solve(g, x, b) * w).sum(), [g, x, b],
                               create_graph=True)
    for u, v in zip(got, want):
        torch.testing.assert_close(u, v, rtol=1e-8, atol=1e-9)
    # second order: d/dx of <d a/d b^T w, w>
    got2 = torch.autograd.grad((got[2] * w).sum(), x)[0]
    want2 = torch.autograd.grad((want[2] * w).sum(), x)[0]
    torch.testing.assert_close(got2, want2, rtol=1e-7, atol=1e-8)


def no_compile(fn):
    before = build.stats["builds"]
    with pytest.raises(LazyKeOpsError) as info:
        fn()
    assert build.stats["builds"] == before
    return str(info.value)


@pytest.mark.parametrize("init, call, word", [
    (("Z",), {}, "'Z'"),
    (("X", 1), {}, "Vj(2)"),
    (("B", 0), {}, "Vi(2)"),
    (("B", 1, "auto", False, "auto", True, None, None, None, True, "extra"), {},
     "positional"),
    (("B", 1), {"alpha": -1.0}, "alpha"),
    (("B", 1), {"eps": 0}, "eps"),
    (("B", 1), {"out": None}, "'out'"),
    (("B", 1), {"ranges": (torch.zeros(1, 2),) * 6}, "ranges"),
    (("B", 1), {"device_id": 1}, "device_id"),
    (("B", 1), {"backend": "GPU_1D"}, "GPU_1D"),
])
def test_errors(init, call, word):
    g, x, b = inputs()
    msg = no_compile(lambda: lkt.KernelSolve(GAUSS, ALIASES, *init)(g, x, x, b, **call))
    assert word in msg and GAUSS in msg


def test_square_and_option_errors():
    g, x, b = inputs()
    solve = lkt.KernelSolve(GAUSS, ALIASES, "B", axis=1, use_double_acc=True,
                            enable_chunks=False, rec_multVar_highdim=None)
    assert "square" in no_compile(lambda: solve(g, x[:30], x, b))
    assert "foo" in no_compile(lambda: lkt.KernelSolve(GAUSS, ALIASES, "B", foo=1))
    assert "Z" in no_compile(lambda: lknp.KernelSolve(GAUSS, ALIASES, "Z"))
