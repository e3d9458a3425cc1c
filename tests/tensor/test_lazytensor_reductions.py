"""LazyTensor reductions as methods: over i (dim=0) or j (dim=1), shifted by batch dims,
with the keyword arguments backend, out, dtype_acc and sum_scheme; the *_reduction
aliases; index outputs in int64; against dense torch float64 references.

F is a vector formula x_i - y_j (D = 3), S the scalar formula -|x_i - y_j|^2; W and U
positive weights of dim 2, j-indexed and i-indexed.
"""

import pytest
import torch

from lazy_helpers import D, M, N, check, check_index, no_compile, sqdist_dense, uniform

K = 2


def inputs(be, dtype=None):
    x, y, w = uniform(N, D, seed=21), uniform(M, D, seed=22), uniform(M, 2, seed=23)
    u = uniform(N, 2, seed=24)
    X, Y, W = be.Vi(be.arr(x, dtype)), be.Vj(be.arr(y, dtype)), be.Vj(be.arr(w, dtype))
    U = be.Vi(be.arr(u, dtype))
    return (X - Y, -X.sqdist(Y), W, U), (x[:, None] - y[None],
                                         -sqdist_dense(x, y)[..., None], w[None], u[:, None])


def lse(s, dim):
    return torch.logsumexp(s, dim=dim)


def kmin(t, dim):
    return torch.topk(t, K, dim=dim, largest=False, sorted=True)


# (id, lazy(F, S, W), dense(Fd, Sd, Wd)) for values; indices are compared separately.
VALUE_CASES = [
    ("sum_j", lambda F, S, W, U: F.sum(dim=1), lambda F, S, W, U: F.sum(1)),
    ("sum_i", lambda F, S, W, U: F.sum(0), lambda F, S, W, U: F.sum(0)),
    ("sum_axis_kw", lambda F, S, W, U: F.sum(axis=1), lambda F, S, W, U: F.sum(1)),
    ("sum_reduction", lambda F, S, W, U: F.sum_reduction(dim=1), lambda F, S, W, U: F.sum(1)),
    ("logsumexp_j", lambda F, S, W, U: S.logsumexp(dim=1), lambda F, S, W, U: lse(S, 1)),
    ("logsumexp_i", lambda F, S, W, U: S.logsumexp(axis=0), lambda F, S, W, U: lse(S, 0)),
    ("logsumexp_reduction", lambda F, S, W, U: S.logsumexp_reduction(dim=1),
     lambda F, S, W, U: lse(S, 1)),
    ("logsumexp_vector", lambda F, S, W, U: F.logsumexp(dim=1), lambda F, S, W, U: lse(F, 1)),
    ("logsumexp_weight", lambda F, S, W, U: S.logsumexp(dim=1, weight=W),
     lambda F, S, W, U: torch.log((torch.exp(S) * W).sum(1))),
    ("logsumexp_weight_i", lambda F, S, W, U: S.logsumexp(dim=0, weight=U),
     lambda F, S, W, U: torch.log((torch.exp(S) * U).sum(0))),
    ("sumsoftmaxweight_i", lambda F, S, W, U: S.sumsoftmaxweight(U, dim=0),
     lambda F, S, W, U: (torch.softmax(S, dim=0) * U).sum(0)),
    ("sumsoftmaxweight", lambda F, S, W, U: S.sumsoftmaxweight(W, dim=1),
     lambda F, S, W, U: (torch.softmax(S, dim=1) * W).sum(1)),
    ("sumsoftmaxweight_reduction", lambda F, S, W, U: S.sumsoftmaxweight_reduction(W, axis=1),
     lambda F, S, W, U: (torch.softmax(S, dim=1) * W).sum(1)),
    ("min_j", lambda F, S, W, U: F.min(dim=1), lambda F, S, W, U: F.amin(1)),
    ("min_i", lambda F, S, W, U: S.min(0), lambda F, S, W, U: S.amin(0)),
    ("min_reduction", lambda F, S, W, U: F.min_reduction(dim=1), lambda F, S, W, U: F.amin(1)),
    ("max_j", lambda F, S, W, U: F.max(dim=1), lambda F, S, W, U: F.amax(1)),
    ("max_i", lambda F, S, W, U: S.max(axis=0), lambda F, S, W, U: S.amax(0)),
    ("max_reduction", lambda F, S, W, U: F.max_reduction(dim=1), lambda F, S, W, U: F.amax(1)),
    ("Kmin_j", lambda F, S, W, U: F.Kmin(K, dim=1),
     lambda F, S, W, U: kmin(F, 1).values),                                    # (N, K, D)
    ("Kmin_i", lambda F, S, W, U: S.Kmin(K, dim=0),
     lambda F, S, W, U: kmin(S, 0).values.transpose(0, 1)[..., 0]),            # (M, K)
    ("Kmin_reduction", lambda F, S, W, U: F.Kmin_reduction(K=K, dim=1),
     lambda F, S, W, U: kmin(F, 1).values),
]

