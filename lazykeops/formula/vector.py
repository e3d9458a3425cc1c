"""Vector operations: scalar products, norms, distances and reductions over a vector's
components. Fused emission: SqDist(x, y) is one loop accumulating (x_k - y_k)^2, with no
temporary array for x - y.

Derivatives at kinks follow torch and stay finite: |x|' and Normalize' are 0 at x = 0
(through lk::rsqrt(0) = 0), and Max/Min send the whole gradient to the first extremal
component, the one the forward pass picks.
"""

from .algebra import add, cst, mul, neg, op, sub
from .emit import block
from .lazy_torch import torch
from .node import OpSpec, dim_error, register


def _same_dims(op):
    def rule(dims, params):
        if len(set(dims)) != 1:
            raise dim_error(op, f"arguments have dimensions {', '.join(map(str, dims))}; "
                                "they must be equal")
        return 1

    return rule


def _accumulate(out, n, term):
    """out(0) = sum over k < n of term(k), as one fused loop."""
    return block("T s = T(0);",
                 f"for (int k = 0; k < {n}; ++k) {{ s += {term('k')}; }}",
                 f"{out(0)} = s;")


def _emit_scalprod(out, args, params):
    a, b = args
    return _accumulate(out, a.dim, lambda k: f"{a(k)} * {b(k)}")


def _emit_sqnorm2(out, args, params):
    (a,) = args
    return _accumulate(out, a.dim, lambda k: f"{a(k)} * {a(k)}")


def _emit_sqdist(out, args, params):
    a, b = args
    return _accumulate(out, a.dim, lambda k: f"({a(k)} - {b(k)}) * ({a(k)} - {b(k)})")


def _emit_sum(out, args, params):
    (a,) = args
    return _accumulate(out, a.dim, lambda k: a(k))


def _sqdist_vjp(node, g):
    a, b = node.args
    twice = mul(cst(2), mul(g, sub(a, b)))
    return twice, neg(twice)


def _sum_vjp(node, g):
    (a,) = node.args
    return (g if a.dim == 1 else op("SumT", g, params=(a.dim,)),)


register(OpSpec("Scalprod", 2, (), _same_dims("Scalprod"), _emit_scalprod,
                lambda args, p: (args[0] * args[1]).sum(-1, keepdim=True),
                domain=("any", "any"), example_dims=(3, 3), additive=True,
                vjp=lambda n, g: (mul(g, n.args[1]), mul(g, n.args[0]))))
register(OpSpec("SqNorm2", 1, (), lambda dims, p: 1, _emit_sqnorm2,
                lambda args, p: (args[0] ** 2).sum(-1, keepdim=True),
                domain=("any",), example_dims=(3,), additive=True,
                vjp=lambda n, g: (mul(cst(2), mul(g, n.args[0])),)))
register(OpSpec("SqDist", 2, (), _same_dims("SqDist"), _emit_sqdist,
                lambda args, p: ((args[0] - args[1]) ** 2).sum(-1, keepdim=True),
                domain=("any", "any"), example_dims=(3, 3), additive=True, vjp=_sqdist_vjp))
register(OpSpec("Sum", 1, (), lambda dims, p: 1, _emit_sum,
                lambda args, p: args[0].sum(-1, keepdim=True),
                domain=("any",), example_dims=(3,), additive=True, vjp=_sum_vjp))


# --------------------------------------------------------------------- norms and weights
def _sum_then(out, n, term, finish):
    """out(0) = finish(s) where s is the sum over k < n of term(k), one fused loop."""
    return block("T s = T(0);",
                 f"for (int k = 0; k < {n}; ++k) {{ s += {term('k')}; }}",
                 f"{out(0)} = {finish('s')};")


def _sqnorm_ref(x):
    return (x ** 2).sum(-1, keepdim=True)


def _emit_norm2(out, args, params):
    (a,) = args
    return _sum_then(out, a.dim, lambda k: f"{a(k)} * {a(k)}", lambda s: f"lk::sqrt({s})")


def _emit_normalize(out, args, params):
    (a,) = args
    return block("T s = T(0);",
                 f"for (int k = 0; k < {a.dim}; ++k) {{ s += {a('k')} * {a('k')}; }}",
                 "const T r = lk::rsqrt(s);",
                 f"for (int k = 0; k < {a.dim}; ++k) {{ {out('k')} = {a('k')} * r; }}")


