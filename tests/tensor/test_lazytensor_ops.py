"""Every LazyTensor operator and method, reduced by a sum over j and compared with the same
expression written densely in torch float64, on both front ends (torch and numpy).

Each case is (id, lazy(V), dense(T)): V holds LazyTensors, T the same data as dense torch
tensors laid out to broadcast to (N, M, .): i-variables (N, 1, .), j-variables (1, M, .),
parameters (.,). The inputs are chosen inside each op's domain (x, y in [0.1, 1.1), so that
x * y and x + y are positive and |x - y| < 1).
"""

import math
from types import SimpleNamespace

import pytest
import torch

from lazy_helpers import D, M, N, check, uniform, normal

KNOTS = torch.tensor([0.0, 0.15, 0.3, 0.55, 0.7, 0.95, 1.3], dtype=torch.float64)


def data():
    return dict(
        x=uniform(N, D, seed=1), y=uniform(M, D, seed=2),          # i and j, in [0.1, 1.1)
        p=uniform(D, seed=3, low=0.5, high=1.5),                    # a parameter
        a=normal(N, 6, seed=4),                                     # i: 2 x 3 matrices
        c=normal(M, 12, seed=5),                                    # j: 3 x 4 matrices
        v=normal(M, 2, seed=6),                                     # j: 2-vectors
        s=normal(D * D, seed=7),                                    # parameter: D x D matrix
        k=torch.randint(0, 3, (N, 1), generator=torch.Generator().manual_seed(8)).double(),
        l=torch.randint(0, 3, (M, 1), generator=torch.Generator().manual_seed(9)).double(),
        t=KNOTS,
    )


CATEGORY = dict(x="i", y="j", p="p", a="i", c="j", v="j", s="p", k="i", l="j", t="p")


def lazy_vars(be, d):
    make = {"i": be.Vi, "j": be.Vj, "p": be.Pm}
    return SimpleNamespace(**{name: make[CATEGORY[name]](be.arr(t)) for name, t in d.items()})


def dense_vars(d):
    layout = {"i": lambda t: t[:, None, :], "j": lambda t: t[None, :, :], "p": lambda t: t}
    return SimpleNamespace(**{name: layout[CATEGORY[name]](t) for name, t in d.items()})


def bspline_dense(knots, x, order):
    """Cox-de Boor recursion, one basis function at a time (x: (..., 1))."""
    t = [float(v) for v in knots]
    basis = [((t[j] <= x) & (x < t[j + 1])).double() for j in range(len(t) - 1)]
    for d in range(1, order + 1):
        new = []
        for j in range(len(basis) - 1):
            left = (x - t[j]) / (t[j + d] - t[j]) if t[j + d] > t[j] else 0 * x
            right = (t[j + d + 1] - x) / (t[j + d + 1] - t[j + 1]) \
                if t[j + d + 1] > t[j + 1] else 0 * x
            new.append(left * basis[j] + right * basis[j + 1])
        basis = new
    return torch.cat(basis, dim=-1)


def mod_dense(x, n, d=0.0):
    return x - n * torch.floor((x - d) / n)


