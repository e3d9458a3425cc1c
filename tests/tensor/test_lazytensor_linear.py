"""LazyTensors as linear operators: K @ v, K.T / K.t(), matvec / rmatvec (and through them
scipy's aslinearoperator), solve by conjugate gradient, and dense().

K is the Gaussian kernel exp(-|x_i - y_j|^2 / s) with last dim 1, written densely by hand
as torch.exp(-sqdist / s).
"""

import numpy as np
import pytest
import torch

import lazykeops
from lazy_helpers import D, M, N, check, no_compile, normal, sqdist_dense, uniform

SCALE = 0.5


def kernel(be, x, y):
    return (-be.LazyTensor(be.arr(x)).sqdist(be.LazyTensor(be.arr(y))) / SCALE).exp()


def kernel_dense(x, y):
    return torch.exp(-sqdist_dense(x, y) / SCALE)


def xy():
    return uniform(N, D, seed=71), uniform(M, D, seed=72)


def plain(be, x, y):
    """K of shape (N, M) from 3-D views, and its dense value."""
    return kernel(be, x[:, None], y[None]), kernel_dense(x, y)


# ----------------------------------------------------------------------------- K @ v
def test_matmul_vector_and_matrix(be):
    x, y = xy()
    K, Kd = plain(be, x, y)
    v1, v2 = normal(M, seed=73), normal(M, 2, seed=74)
    check(be, K @ be.arr(v1), Kd @ v1)
    check(be, K @ be.arr(v2), Kd @ v2)


def test_matmul_non_contiguous_v(be):
    x, y = xy()
    K, Kd = plain(be, x, y)
    v = normal(2, M, seed=75)
    check(be, K @ be.arr(v).T, Kd @ v.T)


def test_matmul_batched(be):
    x, y = uniform(3, N, 1, D, seed=76), uniform(3, 1, M, D, seed=77)
    K = kernel(be, x, y)
    Kd = torch.exp(-((x - y) ** 2).sum(-1) / SCALE)        # (3, N, M)
    v = normal(3, M, 2, seed=78)
    check(be, K @ be.arr(v), Kd @ v)
    shared = normal(M, 2, seed=79)                          # broadcast over the batch
    check(be, K @ be.arr(shared), Kd @ shared)


def test_matmul_batched_with_broadcast_batch_dims(be):
    x, y = uniform(2, 1, N, 1, D, seed=80), uniform(1, 3, 1, M, D, seed=81)
    K = kernel(be, x, y)
    assert K.shape == (2, 3, N, M)
    Kd = torch.exp(-((x - y) ** 2).sum(-1) / SCALE)        # (2, 3, N, M)
    v = normal(3, M, 2, seed=82)
    check(be, K @ be.arr(v), Kd @ v)


# ----------------------------------------------------------------------- transposition
def test_transpose_t_and_T(be):
    x, y = xy()
    K, Kd = plain(be, x, y)
    w1, w2 = normal(N, seed=83), normal(N, 2, seed=84)
    assert K.T.shape == (M, N) and K.t().shape == (M, N)
    check(be, K.T @ be.arr(w1), Kd.T @ w1)
    check(be, K.t() @ be.arr(w2), Kd.T @ w2)
    check(be, K.T.sum(dim=1), Kd.T.sum(1, keepdim=True))
    check(be, K.T.T @ be.arr(normal(M, seed=85)), Kd @ normal(M, seed=85))


def test_transpose_of_an_asymmetric_vector_formula(be):
    x, y = xy()
    Z = be.Vi(be.arr(x)) - 2 * be.Vj(be.arr(y))
    assert Z.T.shape == (M, N, D)
    dense = x[None, :, :] - 2 * y[:, None, :]                # (M, N, D): [j, i] = x_i - 2y_j
    check(be, Z.T.sum(dim=1), dense.sum(1))
    check(be, Z.T.sum(dim=0), dense.sum(0))


def test_transpose_batched(be):
    x, y = uniform(3, N, 1, D, seed=86), uniform(1, M, D, seed=87)
    K = kernel(be, x, y)
    Kd = torch.exp(-((x - y) ** 2).sum(-1) / SCALE)        # (3, N, M)
    w = normal(3, N, 2, seed=88)
    assert K.T.shape == (3, M, N)
    check(be, K.T @ be.arr(w), Kd.transpose(1, 2) @ w)


def test_matvec_and_rmatvec(be):
    x, y = xy()
    K, Kd = plain(be, x, y)
    v, w = normal(M, seed=89), normal(N, seed=90)
    check(be, K.matvec(be.arr(v)), Kd @ v)
    check(be, K.rmatvec(be.arr(w)), Kd.T @ w)


# ----------------------------------------------------------------------------- scipy
def test_scipy_aslinearoperator_eigsh_cg_and_rmatvec():
    pytest.importorskip("scipy")
    from scipy.sparse.linalg import aslinearoperator, cg, eigsh

    from lazy_helpers import Backend

    be = Backend("numpy")
    x = uniform(12, 2, seed=91, low=0.0, high=4.0)
    K = kernel(be, x[:, None], x[None])
    Kd = kernel_dense(x, x).numpy()
    A = aslinearoperator(K)
    assert A.shape == (12, 12)
    values = eigsh(A, k=3, which="LM", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(values), np.linalg.eigvalsh(Kd)[-3:], rtol=1e-8)
    b = normal(12, seed=92).numpy()
    solution, info = cg(A, b, rtol=1e-12, maxiter=500)
    assert info == 0
    np.testing.assert_allclose(Kd @ solution, b, atol=1e-8)
    y = uniform(5, 2, seed=93, low=0.0, high=4.0)
    B = aslinearoperator(kernel(be, x[:, None], y[None]))
    w = normal(12, seed=94).numpy()
    np.testing.assert_allclose(B.rmatvec(w), kernel_dense(x, y).numpy().T @ w, rtol=1e-12)
    np.testing.assert_allclose(B.matvec(w[:5]), kernel_dense(x, y).numpy() @ w[:5],
                               rtol=1e-12)


