"""The rule table of the differential fuzz generator: one rule per family of nodes.

This module owns RULES, (weight, rule, applicable(generator, dim)) rows, and the rules:
each `r_*(gen, dim, depth)` draws one node of dimension `dim` (unary and binary ops, ops
with parameters, Clamp / IfElse / Mod, reductions to a scalar, Extract, Normalize,
Concat, matrix products, TensorDot, OneHot, BSpline, Grad / Diff), or None when it cannot,
by calling back into the fuzz_generator.Generator it is given.
"""

import math

import torch

import lazykeops.torch as lkt
from fuzz_dense import D, at_bounds, at_half, at_knot, at_norm_zero, at_period, at_zero, \
    pointwise
from fuzz_ops import (BINARY, LIMIT, TO_SCALAR, UNARY, _bspline, _clamp, _kron, _matvec,
                      _normalize, _onehot, _outer, _round, _tensordot, _vecmat, _weighted)

LazyTensor = lkt.LazyTensor


def r_unary(gen, dim, depth):
    names = [n for n, spec in UNARY.items() if spec[4] or not gen.smooth]
    name = gen.pick(names)
    a = gen.arg(UNARY[name][2], dim, depth)
    return gen.unary(name, a)


def r_param_unary(gen, dim, depth):
    """Ops with parameters: Round(d), Pow(n), Powf(x, c), c ** x, Clamp, ClampInt."""
    choice = gen.rng.randrange(6 if not gen.smooth else 4)
    if choice == 0:
        n = gen.pick((3, 4, -1, -2, 1))
        a = gen.arg("nonzero", dim, depth) if n < 0 else \
            gen.bounded(gen.expr(dim, depth), LIMIT ** (1 / n) / 2)
        return gen.node(f"({a.text} ** {n})", dim, (a,), lambda t: t ** n,
                        pointwise(lambda x: x ** n))
    if choice == 1:
        c = gen.pick((1.5, 2.5, -0.7, 0.3))
        a = gen.bounded(gen.positive(dim, depth), 8.0)
        return gen.node(f"({a.text} ** {c!r})", dim, (a,), lambda t: t ** c,
                        pointwise(lambda x: x ** c))
    if choice == 2:
        c = gen.pick((2.0, 0.5, 1.5))
        a = gen.bounded(gen.expr(dim, depth), 3.0 / abs(math.log(c)))
        return gen.node(f"({c!r} ** {a.text})", dim, (a,), lambda t: c ** t,
                        pointwise(lambda x: torch.pow(torch.tensor(c, dtype=x.dtype), x)))
    if choice == 3:
        lo, hi = gen.pick(((-1, 1), (0, 2), (-2, 0)))
        if gen.rng.random() < 0.5:
            lo, hi = lo + 0.5, hi - 0.25  # floats: Clamp with parameters, not ClampInt
        a = gen.expr(dim, depth)
        lo_t, hi_t = torch.tensor([float(lo)]), torch.tensor([float(hi)])
        return gen.node(f"{a.text}.clamp({lo!r}, {hi!r})", dim, (a,),
                        lambda t: t.clamp(lo, hi),
                        pointwise(lambda x: torch.clamp(x, lo, hi),
                                  lambda ev, x: at_bounds(ev, x, D(lo_t.double(), lo_t.float()),
                                                          D(hi_t.double(), hi_t.float()))))
    if choice == 4:
        d = gen.rng.randint(0, 2)
        a = gen.expr(dim, depth)
        scale = 10.0 ** d
        return gen.node(f"{a.text}.round({d})", dim, (a,), lambda t: t.round(d),
                        pointwise(lambda x: _round(x * scale) / scale,
                                  lambda ev, x: at_half(ev, D(x.ref * scale, x.low * scale))))
    return gen.integer(dim, depth)


def r_binary(gen, dim, depth):
    names = [n for n, spec in BINARY.items() if spec[4] or not gen.smooth]
    name = gen.pick(names)
    dims = gen.pick(((dim, dim), (dim, 1), (1, dim))) if dim > 1 else (1, 1)
    doms = BINARY[name][2]
    if name in ("Equal", "NotEqual"):
        a, b = gen.integer(dims[0], depth), gen.integer(dims[1], depth)
        if gen.rng.random() < 0.3 and dims[1] == 1:
            b = gen.number(gen.pick((0, 1, -1)))
        return gen.binary(name, a, b)
    a = gen.arg(doms[0], dims[0], depth)
    if doms[1] == "any" and gen.rng.random() < 0.1 and dims[0] == dims[1]:
        b = a  # a shared subexpression
    elif doms[1] in ("any", "pow") and not (dims[1] > 1 and name == "Powf"):
        b = gen.operand(dims[1], depth)
        b = gen.bounded(b, 2.0) if doms[1] == "pow" else b
    elif doms[1] == "nonzero" and dims[1] == 1 and gen.rng.random() < 0.25:
        b = gen.number(gen.pick((0.5, -2.0, 3, 1.5)))
    else:
        b = gen.arg(doms[1], dims[1], depth)
    if name == "Powf" and b.number and b.text == "0.5":
        return gen.unary("Sqrt", a)  # x ** 0.5 is Sqrt in the API (not pow: -inf differs)
    if name in ("Add", "Subtract", "Mult") and dims[0] == 1 and gen.rng.random() < 0.3:
        a, b = b, a
        if a.number and b.number:
            return None
        if a.number and a.dim > 1:  # lists only on the right
            return None
    return gen.binary(name, a, b)