CASES = [
    # ------------------------------------------------------------------ arithmetic
    ("arithmetic", "add", lambda V: V.x + V.y, lambda T: T.x + T.y),
    ("arithmetic", "sub", lambda V: V.x - V.y, lambda T: T.x - T.y),
    ("arithmetic", "mul", lambda V: V.x * V.y, lambda T: T.x * T.y),
    ("arithmetic", "div", lambda V: V.x / V.y, lambda T: T.x / T.y),
    ("arithmetic", "radd_float", lambda V: 1.5 + V.x * V.y, lambda T: 1.5 + T.x * T.y),
    ("arithmetic", "rsub_float", lambda V: 2.0 - V.x * V.y, lambda T: 2.0 - T.x * T.y),
    ("arithmetic", "rmul_int", lambda V: 3 * (V.x - V.y), lambda T: 3 * (T.x - T.y)),
    ("arithmetic", "rmul_float", lambda V: 0.25 * (V.x - V.y), lambda T: 0.25 * (T.x - T.y)),
    ("arithmetic", "rdiv_float", lambda V: 2.0 / (V.x + V.y), lambda T: 2.0 / (T.x + T.y)),
    ("arithmetic", "add_int", lambda V: V.x - V.y + 2, lambda T: T.x - T.y + 2),
    ("arithmetic", "add_list", lambda V: (V.x - V.y) + [1.0, -2.0, 0.5],
     lambda T: T.x - T.y + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)),
    ("arithmetic", "mul_param", lambda V: V.x * V.p - V.y, lambda T: T.x * T.p - T.y),
    ("arithmetic", "scalar_times_vector", lambda V: V.k * V.y, lambda T: T.k * T.y),
    ("arithmetic", "neg", lambda V: -(V.x - V.y), lambda T: -(T.x - T.y)),
    ("powers", "pow_int", lambda V: (V.x - V.y) ** 3, lambda T: (T.x - T.y) ** 3),
    ("powers", "power", lambda V: (V.x - V.y).power(3), lambda T: (T.x - T.y) ** 3),
    ("powers", "pow_2", lambda V: (V.x - V.y) ** 2, lambda T: (T.x - T.y) ** 2),
    ("powers", "square", lambda V: (V.x - V.y).square(), lambda T: (T.x - T.y) ** 2),
    ("powers", "pow_negative_int", lambda V: (V.x + V.y) ** -2, lambda T: (T.x + T.y) ** -2),
    ("powers", "pow_0", lambda V: (V.x - V.y) ** 0, lambda T: (T.x - T.y) ** 0),
    ("powers", "pow_half", lambda V: (V.x + V.y) ** 0.5, lambda T: (T.x + T.y) ** 0.5),
    ("powers", "pow_minus_half", lambda V: (V.x + V.y) ** -0.5, lambda T: (T.x + T.y) ** -0.5),
    ("powers", "pow_float", lambda V: (V.x + V.y) ** 1.7, lambda T: (T.x + T.y) ** 1.7),
    ("powers", "pow_lazy", lambda V: V.x ** V.y, lambda T: T.x ** T.y),
    ("powers", "abs_builtin", lambda V: abs(V.x - V.y), lambda T: (T.x - T.y).abs()),
    ("powers", "abs", lambda V: (V.x - V.y).abs(), lambda T: (T.x - T.y).abs()),
    # ------------------------------------------------------------------ comparisons: 0/1
    ("comparisons", "eq", lambda V: V.k == V.l, lambda T: (T.k == T.l).double()),
    ("comparisons", "ne", lambda V: V.k != V.l, lambda T: (T.k != T.l).double()),
    ("comparisons", "lt", lambda V: V.x < V.y, lambda T: (T.x < T.y).double()),
    ("comparisons", "le", lambda V: V.k <= V.l, lambda T: (T.k <= T.l).double()),
    ("comparisons", "gt", lambda V: V.x > V.y, lambda T: (T.x > T.y).double()),
    ("comparisons", "ge", lambda V: V.k >= V.l, lambda T: (T.k >= T.l).double()),
    ("comparisons", "gt_float", lambda V: V.x * V.y > 0.3, lambda T: (T.x * T.y > 0.3).double()),
    # ------------------------------------------------------------------ math
    ("math", "exp", lambda V: (V.x - V.y).exp(), lambda T: torch.exp(T.x - T.y)),
    ("math", "log", lambda V: (V.x * V.y).log(), lambda T: torch.log(T.x * T.y)),
    ("math", "xlogx", lambda V: (V.x * V.y).xlogx(), lambda T: T.x * T.y * torch.log(T.x * T.y)),
    ("math", "sin", lambda V: (V.x - V.y).sin(), lambda T: torch.sin(T.x - T.y)),
    ("math", "cos", lambda V: (V.x - V.y).cos(), lambda T: torch.cos(T.x - T.y)),
    ("math", "sinxdivx", lambda V: (V.x - V.y).sinxdivx(),
     lambda T: torch.sin(T.x - T.y) / (T.x - T.y)),
    ("math", "sinc", lambda V: (V.x - V.y).sinc(),
     lambda T: torch.sin(math.pi * (T.x - T.y)) / (math.pi * (T.x - T.y))),
    ("math", "asin", lambda V: (V.x - V.y).asin(), lambda T: torch.asin(T.x - T.y)),
    ("math", "acos", lambda V: (V.x - V.y).acos(), lambda T: torch.acos(T.x - T.y)),
    ("math", "atan", lambda V: (V.x - V.y).atan(), lambda T: torch.atan(T.x - T.y)),
    ("math", "atan2", lambda V: (V.x - V.y).atan2(V.y), lambda T: torch.atan2(T.x - T.y, T.y)),
    ("math2", "sqrt", lambda V: (V.x + V.y).sqrt(), lambda T: torch.sqrt(T.x + T.y)),
    ("math2", "rsqrt", lambda V: (V.x + V.y).rsqrt(), lambda T: 1 / torch.sqrt(T.x + T.y)),
    ("math2", "sign", lambda V: (V.x - V.y).sign(), lambda T: torch.sign(T.x - T.y)),
    ("math2", "step", lambda V: (V.x - V.y).step(), lambda T: (T.x - T.y >= 0).double()),
    ("math2", "relu", lambda V: (V.x - V.y).relu(), lambda T: torch.clamp(T.x - T.y, min=0)),
    ("math2", "round", lambda V: (10 * (V.x - V.y)).round(),
     lambda T: torch.round(10 * (T.x - T.y))),
    ("math2", "round_decimals", lambda V: (10 * (V.x - V.y)).round(1),
     lambda T: torch.round(100 * (T.x - T.y)) / 10),
    ("math2", "clamp_float", lambda V: (V.x - V.y).clamp(-0.2, 0.3),
     lambda T: torch.clamp(T.x - T.y, -0.2, 0.3)),
    ("math2", "clamp_int", lambda V: (10 * (V.x - V.y)).clamp(-2, 3),
     lambda T: torch.clamp(10 * (T.x - T.y), -2, 3)),
    ("math2", "clamp_lazy", lambda V: V.x.clamp(V.y - 0.5, V.y),
     lambda T: torch.minimum(torch.maximum(T.x, T.y - 0.5), T.y)),
    ("math2", "ifelse", lambda V: (V.x - V.y).ifelse(V.x, -V.y),
     lambda T: torch.where(T.x - T.y >= 0, T.x, -T.y)),
    ("math2", "mod_offset", lambda V: (7 * (V.x - V.y)).mod(0.3, 0.1),
     lambda T: mod_dense(7 * (T.x - T.y), 0.3, 0.1)),
    ("math2", "mod", lambda V: (7 * (V.x - V.y)).mod(2), lambda T: mod_dense(7 * (T.x - T.y), 2.0)),
    # ------------------------------------------------------------------ vectors
    ("vectors", "scalprod", lambda V: V.x | V.y, lambda T: (T.x * T.y).sum(-1, keepdim=True)),
    ("vectors", "sum_inner", lambda V: (V.x * V.y).sum(-1),
     lambda T: (T.x * T.y).sum(-1, keepdim=True)),
    ("vectors", "sum_inner_dim2", lambda V: (V.x * V.y).sum(dim=2),
     lambda T: (T.x * T.y).sum(-1, keepdim=True)),
    ("vectors", "min_inner", lambda V: (V.x - V.y).min(-1),
     lambda T: (T.x - T.y).amin(-1, keepdim=True)),
    ("vectors", "max_inner", lambda V: (V.x - V.y).max(dim=-1),
     lambda T: (T.x - T.y).amax(-1, keepdim=True)),
    ("vectors", "argmin_inner", lambda V: (V.x - V.y).argmin(-1),
     lambda T: (T.x - T.y).argmin(-1, keepdim=True).double()),
    ("vectors", "argmax_inner", lambda V: (V.x - V.y).argmax(axis=-1),
     lambda T: (T.x - T.y).argmax(-1, keepdim=True).double()),
    ("vectors", "sqnorm2", lambda V: (V.x - V.y).sqnorm2(),
     lambda T: ((T.x - T.y) ** 2).sum(-1, True)),
    ("vectors", "norm2", lambda V: (V.x - V.y).norm2(),
     lambda T: (T.x - T.y).norm(dim=-1, keepdim=True)),
    ("vectors", "norm", lambda V: (V.x - V.y).norm(-1),
     lambda T: (T.x - T.y).norm(dim=-1, keepdim=True)),
    ("vectors", "normalize", lambda V: (V.x - V.y).normalize(),
     lambda T: (T.x - T.y) / (T.x - T.y).norm(dim=-1, keepdim=True)),
    ("vectors", "sqdist", lambda V: V.x.sqdist(V.y), lambda T: ((T.x - T.y) ** 2).sum(-1, True)),
    ("vectors", "weightedsqnorm_iso", lambda V: (V.x - V.y).weightedsqnorm(0.7),
     lambda T: 0.7 * ((T.x - T.y) ** 2).sum(-1, True)),
    ("vectors", "weightedsqnorm_diag", lambda V: (V.x - V.y).weightedsqnorm(V.p),
     lambda T: (T.p * (T.x - T.y) ** 2).sum(-1, True)),
    ("vectors", "weightedsqnorm_full", lambda V: (V.x - V.y).weightedsqnorm(V.s),
     lambda T: torch.einsum("...k,kl,...l->...", T.x - T.y, T.s.reshape(D, D),
                            T.x - T.y)[..., None]),
    ("vectors", "weightedsqdist", lambda V: V.x.weightedsqdist(V.y, V.p),
     lambda T: (T.p * (T.x - T.y) ** 2).sum(-1, True)),
    # ------------------------------------------------------------------ indexing
    ("indexing", "elem", lambda V: (V.x * V.y).elem(1), lambda T: (T.x * T.y)[..., 1:2]),
    ("indexing", "getitem_int", lambda V: (V.x * V.y)[1], lambda T: (T.x * T.y)[..., 1:2]),
    ("indexing", "getitem_negative", lambda V: (V.x * V.y)[-1], lambda T: (T.x * T.y)[..., 2:3]),
    ("indexing", "getitem_tuple", lambda V: (V.x * V.y)[:, :, 1], lambda T: (T.x * T.y)[..., 1:2]),
    ("indexing", "extract", lambda V: (V.x * V.y).extract(1, 2), lambda T: (T.x * T.y)[..., 1:3]),
    ("indexing", "getitem_slice", lambda V: (V.x * V.y)[1:3], lambda T: (T.x * T.y)[..., 1:3]),
    ("indexing", "getitem_open_slice", lambda V: (V.x * V.y)[:2], lambda T: (T.x * T.y)[..., 0:2]),
    ("indexing", "one_hot", lambda V: (3.6 * (V.x * V.y)[0]).one_hot(5),
     lambda T: torch.nn.functional.one_hot(
         torch.floor(3.6 * T.x[..., :1] * T.y[..., :1] + 0.5).long()[..., 0], 5).double()),
    ("indexing", "concat", lambda V: V.x.concat(V.y),
     lambda T: torch.cat(torch.broadcast_tensors(T.x, T.y), -1)),
    ("indexing", "cat", lambda V: type(V.x).cat([V.x, V.v, V.p], dim=-1),
     lambda T: torch.cat([T.x.expand(N, M, D), T.v.expand(N, M, 2), T.p.expand(N, M, D)], -1)),
    ("indexing", "concatenate", lambda V: type(V.x).concatenate((V.y, V.x)),
     lambda T: torch.cat(torch.broadcast_tensors(T.y, T.x), -1)),
    # ------------------------------------------------------------------ linear algebra
    ("linalg", "matvecmult", lambda V: V.a.matvecmult(V.y),
     lambda T: torch.einsum("...ik,...k->...i", T.a.reshape(N, 1, 2, 3), T.y)),
    ("linalg", "vecmatmult", lambda V: V.v.vecmatmult(V.a),
     lambda T: torch.einsum("...k,...kl->...l", T.v, T.a.reshape(N, 1, 2, 3))),
    ("linalg", "tensorprod", lambda V: V.x.tensorprod(V.y),
     lambda T: (T.x[..., :, None] * T.y[..., None, :]).reshape(N, M, 9)),
    ("linalg", "keops_tensordot", lambda V: V.a.keops_tensordot(V.c, (2, 3), (3, 4), (1,), (0,)),
     lambda T: torch.einsum("...ik,...kl->...il", T.a.reshape(N, 1, 2, 3),
                            T.c.reshape(1, M, 3, 4)).reshape(N, M, 8)),
    ("linalg", "keops_tensordot_2axes", lambda V: V.a.keops_tensordot(V.a * V.v[0], (2, 3), (2, 3),
                                                            (0, 1), (0, 1)),
     lambda T: (T.a * T.a * T.v[..., :1]).sum(-1, keepdim=True)),
    ("linalg", "keops_kron", lambda V: V.x.keops_kron(V.y, [3], [3]),
     lambda T: (T.x[..., :, None] * T.y[..., None, :]).reshape(N, M, 9)),
    ("linalg", "keops_kron_2d", lambda V: V.a.keops_kron(V.c, (2, 3), (3, 4)),
     lambda T: torch.einsum("...ab,...cd->...acbd", T.a.reshape(N, 1, 2, 3),
                            T.c.reshape(1, M, 3, 4)).reshape(N, M, 72)),
    ("bspline", "bspline_order0", lambda V: V.t.bspline((V.x * V.y)[0], 0),
     lambda T: bspline_dense(T.t, T.x[..., :1] * T.y[..., :1], 0)),
    ("bspline", "bspline_order1", lambda V: V.t.bspline((V.x * V.y)[0], 1),
     lambda T: bspline_dense(T.t, T.x[..., :1] * T.y[..., :1], 1)),
    ("bspline", "bspline_order2", lambda V: V.t.bspline((V.x * V.y)[0], k=2),
     lambda T: bspline_dense(T.t, T.x[..., :1] * T.y[..., :1], 2)),
]


