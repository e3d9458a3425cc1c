"""The runtime's signature step: output shapes from argument shapes alone (no kernel, no
array), the errors it raises, and that Genred's and LazyTensor's paths agree with it."""

import numpy as np
import pytest
import torch

from lazykeops import LazyKeOpsError
from lazykeops.compile import build
from lazykeops.runtime.signature import broadcast, call_signature
from lazykeops.torch import Genred, LazyTensor

FORMULA = "Exp(-SqDist(x,y)) * b"
ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)", "g = Pm(1)"]


def core(reduction="Sum", axis=1, **kw):
    return Genred(FORMULA + " * g", ALIASES, reduction_op=reduction, axis=axis, **kw).core


def test_output_shapes_without_a_kernel_or_an_array():
    before = dict(build.stats)
    c = core()
    sig = call_signature(c, [(4, 1, 10, 3), (5, 20, 3), (20, 2), ()], "float32", "cpu")
    assert (sig.batch, sig.nbatch, sig.nout, sig.nred) == ((4, 5), 20, 10, 20)
    # x has batch dims (4, 1): its own batches are one apart; y's are 60 elements apart;
    # b and g are shared by every batch.
    assert tuple(sig.strides) == (30, 60, 0, 0)
    assert sig.output_shapes(c) == ((4, 5, 10, 2), None, None)
    # Over i: the rows are the j's, the reduced axis the i's.
    sig0 = call_signature(core(axis=0), [(10, 3), (20, 3), (20, 2), (1,)], "float64", "cpu")
    assert (sig0.nout, sig0.nred) == (20, 10)
    kmin = core("ArgKMin", opt_arg=3)
    assert call_signature(kmin, [(10, 3), (20, 3), (20, 2), (1,)], "float64",
                          "cpu").output_shapes(kmin) == (None, (10, 6), None)
    assert build.stats == before  # nothing was built or loaded


@pytest.mark.parametrize("shapes, message", [
    ([(10, 2), (20, 3), (20, 2), (1,)], "argument x .* expected shape \\(..., N, 3\\)"),
    ([(10, 3), (20, 3), (21, 2), (1,)], "arguments y and b .* M = 20 and 21"),
    ([(2, 10, 3), (3, 20, 3), (20, 2), (1,)], "batch dimensions .* do not broadcast"),
    ([(10, 3), (20, 3), (20, 2), (2,)], "argument g .* a parameter of dim 1"),
])
def test_errors_name_the_argument(shapes, message):
    with pytest.raises(LazyKeOpsError, match=message):
        call_signature(core(), shapes, "float64", "cpu")


def test_broadcast_is_torchs_rule():
    for shapes in [[(4, 1), (5,)], [(1, 0), (3, 1)], [(2, 3), ()], [(7,), (1, 7), (2, 1, 1)]]:
        expected = tuple(torch.broadcast_shapes(*shapes))
        assert broadcast(shapes) == expected
    assert broadcast([(2,), (3,)]) is None


def test_genred_and_lazytensor_agree_with_the_signature():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((3, 1, 7, 3)))
    y = torch.tensor(rng.standard_normal((2, 9, 3)))
    b = torch.tensor(rng.standard_normal((9, 2)))
    g = torch.tensor([0.5], dtype=torch.float64)
    c = core()
    expected = call_signature(c, [x.shape, y.shape, b.shape, g.shape], "float64",
                              "cpu").output_shapes(c)[0]
    out = Genred(FORMULA + " * g", ALIASES, axis=1)(x, y, b, g)
    assert tuple(out.shape) == expected
    X, Y = LazyTensor(x[..., :, None, :]), LazyTensor(y[..., None, :, :])
    B = LazyTensor(b[None, :, :])
    lazy = ((-((X - Y) ** 2).sum(-1)).exp() * B * 0.5).sum(dim=3)
    dense = (torch.exp(-((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1))[..., None]
             * b[None, :, :] * 0.5).sum(-2)
    torch.testing.assert_close(out, dense)
    torch.testing.assert_close(lazy, dense)
