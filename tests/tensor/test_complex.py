"""ComplexLazyTensor (tensor/lazy_complex.py) against dense torch complex128 arithmetic and
torch.autograd.gradcheck: construction and attributes, pykeops's dispatch of + - * /,
the complex maths, reductions over i and j, K @ v, gradients with respect to complex
inputs, the numpy front end, and the refusals. Kernels are shared: each test reduces one
concatenation of many terms.
"""

import numpy as np
import pytest
import torch

import lazykeops.numpy as lknp
from lazykeops.errors import LazyKeOpsError
from lazykeops.torch import ComplexLazyTensor, LazyTensor

N, M, D = 6, 5, 3
C128 = dict(dtype=torch.complex128)
F64 = dict(dtype=torch.float64)


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, 1, D, generator=g, **C128)
    w = torch.randn(1, M, D, generator=g, **C128)
    c = torch.randn(1, M, 1, generator=g, **C128)        # a complex scalar per j
    x = torch.randn(N, 1, D, generator=g, **F64)
    s = torch.randn(1, M, 1, generator=g, **F64)         # a real scalar per j
    return z, w, c, x, s


# ------------------------------------------------------------------ construction, no compile
def test_construction_and_attributes():
    z, w, c, x, s = _data()
    Z = LazyTensor(z)
    assert type(Z) is ComplexLazyTensor and isinstance(Z, LazyTensor)
    assert (Z.shape, Z.ndim, Z._shape, Z.dtype, Z._dtype) == ((N, 1, D), D, (N, 1, 2 * D),
                                                               "complex128", "float64")
    assert Z.is_complex and not LazyTensor(x).is_complex
    assert LazyTensor(c).shape == (1, M)
    assert LazyTensor(z[:, 0, :].to(torch.complex64), axis=0).dtype == "complex64"
    assert LazyTensor(torch.randn(D, **C128)).shape == (1, 1, D)
    p = LazyTensor(1 + 2j)
    assert type(p).__name__ == "ComplexLazyTensor" and p.ndim == 1 and p.data == [1.0, 2.0]
    assert LazyTensor([1j, 2.0]).data == [0.0, 1.0, 2.0, 0.0]
    assert ComplexLazyTensor(x).shape == (N, 1, D)         # a real array, seen as complex
    assert "Real2Complex" in ComplexLazyTensor(x).formula
    zn = lknp.LazyTensor(z.numpy())
    assert type(zn) is lknp.ComplexLazyTensor and zn.dtype == "complex128"
    assert (Z.real.shape, abs(Z).ndim, Z.sum().shape, Z.T.shape) == ((N, 1, D), D, (N, 1),
                                                                    (1, N, D))
    with pytest.raises(LazyKeOpsError, match="numpy"):
        lknp.LazyTensor(z)
    with pytest.raises(LazyKeOpsError, match="list of numbers"):
        ComplexLazyTensor(["a"])


def test_pykeops_dispatch():
    """The formulas pykeops 2.3 builds for mixed operands (read from its .formula)."""
    z, w, c, x, s = _data()
    Z, W, X, S = LazyTensor(z), LazyTensor(w), LazyTensor(x), LazyTensor(s)
    cases = {
        Z * S: "ComplexRealScal(Var(0,1,1),Var(1,6,0))",
        S * Z: "ComplexRealScal(Var(0,1,1),Var(1,6,0))",
        Z * X: "ComplexMult(Var(0,6,0),Real2Complex(Var(1,3,0)))",
        X * Z: "ComplexMult(Var(0,6,0),Real2Complex(Var(1,3,0)))",
        X + Z: "ComplexAdd(Real2Complex(Var(0,3,0)),Var(1,6,0))",
        X - Z: "ComplexSubtract(Real2Complex(Var(0,3,0)),Var(1,6,0))",
        X / Z: "ComplexDivide(Real2Complex(Var(0,3,0)),Var(1,6,0))",
        Z / W: "ComplexDivide(Var(0,6,0),Var(1,6,1))",
        X * 1j: "ComplexMult(Var(0,2,2),Real2Complex(Var(1,3,0)))",
        Z.conj().exp(): "ComplexExp(Conj(Var(0,6,0)))",
        X.exp1j(): "ComplexExp1j(Var(0,3,0))",
        Z.angle(): "ComplexAngle(Var(0,6,0))",
    }
    for t, formula in cases.items():
        assert t.formula == formula
    assert type(X * Z) is type(Z) and type(Z.real) is LazyTensor


