"""kernel_product and Kernel: every named kernel, every mode, anisotropic and per-point
gammas, several feature spaces, the numpy front end and the errors, against dense torch
written out here in float64 (values and gradients w.r.t. x, y, b and gamma)."""

import math

import numpy as np
import pytest
import torch

import lazykeops.numpy as lknp
import lazykeops.torch as lkt
from lazykeops import LazyKeOpsError
from lazykeops.compile import build
from lazykeops.kernels import modes as kernel_modes
from lazykeops.torch.kernels import Kernel, kernel_product

F64 = torch.float64
N, M, D = 7, 5, 3


def sqdist(g, x, y):
    """gamma-weighted |x_i - y_j|^2, g isotropic (1,), diagonal (D,), full (D*D,) or
    one gamma per y_j (M, 1)."""
    z = x[:, None, :] - y[None, :, :]
    d = x.shape[1]
    if g.dim() == 2:
        return g[None, :, 0] * (z ** 2).sum(-1)
    if g.numel() == 1:
        return g * (z ** 2).sum(-1)
    if g.numel() == d:
        return (g * z ** 2).sum(-1)
    return torch.einsum("nmd,de,nme->nm", z, g.view(d, d), z)


def dense_kernel(name, g, x, y, degree=3):
    if name == "linear":
        return x @ y.T
    if name == "polynomial":
        return (1 + g * (x @ y.T)) ** degree
    d2 = sqdist(g, x, y)
    r = torch.sqrt(d2)
    return {
        "gaussian": lambda: torch.exp(-d2),
        "laplacian": lambda: torch.exp(-r),
        "exponential": lambda: torch.exp(-r),
        "matern32": lambda: (1 + math.sqrt(3) * r) * torch.exp(-math.sqrt(3) * r),
        "matern52": lambda: (1 + math.sqrt(5) * r + 5 * d2 / 3) * torch.exp(-math.sqrt(5) * r),
        "cauchy": lambda: 1 / (1 + d2),
        "inverse_multiquadric": lambda: 1 / torch.sqrt(1 + d2),
        "distance": lambda: r,
        "energy": lambda: -r,
    }[name]()


def data(*shapes, seed=0, positive=()):
    torch.manual_seed(seed)
    out = []
    for k, shape in enumerate(shapes):
        t = torch.randn(*shape, dtype=F64)
        out.append((t.abs() + 0.5 if k in positive else t).requires_grad_())
    return out


