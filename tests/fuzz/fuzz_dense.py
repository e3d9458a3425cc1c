"""The dense side of the differential fuzz: formulas evaluated with torch, and fragility.

This module owns `D` (a dense value: the float64 reference, its float32 twin, the mask of
fragile entries and the magnitudes it was computed from), `Dense` (the memoized evaluator
of a formula tree on one set of leaves, with the rounding model that says how far rounding
may move a value), `pointwise` (an op's dense function from its torch version), the kinks
`at_*` (where an argument is within rounding reach of a discontinuity, so the entry is
not compared) and `derivative` (dense Grad / Diff through torch autograd). The formulas
(fuzz_ops.Expr) are read by their fields only; the torch versions of the ops are in
fuzz_ops.
"""

import torch

F64, F32 = torch.float64, torch.float32
EPS = {"float32": 2.0 ** -23, "float64": 2.0 ** -52}


def finite_abs(t):
    return torch.nan_to_num(t.detach().abs(), nan=0.0, posinf=0.0)


class D:
    """A dense value: `ref` in float64, `low` in float32, `frag`, the boolean mask of
    entries too close to a discontinuity or kink to be compared, and `mag`, the largest
    finite |intermediate value| each entry was computed from (cancellation makes the
    rounding error scale with it, not with the result)."""

    __slots__ = ("ref", "low", "frag", "mag")

    def __init__(self, ref, low, frag=None, mag=None):
        self.ref, self.low = ref, low
        self.frag = torch.zeros(ref.shape, dtype=torch.bool) if frag is None else frag
        self.mag = finite_abs(ref) if mag is None else mag

    @staticmethod
    def const(values):
        return D(torch.tensor(values, dtype=F64), torch.tensor(values, dtype=F32))


class Dense:
    """Evaluates Exprs densely on one set of leaves (`env`: leaf name -> D), memoized per
    Expr. `ratio` scales float32 rounding to the group's dtype."""

    def __init__(self, env, dtype):
        self.env, self.ratio, self.memo = env, EPS[dtype] / EPS["float32"], {}

    def __call__(self, e):
        value = self.memo.get(e)
        if value is None:
            if e.leaf is not None:
                value = self.env[e.leaf]
            elif e.deriv is not None:
                value = derivative(self, e)
            else:
                value = e.dense(self, *[self(a) for a in e.args])
            self.memo[e] = value
        return value

    def uncertainty(self, a):
        """How far rounding may move the library's value of `a` from the reference: zero
        where the float32 and float64 evaluations agree exactly (the value was computed
        without rounding: integers, exact zeros, inputs), else their gap plus a few ulps."""
        ref = a.ref.detach()
        spread = torch.abs(a.low.detach().to(F64) - ref)
        ulps = torch.where(spread > 0, 8 * EPS["float32"] * (1 + a.mag), 0.0)
        return (spread + ulps) * self.ratio

    def near(self, dist, *args):
        """Where `dist`, a distance to a discontinuity, is within rounding reach."""
        reach = 0
        for a in args:
            u = self.uncertainty(a)
            reach = reach + (u.amax(-1, keepdim=True) if u.shape[-1] != dist.shape[-1] else u)
        return (dist.detach() <= 16 * reach) & (reach > 0)


def pointwise(fn, kink=None, vector=False):
    """The dense function of an op computed by `fn` in both precisions. Entries are fragile
    where an argument is (any of its components, for a `vector` op) and where
    `kink(ev, *args)` says."""

    def dense(ev, *args):
        ref = fn(*[a.ref for a in args]).to(F64)
        low = fn(*[a.low for a in args]).to(F32)
        frag = torch.zeros(ref.shape, dtype=torch.bool)
        mag = finite_abs(ref)
        for a in args:
            frag = frag | (a.frag.any(-1, keepdim=True) if vector else a.frag)
            mag = torch.maximum(mag, a.mag.amax(-1, keepdim=True) if vector else a.mag)
        if kink is not None:
            frag = frag | kink(ev, *args)
        return D(ref, low, frag.expand(ref.shape), mag.expand(ref.shape))

    return dense


def at_zero(ev, x, *rest):
    return ev.near(torch.abs(x.ref), x)


def at_integer(ev, x):
    return ev.near(torch.abs(x.ref - torch.round(x.ref)), x)


def at_half(ev, x):
    return at_integer(ev, D(x.ref + 0.5, x.low + 0.5))