def r_ternary(gen, dim, depth):
    """Clamp with LazyTensor bounds, IfElse, Mod."""
    choice = gen.rng.randrange(1 if gen.smooth else 3)
    dims = [gen.pick((dim, 1)) for _ in range(3)]
    dims[0 if choice != 1 else gen.rng.randrange(2)] = dim
    if choice == 0:
        x = gen.expr(dims[0], depth)
        lo = gen.unary("Minus", gen.positive(dims[1], depth - 1))
        hi = gen.positive(dims[2], depth - 1)
        return gen.node(f"{x.text}.clamp({lo.text}, {hi.text})", dim, (x, lo, hi),
                        lambda a, b, c: a.clamp(b, c),
                        pointwise(_clamp, at_bounds))
    if choice == 1:
        c = gen.expr(dims[0], depth)
        a, b = gen.expr(dims[1], depth), gen.operand(dims[2], depth)
        return gen.node(f"{c.text}.ifelse({a.text}, {b.text})", dim, (c, a, b),
                        lambda s, t, u: s.ifelse(t, u),
                        pointwise(lambda s, t, u: torch.where(s >= 0, t, u), at_zero))
    x = gen.expr(dims[0], depth)
    n = gen.positive(dims[1], depth - 1) if gen.rng.random() < 0.6 else \
        gen.number(gen.pick((1.5, 2, 0.75)))
    off = gen.operand(dims[2], depth - 1) if gen.rng.random() < 0.5 else gen.number(0)
    if off.number and off.dim > 1:
        off = gen.number(0.25)
    text = f"{x.text}.mod({n.text})" if off.text == "0" else \
        f"{x.text}.mod({n.text}, {off.text})"
    return gen.node(text, dim, (x, n, off), lambda a, b, c: a.mod(b, c),
                    pointwise(lambda a, b, c: a - b * torch.floor((a - c) / b), at_period))


def r_to_scalar(gen, dim, depth):
    """Scalprod, SqDist, weighted norms, norms, Sum, Max/Min/ArgMax/ArgMin, Elem."""
    k = gen.rng.randint(1, 4)
    choice = gen.rng.randrange(5)
    if choice == 0:
        a, b = gen.expr(k, depth), gen.expr(k, depth)
        if gen.rng.random() < 0.5:
            return gen.node(f"({a.text} | {b.text})", 1, (a, b), lambda s, t: s | t,
                            pointwise(lambda s, t: (s * t).sum(-1, keepdim=True), vector=True))
        return gen.node(f"{a.text}.sqdist({b.text})", 1, (a, b), lambda s, t: s.sqdist(t),
                        pointwise(lambda s, t: ((s - t) ** 2).sum(-1, keepdim=True),
                                  vector=True))
    if choice == 1:
        x = gen.expr(k, depth)
        s = gen.bounded(gen.expr(gen.pick((1, k, k * k)), depth - 1), 4.0)
        if gen.rng.random() < 0.5:
            return gen.node(f"{x.text}.weightedsqnorm({s.text})", 1, (x, s),
                            lambda a, w: a.weightedsqnorm(w),
                            pointwise(lambda a, w: _weighted(w, a), vector=True))
        y = gen.expr(k, depth - 1)
        return gen.node(f"{x.text}.weightedsqdist({y.text}, {s.text})", 1, (x, y, s),
                        lambda a, b, w: a.weightedsqdist(b, w),
                        pointwise(lambda a, b, w: _weighted(w, a - b), vector=True))
    if choice == 2:
        k = gen.rng.randint(2, 5)
        a = gen.expr(k, depth)
        m = gen.rng.randrange(k)
        text, lazy = gen.pick(((f"{{0}}[{m}]", lambda t: t[m]),
                               (f"{{0}}[{m - k}]", lambda t: t[m - k]),
                               (f"{{0}}.elem({m})", lambda t: t.elem(m))))
        return gen.node(text.format(a.text), 1, (a,), lazy,
                        lambda ev, x: D(x.ref[..., m:m + 1], x.low[..., m:m + 1],
                                        x.frag[..., m:m + 1], x.mag[..., m:m + 1]),
                        integer=a.integer)
    names = [n for n, spec in TO_SCALAR.items() if spec[4] or not gen.smooth]
    name = gen.pick(names)
    text, lazy, fn, kink, _ = TO_SCALAR[name]
    a = gen.expr(k, depth)
    return gen.node(text.format(a.text), 1, (a,), lazy, pointwise(fn, kink, vector=True),
                    integer=name.startswith("Arg") or a.integer and name != "Norm2")