def assert_same(ours, dense, inputs):
    """Values and first derivatives (for a random cotangent) agree."""
    torch.testing.assert_close(ours, dense, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(dense)
    used = [t for t in inputs if t is not None]
    g1 = torch.autograd.grad((ours * w).sum(), used)
    g2 = torch.autograd.grad((dense * w).sum(), used, retain_graph=True)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


NAMES = ["gaussian", "laplacian", "exponential", "matern32", "matern52", "cauchy",
         "inverse_multiquadric", "linear", "distance", "energy"]


@pytest.mark.parametrize("name", NAMES + ["polynomial"])
def test_named_kernels_sum_mode(name):
    x, y, b = data((N, D), (M, D), (M, 2))
    g = torch.tensor([0.4], dtype=F64, requires_grad=True)
    text = f"{name}(x,y,3)" if name == "polynomial" else f"{name}(x,y)"
    gamma = None if name == "linear" else g
    a = kernel_product({"id": Kernel(text), "gamma": gamma}, x, y, b)
    assert a.shape == (N, 2) and a.dtype == F64
    assert_same(a, dense_kernel(name, g, x, y) @ b, [x, y, b, gamma])


def log_modes_dense(mode, c, bs):
    lse = lambda t: torch.logsumexp(t, dim=1)  # noqa: E731
    if mode == "lse":
        (b,) = bs
        return lse(c[:, :, None] + b[None])
    if mode == "lse_mult_i":
        b, a = bs
        return lse(a[:, :, None] * c[:, :, None] + b[None])
    a_log, b_log = (bs[0], bs[1]) if mode.startswith("sinkhorn") else (bs[1], bs[2])
    plan = torch.exp(c + a_log + b_log.T)
    if mode == "log_scaled":
        return plan @ bs[0]
    if mode == "log_scaled_lse":
        return lse(c[:, :, None] + a_log[:, :, None] + b_log[None] + bs[0][None])
    if mode == "log_scaled_barycenter":
        return plan @ bs[0] - plan.sum(1, keepdim=True) * bs[3]
    if mode == "sinkhorn_primal":
        u, v = bs[2], bs[3]
        return ((u + v.T - 1) * plan).sum(1, keepdim=True)
    assert mode == "sinkhorn_cost"
    return (-c * plan).sum(1, keepdim=True)


MODE_SHAPES = {  # the mode's extra arrays, after x and y
    "lse": [(M, 2)],
    "log_scaled": [(M, 2), (N, 1), (M, 1)],
    "log_scaled_lse": [(M, 2), (N, 1), (M, 1)],
    "log_scaled_barycenter": [(M, 2), (N, 1), (M, 1), (N, 2)],
    "lse_mult_i": [(M, 1), (N, 1)],
    "sinkhorn_primal": [(N, 1), (M, 1), (N, 1), (M, 1)],
    "sinkhorn_cost": [(N, 1), (M, 1)],
}


@pytest.mark.parametrize("mode", list(MODE_SHAPES))
def test_modes_match_their_definitions(mode):
    x, y, *bs = data((N, D), (M, D), *MODE_SHAPES[mode], seed=1)
    g = torch.tensor([0.3], dtype=F64, requires_grad=True)
    a = kernel_product({"id": Kernel("gaussian(x,y)"), "gamma": g}, x, y, *bs, mode=mode)
    dense = log_modes_dense(mode, -sqdist(g, x, y), bs)
    assert_same(a, dense, [x, y, g, *bs])


@pytest.mark.parametrize("text, mode", [("cauchy(x,y) + 2*gaussian(x,y)", "lse"),
                                        ("matern32(x,y)", "sinkhorn_cost"),
                                        ("inverse_multiquadric(x,y)**3", "log_scaled")])
def test_log_of_other_kernels(text, mode):
    x, y, *bs = data((N, D), (M, D), *MODE_SHAPES[mode], seed=2)
    g = torch.tensor([0.5], dtype=F64, requires_grad=True)
    params = {"id": Kernel(text), "gamma": g, "mode": mode}   # mode from params, as 1.x
    a = kernel_product(params, x, y, *bs)
    k = {"lse": lambda: dense_kernel("cauchy", g, x, y) + 2 * dense_kernel("gaussian", g, x, y),
         "sinkhorn_cost": lambda: dense_kernel("matern32", g, x, y),
         "log_scaled": lambda: dense_kernel("inverse_multiquadric", g, x, y) ** 3}[mode]()
    assert_same(a, log_modes_dense(mode, torch.log(k), bs), [x, y, g, *bs])


@pytest.mark.parametrize("gshape", [(D,), (D * D,), (M, 1)])
def test_anisotropic_and_per_point_gammas(gshape):
    x, y, b, g = data((N, D), (M, D), (M, 2), gshape, seed=3)
    if gshape == (D * D,):   # a symmetric positive definite metric
        with torch.no_grad():
            A = torch.randn(D, D, dtype=F64)
            g.copy_((A @ A.T / D + 0.1 * torch.eye(D, dtype=F64)).reshape(-1))
    else:
        with torch.no_grad():
            g.abs_()
    a = kernel_product({"id": Kernel("gaussian(x,y)"), "gamma": g}, x, y, b)
    assert_same(a, dense_kernel("gaussian", g, x, y) @ b, [x, y, b, g])


@pytest.mark.parametrize("gshape", [(D,), (D * D,)])
def test_polynomial_with_diagonal_and_full_gammas(gshape):
    x, y, b, g = data((N, D), (M, D), (M, 2), gshape, seed=6)
    a = kernel_product({"id": Kernel("polynomial(x,y,2)"), "gamma": g}, x, y, b)
    G = torch.diag(g) if g.numel() == D else g.view(D, D)
    assert_same(a, ((1 + x @ G @ y.T) ** 2) @ b, [x, y, b, g])


def test_energy_kernel_gives_the_energy_distance():
    torch.manual_seed(7)
    x, y = torch.randn(N, D, dtype=F64), torch.randn(M, D, dtype=F64) + 1
    params = {"id": Kernel("energy_distance(x,y)"), "gamma": 1.0}
    def mean(p, q):   # mean_ij k(p_i, q_j)
        return kernel_product(params, p, q, torch.ones(len(q), 1, dtype=F64) / len(q)).mean()

    ours = mean(x, x) + mean(y, y) - 2 * mean(x, y)
    dense = 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()
    torch.testing.assert_close(ours, dense)


def test_varifold_kernel_on_points_and_normals():
    x, u, y, v, b = data((N, 3), (N, 3), (M, 3), (M, 3), (M, 1), seed=4)
    g = torch.tensor([0.5], dtype=F64, requires_grad=True)
    kernel = Kernel("gaussian(x,y) * (1+linear(u,v)**2)")
    assert kernel.spaces == (("x", "y"), ("u", "v")) and kernel.n_gammas == 1
    dense = (dense_kernel("gaussian", g, x, y) * (1 + (u @ v.T) ** 2)) @ b
    for gamma in [g, (g, None), (g,)]:   # shared, one per kernel (KeOps 1.x), one per slot
        a = kernel_product({"id": kernel, "gamma": gamma}, (x, u), (y, v), b)
        assert_same(a, dense, [x, u, y, v, b, g])


def test_one_gamma_per_kernel_and_integer_constants():
    x, u, y, v, b = data((N, 2), (N, 3), (M, 2), (M, 3), (M, 2), seed=5)
    g1 = torch.tensor([0.5, 2.0], dtype=F64, requires_grad=True)   # diagonal on x
    g2 = torch.tensor([0.2], dtype=F64, requires_grad=True)
    kernel = Kernel("3 * laplacian(x,y) + cauchy(u,v) ** 2 * 2")
    a = kernel_product({"id": kernel, "gamma": (g1, g2)}, (x, u), (y, v), b)
    dense = (3 * dense_kernel("laplacian", g1, x, y)
             + dense_kernel("cauchy", g2, u, v) ** 2 * 2) @ b
    assert_same(a, dense, [x, u, y, v, b, g1, g2])


def test_repeated_calls_reuse_the_genred():
    x, y, b = data((N, D), (M, D), (M, 2))
    params = {"id": Kernel("gaussian(x,y)"), "gamma": torch.tensor([1.0], dtype=F64)}
    kernel_product(params, x, y, b)
    cached = dict(kernel_modes._CACHE)
    kernel_product(params, x * 2, y, b)
    kernel_product({"id": "gaussian(x,y)", "gamma": torch.tensor([2.0], dtype=F64)}, x, y, b)
    assert kernel_modes._CACHE == cached


def test_numpy_front_end():
    x, y, b = (t.detach().numpy() for t in data((N, D), (M, D), (M, 2)))
    a = lknp.kernel_product({"id": lknp.Kernel("gaussian(x,y)"), "gamma": 0.5}, x, y, b)
    assert isinstance(a, np.ndarray) and a.shape == (N, 2)
    ref = dense_kernel("gaussian", torch.tensor([0.5], dtype=F64), torch.from_numpy(x),
                       torch.from_numpy(y)) @ torch.from_numpy(b)
    np.testing.assert_allclose(a, ref.numpy(), rtol=1e-12)
    assert lkt.kernel_product is kernel_product and lkt.Kernel is Kernel


# ------------------------------------------------------------------ errors, before any build
@pytest.mark.parametrize("text, expected", [
    ("gausian(x,y)", "did you mean gaussian"),
    ("Gaussian(x,y) + laplacan(x,y)", "did you mean gaussian"),
    ("gaussian(x,y) - linear(u,v)", "unexpected '-'"),
    ("gaussian(x,y) + linear(x,v)", "variable 'x' appears in the pairs"),
    ("gaussian(x,x)", "uses one variable twice"),
    ("polynomial(x,y)", "then the degree"),
    ("gaussian(x,y)**0", "positive integer"),
    ("gaussian(X,y)", "expected a variable name"),
    ("(gaussian(x,y)", "to close the '('"),
    ("3 + 1", "names no kernel"),
    ("gaussian(x;y)", "unexpected character ';'"),
])
def test_kernel_string_errors(text, expected):
    with pytest.raises(LazyKeOpsError, match="kernel '") as err:
        Kernel(text)
    assert expected in str(err.value)


def _call_errors():
    x, y, b = torch.randn(N, 3), torch.randn(M, 3), torch.randn(M, 2)
    g = torch.tensor([0.5])
    gauss, vari = Kernel("gaussian(x,y)"), Kernel("gaussian(x,y) * linear(u,v)")
    return [
        (lambda: kernel_product({"id": gauss, "gamma": g}, x, torch.randn(M, 2), b),
         "'x' and 'y' have dims 3 and 2"),
        (lambda: kernel_product({"id": gauss, "gamma": torch.ones(2)}, x, y, b),
         "gamma of 'gaussian' has dim 2"),
        (lambda: kernel_product({"id": gauss}, x, y, b), "needs a gamma"),
        (lambda: kernel_product({"id": gauss, "gamma": g}, x, y, b, mode="lse_mul_i"),
         "did you mean lse_mult_i"),
        (lambda: kernel_product({"id": gauss, "gamma": g}, x, y, b, b), "takes 1 array"),
        (lambda: kernel_product({"id": gauss, "gamma": g}, x, y, torch.randn(M + 1, 2)),
         "M = 6 rows"),
        (lambda: kernel_product({"id": gauss, "gamma": g}, x, y, b, torch.randn(N, 2), b[:, :1],
                                mode="log_scaled"), "a_log must have dim 1"),
        (lambda: kernel_product({"id": vari, "gamma": g}, x, y, b), "2 feature space(s)"),
        (lambda: kernel_product({"id": vari, "gamma": g}, (x, x), (y,), b), "got 1"),
        (lambda: kernel_product({"id": vari, "gamma": g}, (x, x[:2]), (y, y), b),
         "'u' has N = 2 rows"),
        (lambda: kernel_product({"id": vari, "gamma": (g, g)}, (x, x), (y, y), b),
         "'linear' takes no gamma"),
        (lambda: kernel_product({"id": vari, "gamma": (g, g, g)}, (x, x), (y, y), b),
         "gamma is a tuple of 3"),
        (lambda: kernel_product({"id": Kernel("linear(x,y)"), "gamma": g}, x, y, b),
         "takes no gamma"),
        (lambda: kernel_product({"id": gauss, "gamma": "wide"}, x, y, b), "got str"),
        (lambda: kernel_product({"id": gauss, "gamma": g}, x[0], y, b), "must be an array"),
        (lambda: kernel_product({"id": gauss, "gamma": g}, x, y, b, backend="pytorch"),
         "backend must be one of"),
    ]


@pytest.mark.parametrize("case", range(len(_call_errors())))
def test_call_errors_name_the_kernel_and_compile_nothing(case):
    fn, expected = _call_errors()[case]
    builds = build.stats["builds"]
    with pytest.raises(LazyKeOpsError, match="kernel '") as err:
        fn()
    assert expected in str(err.value)
    assert build.stats["builds"] == builds


def test_params_must_be_a_dict_with_an_id():
    with pytest.raises(LazyKeOpsError, match="'id'"):
        kernel_product({"gamma": 1.0}, torch.randn(3, 1), torch.randn(2, 1), torch.randn(2, 1))