# ----------------------------------------------------------------------------- solve
def square(be, n=N, seed=95):
    x = uniform(n, D, seed=seed, low=0.0, high=2.0)
    return kernel(be, x[:, None], x[None]), kernel_dense(x, x)


def test_solve_vector_and_matrix(be):
    K, Kd = square(be)
    alpha = 0.1
    A = Kd + alpha * torch.eye(N, dtype=torch.float64)
    for b in (normal(N, seed=96), normal(N, 2, seed=97)):
        check(be, K.solve(be.arr(b), alpha=alpha), torch.linalg.solve(A, b), tol=1e-8)


def test_solve_with_eps_and_maxiter(be):
    K, Kd = square(be)
    b = normal(N, seed=98)
    A = Kd + 0.5 * torch.eye(N, dtype=torch.float64)
    x = K.solve(be.arr(b), alpha=0.5, eps=1e-12, maxiter=200)
    check(be, x, torch.linalg.solve(A, b), tol=1e-9)


def test_solve_batched():
    from lazy_helpers import Backend

    be = Backend("torch")
    x = uniform(2, N, 1, D, seed=99, low=0.0, high=2.0)
    K = kernel(be, x, x.transpose(1, 2))
    Kd = torch.exp(-((x - x.transpose(1, 2)) ** 2).sum(-1) / SCALE)
    b = normal(2, N, 2, seed=100)
    A = Kd + 0.1 * torch.eye(N, dtype=torch.float64)
    check(be, K.solve(b, alpha=0.1), torch.linalg.solve(A, b), tol=1e-8)


def test_solve_not_converging_is_a_clear_error(be):
    """(These errors come after some iterations, so after the kernel's compile.)"""
    K, _ = square(be)
    with pytest.raises(lazykeops.LazyKeOpsError, match="converge") as info:
        K.solve(be.arr(normal(N, seed=101)), alpha=1e-3, maxiter=1)
    assert "1 iteration" in str(info.value) and str((N, N)) in str(info.value)


def test_solve_not_positive_definite_is_a_clear_error(be):
    K, _ = square(be)
    with pytest.raises(lazykeops.LazyKeOpsError, match="positive definite"):
        (-K).solve(be.arr(normal(N, seed=102)))


def test_solve_needs_a_square_scalar_kernel(be):
    x, y = xy()
    K, _ = plain(be, x, y)
    no_compile(lambda: K.solve(be.arr(normal(N, seed=103))), str((N, M)))
    Z = be.Vi(be.arr(x)) - be.Vj(be.arr(x))
    no_compile(lambda: Z.solve(be.arr(normal(N, seed=104))), str((N, N, D)))


# ----------------------------------------------------------------------------- dense
def test_dense_matches_hand_written_values(be):
    x, y = xy()
    K, Kd = plain(be, x, y)
    check(be, K.dense(), Kd)
    Z = be.Vi(be.arr(x)) * 2.0 - be.Vj(be.arr(y)) + [1.0, 2.0, 3.0]
    check(be, Z.dense(), 2.0 * x[:, None] - y[None] + torch.tensor([1.0, 2.0, 3.0],
                                                                    dtype=torch.float64))


def test_dense_with_batch_dims(be):
    x, y = uniform(2, 1, N, 1, D, seed=105), uniform(1, 3, 1, M, D, seed=106)
    K = kernel(be, x, y)
    check(be, K.dense(), torch.exp(-((x - y) ** 2).sum(-1) / SCALE))


def test_dense_refuses_large_tensors(be):
    x, y = xy()
    K, _ = plain(be, x, y)
    no_compile(lambda: K.dense(limit=N * M - 1), "limit", str((N, M)))
    assert K.dense(limit=N * M).shape == (N, M)
    big = uniform(3000, 1, seed=107)
    Kbig = be.Vi(be.arr(big)) - be.Vj(be.arr(big))      # 9e6 entries: fine by default
    no_compile(lambda: (Kbig * be.LazyTensor([1.0] * 8)).dense(), "limit")


def test_dense_refuses_symbolic_variables(be):
    no_compile(lambda: (be.Vi(0, 3) - be.Vj(1, 3)).dense(), "data")


def test_dense_of_a_transposed_lazytensor(be):
    x, y = xy()
    Z = be.Vi(be.arr(x)) - 2 * be.Vj(be.arr(y))
    check(be, Z.T.dense(), x[None, :, :] - 2 * y[:, None, :])


def test_dense_of_a_transposed_square_lazytensor(be):
    x, y = xy()
    y = uniform(N, D, seed=108)
    Z = be.Vi(be.arr(x)) - 2 * be.Vj(be.arr(y))
    check(be, Z.T.dense(), x[None, :, :] - 2 * y[:, None, :])