INDEX_CASES = [
    ("argmin_j", lambda F, S, W, U: F.argmin(dim=1), lambda F, S, W, U: F.argmin(1)),
    ("argmin_i", lambda F, S, W, U: S.argmin(0), lambda F, S, W, U: S.argmin(0)),
    ("argmin_reduction", lambda F, S, W, U: F.argmin_reduction(dim=1),
     lambda F, S, W, U: F.argmin(1)),
    ("argmax_j", lambda F, S, W, U: F.argmax(dim=1), lambda F, S, W, U: F.argmax(1)),
    ("argmax_i", lambda F, S, W, U: S.argmax(axis=0), lambda F, S, W, U: S.argmax(0)),
    ("argmax_reduction", lambda F, S, W, U: F.argmax_reduction(dim=1),
     lambda F, S, W, U: F.argmax(1)),
    ("argKmin_j", lambda F, S, W, U: F.argKmin(K, dim=1), lambda F, S, W, U: kmin(F, 1).indices),
    ("argKmin_i", lambda F, S, W, U: S.argKmin(K, 0),
     lambda F, S, W, U: kmin(S, 0).indices.transpose(0, 1)[..., 0]),
    ("argKmin_reduction", lambda F, S, W, U: F.argKmin_reduction(K, dim=1),
     lambda F, S, W, U: kmin(F, 1).indices),
]

PAIR_CASES = [
    ("min_argmin_j", lambda F, S, W, U: F.min_argmin(dim=1),
     lambda F, S, W, U: (F.amin(1), F.argmin(1))),
    ("min_argmin_i", lambda F, S, W, U: S.min_argmin(dim=0),
     lambda F, S, W, U: (S.amin(0), S.argmin(0))),
    ("min_argmin_reduction", lambda F, S, W, U: F.min_argmin_reduction(dim=1),
     lambda F, S, W, U: (F.amin(1), F.argmin(1))),
    ("max_argmax_j", lambda F, S, W, U: F.max_argmax(dim=1),
     lambda F, S, W, U: (F.amax(1), F.argmax(1))),
    ("max_argmax_reduction", lambda F, S, W, U: F.max_argmax_reduction(axis=1),
     lambda F, S, W, U: (F.amax(1), F.argmax(1))),
    ("Kmin_argKmin_j", lambda F, S, W, U: F.Kmin_argKmin(K, dim=1),
     lambda F, S, W, U: tuple(kmin(F, 1))),
    ("Kmin_argKmin_i", lambda F, S, W, U: S.Kmin_argKmin(K, dim=0),
     lambda F, S, W, U: tuple(t.transpose(0, 1)[..., 0] for t in kmin(S, 0))),
    ("Kmin_argKmin_reduction", lambda F, S, W, U: F.Kmin_argKmin_reduction(K=K, axis=1),
     lambda F, S, W, U: tuple(kmin(F, 1))),
]


def ids(cases):
    return [c[0] for c in cases]


@pytest.mark.parametrize("lazy, dense", [c[1:] for c in VALUE_CASES], ids=ids(VALUE_CASES))
def test_value_reductions(be, lazy, dense):
    lazies, denses = inputs(be)
    check(be, lazy(*lazies), dense(*denses))


@pytest.mark.parametrize("lazy, dense", [c[1:] for c in INDEX_CASES], ids=ids(INDEX_CASES))
def test_index_reductions_are_int64(be, lazy, dense):
    lazies, denses = inputs(be)
    check_index(be, lazy(*lazies), dense(*denses))


@pytest.mark.parametrize("lazy, dense", [c[1:] for c in PAIR_CASES], ids=ids(PAIR_CASES))
def test_value_and_index_reductions(be, lazy, dense):
    lazies, denses = inputs(be)
    result = lazy(*lazies)
    assert isinstance(result, tuple) and len(result) == 2
    values, indices = dense(*denses)
    check(be, result[0], values)
    check_index(be, result[1], indices)


