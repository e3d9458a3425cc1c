"""LazyTensor inputs found by trying to break it: bad block-sparse ranges (named, never
ignored), the transpose of symbolic variables, batch dims of size 0, and expressions
built in loops: deeper than Python's recursion limit, or sharing subtrees exponentially."""

import numpy as np
import pytest
import torch

from lazy_helpers import D, M, N, no_compile, uniform
from lazykeops.tensor.lazy_reduce import lower

F64 = torch.float64


def gauss(be):
    x, y = be.arr(uniform(N, 1, D)), be.arr(uniform(1, M, D))
    return (-((be.LazyTensor(x) - be.LazyTensor(y)) ** 2).sum(-1)).exp()


def test_bad_ranges_are_named_never_ignored(be):
    K = gauss(be)
    ranges = tuple(be.arr(torch.zeros(1, 2)) for _ in range(6))  # floats: not indices
    K.ranges = ranges  # the attribute takes any 6-tuple: checked by the reduction
    no_compile(lambda: K.sum(dim=1), "ranges_i", "integer", "Sum")
    no_compile(lambda: K.logsumexp(dim=0, ranges=ranges), "ranges_i", "integer", "LogSumExp")
    no_compile(lambda: K.argKmin(2, dim=1, ranges=ranges), "ranges_i")
    K.ranges = None  # what pykeops clients write to go back to full reductions
    assert K.ranges is None


def test_genred_bad_ranges_are_named():
    from lazykeops.numpy import Genred as NumpyGenred
    from lazykeops.torch import Genred

    for cls, arr in ((Genred, torch.ones), (NumpyGenred, np.ones)):
        routine = cls("X*Y", ["X = Vi(1)", "Y = Vj(1)"], axis=1)
        no_compile(lambda: routine(arr((3, 1)), arr((4, 1)), ranges=(arr(2),)), "6-tuple",
                   "X*Y")


def test_transpose_of_symbolic_variables(be):
    x, y = uniform(N, D), uniform(M, D)
    K = (-(be.Vi(0, D) - be.Vj(1, D)).sqnorm2()).exp()
    KT = K.T
    dense = torch.exp(-torch.cdist(x, y) ** 2)
    # In K.T the variable 0 is indexed by j, variable 1 by i: rows now follow y.
    got = KT.sum(dim=1)(be.arr(x), be.arr(y))
    torch.testing.assert_close(be.tt(got)[:, 0], dense.sum(0))
    assert KT.t().sum(dim=1)(be.arr(x), be.arr(y)).shape[0] == N


@pytest.mark.parametrize("batch", [(0,), (2, 0), (0, 3)])
def test_batch_dims_of_size_zero_give_empty_results(be, batch):
    x = be.arr(uniform(*batch, N, 1, D))
    y = be.arr(uniform(1, M, D))
    K = (-((be.LazyTensor(x) - be.LazyTensor(y)) ** 2).sum(-1)).exp()
    assert K.shape[:len(batch)] == batch
    assert tuple(K.sum(dim=len(batch) + 1).shape) == (*batch, N, 1)
    assert tuple(K.argKmin(2, dim=len(batch)).shape) == (*batch, M, 2)


def test_genred_batch_dims_of_size_zero():
    from lazykeops.torch import Genred

    routine = Genred("X*Y", ["X = Vi(1)", "Y = Vj(1)"], axis=1)
    out = routine(torch.ones(2, 0, 3, 1, dtype=F64), torch.ones(1, 1, 4, 1, dtype=F64))
    assert tuple(out.shape) == (2, 0, 3, 1)


def test_shared_subtrees_are_lowered_once(be):
    x = uniform(N, 1, 1)
    a = be.LazyTensor(be.arr(x)) * 0.5 + 0.25
    dense = x * 0.5 + 0.25
    for _ in range(60):  # 2**60 paths through the tree: each level must be visited once
        a, dense = a * a, dense * dense
    nodes, leaves = lower([a])
    assert len(nodes[0].walk()) == 60 + 5 and len(leaves) == 3  # x, 0.5, 0.25
    assert "Mult(Mult(" in str(a) and len(str(a)) < 1000  # the quoted text is bounded


def test_chains_deeper_than_the_recursion_limit(be):
    x, y = uniform(N, 1, 1), uniform(1, M, 1)
    X, Y = be.LazyTensor(be.arr(x)), be.LazyTensor(be.arr(y))
    total, dense = X * Y, x * y
    for _ in range(1100):  # past the recursion limit of 1,000
        total, dense = total + X, dense + x
    torch.testing.assert_close(be.tt(total.sum(dim=1)), dense.sum(1))
    assert str(total).count("Add(") >= 50 and "..." in str(total)  # quoted, bounded


def test_a_thousand_variables_lower_in_order():
    from lazykeops.torch import LazyTensor

    xs = [torch.full((N, 1, 1), float(k), dtype=F64) for k in range(1000)]
    total = LazyTensor(torch.ones(1, M, 1, dtype=F64))
    for v in xs:
        total = total + LazyTensor(v)
    nodes, leaves = lower([total])
    assert len(leaves) == 1001 and leaves[1].data is xs[0] and leaves[-1].data is xs[-1]


def test_bad_arguments_to_methods_are_the_projects_error(be):
    """Found by calling every method with None, strings, tensors, huge integers, ...:
    each raised a raw TypeError, RuntimeError, OverflowError or AttributeError."""
    K = gauss(be)
    X = be.LazyTensor(be.arr(uniform(N, 1, D)))
    tensor = torch.zeros(2)
    for bad_call in (lambda: X.round(400), lambda: X.round("a"), lambda: X.round((1,)),
                     lambda: X.elem(tensor), lambda: X.extract(-10 ** 30, 1),
                     lambda: X.extract(0, tensor), lambda: X.one_hot(tensor),
                     lambda: K.sum(dim=tensor), lambda: K.argmin(tensor),
                     lambda: K.dense(None), lambda: be.LazyTensor.cat(["a"]),
                     lambda: X.bspline(X, tensor)):
        no_compile(bad_call)


def test_numpy_integer_parameters_are_python_ints(be):
    X = be.LazyTensor(be.arr(uniform(N, 1, D)))
    assert str(X.elem(np.int64(1))) == str(X.elem(1))