GROUPS = sorted({c[0] for c in CASES}, key=[c[0] for c in CASES].index)


@pytest.mark.parametrize("build_lazy, build_dense", [c[2:] for c in CASES],
                         ids=[c[1] for c in CASES])
def test_op_result_is_a_lazytensor_of_the_right_shape(be, build_lazy, build_dense):
    d = data()
    lazy = build_lazy(lazy_vars(be, d))
    e = build_dense(dense_vars(d)).shape[-1]
    assert isinstance(lazy, be.LazyTensor)
    assert lazy.shape == ((N, M, e) if e > 1 else (N, M))
    assert lazy.ndim == e and lazy.nbatchdims == 0 and lazy.dtype == "float64"


@pytest.mark.parametrize("group", GROUPS)
def test_op_values_summed_over_j(be, group):
    """The ops of one family, concatenated into one formula (one compile), summed over j;
    each op's block of columns is compared with its dense reference on its own."""
    d = data()
    V, T = lazy_vars(be, d), dense_vars(d)
    cases = [c for c in CASES if c[0] == group]
    lazies = [c[2](V) for c in cases]
    denses = [c[3](T) for c in cases]
    denses = [t.expand(N, M, t.shape[-1]).sum(1) for t in denses]
    result = be.tt(be.LazyTensor.cat(lazies, dim=-1).sum(dim=1))
    assert result.dtype == torch.float64
    assert tuple(result.shape) == (N, sum(t.shape[-1] for t in denses))
    failures, start = [], 0
    for case, want in zip(cases, denses):
        got = result[:, start:start + want.shape[-1]]
        start += want.shape[-1]
        if not torch.allclose(got, want, rtol=1e-10, atol=1e-10, equal_nan=False):
            failures.append(f"{case[1]}: max error {(got - want).abs().max().item():.3e}")
    assert not failures, failures