# ------------------------------------------------------------------ values
def _complex_terms(Z, W, C, X, S, z, w, c, x, s):
    """(lazy terms, dense terms) of complex dimension D: every dispatch branch."""
    lazy = [Z * W, Z / W, Z * S - 2.5, 3 / Z + X, (Z * C).conj(), (W / C + 1j) * X,
            (1 - Z).exp() * 2, X.exp1j() - W.real.real2complex() * 0.5, X.imag2complex() * Z,
            Z ** 3 + Z ** -1, (Z * W).sum() * Z, Z[1] * W]
    dense = [z * w, z / w, z * s - 2.5, 3 / z + x, (z * c).conj(), (w / c + 1j) * x,
             (1 - z).exp() * 2, torch.exp(1j * x) - w.real * 0.5, 1j * x * z,
             z ** 3 + 1 / z, (z * w).sum(-1, keepdim=True) * z, z[..., 1:2] * w]
    return lazy, dense


def _concat(terms):
    out = terms[0]
    for t in terms[1:]:
        out = out.concat(t)
    return out


def test_complex_terms_reduced_over_i_and_j():
    z, w, c, x, s = _data()
    lazy, dense = _complex_terms(*map(LazyTensor, (z, w, c, x, s)), z, w, c, x, s)
    F = _concat(lazy)
    assert F.shape == (N, M, D * len(lazy))
    full = torch.cat([t.expand(N, M, D) for t in dense], dim=-1)
    for dim in (0, 1):
        result = F.sum(dim=dim)
        assert result.dtype == torch.complex128
        torch.testing.assert_close(result, full.sum(dim), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(F.sum_reduction(axis=1), full.sum(1), rtol=1e-10, atol=1e-10)


def test_real_valued_terms():
    z, w, c, x, s = _data()
    Z, W = LazyTensor(z), LazyTensor(w)
    F = _concat([(Z * W).real, (Z / W).imag, abs(Z - W), (Z * W).angle(),
                 Z.sqdist(W), (Z * W).sqnorm2(), (Z + W).norm2()])
    assert not F.is_complex and F.shape == (N, M, 4 * D + 3)
    p, q = z * w, z - w
    full = torch.cat([p.real, (z / w).imag, q.abs(), p.angle(),
                      (q.abs() ** 2).sum(-1, keepdim=True),
                      (p.abs() ** 2).sum(-1, keepdim=True),
                      (z + w).abs().norm(dim=-1, keepdim=True)], dim=-1)
    torch.testing.assert_close(F.sum(1), full.sum(1), rtol=1e-10, atol=1e-10)


def test_matmul_and_softmax_weight():
    z, w, c, x, s = _data()
    Z, W, X = LazyTensor(z), LazyTensor(w), LazyTensor(x)
    K = (Z * W).sum()                                   # complex, D = 1
    Kr = (-((X - W.real) ** 2).sum()).exp()             # real, D = 1
    kd = (z * w).sum(-1)
    krd = (-((x - w.real) ** 2).sum(-1)).exp()
    v = torch.randn(M, 2, **C128)
    torch.testing.assert_close(K @ v, kd @ v, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(Kr @ v, krd.to(v.dtype) @ v, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(K @ v[:, 0].real.contiguous(), kd @ v[:, 0].real.to(kd.dtype),
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(K.T @ torch.ones(N, **C128), kd.sum(0), rtol=1e-10, atol=1e-10)
    weights = torch.softmax(-((x - w.real) ** 2).sum(-1), dim=1)
    got = (((X - W.real) ** 2).sum() * -1).sumsoftmaxweight(W * Z, dim=1)
    torch.testing.assert_close(got, (weights[..., None] * (w * z)).sum(1), rtol=1e-10,
                               atol=1e-10)


def test_out_call_false_and_dense():
    z, w, c, x, s = _data()
    F = LazyTensor(z) * LazyTensor(w)
    out = torch.empty(N, D, **C128)
    result = F.sum(dim=1, out=out)
    assert result.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, (z * w).sum(1), rtol=1e-12, atol=1e-12)
    later = F.sum(dim=1, call=False)
    torch.testing.assert_close(later(), (z * w).sum(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(F.dense(), z * w)
    assert (F.sum().dense().shape) == (N, M)
    zb, wb = torch.randn(2, N, 1, D, **C128), torch.randn(2, 1, M, D, **C128).conj()
    got = (LazyTensor(zb) * LazyTensor(wb)).sum(dim=2)   # batch dims, a conjugate view
    torch.testing.assert_close(got, (zb * wb).sum(2), rtol=1e-12, atol=1e-12)


def test_complex64_and_numpy():
    z, w, c, x, s = _data()
    F = LazyTensor(z.to(torch.complex64)) * LazyTensor(w.to(torch.complex64))
    result = F.sum(dim=1)
    assert result.dtype == torch.complex64
    torch.testing.assert_close(result, (z * w).sum(1).to(torch.complex64), rtol=1e-5,
                               atol=1e-5)
    zn, wn = z.numpy(), w.numpy()
    got = (lknp.LazyTensor(zn) * lknp.LazyTensor(wn)).sum(axis=1)
    assert isinstance(got, np.ndarray) and got.dtype == np.complex128
    np.testing.assert_allclose(got, (zn * wn).sum(1), rtol=1e-12)


# ------------------------------------------------------------------ gradients
def test_gradcheck_complex_inputs():
    """Gradients w.r.t. complex z, w, c (torch's convention), and a real x."""
    g = torch.Generator().manual_seed(3)
    n, m = 3, 4
    z = torch.randn(n, 1, 2, generator=g, **C128).requires_grad_()
    w = torch.randn(1, m, 2, generator=g, **C128).requires_grad_()
    c = torch.randn(1, m, 1, generator=g, **C128).requires_grad_()
    x = torch.randn(n, 1, 1, generator=g, **F64).requires_grad_()

    def lazy(z, w, c, x):
        Z, W, C, X = map(LazyTensor, (z, w, c, x))
        F = (Z * W.conj() / (C + 2)).exp() * X + (Z - W).abs().sum().exp1j() * Z
        return F.sum(dim=1)

    def dense(z, w, c, x):
        f = (z * w.conj() / (c + 2)).exp() * x + torch.exp(1j * (z - w).abs().sum(-1, True)) * z
        return f.sum(1)

    args = (z, w, c, x)
    torch.testing.assert_close(lazy(*args), dense(*args), rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(lazy, args)
    v = torch.randn(n, 2, generator=g, **C128)
    ours = torch.autograd.grad((lazy(*args) * v).real.sum(), args)
    theirs = torch.autograd.grad((dense(*args) * v).real.sum(), args)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ refusals, no compile
def test_refusals_name_the_operation():
    z, w, c, x, s = _data()
    Z, W, X = LazyTensor(z), LazyTensor(w), LazyTensor(x)
    for build, what in ((lambda: Z.sin(), "Sin"), (lambda: Z.log(), "Log"),
                        (lambda: Z < W, "not ordered"), (lambda: Z.min(dim=1), "not ordered"),
                        (lambda: Z.argKmin(2, dim=1), "not ordered"),
                        (lambda: Z.logsumexp(dim=1), "logsumexp"), (lambda: Z | W, "Hermitian"),
                        (lambda: Z ** 0.5, "integer"), (lambda: Z.exp1j(), "exp1j"),
                        (lambda: Z.real2complex(), "complex already"),
                        (lambda: Z + LazyTensor(torch.randn(1, M, 2, **C128)), "ComplexAdd"),
                        (lambda: Z * LazyTensor(torch.randn(N, 1, 2, **F64)), "ComplexMult"),
                        (lambda: Z[D], "indexing"), (lambda: X.concat(Z), "complex128")):
        with pytest.raises(LazyKeOpsError, match=what):
            build()
