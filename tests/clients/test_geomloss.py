"""GeomLoss 0.3.1 on lazykeops through install_as_pykeops(): SamplesLoss's "online" backend
(KeOps formulas and LazyTensors) against its "tensorized" backend (dense torch), values and
gradients, with batch dims and weights; its "multiscale" backend (block-sparse ranges)
against the online one."""

import pytest
import torch

import lazykeops.torch
from lazykeops.runtime.ranges import BlockSparse

# Tolerances, from GeomLoss's own roundings: its online Sinkhorn passes 1/eps through a
# float32 tensor (relative error ~6e-8), and its tensorized distances are
# sqrt(max(|x-y|^2, 1e-8)), so its self-interaction terms are 1e-4 instead of 0: the
# kernel losses shift by ~1e-5, a debiased p=1 Sinkhorn by ~1e-4 (tested without debias).
CASES = [("sinkhorn", 2, {}, 1e-7), ("sinkhorn", 1, {"debias": False}, 1e-7),
         ("gaussian", 2, {}, 1e-9), ("laplacian", 2, {}, 2e-5), ("energy", 2, {}, 2e-5)]


@pytest.fixture(scope="module")
def geomloss(pykeops):
    import geomloss
    from geomloss._legacy import kernel_samples, sinkhorn_samples, utils

    for module in (kernel_samples, sinkhorn_samples, utils):
        assert module.keops_available, (f"{module.__name__} did not import pykeops (was "
                                         "geomloss imported before install_as_pykeops()?)")
    assert sinkhorn_samples.generic_logsumexp is lazykeops.torch.generic_logsumexp
    assert utils.LazyTensor is lazykeops.torch.LazyTensor
    return geomloss


def samples(B=2, N=23, M=31, D=3):
    g = torch.Generator().manual_seed(0)
    shifts = torch.linspace(0.3, 1.5, B).view(B, 1, 1)  # batch entries of different losses
    x, y = torch.randn(B, N, D, generator=g), torch.randn(B, M, D, generator=g) + shifts
    a, b = torch.rand(B, N, generator=g) + 0.1, torch.rand(B, M, generator=g) + 0.1
    return [t.double() for t in (a / a.sum(1, keepdim=True), x, b / b.sum(1, keepdim=True), y)]


def loss_and_grads(geomloss, name, p, options, backend, inputs):
    a, x, b, y = [t.clone().requires_grad_() for t in inputs]
    loss = geomloss.SamplesLoss(name, p=p, blur=0.3, backend=backend, **options)(a, x, b, y)
    weights = torch.arange(1.0, 1.0 + loss.numel(), dtype=loss.dtype)
    return (loss, *torch.autograd.grad((loss * weights).sum(), [a, x, y]))


@pytest.mark.parametrize("name,p,options,atol", CASES, ids=[f"{c[0]}-p{c[1]}" for c in CASES])
def test_online_matches_tensorized(geomloss, name, p, options, atol):
    inputs = samples()
    online = loss_and_grads(geomloss, name, p, options, "online", inputs)
    dense = loss_and_grads(geomloss, name, p, options, "tensorized", inputs)
    assert online[0].shape == (2,)
    for what, got, ref in zip(["loss", "d/da", "d/dx", "d/dy"], online, dense):
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=atol,
                                   msg=lambda m, what=what: f"{name} p={p} {what}: {m}")
    # Not a trivial agreement: the two batch entries differ, and so do the losses.
    assert (online[0][0] - online[0][1]).abs() > 0.05 * online[0].abs().max()


@pytest.mark.parametrize("name, rtol", [("sinkhorn", 2e-2), ("gaussian", 1e-3)])
def test_multiscale_runs_block_sparse(geomloss, name, rtol, monkeypatch):
    """GeomLoss's multiscale backend (clusters, from_matrix, ranges= on generic_logsumexp):
    close to the online backend, since it drops only far cluster pairs, and the reductions
    it ran really were block-sparse."""
    layouts = []
    layout = BlockSparse.layout

    def spy(self, *args):
        layouts.append((layout(self, *args), args[1] * args[2]))  # and N * M
        return layouts[-1][0]

    monkeypatch.setattr(BlockSparse, "layout", spy)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(600, 3, generator=g), torch.rand(800, 3, generator=g) + 0.2
    results = {}
    for backend in ("online", "multiscale"):
        xx = x.clone().requires_grad_()
        loss = geomloss.SamplesLoss(name, blur=0.05, scaling=0.5, backend=backend,
                                    **({"truncate": 2} if name == "gaussian" else {}))
        try:
            value = loss(xx, y)
            results[backend] = (value, *torch.autograd.grad(value, xx))
        finally:  # GeomLoss's Sinkhorn loop switches autograd off and on by hand
            torch.set_grad_enabled(True)
    (loss, grad), (loss_online, grad_online) = results["multiscale"], results["online"]
    torch.testing.assert_close(loss, loss_online, rtol=rtol, atol=0)
    # Multiscale Sinkhorn's gradient is further from the online one (its coarse-to-fine
    # annealing, not the ranges): 9% at this size, 2% at 2000 points.
    assert (grad - grad_online).norm() <= 5 * rtol * grad_online.norm()
    assert layouts and any(lay.pairs < 0.5 * dense for lay, dense in layouts)
