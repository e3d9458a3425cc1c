"""Symbolic derivatives inside formulas and LazyTensors (pykeops's Grad, Diff, GradMatrix,
Laplacian, Divergence, LazyTensor.grad and .diff), for torch and numpy, against torch
autograd on the dense formula."""

import numpy as np
import pytest
import torch

import lazykeops.numpy as lknp
import lazykeops.torch as lkt
from lazykeops import LazyKeOpsError

torch.manual_seed(0)
X = torch.randn(5, 3, dtype=torch.float64)
Y = torch.randn(4, 3, dtype=torch.float64)
E = torch.randn(5, 1, dtype=torch.float64)
U = torch.randn(5, 3, dtype=torch.float64)


def kernel_rows(x):
    """sum_j exp(-|x_i - y_j|^2) sin(<x_i, y_j>), one value per i."""
    return (torch.exp(-((x[:, None] - Y[None]) ** 2).sum(-1)) *
            torch.sin((x[:, None] * Y[None]).sum(-1))).sum(1, keepdim=True)


FORMULA = "Exp(-SqDist(X,Y)) * Sin((X|Y))"


@pytest.mark.parametrize("module", [lkt, lknp], ids=["torch", "numpy"])
def test_grad_and_diff_in_the_string_language(module):
    as_array = (lambda t: t) if module is lkt else (lambda t: t.numpy())
    aliases = ["X = Vi(3)", "Y = Vj(3)", "E = Vi(1)", "U = Vi(3)"]
    grad = module.Genred(f"Grad({FORMULA}, X, E)", aliases, axis=1)
    diff = module.Genred(f"Diff({FORMULA}, X, U)", aliases, axis=1)
    got_grad = grad(*map(as_array, (X, Y, E, U)))
    got_diff = diff(*map(as_array, (X, Y, E, U)))
    x = X.clone().requires_grad_()
    (want_grad,) = torch.autograd.grad(kernel_rows(x), x, E)
    want_diff = torch.func.jvp(kernel_rows, (X,), (U,))[1]
    np.testing.assert_allclose(np.asarray(got_grad), want_grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(got_diff), want_diff.numpy(), rtol=1e-10, atol=1e-12)


def test_gradmatrix_divergence_laplacian():
    aliases = ["X = Vi(3)", "Y = Vj(3)"]

    def field(x):  # f(x_i, y_j) = exp(-|x - y|^2) (x - y), a vector field in x
        d = x[:, None] - Y[None]
        return torch.exp(-(d ** 2).sum(-1, keepdim=True)) * d

    jac = torch.func.vmap(torch.func.jacrev(lambda xi: field(xi[None])[0]))(X)  # (5, 4, 3, 3)
    got = lkt.Genred("GradMatrix(Exp(-SqDist(X,Y)) * (X-Y), X)", aliases, axis=1)(X, Y)
    # Row k of GradMatrix is the gradient of component k: d f_k / d x.
    torch.testing.assert_close(got, jac.sum(1).reshape(5, 9))
    div = lkt.Genred("Divergence(Exp(-SqDist(X,Y)) * (X-Y), X)", aliases, axis=1)(X, Y)
    torch.testing.assert_close(div[:, 0], jac.diagonal(dim1=-2, dim2=-1).sum(-1).sum(1))
    lap = lkt.Genred("Laplacian(Exp(-SqDist(X,Y)), X)", aliases, axis=1)(X, Y)
    hess = torch.func.vmap(torch.func.hessian(
        lambda xi: torch.exp(-((xi - Y) ** 2).sum(-1)).sum()))(X)
    torch.testing.assert_close(lap[:, 0], hess.diagonal(dim1=-2, dim2=-1).sum(-1))


@pytest.mark.parametrize("module", [lkt, lknp], ids=["torch", "numpy"])
def test_lazytensor_grad_and_diff(module):
    as_array = (lambda t: t) if module is lkt else (lambda t: t.numpy())
    Xi = module.LazyTensor(as_array(X)[:, None, :])
    Yj = module.LazyTensor(as_array(Y)[None, :, :])
    K = (-((Xi - Yj) ** 2).sum(-1)).exp() * (Xi | Yj).sin()
    got_grad = K.grad(Xi, module.LazyTensor(as_array(E)[:, None, :])).sum(dim=1)
    got_diff = K.diff(Xi, module.LazyTensor(as_array(U)[:, None, :])).sum(dim=1)
    x = X.clone().requires_grad_()
    (want_grad,) = torch.autograd.grad(kernel_rows(x), x, E)
    np.testing.assert_allclose(np.asarray(got_grad), want_grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(got_diff),
                               torch.func.jvp(kernel_rows, (X,), (U,))[1].numpy(),
                               rtol=1e-10, atol=1e-12)


def test_lazytensor_grad_needs_a_variable_and_a_matching_direction():
    Xi = lkt.LazyTensor(X[:, None, :])
    K = (-((Xi - lkt.LazyTensor(Y[None])) ** 2).sum(-1)).exp()
    with pytest.raises(LazyKeOpsError, match="variable"):
        K.grad(Xi * 2, lkt.LazyTensor(E[:, None, :]))
    with pytest.raises(LazyKeOpsError, match="dim 1"):
        K.grad(Xi, lkt.LazyTensor(U[:, None, :]))


def test_grad_with_respect_to_a_non_variable_is_a_formula_error():
    with pytest.raises(LazyKeOpsError, match="variable"):
        lkt.Genred("Grad(Exp(X), X*2, E)", ["X = Vi(1)", "Y = Vj(1)", "E = Vi(1)"], axis=1)
