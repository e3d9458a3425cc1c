"""float16 and bfloat16 arrays on the CPU: computed in float32 (as on the GPU, where they
are stored in half and computed in float32), returned in the input's dtype; indices stay
int64; out= receives the half result. The reference computes in float64 on the same
rounded inputs."""

import numpy as np
import pytest
import torch

from lazykeops.numpy import Genred as NumpyGenred
from lazykeops.torch import Genred, LazyTensor

ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
GAUSS = ("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"])


def rounded_inputs(dtype, n=40, m=30):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*shape, generator=g).to(dtype) for shape in ((n, 3), (m, 3), (m, 2))]


@pytest.mark.parametrize("dtype", list(ROUNDOFF), ids=str)
def test_half_sums_within_a_few_roundoffs_of_float64(dtype):
    args = rounded_inputs(dtype)
    routine = Genred(*GAUSS, axis=1)
    got = routine(*args)
    want = routine(*[a.double() for a in args])
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=2 * ROUNDOFF[dtype],
                               atol=2 * ROUNDOFF[dtype] * want.abs().max().item())


@pytest.mark.parametrize("dtype", list(ROUNDOFF), ids=str)
def test_half_selections_return_int64_indices(dtype):
    x, y, _ = rounded_inputs(dtype)
    vals, idx = Genred("X - Y", ["X = Vi(3)", "Y = Vj(3)"], reduction_op="Min_ArgMin", axis=1)(x, y)
    dense = x.double()[:, None] - y.double()[None]
    assert vals.dtype == dtype and idx.dtype == torch.int64
    # x - y is exact in float32: the minimum, rounded once to the half type
    assert torch.equal(vals, dense.min(1).values.to(dtype))
    assert torch.equal(idx, dense.min(1).indices)


def test_half_out_argument_and_lazytensor():
    x, y, b = rounded_inputs(torch.float16)
    out = torch.empty(40, 2, dtype=torch.float16)
    routine = Genred(*GAUSS, axis=1)
    assert routine(x, y, b, out=out) is out
    K = (-((LazyTensor(x[:, None]) - LazyTensor(y[None])) ** 2).sum(-1)).exp()
    got = K @ b
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, out)
    assert K.dense().dtype == torch.float16  # evaluated in float32, rounded


def test_half_gradients():
    x, y, b = [t.requires_grad_() for t in rounded_inputs(torch.bfloat16)]
    Genred(*GAUSS, axis=1)(x, y, b).sum().backward()
    ref = [t.detach().double().requires_grad_() for t in (x, y, b)]
    Genred(*GAUSS, axis=1)(*ref).sum().backward()
    for got, want in zip((x, y, b), ref):
        assert got.grad.dtype == torch.bfloat16
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=0.02,
                                   atol=0.02 * want.grad.abs().max().item())


def test_numpy_float16():
    x, y, b = (a.numpy() for a in rounded_inputs(torch.float16))
    routine = NumpyGenred(*GAUSS, axis=1)
    got = routine(x, y, b)
    want = routine(x.astype(np.float64), y.astype(np.float64), b.astype(np.float64))
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=2e-3, atol=2e-3 * abs(want).max())
