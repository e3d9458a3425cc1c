"""torch.func transforms through reductions with batch dims that broadcast against each
other: jacfwd and hessian vmap the forward-mode tangents, so the engine sees one more
batch dimension on some arguments only (dense torch in float64 is the reference)."""

import pytest
import torch

from lazykeops.torch import LazyTensor

N, M, D = 4, 5, 2
SHAPES = [  # (x, y, w): which arguments carry batch dims, and how many
    ((N, 1, D), (3, 1, M, D), (1, M, 1)),
    ((2, 1, N, 1, D), (3, 1, M, D), (1, 1, M, 1)),
    ((3, N, 1, D), (1, M, D), (3, 1, M, 1)),
]


def lazy_lse(x, y, w):
    K = -((LazyTensor(x) - LazyTensor(y)) ** 2).sum(-1)
    return K.logsumexp(dim=K.nbatchdims + 1, weight=LazyTensor(w))


def dense_lse(x, y, w):
    return torch.logsumexp(-((x - y) ** 2).sum(-1, keepdim=True) + w.log(), dim=-2)


def lazy_sum(x, y, w):
    K = (-((LazyTensor(x) - LazyTensor(y)) ** 2).sum(-1)).exp() * LazyTensor(w)
    return K.sum(dim=K.nbatchdims + 1)


def dense_sum(x, y, w):
    return ((-((x - y) ** 2).sum(-1, keepdim=True)).exp() * w).sum(-2)


@pytest.mark.parametrize("shapes", SHAPES, ids=["x-unbatched", "x-extra-dim", "y-unbatched"])
@pytest.mark.parametrize("pair", [(lazy_lse, dense_lse), (lazy_sum, dense_sum)],
                         ids=["weighted-lse", "sum"])
@pytest.mark.parametrize("transform", ["jacfwd", "hessian"])
def test_transforms_match_dense(shapes, pair, transform):
    gen = torch.Generator().manual_seed(0)
    x, y = (torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes[:2])
    w = torch.rand(shapes[2], generator=gen, dtype=torch.float64) + 0.1
    lazy, dense = pair
    assert torch.allclose(lazy(x, y, w), dense(x, y, w), atol=1e-12)
    fn = getattr(torch.func, transform)
    for arg in (0, 1, 2):
        got = fn(lambda *a: lazy(*a).sum(), argnums=arg)(x, y, w)
        want = fn(lambda *a: dense(*a).sum(), argnums=arg)(x, y, w)
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-10), (transform, arg)


def test_vmap_over_batched_lazytensors():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, N, 1, D, generator=gen, dtype=torch.float64)
    y = torch.randn(1, M, D, generator=gen, dtype=torch.float64)
    w = torch.rand(3, 1, M, 1, generator=gen, dtype=torch.float64) + 0.1
    got = torch.func.vmap(lambda xx: lazy_lse(xx, y, w))(x)
    assert torch.allclose(got, dense_lse(x, y, w), atol=1e-12)