def test_reflected_ops_with_arrays_on_the_left(be):
    """`array op LazyTensor` defers to the LazyTensor (numpy through __array_priority__)."""
    d = data()
    x, y = be.arr(d["x"]), be.arr(d["y"])
    X = x[:, None, :]
    Y = be.Vj(y)
    lazy = X * Y + X
    assert isinstance(lazy, be.LazyTensor) and lazy.shape == (N, M, D)
    T = dense_vars(d)
    check(be, lazy.sum(dim=1), (T.x * T.y + T.x).sum(1))
    cmp = X < Y
    assert isinstance(cmp, be.LazyTensor)
    check(be, cmp.sum(dim=1), (T.x < T.y).double().sum(1))


def test_inner_reductions_return_lazytensors(be):
    d = data()
    V = lazy_vars(be, d)
    for method in ("sum", "min", "max", "argmin", "argmax"):
        r = getattr(V.x - V.y, method)(-1)
        assert isinstance(r, be.LazyTensor) and r.shape == (N, M) and r.ndim == 1
        r = getattr(V.x - V.y, method)(dim=2)
        assert isinstance(r, be.LazyTensor) and r.shape == (N, M)


def test_ops_with_batch_dims(be):
    """Ops on batched LazyTensors: x (2, 1, N, 1, D), y (1, 3, 1, M, D), p (2, 3, 1, 1, D)."""
    x = uniform(2, 1, N, 1, D, seed=11)
    y = uniform(1, 3, 1, M, D, seed=12)
    p = uniform(2, 3, 1, 1, D, seed=13)
    X, Y, P = (be.LazyTensor(be.arr(t)) for t in (x, y, p))
    lazy = (X * P - Y).sqnorm2().sqrt().concat(X.atan2(Y))
    assert lazy.shape == (2, 3, N, M, 1 + D) and lazy.nbatchdims == 2
    shape = (2, 3, N, M)
    dense = torch.cat([((x * p - y) ** 2).sum(-1, True).sqrt().expand(*shape, 1),
                       torch.atan2(x, y).expand(*shape, D)], -1)
    check(be, lazy.sum(dim=3), dense.sum(3))


def test_bspline_has_pykeops_signature(be):
    V = lazy_vars(be, data())
    w = (V.x * V.y)[0]
    assert V.t.bspline(w).ndim == len(KNOTS) - 1          # order 0 by default
    assert V.t.bspline(w, k=2).ndim == len(KNOTS) - 3
