"""Shared by the LazyTensor tests (tests/tensor): the torch/numpy backend helper, small
float64 inputs and the checks that compare a lazykeops result with a dense reference.

References are dense torch float64 expressions written by hand in each test; they never
go through lazykeops's own reference evaluator. Each distinct formula compiles once per
session (the numpy and torch front ends share the compiled kernel), so tests reuse the
same formulas wherever they can.
"""

import numpy as np
import pytest
import torch

import lazykeops.numpy as lknp
import lazykeops.torch as lkt
from lazykeops import LazyKeOpsError
from lazykeops.compile import build

N, M, D = 7, 5, 3
F64 = torch.float64


class Backend:
    """lazykeops.torch (on the CPU, or "cuda": on the GPU) or lazykeops.numpy, with
    conversions from and to CPU torch tensors."""

    def __init__(self, name):
        self.name = name
        self.lk = lknp if name == "numpy" else lkt
        self.LazyTensor, self.Vi, self.Vj, self.Pm = \
            self.lk.LazyTensor, self.lk.Vi, self.lk.Vj, self.lk.Pm
        self.array_type = np.ndarray if name == "numpy" else torch.Tensor

    def __repr__(self):
        return self.name

    def arr(self, t, dtype=None):
        """A torch tensor as this backend's array (a copy, same dtype unless `dtype`)."""
        t = t if dtype is None else t.to(dtype)
        if self.name == "numpy":
            return t.numpy().copy()
        return t.clone() if self.name == "torch" else t.to("cuda")

    def tt(self, a):
        """This backend's array as a CPU torch tensor, checking that it is one (on the GPU
        for "cuda")."""
        assert isinstance(a, self.array_type), type(a)
        if self.name == "numpy":
            return torch.from_numpy(np.ascontiguousarray(a))
        assert a.is_cuda == (self.name == "cuda"), a.device
        return a.cpu()


def check(be, result, expected, tol=1e-10, dtype=F64):
    """result (a `be` array) has expected's shape, the given dtype, and its values."""
    r = be.tt(result)
    assert tuple(r.shape) == tuple(expected.shape), (tuple(r.shape), tuple(expected.shape))
    assert r.dtype == dtype, r.dtype
    torch.testing.assert_close(r.to(F64), expected.to(F64), rtol=tol, atol=tol)


def check_index(be, result, expected):
    r = be.tt(result)
    assert r.dtype == torch.int64, r.dtype
    assert tuple(r.shape) == tuple(expected.shape), (tuple(r.shape), tuple(expected.shape))
    assert torch.equal(r, expected.to(torch.int64))


def no_compile(fn, *words):
    """fn() raises LazyKeOpsError before compiling anything; its message holds `words`."""
    before = build.stats["builds"]
    with pytest.raises(LazyKeOpsError) as info:
        fn()
    assert build.stats["builds"] == before
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def uniform(*shape, seed=0, low=0.1, high=1.1):
    return low + (high - low) * torch.rand(*shape, generator=gen(seed), dtype=F64)


def normal(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed), dtype=F64)


def sqdist_dense(x, y):
    """|x_i - y_j|^2 by hand, for x (..., N, D) and y (..., M, D): (..., N, M)."""
    return ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)
