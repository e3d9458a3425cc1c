"""torch.compile(fullgraph=True) through LazyTensor and Genred reductions (the custom op
of torch/custom_ops.py): a small Gaussian-kernel model trained for a few Adam steps
matches the eager model step by step; Sum, LogSumExp, Min (forward and backward) and
ArgKMin against dense torch in float64; no graph break, and no recompilation on a second
call. Each compiled function costs a compile (about a second), so the cases are few."""

import pytest
import torch
import torch._dynamo.testing

from lazykeops.torch import Genred, LazyTensor

N, M, D = 23, 17, 3
DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")])]


def data(device, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(N, D, generator=g, dtype=dtype), torch.rand(M, D, generator=g, dtype=dtype)
    b = torch.rand(M, 2, generator=g, dtype=dtype)
    return x.to(device), y.to(device), b.to(device)


class GaussianLayer(torch.nn.Module):
    """out_i = sum_j exp(-|x_i - c_j|^2 / 2 s^2) w_j, centers c, weights w and bandwidth s
    trained; the kernel matrix is never formed."""

    def __init__(self, centers, weights):
        super().__init__()
        self.c = torch.nn.Parameter(centers.clone())
        self.w = torch.nn.Parameter(weights.clone())
        self.s = torch.nn.Parameter(torch.tensor([0.7], dtype=centers.dtype,
                                                 device=centers.device))

    def forward(self, x):
        X, C = LazyTensor(x[:, None, :]), LazyTensor(self.c[None, :, :])
        K = (-((X - C) ** 2).sum(-1) * 0.5 / self.s ** 2).exp()  # 0.5: a Python number
        return K @ self.w


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_model_trains_like_the_eager_one(device):
    x, c, w = data(device)
    target = torch.sin(3 * x[:, :2])
    models = [GaussianLayer(c, w), GaussianLayer(c, w)]
    steps = [torch.nn.Module.__call__, torch.compile(models[1], fullgraph=True)]
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.05) for m in models]
    history = []
    for _ in range(4):
        losses, grads = [], []
        for model, step, opt in zip(models, steps, optimizers):
            opt.zero_grad()
            out = step(model, x) if step is torch.nn.Module.__call__ else step(x)
            loss = ((out - target) ** 2).mean()
            loss.backward()
            losses.append(loss.detach())
            grads.append([p.grad.clone() for p in model.parameters()])
            opt.step()
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-12, atol=0)
        for g_compiled, g_eager in zip(grads[1], grads[0]):
            torch.testing.assert_close(g_compiled, g_eager, rtol=1e-10, atol=1e-14)
        history.append(losses[0].item())
    assert history[-1] < history[0]  # it trains


def sq_dists(x, y):
    return ((LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])) ** 2).sum(-1)


def dense_sq_dists(x, y):
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


CASES = {  # name: (lazy, dense) of (x, y, b)
    "Sum": (lambda x, y, b: (-sq_dists(x, y)).exp() @ b,
            lambda x, y, b: (-dense_sq_dists(x, y)).exp() @ b),
    "LogSumExp": (lambda x, y, b: (-sq_dists(x, y)).logsumexp(dim=1),
                  lambda x, y, b: (-dense_sq_dists(x, y)).logsumexp(1, keepdim=True)),
    "Min": (lambda x, y, b: sq_dists(x, y).min(dim=0),
            lambda x, y, b: dense_sq_dists(x, y).min(0).values[:, None]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reductions_match_dense_forward_and_backward(name):
    lazy, dense = CASES[name]
    x, y, b = data("cpu")
    cnt = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(lazy, fullgraph=True, backend=cnt)
    inputs = [t.clone().requires_grad_() for t in (x, y, b)]
    out = compiled(*inputs)
    reference = [t.clone().requires_grad_() for t in (x, y, b)]
    expected = dense(*reference)
    torch.testing.assert_close(out, expected)
    cotangent = torch.rand_like(expected)
    grads = torch.autograd.grad(out, inputs, cotangent, allow_unused=True)
    expected_grads = torch.autograd.grad(expected, reference, cotangent, allow_unused=True)
    for g, e in zip(grads, expected_grads):
        if e is None:
            assert g is None or not g.any()
        else:
            torch.testing.assert_close(g, e)
    compiled(*inputs)  # the same shapes and requires_grad: the same graph
    assert cnt.frame_count == 1


def test_argkmin_and_genred_compile_without_graph_breaks_or_recompiles():
    x, y, b = data("cpu")
    gaussian = Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"], axis=1)

    def f(x, y, b):
        return sq_dists(x, y).argKmin(3, dim=1), gaussian(x, y, b)

    explanation = torch._dynamo.explain(f)(x, y, b)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    cnt = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(f, fullgraph=True, backend=cnt)
    for _ in range(2):
        idx, sums = compiled(x, y, b)
        assert idx.dtype == torch.int64 and idx.shape == (N, 3)
        torch.testing.assert_close(idx, dense_sq_dists(x, y).topk(3, dim=1, largest=False).indices)
        torch.testing.assert_close(sums, (-dense_sq_dists(x, y)).exp() @ b)
    assert cnt.frame_count == 1


def test_the_op_eagerly_to_second_order_and_from_its_key_alone():
    """The op's registered backward is the eager rules' (gradgradcheck: the backward is
    differentiable), and a key whose core this process never built is rebuilt from it."""
    from lazykeops.torch import custom_ops, op_keys

    gaussian = Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"], axis=1)
    x, y, b = data("cpu")
    x, y = x[:7].requires_grad_(), y[:5].requires_grad_()
    key = op_keys.core_key(gaussian.core)

    def op(x, y):
        return custom_ops.reduction(key, "auto", [x, y, b[:5]])[0]

    assert torch.autograd.gradgradcheck(op, (x, y))
    op_keys._KEYED.pop(key)
    torch.testing.assert_close(op(x, y), gaussian(x, y, b[:5]), rtol=1e-14, atol=0)
    assert op_keys.core_of(key) is not gaussian.core


def test_keyed_cores_are_held_weakly():
    """torch Genred keys its core when built; a Genred that is gone does not stay alive in
    the registry, and its key still rebuilds an equivalent core."""
    import gc

    from lazykeops.torch import op_keys

    g = Genred("SqDist(X,Y) * B", ["X = Vi(2)", "Y = Vj(2)", "B = Vj(1)"], axis=1)
    key = g.core._op_key
    assert op_keys._KEYED.get(key) is g.core
    del g
    gc.collect()
    assert key not in op_keys._KEYED
    rebuilt = op_keys.core_of(key)
    assert op_keys.core_key(rebuilt) == key and rebuilt.reduction.name == "Sum"
