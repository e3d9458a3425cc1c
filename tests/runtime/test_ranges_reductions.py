"""Block-sparse reductions (runtime/ranges.py) on the CPU engine against dense masked
references in float64: every reduction over both axes, on a structure with empty blocks,
one-row clusters, rows in no cluster and intervals at the array ends; full coverage (the
dense result); a single block; batch dims (shared and per-element ranges); int32 ranges;
numpy; half precision; LazyTensor's ranges= and `.ranges`; KernelSolve."""

import numpy as np
import pytest
import torch

import lazykeops.numpy as lknp
from lazykeops.torch import Genred, KernelSolve, LazyTensor
from tests.engine.test_reductions import ALIASES
from tests.runtime.ranges_cases import (CASES, _ids, assert_outputs, case_inputs, expected,
                                        full_structure, mask_of, six, stacked, structure)

N, M = 41, 37  # the row clusters span several CPU row blocks (16 rows)


def routine_of(case, axis):
    red, formula, formula2, k = case[:4]
    return Genred(formula, ALIASES, reduction_op=red, axis=axis, opt_arg=k, formula2=formula2)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_every_reduction_matches_the_masked_reference(case, axis):
    struct = structure(N, M)
    inputs = case_inputs(N, M)
    out = routine_of(case, axis)(*inputs, ranges=six(struct))
    assert_outputs(out, expected(case, axis, inputs, mask_of(struct, N, M)))


@pytest.mark.parametrize("axis", [0, 1])
def test_full_coverage_is_the_dense_reduction(axis):
    for case in (CASES[0], CASES[3], CASES[-1]):  # Sum, weighted LogSumExp, KMin_ArgKMin
        inputs = case_inputs(N, M)
        routine = routine_of(case, axis)
        dense = routine(*inputs)
        sparse = routine(*inputs, ranges=six(full_structure(N, M)))
        assert_outputs(sparse, [t for t in (dense if isinstance(dense, tuple) else (dense,))])


def test_a_single_block_and_int32_ranges():
    struct = ([(5, 9)], [(30, 37)], [[True]])  # rows 5-8 meet the last columns; nothing else
    inputs = case_inputs(N, M)
    for case in (CASES[0], CASES[7]):  # Sum, ArgMin
        out = routine_of(case, 1)(*inputs, ranges=six(struct, torch.int32))
        assert_outputs(out, expected(case, 1, inputs, mask_of(struct, N, M)))
    sums = routine_of(CASES[0], 1)(*inputs, ranges=six(struct))
    assert (sums[:5] == 0).all() and (sums[9:] == 0).all() and (sums[5:9] != 0).all()


def test_empty_rows_get_the_identity_of_their_reduction():
    struct = ([(0, 3)], [(0, M)], [[True]])  # rows 3 .. N-1 in no cluster
    inputs = case_inputs(N, M)
    r = six(struct)
    by_name = {c[0]: c for c in CASES}
    assert (routine_of(by_name["Sum"], 1)(*inputs, ranges=r)[3:] == 0).all()
    assert (routine_of(by_name["LogSumExp"], 1)(*inputs, ranges=r)[3:] == -float("inf")).all()
    values, idx = routine_of(by_name["Min_ArgMin"], 1)(*inputs, ranges=r)
    assert (values[3:] == float("inf")).all() and (idx[3:] == -1).all() and (idx[:3] >= 0).all()
    values, idx = routine_of(by_name["Max_ArgMax"], 1)(*inputs, ranges=r)
    assert (values[3:] == -float("inf")).all() and (idx[3:] == -1).all()
    values, idx = routine_of(by_name["KMin_ArgKMin"], 1)(*inputs, ranges=r)
    assert (values[3:] == float("inf")).all() and (idx[3:] == -1).all()
    assert routine_of(by_name["SumSoftMaxWeight"], 1)(*inputs, ranges=r)[3:].isnan().all()