def _normalize_ref(args, p):
    s = _sqnorm_ref(args[0])
    return args[0] * torch.where(s == 0, 0 * s, torch.rsqrt(s))


def _normalize_vjp(node, g):
    """d(x / |x|) = (g - u <g, u>) / |x| with u = x / |x|; 0 at x = 0 (rsqrt(0) = 0)."""
    (x,) = node.args
    tangential = sub(g, mul(node, op("Scalprod", g, node)))
    return (mul(tangential, op("Rsqrt", op("SqNorm2", x))),)


register(OpSpec("Norm2", 1, (), lambda dims, p: 1, _emit_norm2,
                lambda args, p: torch.sqrt(_sqnorm_ref(args[0])),
                domain=("any",), example_dims=(3,),
                vjp=lambda n, g: (mul(g, op("Normalize", n.args[0])),)))
register(OpSpec("Normalize", 1, (), lambda dims, p: dims[0], _emit_normalize,
                _normalize_ref, domain=("any",), example_dims=(3,), vjp=_normalize_vjp))


# The weighted norms, pykeops's SqNormIso / SqNormDiag / SymSqNorm, dispatched on dim(s) by
# WeightedSqNorm. `comp(k)` is the C++ expression of component k of the vector, x(k) or,
# for WeightedSqDist, (x(k) - y(k)): the difference is never stored.
def _weighted_kind(op, sdim, d):
    if sdim == 1:
        return "iso"
    if sdim == d:
        return "diag"
    if sdim == d * d:
        return "sym"
    raise dim_error(op, f"the weight has dimension {sdim}; for a vector of dimension {d} "
                        f"it must be 1 (isotropic), {d} (diagonal) or {d * d} (full matrix)")


def _emit_weighted(out, s, comp, d, kind):
    if kind == "iso":
        return _sum_then(out, d, lambda k: f"{comp(k)} * {comp(k)}", lambda t: f"{s(0)} * {t}")
    if kind == "diag":
        return _sum_then(out, d, lambda k: f"{s(k)} * {comp(k)} * {comp(k)}", lambda t: t)
    # x^T S x with S row-major: the inner sum over l is (S x)_k.
    return block("T s = T(0);",
                 f"for (int k = 0; k < {d}; ++k) {{",
                 f"  const T xk = {comp('k')};",
                 "  T t = T(0);",
                 f"  for (int l = 0; l < {d}; ++l) {{ t += {s(f'k * {d} + l')} * {comp('l')}; }}",
                 "  s += xk * t;",
                 "}",
                 f"{out(0)} = s;")


def _weighted_ref(s, x, kind):
    if kind == "iso":
        return s * _sqnorm_ref(x)
    if kind == "diag":
        return (s * x ** 2).sum(-1, keepdim=True)
    d = x.shape[-1]
    S = s.reshape(*s.shape[:-1], d, d)
    return (x[..., :, None] * S * x[..., None, :]).sum((-2, -1))[..., None]


def _weighted_vjp(kind, s, z, g):
    """Cotangents (of s, of z) of the weighted square norm g * |z|_s^2 of the given kind."""
    if kind == "iso":
        return mul(g, op("SqNorm2", z)), mul(cst(2), mul(mul(g, s), z))
    if kind == "diag":
        return mul(g, op("Square", z)), mul(cst(2), mul(mul(g, s), z))
    # z^T S z: dS = z z^T, dz = (S + S^T) z.
    sz = add(op("MatVecMult", s, z), op("VecMatMult", z, s))
    return mul(g, op("TensorProd", z, z)), mul(g, sz)


def _weighted_norm_op(name, only=None):
    """WeightedSqNorm (any kind) or one of its fixed-kind spellings."""

    def kind_of(sdim, d):
        kind = _weighted_kind(name, sdim, d)
        if only is not None and kind != only and not (d == 1 and sdim == 1):
            wanted = {"iso": "1", "diag": f"{d}", "sym": f"{d * d}"}[only]
            raise dim_error(name, f"the weight has dimension {sdim}, expected {wanted} "
                                  f"for a vector of dimension {d}")
        return kind

    def dim(dims, p):
        kind_of(dims[0], dims[1])
        return 1

    def emit(out, args, p):
        s, x = args
        return _emit_weighted(out, s, x, x.dim, kind_of(s.dim, x.dim))

    def reference(args, p):
        s, x = args
        return _weighted_ref(s, x, kind_of(s.shape[-1], x.shape[-1]))

    def vjp(node, g):
        s, x = node.args
        return _weighted_vjp(kind_of(s.dim, x.dim), s, x, g)

    sdim = {None: 9, "iso": 1, "diag": 3, "sym": 9}[only]
    return OpSpec(name, 2, (), dim, emit, reference, domain=("any", "any"),
                  example_dims=(sdim, 3), vjp=vjp)


