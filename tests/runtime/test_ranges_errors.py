"""Bad block-sparse ranges (runtime/ranges.py): each gets the project's error naming the
array at fault and what was expected, raised before anything is compiled; and odd but
valid ranges that must lay out without an error."""

import numpy as np
import pytest
import torch

from lazykeops import LazyKeOpsError
from lazykeops.torch import Genred, LazyTensor
from tests.runtime.ranges_cases import six
from tests.tensor.lazy_helpers import no_compile

N, M = 12, 10
FORMULA = "SqDist(X,Y) * B"  # a formula no other test compiles: a compile would show
ALIASES = ["X = Vi(2)", "Y = Vj(2)", "B = Vj(1)"]


def arrays(batch=()):
    return (torch.rand(*batch, N, 2, dtype=torch.float64), torch.rand(*batch, M, 2, dtype=torch.float64),
            torch.rand(*batch, M, 1, dtype=torch.float64))


def good():
    return list(six(([(0, 4), (4, 9)], [(0, 3), (5, 10)], [[True, True], [False, True]])))


def replaced(position, value):
    r = good()
    r[position] = value
    return tuple(r)


CASES = [  # (ranges, axis, words the message must hold)
    ((torch.zeros(1, 2),) * 5, 1, ["6-tuple", "length 5"]),
    ("ranges", 1, ["6-tuple", "str"]),
    (replaced(0, [[0, 4], [4, 9]]), 1, ["ranges_i", "torch integer array", "list"]),
    (replaced(2, torch.zeros(2, 2)), 1, ["redranges_j", "integer", "float32"]),
    (replaced(0, np.zeros((2, 2), np.int64)), 1, ["ranges_i", "torch", "ndarray"]),
    (replaced(0, torch.zeros(2, 3, dtype=torch.int64)), 1, ["ranges_i", "(..., K, 2)"]),
    (replaced(1, torch.tensor([1, 2, 3])), 1, ["slices_i", "one entry per cluster"]),
    (replaced(0, torch.tensor([[0, 5], [4, 9]])), 1, ["ranges_i", "disjoint", "increasing"]),
    (replaced(0, torch.tensor([[0, 4], [4, 13]])), 1, ["ranges_i", "N = 12", "[4, 13]"]),
    (replaced(0, torch.tensor([[-1, 4], [4, 9]])), 1, ["ranges_i", "0 <= start"]),
    (replaced(0, torch.tensor([[3, 2], [4, 9]])), 1, ["ranges_i", "start <= end"]),
    (replaced(1, torch.tensor([2, 1])), 1, ["slices_i", "nondecreasing"]),
    (replaced(1, torch.tensor([1, 2])), 1, ["slices_i", "end at the number of intervals", "3"]),
    (replaced(2, torch.tensor([[0, 3], [5, 11], [5, 10]])), 1, ["redranges_j", "M = 10"]),
    (replaced(2, torch.tensor([[5, 10], [0, 3], [5, 10]])), 1, ["redranges_j", "disjoint",
                                                                "cluster 0"]),
    (replaced(5, torch.tensor([[0, 4], [0, 13], [4, 9]])), 0, ["redranges_i", "N = 12"]),
    (replaced(3, torch.tensor([[0, 3], [5, 11]])), 0, ["ranges_j", "M = 10"]),
    (tuple(torch.stack([r, r]) if p < 3 else r for p, r in enumerate(good())), 1,
     ["ranges_i", "batch dims", "(2,)"]),
    # The second half drops the block (rows 4-8, columns 5-9) the first keeps: 57 pairs
    # (4 x (3 + 5) + 5 x 5) against 32 (3 x 4 + 5 x 4).
    (replaced(5, torch.tensor([[0, 4], [0, 4], [0, 0]])), 1,
     ["ranges", "both halves", "57 and 32"]),
]


@pytest.mark.parametrize("ranges, axis, words", CASES)
def test_bad_ranges_are_named_before_any_compile(ranges, axis, words):
    routine = Genred(FORMULA, ALIASES, reduction_op="Sum", axis=axis)
    msg = no_compile(lambda: routine(*arrays(), ranges=ranges))
    for word in words:
        assert word in msg, (word, msg)
    assert FORMULA in msg


def test_batch_dims_of_the_halves_must_agree():
    r = good()
    r[1] = torch.stack([r[1]] * 3)
    routine = Genred(FORMULA, ALIASES, reduction_op="Sum", axis=1)
    msg = no_compile(lambda: routine(*arrays((3,)), ranges=tuple(r)))
    assert "share their batch dims" in msg and "slices_i: (3,)" in msg


def test_lazytensor_errors():
    x, y, b = arrays()
    K = (-((LazyTensor(x[:, None]) - LazyTensor(y[None])) ** 2).sum(-1)).exp()
    msg = no_compile(lambda: setattr(K, "ranges", (torch.zeros(1, 2),) * 2))
    assert "6-tuple" in msg and str(K.shape) in msg
    bad = replaced(0, torch.tensor([[0, 5], [4, 9]]))
    msg = no_compile(lambda: K.sum(dim=1, ranges=bad))
    assert "ranges_i" in msg and "Sum" in msg
    K.ranges = bad
    assert "ranges_i" in no_compile(lambda: K @ b)
    K2 = (-((LazyTensor(x[:, None]) - LazyTensor(y[None])) ** 2).sum(-1)).exp()
    K2.ranges = good()
    assert "different block-sparse ranges" in no_compile(lambda: K * K2)


def test_a_structure_with_fewer_than_k_terms_is_not_an_error():
    # Rows with fewer than K terms (here none: rows 9-11) end in empty slots; without
    # ranges, K above M is an error.
    routine = Genred("SqDist(X,Y)", ALIASES[:2], reduction_op="ArgKMin", axis=1, opt_arg=4)
    x, y, _ = arrays()
    idx = routine(x, y, ranges=tuple(good()))
    assert idx.shape == (N, 4) and (idx[9:] == -1).all() and (idx[:9] >= 0).all()
    dense_error = "needs at least K terms"
    with pytest.raises(LazyKeOpsError, match=dense_error):
        Genred("SqDist(X,Y)", ALIASES[:2], reduction_op="ArgKMin", axis=1, opt_arg=11)(x, y)


def test_no_clusters_with_intervals_lays_out_to_nothing():
    """Zero clusters with intervals listed: nothing reads them (it used to be a crash path
    of the layout's cluster ids), every row reduces over nothing."""
    from lazykeops.runtime.backends import get_backend
    from lazykeops.runtime.ranges import block_sparse

    none, no_slices = torch.zeros(0, 2, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    iv = torch.tensor([[0, 2]])
    ranges = block_sparse((none, no_slices, iv, none, no_slices, iv), get_backend("torch"),
                          "cpu", "a test")
    for axis, nout, nred in ((1, N, M), (0, M, N)):
        layout = ranges.layout(axis, nout, nred, ())
        assert layout.pairs == 0 and layout.max_cluster_terms == 0
        assert layout.bounds.tolist() == [[0, nout]]