def test_keyword_backend_and_out(be):
    (F, S, W, U), (Fd, Sd, Wd, Ud) = inputs(be)
    check(be, F.sum(dim=1, backend="GPU" if be.name == "cuda" else "CPU"), Fd.sum(1))
    check(be, F.sum(dim=1, backend="auto"), Fd.sum(1))
    out = be.arr(torch.zeros(N, D, dtype=torch.float64))
    result = F.sum(dim=1, out=out)
    assert result is out
    check(be, out, Fd.sum(1))
    out = be.arr(torch.zeros(M, 1, dtype=torch.float64))
    assert S.logsumexp(dim=0, out=out) is out
    check(be, out, lse(Sd, 0))


def test_wrong_out_is_refused(be):
    F = inputs(be)[0][0]
    no_compile(lambda: F.sum(dim=1, out=be.arr(torch.zeros(N, D + 1, dtype=torch.float64))),
               "out")


@pytest.mark.parametrize("options", [
    {},
    {"dtype_acc": "float64"},
    {"sum_scheme": "direct_sum"},
    {"sum_scheme": "block_sum"},
    {"sum_scheme": "kahan_scheme"},
])
def test_float32_accumulation_options(options):
    """float32 inputs (torch only: the numpy front end shares the same kernels)."""
    from lazy_helpers import Backend

    be = Backend("torch")
    (F, S, W, U), (Fd, Sd, Wd, Ud) = inputs(be, torch.float32)
    assert F.dtype == "float32"
    check(be, (-S).sqrt().sum(dim=1, **options), (-Sd).sqrt().sum(1), tol=1e-5,
          dtype=torch.float32)


def test_float32_numpy_argkmin():
    from lazy_helpers import Backend

    be = Backend("numpy")
    (F, S, W, U), (Fd, Sd, Wd, Ud) = inputs(be, torch.float32)
    check_index(be, S.argKmin(K, dim=1), kmin(Sd, 1).indices[..., 0])


# --------------------------------------------------------------------- batch dimensions
def batched(be):
    """x (2, 1, N, 1, D), y (1, 3, 1, M, D), b (1, 3, 1, M, 2) and a batched parameter."""
    x, y = uniform(2, 1, N, 1, D, seed=31), uniform(1, 3, 1, M, D, seed=32)
    b, g = uniform(1, 3, 1, M, 2, seed=33), uniform(2, 1, 1, 1, 1, seed=34)
    X, Y, B, G = (be.LazyTensor(be.arr(t)) for t in (x, y, b, g))
    return (X, Y, B, G), (x, y, b, g)


def test_batch_sum_over_i_and_j(be):
    (X, Y, B, G), (x, y, b, g) = batched(be)
    Kxy = (-G * X.sqdist(Y)).exp() * B
    assert Kxy.shape == (2, 3, N, M, 2) and Kxy.nbatchdims == 2
    dense = torch.exp(-g * ((x - y) ** 2).sum(-1, keepdim=True)) * b     # (2, 3, N, M, 2)
    check(be, Kxy.sum(dim=3), dense.sum(3))
    check(be, Kxy.sum(axis=2), dense.sum(2))


def test_batch_logsumexp_weight_and_argkmin(be):
    (X, Y, B, G), (x, y, b, g) = batched(be)
    S = -X.sqdist(Y)
    Sd = -((x - y) ** 2).sum(-1, keepdim=True)                           # (2, 3, N, M, 1)
    check(be, S.logsumexp(dim=3, weight=B), torch.log((torch.exp(Sd) * b).sum(3)))
    check_index(be, S.argKmin(K, dim=3), kmin(Sd, 3).indices[..., 0])
    values, indices = (X - Y).min_argmin(dim=2)
    dense = (x - y).expand(2, 3, N, M, D)
    check(be, values, dense.amin(2))
    check_index(be, indices, dense.argmin(2))


def test_one_batch_dim_broadcast_against_unbatched(be):
    x, y, p = uniform(4, N, 1, D, seed=41), uniform(1, M, D, seed=42), uniform(4, 1, 1, 1,
                                                                               seed=43)
    X, Y, P = (be.LazyTensor(be.arr(t)) for t in (x, y, p))
    check(be, (P * X.sqdist(Y)).sum(dim=2), (p * ((x - y) ** 2).sum(-1, True)).sum(2))
    check(be, (P * X.sqdist(Y)).sum(dim=1), (p * ((x - y) ** 2).sum(-1, True)).sum(1))


def test_broadcast_batch_of_size_one_leaves(be):
    """A leaf whose batch dims are all 1 broadcasts against another's batch dims."""
    x, y = uniform(1, 1, N, 1, D, seed=44), uniform(2, 3, 1, M, D, seed=45)
    X, Y = be.LazyTensor(be.arr(x)), be.LazyTensor(be.arr(y))
    check(be, (X - Y).sum(dim=3), (x - y).sum(3))
