"""LazyTensor.block_sparse(x_labels, y_labels, keep) (tensor/lazy_blocks.py) against dense
torch float64 references masked by keep[x_labels][:, y_labels], with the data in random
(unsorted) order: sums, log-sum-exps, soft-max weights and selections over both axes,
indices mapped back to the data's (-1 where a row meets nothing); gradients (dense
autograd and gradcheck); the cache of sort permutations (reused, and rebuilt after an
in-place change); the mask going through operations; errors raised before any compile;
cluster.grid_mask (a truncated kernel on a grid).

The formulas are shared between tests (a Gaussian kernel times b, a squared distance and
its negation) so that the file compiles few kernels."""

import gc

import numpy as np
import pytest
import torch

import lazykeops.numpy.cluster as ncl
import lazykeops.torch as lkt
import lazykeops.torch.cluster as tcl
from lazykeops import LazyKeOpsError
from lazykeops.tensor import lazy_blocks
from lazy_helpers import (F64, Backend, check, check_index, no_compile, normal, sqdist_dense,
                          uniform)
from tests.runtime.ranges_cases import mask_of, masked_reference, six, structure

N, M = 29, 23          # the sorted row clusters span several CPU row blocks (16 rows)
CX, CY = 5, 4          # clusters of x and of y; x's cluster 3 holds no point
INF = float("inf")
TORCH = Backend("torch")


def labels_and_keep(seed=0, n=N, m=M):
    """Unsorted labels and a mask with a cluster meeting nothing (x's 0), a j cluster met
    by nothing (y's 2), an empty cluster (x's 3) and an empty cluster that keep meets."""
    g = torch.Generator().manual_seed(seed)
    x_labels = torch.tensor([0, 1, 2, 4])[torch.randint(0, 4, (n,), generator=g)]
    x_labels[:4] = torch.tensor([0, 1, 2, 4])  # every used cluster present
    x_labels = x_labels[torch.randperm(n, generator=g)]
    y_labels = torch.randint(0, CY, (m,), generator=g)
    y_labels[:CY] = torch.arange(CY)
    y_labels = y_labels[torch.randperm(m, generator=g)]
    keep = torch.tensor([[False, False, False, False],
                         [True, False, False, True],
                         [False, True, False, True],
                         [True, True, True, True],   # the empty x cluster
                         [True, True, False, False]])
    return x_labels, y_labels, keep


def dense_mask(x_labels, y_labels, keep):
    return keep[x_labels][:, y_labels]


def data(seed=0):
    return normal(N, 3, seed=seed), normal(M, 3, seed=seed + 1), uniform(M, 2, seed=seed + 2)


def gaussian(be, x, y):
    return (-be.Vi(be.arr(x)).sqdist(be.Vj(be.arr(y)))).exp()


def expected(red, F, mask, axis, W=None, k=None):
    """The dense masked reference (tests/runtime/ranges_cases.py) over `axis`."""
    if axis == 0:
        F, mask = F.transpose(0, 1), mask.T
        W = W.transpose(0, 1) if W is not None else None
    return masked_reference(red, F, W, k, mask)


def test_sums_over_both_axes_match_the_masked_reference(be):
    x, y, b = data()
    labels = labels_and_keep()
    mask = dense_mask(*labels).double()
    x_labels, y_labels, keep = map(be.arr, labels)
    if be.name == "cuda":
        keep = labels[2]  # keep may stay on the CPU
    K = gaussian(be, x, y).block_sparse(x_labels, y_labels, keep)
    dense_K = torch.exp(-sqdist_dense(x, y)) * mask
    check(be, K @ be.arr(b), dense_K @ b)
    check(be, (K * be.Vj(be.arr(b))).sum(dim=0), dense_K.T[:, :, None].mul(b[:, None]).sum(1))
    rows = (K @ be.arr(b))
    empty = ~dense_mask(*labels).any(1)  # x's cluster 0: the identity of Sum
    assert empty.any() and (be.tt(rows)[empty] == 0).all()


@pytest.mark.parametrize("axis", [0, 1])
def test_selections_give_the_data_indices(be, axis):
    x, y, _ = data(seed=3)
    labels = labels_and_keep(seed=1)
    mask = dense_mask(*labels)
    D = be.Vi(be.arr(x)).sqdist(be.Vj(be.arr(y))).block_sparse(*map(be.arr, labels))
    F = sqdist_dense(x, y)[..., None]
    values, index = expected("Min_ArgMin", F, mask, axis)
    got_values, got_index = D.min_argmin(dim=axis)
    check(be, got_values, values.reshape(-1, 1))
    check_index(be, got_index, index.reshape(-1, 1))
    assert (index == -1).any() and (values.isinf() == (index == -1)).all()
    kvalues, kindex = expected("KMin_ArgKMin", F, mask, axis, k=2)
    if axis == 1:
        check_index(be, D.argKmin(2, dim=1), kindex)
    else:
        got_values, got_index = D.Kmin_argKmin(2, dim=0)
        check(be, got_values, kvalues)
        check_index(be, got_index, kindex)