def r_extract(gen, dim, depth):
    k = gen.rng.randint(dim + 1, min(dim + 3, 16))
    a = gen.expr(k, depth)
    s = gen.rng.randint(0, k - dim)
    text, lazy = gen.pick(((f"{{0}}[{s}:{s + dim}]", lambda t: t[s:s + dim]),
                           (f"{{0}}.extract({s}, {dim})", lambda t: t.extract(s, dim))))
    return gen.node(text.format(a.text), dim, (a,), lazy,
                    lambda ev, x: D(x.ref[..., s:s + dim], x.low[..., s:s + dim],
                                    x.frag[..., s:s + dim], x.mag[..., s:s + dim]),
                    integer=a.integer)


def r_normalize(gen, dim, depth):
    a = gen.expr(dim, depth)
    return gen.node(f"{a.text}.normalize()", dim, (a,), lambda t: t.normalize(),
                    pointwise(_normalize, at_norm_zero, vector=True))


def r_concat(gen, dim, depth):
    cuts = sorted(gen.rng.sample(range(1, dim), min(dim - 1, gen.rng.randint(1, 2))))
    sizes = [b - a for a, b in zip([0] + cuts, cuts + [dim])]
    return gen.concat([gen.expr(s, depth) for s in sizes])


def r_matvec(gen, dim, depth):
    if gen.rng.random() < 0.5:
        m = gen.rng.randint(1, 16 // dim)
        A, v = gen.bounded(gen.expr(dim * m, depth), 6.0), gen.bounded(gen.expr(m, depth), 6.0)
        return gen.node(f"{A.text}.matvecmult({v.text})", dim, (A, v),
                        lambda a, b: a.matvecmult(b), pointwise(_matvec, vector=True))
    n = gen.rng.randint(1, 16 // dim)
    v, A = gen.bounded(gen.expr(n, depth), 6.0), gen.bounded(gen.expr(n * dim, depth), 6.0)
    return gen.node(f"{v.text}.vecmatmult({A.text})", dim, (v, A),
                    lambda a, b: a.vecmatmult(b), pointwise(_vecmat, vector=True))


def _factor(gen, dim):
    """(p, q) with p * q == dim and both in 1..4, or None."""
    pairs = [(p, dim // p) for p in range(1, 5) if dim % p == 0 and dim // p <= 4]
    return gen.pick(pairs) if pairs else None


def r_products(gen, dim, depth):
    """TensorProd and rank-1 / rank-2 Kron."""
    pq = _factor(gen, dim)
    if pq is None:
        return None
    a, b = gen.bounded(gen.expr(pq[0], depth), 6.0), gen.bounded(gen.expr(pq[1], depth), 6.0)
    if gen.rng.random() < 0.5:
        return gen.node(f"{a.text}.tensorprod({b.text})", dim, (a, b),
                        lambda s, t: s.tensorprod(t), pointwise(_outer, vector=True))
    fa, fb = (pq[0],), (pq[1],)
    if pq[0] == 4 and pq[1] == 4 or pq[0] == 4 and pq[1] == 1:
        fa, fb = (2, 2), ((2, 2) if pq[1] == 4 else (1, 1))
    return gen.node(f"{a.text}.keops_kron({b.text}, {list(fa)}, {list(fb)})", dim, (a, b),
                    lambda s, t: s.keops_kron(t, list(fa), list(fb)),
                    pointwise(lambda s, t: _kron(s, t, fa, fb), vector=True))


def r_tensordot(gen, dim, depth):
    """keops_tensordot with random shapes: kept axes giving `dim`, 0-2 contracted axes."""
    pq = _factor(gen, dim)
    if pq is None:
        return None
    cont = [gen.rng.randint(2, 3) for _ in range(gen.rng.randint(0, 2))]
    shape_a, shape_b = [pq[0]] + cont, cont[::-1] + [pq[1]]
    if math.prod(shape_a) > 16 or math.prod(shape_b) > 16:
        cont, shape_a, shape_b = [], [pq[0]], [pq[1]]
    perm_a = gen.rng.sample(range(len(shape_a)), len(shape_a))
    perm_b = gen.rng.sample(range(len(shape_b)), len(shape_b))
    dimfa = tuple(shape_a[k] for k in perm_a)
    dimfb = tuple(shape_b[k] for k in perm_b)
    contfa = tuple(perm_a.index(1 + c) for c in range(len(cont)))
    contfb = tuple(perm_b.index(len(cont) - 1 - c) for c in range(len(cont)))
    a = gen.bounded(gen.expr(math.prod(dimfa), depth), 4.0)
    b = gen.bounded(gen.expr(math.prod(dimfb), depth), 4.0)
    args = (list(dimfa), list(dimfb), list(contfa), list(contfb))
    text = f"{a.text}.keops_tensordot({b.text}, {', '.join(map(str, args))})"
    return gen.node(text, dim, (a, b), lambda s, t: s.keops_tensordot(t, *args),
                    pointwise(lambda s, t: _tensordot(s, t, dimfa, dimfb, contfa, contfb),
                              vector=True))


def r_onehot(gen, dim, depth):
    x = gen.expr(1, depth)
    if x.hi - x.lo > 1e-3:  # spread x over -1.5 .. dim + 0.5
        x = gen.binary("Add", gen.scale(x, (dim + 2) / (x.hi - x.lo)),
                       gen.number(round(-1.5 - x.lo * float(f"{(dim + 2) / (x.hi - x.lo):.2g}"),
                                        2)))
    if x is None:
        return None
    return gen.node(f"{x.text}.one_hot({dim})", dim, (x,), lambda t: t.one_hot(dim),
                    pointwise(lambda t: _onehot(t, dim), lambda ev, t: at_half(ev, t),
                              vector=True), integer=True)


def r_bspline(gen, dim, depth):
    order = gen.rng.randint(1 if gen.smooth else 0, 3)
    knots = gen.inputs.knots(gen.rng, dim + order + 1)
    x = gen.expr(1, depth)
    if x.hi - x.lo > 1e-3:  # spread x over the knots
        c = float(f"{3.4 / (x.hi - x.lo):.2g}")
        x = gen.binary("Add", gen.scale(x, c), gen.number(round(-1.7 - x.lo * c, 2)))
    if x is None:
        return None
    return gen.node(f"{knots.text}.bspline({x.text}, {order})", dim, (knots, x),
                    lambda t, s: (t if isinstance(t, LazyTensor) else LazyTensor(t))
                    .bspline(s, order),
                    pointwise(lambda t, s: _bspline(t, s, order), at_knot, vector=True))


def r_derivative(gen, dim, depth):
    """f.grad(v, g) (dim = v's) or f.diff(v, u) (dim = f's), f smooth and using v often."""
    if gen.in_derivative or depth < 1:
        return None
    grad = gen.rng.random() < 0.6
    if grad and dim > 4:
        return None
    v = gen.variable(dim if grad else gen.rng.randint(1, 3), gen.rng.random() < 0.3)
    fdim = gen.rng.randint(1, 3) if grad else dim
    saved = gen.smooth, gen.prefer
    gen.smooth, gen.prefer, gen.in_derivative = True, v, True
    try:
        f = gen.expr(fdim, min(depth, 2))
        direction = gen.expr(fdim if grad else v.dim, min(depth - 1, 1))
    finally:
        (gen.smooth, gen.prefer), gen.in_derivative = saved, False
    kind = "Grad" if grad else "Diff"
    method = "grad" if grad else "diff"
    return gen.node(f"{f.text}.{method}({v.text}, {direction.text})", dim, (f, v, direction),
                    (lambda a, b, c: a.grad(b, c)) if grad else (lambda a, b, c: a.diff(b, c)),
                    None, deriv=(kind, v.leaf))


def _any_dim(gen, dim):
    return True


# (weight, rule, applicable(gen, dim))
RULES = [
    (7.0, r_unary, _any_dim),
    (2.5, r_param_unary, _any_dim),
    (7.0, r_binary, _any_dim),
    (1.5, r_ternary, _any_dim),
    (5.0, r_to_scalar, lambda g, d: d == 1),
    (1.5, r_extract, lambda g, d: d <= 13),
    (1.0, r_normalize, lambda g, d: d <= 4),
    (2.0, r_concat, lambda g, d: d >= 2),
    (1.2, r_matvec, lambda g, d: d <= 8),
    (1.2, r_products, lambda g, d: d >= 2),
    (1.0, r_tensordot, lambda g, d: True),
    (0.6, r_onehot, lambda g, d: not g.smooth and 2 <= d <= 6),
    (0.8, r_bspline, lambda g, d: d <= 5),
    (1.0, r_derivative, lambda g, d: d <= 4),
]