register(_weighted_norm_op("WeightedSqNorm"))
register(_weighted_norm_op("SqNormIso", "iso"))
register(_weighted_norm_op("SqNormDiag", "diag"))
register(_weighted_norm_op("SymSqNorm", "sym"))


def _weighted_sqdist_dim(dims, p):
    sdim, xdim, ydim = dims
    if xdim != ydim:
        raise dim_error("WeightedSqDist", f"x and y have dimensions {xdim} and {ydim}; "
                                          "they must be equal")
    _weighted_kind("WeightedSqDist", sdim, xdim)
    return 1


def _emit_weighted_sqdist(out, args, p):
    s, x, y = args
    return _emit_weighted(out, s, lambda k: f"({x(k)} - {y(k)})", x.dim,
                          _weighted_kind("WeightedSqDist", s.dim, x.dim))


def _weighted_sqdist_ref(args, p):
    s, x, y = args
    return _weighted_ref(s, x - y, _weighted_kind("WeightedSqDist", s.shape[-1], x.shape[-1]))


def _weighted_sqdist_vjp(node, g):
    s, x, y = node.args
    kind = _weighted_kind("WeightedSqDist", s.dim, x.dim)
    gs, gz = _weighted_vjp(kind, s, sub(x, y), g)
    return gs, gz, neg(gz)


register(OpSpec("WeightedSqDist", 3, (), _weighted_sqdist_dim, _emit_weighted_sqdist,
                _weighted_sqdist_ref, domain=("any", "any", "any"), example_dims=(9, 3, 3),
                vjp=_weighted_sqdist_vjp))


# ------------------------------------------------------------- SumT and extremal components
def _sumt_dim(dims, p):
    if dims[0] != 1:
        raise dim_error("SumT", f"the argument must have dimension 1, got {dims[0]}")
    if p[0] < 1:
        raise dim_error("SumT", f"the output dimension must be >= 1, got {p[0]}")
    return p[0]


def _emit_sumt(out, args, p):
    (a,) = args
    return [f"for (int k = 0; k < {out.dim}; ++k) {{ {out('k')} = {a(0)}; }}"]


register(OpSpec("SumT", 1, ("d",), _sumt_dim, _emit_sumt,
                lambda args, p: args[0].expand(*args[0].shape[:-1], p[0]),
                domain=("any",), example_params=(4,), example_dims=(1,), uniform=True,
                doc="Adjoint of Sum: a scalar repeated d times.",
                vjp=lambda n, g: (op("Sum", g),)))


def _extremal(name, cmp, want_index):
    """Max/Min (the extremal value) or ArgMax/ArgMin (the index of its first occurrence,
    as a float), in one pass with a strict comparison so the first index wins ties."""

    def emit(out, args, p):
        (a,) = args
        track = " idx = k;" if want_index else ""
        return block(f"T m = {a(0)};",
                     *(["int idx = 0;"] if want_index else []),
                     f"for (int k = 1; k < {a.dim}; ++k) {{",
                     f"  const T v = {a('k')};",
                     f"  if (v {cmp} m) {{ m = v;{track} }}",
                     "}",
                     f"{out(0)} = {'T(idx)' if want_index else 'm'};")

    method = ("argmax" if cmp == ">" else "argmin") if want_index else \
        ("amax" if cmp == ">" else "amin")

    def reference(args, p):
        return getattr(args[0], method)(dim=-1, keepdim=True).to(args[0].dtype)

    def vjp(node, g):
        (a,) = node.args
        if want_index:  # an integer-valued output: zero derivative
            return (None,)
        if a.dim == 1:
            return (g,)
        # The whole cotangent goes to the component the forward pass picked.
        picked = op("ArgMax" if cmp == ">" else "ArgMin", a)
        return (mul(op("OneHot", picked, params=(a.dim,)), g),)

    return OpSpec(name, 1, (), lambda dims, p: 1, emit, reference, domain=("any",),
                  example_dims=(4,), vjp=vjp)


register(_extremal("Max", ">", False))
register(_extremal("Min", "<", False))
register(_extremal("ArgMax", ">", True))
register(_extremal("ArgMin", "<", True))