def test_batch_dims_with_shared_and_per_element_ranges():
    B = 3
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, N, 3, generator=g, dtype=torch.float64)
    y = torch.randn(B, M, 3, generator=g, dtype=torch.float64)
    b = torch.rand(B, M, 2, generator=g, dtype=torch.float64)
    gg = torch.tensor([0.7], dtype=torch.float64)
    routine = routine_of(CASES[0], 1)
    kernel = lambda xs, ys: torch.exp(-0.7 * ((xs[:, None] - ys[None]) ** 2).sum(-1))  # noqa: E731
    shared = structure(N, M, seed=3)
    out = routine(x, y, b, gg, ranges=six(shared))
    mask = mask_of(shared, N, M)
    for e in range(B):
        torch.testing.assert_close(out[e], (kernel(x[e], y[e]) * mask) @ b[e])
    # One set per element: structures of different sizes, padded (ranges_cases.stacked).
    structs = [structure(N, M, seed=s) for s in range(B)]
    per_element = stacked(structs, N, M)
    out = routine(x, y, b, gg, ranges=per_element)
    for e in range(B):
        mask = mask_of(structs[e], N, M)
        torch.testing.assert_close(out[e], (kernel(x[e], y[e]) * mask) @ b[e])
    over_i = routine_of(CASES[0], 0)(x, y, b, gg, ranges=per_element)
    for e in range(B):  # the transposed halves describe the same masks
        mask = mask_of(structs[e], N, M)
        torch.testing.assert_close(over_i[e], (kernel(x[e], y[e]) * mask).sum(0)[:, None] * b[e])


def test_numpy_and_half_precision():
    struct = structure(N, M, seed=5)
    mask = mask_of(struct, N, M)
    x, y, b, g = case_inputs(N, M)
    want = expected(CASES[0], 1, (x, y, b, g), mask)
    ranges = six(struct)
    routine = lknp.Genred(CASES[0][1], ALIASES, reduction_op="Sum", axis=1)
    out = routine(*[t.numpy() for t in (x, y, b, g)], ranges=tuple(r.numpy() for r in ranges))
    assert isinstance(out, np.ndarray)
    torch.testing.assert_close(torch.from_numpy(out), want[0])
    for dtype in (torch.float16, torch.bfloat16):  # computed in float32 on the CPU
        rounded = [t.to(dtype) for t in (x, y, b, g)]
        got = routine_of(CASES[0], 1)(*rounded, ranges=ranges)
        assert got.dtype == dtype
        ref = expected(CASES[0], 1, [t.double() for t in rounded], mask)[0]
        torch.testing.assert_close(got.double(), ref, rtol=2e-2, atol=2e-2)


def test_lazytensor_ranges_keyword_and_attribute():
    struct = structure(N, M, seed=7)
    mask = mask_of(struct, N, M).double()
    x, y, b, _ = case_inputs(N, M)
    ranges = six(struct)
    X, Y = LazyTensor(x[:, None]), LazyTensor(y[None])
    K = (-((X - Y) ** 2).sum(-1)).exp()
    dense_K = torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) * mask
    torch.testing.assert_close(K.sum(dim=1, ranges=ranges), dense_K.sum(1, keepdim=True))
    K.ranges = ranges  # pykeops's attribute: carried into K * b_j and K @ b
    assert K.ranges is not None and (K * 2).ranges is K.ranges
    torch.testing.assert_close(K @ b, dense_K @ b)
    torch.testing.assert_close(K.sum(dim=0), dense_K.sum(0)[:, None])
    c = torch.rand(N, 2, dtype=torch.float64)
    torch.testing.assert_close(K.T @ c, dense_K.T @ c)  # K.T: the halves exchanged
    D_ij = ((X - Y) ** 2).sum(-1)
    D_ij.ranges = ranges
    idx = D_ij.argKmin(2, dim=1)
    dense = ((x[:, None] - y[None]) ** 2).sum(-1).masked_fill(mask == 0, float("inf"))
    v, want = dense.topk(2, dim=1, largest=False)
    assert torch.equal(idx, want.masked_fill(v.isinf(), -1))
    K.ranges = None  # back to the full reduction
    torch.testing.assert_close(K.sum(dim=1), torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1))
                               .sum(1, keepdim=True))