def at_equal(ev, a, b):
    if a is b:  # one subexpression compared with itself: equal in any precision
        return torch.zeros(a.ref.shape, dtype=torch.bool)
    return ev.near(torch.abs(a.ref - b.ref), a, b)


def at_bounds(ev, x, a, b):
    return ev.near(torch.minimum(torch.abs(x.ref - a.ref), torch.abs(x.ref - b.ref)), x, a, b)


def at_period(ev, x, n, off):
    q = (x.ref - off.ref) / n.ref
    return ev.near(torch.abs(q - torch.round(q)) * n.ref, x, n, off)


def at_branch_cut(ev, y, x):
    """atan2 jumps from pi to -pi where y changes sign with x < 0, and at y = +-0 the sign
    of the zero decides (a sum of products may give either); origin: any direction."""
    cut = (ev.near(torch.abs(y.ref), y) | (y.ref == 0)) & (x.ref < 0)
    return cut | ev.near(torch.hypot(x.ref, y.ref), y, x)


def at_tie(ev, a):
    if a.ref.shape[-1] == 1:
        return torch.zeros(a.ref.shape, dtype=torch.bool)
    top = torch.topk(a.ref.detach(), 2, dim=-1).values
    bottom = torch.topk(a.ref.detach(), 2, dim=-1, largest=False).values
    gap = torch.minimum(top[..., :1] - top[..., 1:], bottom[..., 1:] - bottom[..., :1])
    return ev.near(gap, a)


def at_norm_zero(ev, a):
    return ev.near(torch.linalg.vector_norm(a.ref.detach(), dim=-1, keepdim=True), a)


def at_knot(ev, t, x):
    return ev.near(torch.abs(x.ref - t.ref).amin(-1, keepdim=True), t, x)


def derivative(ev, e):
    """Dense Grad(f, v, g) (the gradient of <f, g> with respect to v) or Diff(f, v, u) (the
    derivative of f at v along u), per (i, j) pair: v is replaced by an expanded copy that
    requires a gradient, f re-evaluated on it, and torch autograd does the rest in each
    precision (create_graph: reductions may differentiate it again)."""
    kind, name = e.deriv
    f, v, direction = e.args
    fd, vd, dd = ev(f), ev(v), ev(direction)
    lead = torch.broadcast_shapes(fd.ref.shape[:-1], vd.ref.shape[:-1], dd.ref.shape[:-1])
    copies = [t.expand(*lead, v.dim).clone().requires_grad_(True) for t in (vd.ref, vd.low)]
    inner = Dense({**ev.env, name: D(*copies, vd.frag.expand(*lead, v.dim))}, "float64")
    inner.ratio = ev.ratio
    fv = inner(f)
    values = []
    with torch.enable_grad():
        for out, leaf, d in ((fv.ref, copies[0], dd.ref), (fv.low, copies[1], dd.low)):
            values.append(_grad_values(kind, out, leaf, d, lead, e.dim))
    frag = fv.frag.any(-1, keepdim=True) | dd.frag.any(-1, keepdim=True)
    mag = torch.maximum(fv.mag.amax(-1, keepdim=True), dd.mag.amax(-1, keepdim=True))
    mag = torch.maximum(finite_abs(values[0]), mag.expand(*lead, e.dim))
    return D(values[0].to(F64), values[1].to(F32), frag.expand(*lead, e.dim), mag)


def _grad_values(kind, out, leaf, direction, lead, dim):
    if not out.requires_grad:  # f does not depend on v
        return torch.zeros(*lead, dim, dtype=leaf.dtype)
    if kind == "Grad":
        (g,) = torch.autograd.grad((out * direction).sum(), leaf, create_graph=True,
                                   allow_unused=True)
        return torch.zeros_like(leaf) if g is None else g.expand(*lead, dim)
    probe = torch.zeros(out.expand(*lead, dim).shape, dtype=out.dtype, requires_grad=True)
    (jt,) = torch.autograd.grad((out * probe).sum(), leaf, create_graph=True, allow_unused=True)
    if jt is None or not jt.requires_grad:
        return torch.zeros(*lead, dim, dtype=leaf.dtype)
    (ju,) = torch.autograd.grad((jt * direction).sum(), probe, create_graph=True,
                                allow_unused=True)
    return torch.zeros(*lead, dim, dtype=leaf.dtype) if ju is None else ju