def test_logsumexp_and_softmax_weights(be):
    x, y, b = data(seed=5)
    labels = labels_and_keep(seed=2)
    mask = dense_mask(*labels)
    minus_D = -be.Vi(be.arr(x)).sqdist(be.Vj(be.arr(y))).block_sparse(*map(be.arr, labels))
    F = -sqdist_dense(x, y)[..., None]
    W = b[None].expand(N, M, 2)
    check(be, minus_D.logsumexp(dim=1), expected("LogSumExp", F, mask, 1)[0])
    softmax = expected("SumSoftMaxWeight", F, mask, 1, W=W)[0]
    got = be.tt(minus_D.sumsoftmaxweight(be.Vj(be.arr(b)), dim=1))
    empty = ~mask.any(1)
    assert got[empty].isnan().all()  # rows meeting nothing, as with ranges=
    torch.testing.assert_close(got[~empty], softmax[~empty], rtol=1e-10, atol=1e-10)


def test_gradients_reach_the_unsorted_data():
    x, y, b = (t.requires_grad_() for t in data(seed=7))
    labels = labels_and_keep(seed=3)
    mask = dense_mask(*labels)
    g1, g2 = normal(N, 2, seed=20), normal(M, 2, seed=21)

    def losses(x, y, b, lazy):
        if lazy:
            K = (-lkt.Vi(x).sqdist(lkt.Vj(y))).exp().block_sparse(*labels)
            over_j, over_i = K @ b, (K * lkt.Vj(b)).sum(dim=0)
            values = lkt.Vi(x).sqdist(lkt.Vj(y)).block_sparse(*labels).min(dim=1)
        else:
            K = torch.exp(-sqdist_dense(x, y)) * mask
            over_j, over_i = K @ b, K.sum(0)[:, None] * b
            values = sqdist_dense(x, y).masked_fill(~mask, INF).min(1, keepdim=True).values
        finite = mask.any(1)  # rows meeting nothing: +inf, no gradient
        return (over_j * g1).sum() + (over_i * g2).sum() + values[finite].sum()

    got = torch.autograd.grad(losses(x, y, b, True), (x, y, b))
    want = torch.autograd.grad(losses(x, y, b, False), (x, y, b))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)

    def over_j(x, y, b):
        return (-lkt.Vi(x).sqdist(lkt.Vj(y))).exp().block_sparse(*labels) @ b

    assert torch.autograd.gradcheck(over_j, (x, y, b))


def test_the_sort_is_cached_and_in_place_changes_are_seen(be):
    x, y, b = data(seed=9)
    x_labels, y_labels, keep = map(be.arr, labels_and_keep(seed=4))
    K = gaussian(be, x, y)
    Kb = K.block_sparse(x_labels, y_labels, keep)
    layout = Kb.ranges.layout()
    Kb @ be.arr(b)
    assert Kb.ranges.layout() is layout  # reductions reuse the sort
    assert K.block_sparse(x_labels, y_labels, keep).ranges.layout() is layout
    x_labels[:3] = 4  # in place: the next reduction sees the new labels
    labels = tuple(be.tt(a).clone() for a in (x_labels, y_labels, keep))
    dense_K = torch.exp(-sqdist_dense(x, y)) * dense_mask(*labels)
    check(be, Kb @ be.arr(b), dense_K @ b)
    assert Kb.ranges.layout() is not layout
    key = (id(x_labels), id(y_labels), id(keep))
    assert key in lazy_blocks._CACHE
    del Kb, x_labels
    gc.collect()
    assert key not in lazy_blocks._CACHE  # gone with its labels


def test_the_mask_goes_through_operations_and_options():
    x, y, b = data(seed=11)
    labels = labels_and_keep(seed=5)
    dense_K = torch.exp(-sqdist_dense(x, y)) * dense_mask(*labels)
    Kb = gaussian(TORCH, x, y).block_sparse(*labels)
    assert (2 * Kb).ranges is Kb.ranges and (Kb * Kb).ranges is Kb.ranges
    deferred = (Kb * lkt.Vj(b)).sum(dim=1, call=False)
    torch.testing.assert_close(deferred(), dense_K @ b)
    out = torch.empty(N, 2, dtype=F64)
    assert Kb.__matmul__(b, out=out) is out
    torch.testing.assert_close(out, dense_K @ b)
    with torch.inference_mode():  # labels made there too: no version counters
        inference_labels = tuple(t.clone() for t in labels)
        Ki = gaussian(TORCH, x, y).block_sparse(*inference_labels)
        torch.testing.assert_close(Ki @ b, dense_K @ b)
        torch.testing.assert_close(Ki @ b, dense_K @ b)
    # ranges= overrides the mask: pykeops's 6-tuple of the (unsorted) data as it is.
    struct = structure(N, M, seed=2)
    full = torch.exp(-sqdist_dense(x, y))
    torch.testing.assert_close(Kb.sum(dim=1, ranges=six(struct)),
                               (full * mask_of(struct, N, M)).sum(1, keepdim=True))
    c = normal(N, 2, seed=12)  # K.T's mask: the labels exchanged, keep transposed
    KT = gaussian(TORCH, x, y).T.block_sparse(labels[1], labels[0], labels[2].T)
    torch.testing.assert_close(KT @ c, dense_K.T @ c)
    torch.testing.assert_close(Kb.T @ c, dense_K.T @ c)
    Kb.ranges = None  # the full reduction again
    torch.testing.assert_close(Kb @ b, full @ b)
    Kn = gaussian(Backend("numpy"), x, y).block_sparse(*(t.numpy() for t in labels))
    torch.testing.assert_close(torch.from_numpy(Kn @ b.numpy()), dense_K @ b)