def test_kernel_solve_with_ranges():
    struct = ([(0, 20), (20, N)], [(0, 20), (20, N)], [[True, False], [False, True]])
    g = torch.Generator().manual_seed(2)
    x = torch.randn(N, 3, generator=g, dtype=torch.float64)
    b = torch.randn(N, 2, generator=g, dtype=torch.float64)
    solve = KernelSolve("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"], "B",
                        axis=1)
    a = solve(x, x, b, alpha=0.5, ranges=six(struct))
    K = torch.exp(-((x[:, None] - x[None]) ** 2).sum(-1)) * mask_of(struct, N, N)
    torch.testing.assert_close(a, torch.linalg.solve(K + 0.5 * torch.eye(N, dtype=K.dtype), b),
                               rtol=1e-5, atol=1e-6)


def test_symbolic_reductions_and_inference_mode():
    from lazykeops.torch import Vi, Vj

    struct = structure(N, M, seed=8)
    mask = mask_of(struct, N, M).double()
    x, y, b, _ = case_inputs(N, M)
    dense = torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) * mask @ b
    K = (-Vi(0, 3).sqdist(Vj(1, 3))).exp() * Vj(2, 2)
    K.ranges = six(struct)  # kept by the symbolic reduction, applied when it is called
    torch.testing.assert_close(K.sum(dim=1)(x, y, b), dense)
    torch.testing.assert_close(((-Vi(0, 3).sqdist(Vj(1, 3))).exp() * Vj(2, 2)).sum(
        dim=1, ranges=six(struct))(x, y, b), dense)
    with torch.inference_mode():  # ranges made there have no version counter
        ranges = six(struct)
        routine = routine_of(CASES[0], 1)
        for _ in range(2):
            got = routine(x, y, b, torch.tensor([0.7], dtype=torch.float64), ranges=ranges)
    want = expected(CASES[0], 1, (x, y, b, torch.tensor([0.7], dtype=torch.float64)),
                    mask_of(struct, N, M))
    assert_outputs(got, want)


def test_cluster_utilities_end_to_end():
    """grid_cluster -> cluster_ranges_centroids -> sort_clusters -> from_matrix: the
    ranges they give, on the sorted data, reduce over the pairs of kept cells; swap_axes
    gives the reduction over the other axis; numpy's utilities give the same ranges."""
    from lazykeops.numpy import cluster as npcluster
    from lazykeops.torch.cluster import (cluster_ranges_centroids, from_matrix, grid_cluster,
                                         sort_clusters, swap_axes)

    g = torch.Generator().manual_seed(9)
    x = torch.rand(300, 3, generator=g, dtype=torch.float64)
    y = torch.rand(250, 3, generator=g, dtype=torch.float64)
    b = torch.rand(250, 2, generator=g, dtype=torch.float64)
    gg = torch.tensor([0.7], dtype=torch.float64)
    x_lab, y_lab = grid_cluster(x, 0.25), grid_cluster(y, 0.25)
    x_ranges, x_c, _ = cluster_ranges_centroids(x, x_lab)
    y_ranges, y_c, _ = cluster_ranges_centroids(y, y_lab)
    (x_s,), x_lab_s = sort_clusters((x,), x_lab)
    (y_s, b_s), y_lab_s = sort_clusters((y, b), y_lab)
    keep = ((x_c[:, None] - y_c[None]) ** 2).sum(-1) < 0.3 ** 2
    ranges = from_matrix(x_ranges, y_ranges, keep)
    mask = keep[x_lab_s.long()][:, y_lab_s.long()]
    assert 0.05 < mask.double().mean() < 0.6  # a real block-sparse structure
    K = torch.exp(-0.7 * ((x_s[:, None] - y_s[None]) ** 2).sum(-1)) * mask
    routine = routine_of(CASES[0], 1)
    torch.testing.assert_close(routine(x_s, y_s, b_s, gg, ranges=ranges), K @ b_s)
    # The reduction over i of the transposed problem reads the same half.
    over_i = routine_of(CASES[0], 0)(y_s, x_s, torch.ones(300, 2, dtype=torch.float64), gg,
                                     ranges=swap_axes(ranges))
    torch.testing.assert_close(over_i, K.sum(1)[:, None].expand(-1, 2))
    np_ranges = npcluster.from_matrix(
        npcluster.cluster_ranges_centroids(x.numpy(), x_lab.numpy())[0],
        npcluster.cluster_ranges_centroids(y.numpy(), y_lab.numpy())[0], keep.numpy())
    for a, t in zip(np_ranges, ranges):
        assert np.array_equal(a, t.numpy())
