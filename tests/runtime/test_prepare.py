"""The runtime's one preparation step (launch.prepare) for both layouts: Genred's arrays
(..., N, D) and a LazyTensor's leaves (..., N, 1, D) come out as the same contiguous
memory, broadcast over the batch only where an argument has batch dims of its own; and
what it hands the engine gives the dense reduction through both front ends."""

import torch

from lazykeops.runtime.launch import prepare
from lazykeops.runtime.signature import call_signature
from lazykeops.torch import Genred, LazyTensor

ALIASES = ["x = Vi(3)", "y = Vj(3)", "g = Pm(1)"]


def test_both_layouts_prepare_to_the_same_memory():
    core = Genred("Exp(-g*SqDist(x,y))", ALIASES, axis=1).core
    g = torch.Generator().manual_seed(0)
    # x: batch dims (4, 1) and not contiguous (D is its slowest axis in memory)
    x = torch.rand(4, 1, 3, 5, generator=g).transpose(-1, -2)
    y, p = torch.rand(2, 7, 3, generator=g), torch.rand(1, generator=g)
    sig = call_signature(core, [x.shape, y.shape, p.shape], "float32", "cpu")
    assert sig.batch == (4, 2) and tuple(sig.strides) == (15, 21, 0)
    genred = prepare(core, sig, [x, y, p])
    lazy = prepare(core, sig, [x[..., :, None, :], y[..., None, :, :], p.reshape(1, 1, 1)],
                   lazy=True)
    expected = [x.expand(4, 2, 5, 3), y.expand(4, 2, 7, 3), p]
    for a, b, e in zip(genred, lazy, expected):
        assert a.is_contiguous() and b.is_contiguous()
        assert torch.equal(a.flatten(), e.flatten()) and torch.equal(b.flatten(), e.flatten())
    assert genred[2].data_ptr() == p.data_ptr()  # shared by every batch: not copied


def test_genred_and_lazytensor_paths_agree_with_dense():
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 1, 6, 3, generator=g, dtype=torch.float64), \
        torch.rand(2, 8, 3, generator=g, dtype=torch.float64)
    p = torch.tensor([0.7], dtype=torch.float64)
    dense = (-p * ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)).exp().sum(-1)
    genred = Genred("Exp(-g*SqDist(x,y))", ALIASES, axis=1)(x, y, p)
    X, Y = LazyTensor(x[..., :, None, :]), LazyTensor(y[..., None, :, :])
    lazy = (-LazyTensor(p) * ((X - Y) ** 2).sum(-1)).exp().sum(dim=3)
    torch.testing.assert_close(genred[..., 0], dense)
    torch.testing.assert_close(lazy[..., 0], dense)