def test_errors_name_the_argument_before_any_compile(be):
    x, y, b = data()
    x_labels, y_labels, keep = map(be.arr, labels_and_keep())
    K = gaussian(be, x, y)
    no_compile(lambda: K.block_sparse(x_labels[:-1], y_labels, keep), "'x_labels'",
               "one label per point", "N = 29 for")
    no_compile(lambda: K.block_sparse(x_labels, y_labels * 1.0, keep), "'y_labels'",
               "integer")
    no_compile(lambda: K.block_sparse(x_labels, y_labels.reshape(1, -1), keep), "'y_labels'",
               "1-D")
    bad = be.arr(torch.full((N,), CX))
    no_compile(lambda: K.block_sparse(bad, y_labels, keep), "'x_labels'", "[0, 5)", "5 to 5")
    no_compile(lambda: K.block_sparse(-1 - x_labels, y_labels, keep), "'x_labels'", "[0, 5)")
    no_compile(lambda: K.block_sparse(x_labels, y_labels, keep * 1), "'keep'", "boolean")
    no_compile(lambda: K.block_sparse(x_labels, y_labels, keep[0]), "'keep'", "boolean")
    no_compile(lambda: K.block_sparse(x_labels, y_labels, keep[:, :2]), "'y_labels'",
               "[0, 2)", "keep has 2 columns")
    other = np.zeros(M, dtype=int) if be.name != "numpy" else torch.zeros(M, dtype=torch.int64)
    no_compile(lambda: K.block_sparse(x_labels, other, keep), "'y_labels'",
               f"must be a {'numpy' if be.name == 'numpy' else 'torch'} array")
    if be.name == "cuda":
        no_compile(lambda: K.block_sparse(x_labels.cpu(), y_labels.cpu(), keep), "'x_labels'",
                   "data's device")
        no_compile(lambda: K.block_sparse(x_labels, y_labels.cpu(), keep), "'y_labels'",
                   "device of x_labels")
    batched = be.LazyTensor(be.arr(x[None, :, None].expand(2, N, 1, 3))).sqdist(
        be.Vj(be.arr(y)))
    no_compile(lambda: batched.block_sparse(x_labels, y_labels, keep), "batch dims")
    no_compile(lambda: be.Vi(0, 3).sqdist(be.Vj(1, 3)).block_sparse(x_labels, y_labels, keep),
               "hold data")
    Kb = K.block_sparse(x_labels, y_labels, keep)
    no_compile(lambda: Kb + K.block_sparse(x_labels, be.arr(be.tt(y_labels)), keep),
               "different block-sparse ranges")
    with_ranges = K * 1.0
    with_ranges.ranges = six(structure(N, M))
    no_compile(lambda: Kb * with_ranges, "different block-sparse ranges")


@pytest.mark.parametrize("name", ["torch", "numpy"])
def test_grid_mask_keeps_the_cells_with_close_centroids(name):
    be, cluster = Backend(name), (ncl if name == "numpy" else tcl)
    x, y, b = 3 * uniform(N, 2, seed=30), 3 * uniform(M, 2, seed=31), uniform(M, 2, seed=32)
    size, r = 0.7, 0.5
    radius = r + 2 * size * 2 ** 0.5  # every pair closer than r is kept (see grid_mask)
    x_labels, y_labels, keep = cluster.grid_mask(be.arr(x), be.arr(y), size, radius)
    xl, yl, kp = be.tt(x_labels).long(), be.tt(y_labels).long(), be.tt(keep)
    cx = torch.stack([x[xl == a].mean(0) for a in range(kp.shape[0])])
    cy = torch.stack([y[yl == c].mean(0) for c in range(kp.shape[1])])
    assert torch.equal(kp, ((cx[:, None] - cy[None]) ** 2).sum(-1) < radius ** 2)
    mask = kp[xl][:, yl]
    assert mask[sqdist_dense(x, y) < r * r].all() and not mask.all()
    K = gaussian(be, x, y).block_sparse(x_labels, y_labels, keep)
    check(be, K @ be.arr(b), (torch.exp(-sqdist_dense(x, y)) * mask) @ b)
    with pytest.raises(LazyKeOpsError, match="grid_mask.*'y'"):
        cluster.grid_mask(be.arr(x), be.arr(y[:, :1]), size, radius)
    with pytest.raises(LazyKeOpsError, match="grid_mask.*'radius'"):
        cluster.grid_mask(be.arr(x), be.arr(y), size, -1.0)
