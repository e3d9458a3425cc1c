"""GPyTorch 1.15's KeOps kernels (gpytorch.kernels.keops) on lazykeops through
install_as_pykeops(), against GPyTorch's plain kernels: K @ v and its gradients with respect
to the inputs and the hyperparameters, and an exact GP (marginal log likelihood, its
backward, the posterior mean).

GPyTorch uses KeOps only for kernel matrices of at least `max_cholesky_size` rows, and
Cholesky only below it: max_cholesky_size(0) routes every kernel through KeOps, and
fast_computations(False, False, False) keeps the exact Cholesky solves and log-determinants
(on the KeOps operator made dense by K @ I), so both sides compute the same numbers."""

from unittest import mock

import pytest
import torch

import lazykeops.torch

KERNELS = [("RBFKernel", {}), ("MaternKernel", {"nu": 0.5}), ("MaternKernel", {"nu": 1.5}),
           ("MaternKernel", {"nu": 2.5}), ("PeriodicKernel", {})]


@pytest.fixture(scope="module")
def gpytorch(pykeops):
    import gpytorch
    from gpytorch.kernels.keops import keops_kernel

    assert keops_kernel.LazyTensor is lazykeops.torch.LazyTensor, \
        "gpytorch was imported before install_as_pykeops()"
    with gpytorch.settings.max_cholesky_size(0), \
            gpytorch.settings.fast_computations(False, False, False):
        yield gpytorch


def keops_used(gpytorch):
    """A spy on the LazyTensor that GPyTorch's KeOps kernels wrap their inputs in."""
    return mock.patch.object(gpytorch.kernels.keops.keops_kernel, "LazyTensor",
                             wraps=lazykeops.torch.LazyTensor)


def kernel_pair(gpytorch, name, options):
    keops = getattr(gpytorch.kernels.keops, name)(ard_num_dims=2, **options).double()
    plain = getattr(gpytorch.kernels, name)(ard_num_dims=2, **options).double()
    with torch.no_grad():  # hyperparameters away from their defaults, different per dim
        for p in keops.parameters():
            p.copy_(torch.linspace(-0.7, 0.4, p.numel()).view_as(p))
    plain.load_state_dict(keops.state_dict())
    return keops, plain


def matmul_and_grads(kernel, x, v):
    x = x.clone().requires_grad_()
    out = kernel(x) @ v
    params = list(kernel.parameters())
    return (out, *torch.autograd.grad((out ** 2).sum(), [x, *params]))


@pytest.mark.parametrize("name,options", KERNELS,
                         ids=[n + str(o.get("nu", "")) for n, o in KERNELS])
def test_kernel_matmul(gpytorch, name, options):
    g = torch.Generator().manual_seed(0)
    x, v = torch.rand(37, 2, generator=g, dtype=torch.float64), \
        torch.randn(37, 3, generator=g, dtype=torch.float64)
    keops, plain = kernel_pair(gpytorch, name, options)
    with keops_used(gpytorch) as spy:
        got = matmul_and_grads(keops, x, v)
    assert spy.called
    ref = matmul_and_grads(plain, x, v)
    # GPyTorch's plain distances come from |x|^2 - 2 x.y + |y|^2: ~1e-8 on the diagonal,
    # where the KeOps kernels' are 1e-10; Matern 1/2 (linear in the distance) feels it.
    for what, a, b in zip(["K @ v", "d/dx", *[n for n, _ in keops.named_parameters()]], got, ref):
        scale = b.abs().max()
        torch.testing.assert_close(a / scale, b / scale, rtol=0, atol=1e-7,
                                   msg=lambda m, what=what: f"{name}{options} {what}: {m}")


def exact_gp(gpytorch, kernel, x, y):
    class GP(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
            self.mean = gpytorch.means.ConstantMean()
            self.covar = gpytorch.kernels.ScaleKernel(kernel)

        def forward(self, t):
            return gpytorch.distributions.MultivariateNormal(self.mean(t), self.covar(t))

    model = GP().double()
    with torch.no_grad():
        model.likelihood.noise = 0.05
        model.covar.outputscale = 1.7
    return model


def mll_grads_and_mean(gpytorch, model, x, y, xt):
    model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    loss = -mll(model(x), y)
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(loss, params)
    model.eval()
    with torch.no_grad():
        mean = model.likelihood(model(xt)).mean
    return dict(zip(["-mll", "posterior mean", *names], [loss, mean, *grads]))


def test_exact_gp(gpytorch):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(50, 2, generator=g, dtype=torch.float64)
    y = torch.sin(6 * x[:, 0]) * x[:, 1] + 0.1 * torch.randn(50, generator=g, dtype=torch.float64)
    xt = torch.rand(20, 2, generator=g, dtype=torch.float64)
    keops, plain = kernel_pair(gpytorch, "MaternKernel", {"nu": 2.5})
    with keops_used(gpytorch) as spy:
        got = mll_grads_and_mean(gpytorch, exact_gp(gpytorch, keops, x, y), x, y, xt)
    assert spy.called
    ref = mll_grads_and_mean(gpytorch, exact_gp(gpytorch, plain, x, y), x, y, xt)
    assert got.keys() == ref.keys() and len(got) == 6
    for what in got:
        torch.testing.assert_close(got[what], ref[what], rtol=1e-7, atol=1e-9,
                                   msg=lambda m, what=what: f"{what}: {m}")
    assert ref["posterior mean"].std() > 0.1  # it learnt something from y
