"""Differential fuzzing of LazyTensor reductions against dense torch (issue 11).

This file owns the fuzzer: a seeded generator of random formulas built through the public
LazyTensor API, an independent dense torch evaluator of the same formulas, and the checker
that reduces them with lazykeops and compares. Run it as a script:

    python tests/fuzz/formula_fuzz.py --seed S --count N [--group G]

- Formulas (`Expr`) are trees whose nodes know their public-API spelling (`text`), how to
  build their LazyTensor from their children's (`lazy`) and how to compute the same values
  densely with torch (`dense`). Leaves are i-variables, j-variables and parameters of dims
  1-4 (values in [-1.5, 1.5] or in [0.5, 2], with or without batch dims), sorted knot
  vectors, Python numbers and lists.
- Every node is evaluated densely on broadcast (..., N, M, D) tensors twice, in float64
  (the reference) and in float32: their difference measures how much rounding moves each
  value, which scales the tolerances. An entry is *fragile* where an argument sits within
  rounding reach of a discontinuity or kink (Floor, comparisons, Abs, ties of Max, knots,
  ...): the library may then legitimately land on the other side, so it is not compared.
- Inputs are drawn before the formulas, so the generator measures the actual range of
  every subexpression and keeps each op's arguments inside its domain: an argument of Log
  that is not safely positive is wrapped in Exp, Square + c, ... ; values above LIMIT are
  squashed (scaled, Atan, Sin, Clamp).
- Groups share kernels (each distinct formula compiles one, ~1 s): the reductions act on
  each component separately, so a group concatenates ~24 formulas into one LazyTensor,
  reduces it once, maps the failing components back to their formula and re-runs that
  formula alone. A group is one (reduction, axis, batch dims, dtype). Weighted reductions
  (logsumexp with weight=, sumsoftmaxweight) share one scalar formula and concatenate the
  weights. Gradient groups compare torch.autograd.grad of a reduction with respect to all
  variables with the same on the dense reference, and bisect a failing group down to one
  formula.
"""

import argparse
import copy
import dataclasses
import math
import os
import random
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

import lazykeops.torch as lkt
from lazykeops.tensor.lazy_reduce import lower

LazyTensor, Vi, Vj, Pm = lkt.LazyTensor, lkt.Vi, lkt.Vj, lkt.Pm

F64, F32 = torch.float64, torch.float32
EPS = {"float32": 2.0 ** -23, "float64": 2.0 ** -52}
LIMIT = 40.0        # largest |value| a subexpression may take before it is squashed
MARGIN = 0.1        # how far "positive" and "nonzero" arguments stay from 0
FORWARD_SIZE, GRAD_SIZE = 24, 6   # formulas per group


# =========================================================================== dense values
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


# ============================================================== torch versions of the ops
def _round(x):
    """C's round, the library's (and pykeops's) Round: halves away from zero."""
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def _rsqrt(x):
    """1 / sqrt(x), and 0 at 0: the library's documented convention (torch gives inf)."""
    return torch.where(x == 0, torch.zeros_like(x), torch.rsqrt(torch.where(x == 0, 1, x)))


def _xlogx(x):
    """x log x, continued by 0 at 0 (the library's convention; torch gives NaN)."""
    return torch.where(x == 0, torch.zeros_like(x), x * torch.log(torch.where(x == 0, 1, x)))


def _normalize(x):
    """x / |x|, and 0 at 0 (the library's convention, through rsqrt(0) = 0)."""
    return x * _rsqrt((x * x).sum(-1, keepdim=True))


def _sinxdivx(x):
    safe = torch.where(x == 0, torch.ones_like(x), x)
    return torch.where(x == 0, torch.ones_like(x), torch.sin(safe) / safe)


def _first_extremum(x, arg):
    """Max / Min over the last axis as the value at the first extremal component: its
    gradient goes there alone (the library's convention; torch.amax splits ties)."""
    return x.gather(-1, arg(x, dim=-1, keepdim=True))


def _weighted(s, x):
    d = x.shape[-1]
    if s.shape[-1] == 1:
        return s * (x * x).sum(-1, keepdim=True)
    if s.shape[-1] == d:
        return (s * x * x).sum(-1, keepdim=True)
    S = s.reshape(*s.shape[:-1], d, d)
    return (x.unsqueeze(-1) * (S @ x.unsqueeze(-1))).sum((-2, -1)).unsqueeze(-1)


def _matvec(A, v):
    m = v.shape[-1]
    return (A.reshape(*A.shape[:-1], -1, m) @ v.unsqueeze(-1)).squeeze(-1)


def _vecmat(v, A):
    n = v.shape[-1]
    return (v.unsqueeze(-2) @ A.reshape(*A.shape[:-1], n, -1)).squeeze(-2)


def _outer(a, b):
    out = a.unsqueeze(-1) * b.unsqueeze(-2)
    return out.reshape(*out.shape[:-2], -1)


def _tensordot(a, b, dimfa, dimfb, contfa, contfb):
    """Contract with matmul: a's kept axes then contracted ones, b's contracted then kept."""
    A = a.reshape(*a.shape[:-1], *dimfa)
    B = b.reshape(*b.shape[:-1], *dimfb)
    keep_a = [k for k in range(len(dimfa)) if k not in contfa]
    keep_b = [k for k in range(len(dimfb)) if k not in contfb]
    na, nb = A.dim() - len(dimfa), B.dim() - len(dimfb)
    A = A.permute(*range(na), *[na + k for k in keep_a + list(contfa)])
    B = B.permute(*range(nb), *[nb + k for k in list(contfb) + keep_b])
    size_c = math.prod(dimfa[k] for k in contfa)
    A = A.reshape(*A.shape[:na], -1, size_c)
    B = B.reshape(*B.shape[:nb], size_c, -1)
    out = A @ B
    return out.reshape(*out.shape[:-2], -1)


def _kron(a, b, dimfa, dimfb):
    r = len(dimfa)
    A = a.reshape(*a.shape[:-1], *[s for e in dimfa for s in (e, 1)])
    B = b.reshape(*b.shape[:-1], *[s for e in dimfb for s in (1, e)])
    out = A * B
    return out.reshape(*out.shape[:-2 * r], -1)


def _onehot(x, d):
    return (torch.floor(x + 0.5) == torch.arange(d, dtype=x.dtype)).to(x.dtype)


def _bspline(t, x, order):
    """Cox-de Boor on strictly increasing knots t (..., n) at x (..., 1)."""
    lead = torch.broadcast_shapes(t.shape[:-1], x.shape[:-1])
    t, x = t.expand(*lead, t.shape[-1]), x.expand(*lead, 1)
    b = ((t[..., :-1] <= x) & (x < t[..., 1:])).to(t.dtype)
    for d in range(1, order + 1):
        n = b.shape[-1] - 1
        left = (x - t[..., :n]) / (t[..., d:d + n] - t[..., :n]) * b[..., :n]
        right = (t[..., d + 1:d + 1 + n] - x) / (t[..., d + 1:d + 1 + n] - t[..., 1:1 + n]) \
            * b[..., 1:]
        b = left + right
    return b


def _clamp(x, lo, hi):
    """Clamp with tensor bounds; at a bound the gradient goes to x (torch.clamp's choice
    and the library's; torch.maximum would split it)."""
    lead = torch.broadcast_shapes(x.shape, lo.shape, hi.shape)
    return torch.clamp(x.expand(lead), lo.expand(lead), hi.expand(lead))


def _cat(*xs):
    lead = torch.broadcast_shapes(*[x.shape[:-1] for x in xs])
    return torch.cat([x.expand(*lead, x.shape[-1]) for x in xs], dim=-1)


def _cat_frag(ev, *args):
    """Concat keeps each component's own fragility and magnitude (`pointwise` would merge
    them)."""
    out = pointwise(_cat, vector=True)(ev, *args)
    lead = out.ref.shape[:-1]
    out.frag = torch.cat([a.frag.expand(*lead, a.ref.shape[-1]) for a in args], dim=-1)
    out.mag = torch.cat([a.mag.expand(*lead, a.ref.shape[-1]) for a in args], dim=-1)
    return out


# ================================================================================ formulas
@dataclass(eq=False)
class Expr:
    """A formula node: `text` is its public-API spelling; `lazy(*children)` builds its
    LazyTensor (Python numbers and lists return themselves); `dense(ev, *children)` its
    dense value. `lo`, `hi` are its measured range on the group's inputs."""

    text: str
    dim: int
    args: tuple = ()
    lazy: Optional[Callable] = None
    dense: Optional[Callable] = None
    leaf: Optional[str] = None     # a variable: its name
    number: bool = False           # a Python number or list (an operand only)
    integer: bool = False          # integer-valued
    deriv: Optional[tuple] = None  # ("Grad" | "Diff", name of the variable)
    lo: float = 0.0
    hi: float = 0.0
    leaves: frozenset = frozenset()

    @property
    def bound(self):
        return max(abs(self.lo), abs(self.hi))


def to_lazy(e, lazy_leaves, memo):
    """The LazyTensor (or Python value) of `e`; shared subtrees are built once."""
    out = memo.get(e)
    if out is None:
        if e.leaf is not None:
            out = lazy_leaves[e.leaf]
        else:
            out = e.lazy(*[to_lazy(a, lazy_leaves, memo) for a in e.args])
        memo[e] = out
    return out


# Elementwise unary ops: name -> (spellings, torch fn, argument domain, kink, smooth,
# integer-valued). A spelling is (template, LazyTensor fn).
UNARY = {
    "Minus": ((("(-{0})", lambda a: -a),), lambda x: -x, "any", None, True, False),
    "Abs": ((("abs({0})", abs), ("{0}.abs()", lambda a: a.abs())), torch.abs, "any",
            at_zero, True, False),
    "Exp": ((("{0}.exp()", lambda a: a.exp()),), torch.exp, "exp", None, True, False),
    "Log": ((("{0}.log()", lambda a: a.log()),), torch.log, "positive", None, True, False),
    "XLogX": ((("{0}.xlogx()", lambda a: a.xlogx()),), _xlogx,
              "positive", None, True, False),
    "Sin": ((("{0}.sin()", lambda a: a.sin()),), torch.sin, "any", None, True, False),
    "Cos": ((("{0}.cos()", lambda a: a.cos()),), torch.cos, "any", None, True, False),
    "SinXDivX": ((("{0}.sinxdivx()", lambda a: a.sinxdivx()),), _sinxdivx, "any", None,
                 True, False),
    "Sinc": ((("{0}.sinc()", lambda a: a.sinc()),), torch.sinc, "any", None, True, False),
    "Asin": ((("{0}.asin()", lambda a: a.asin()),), torch.asin, "unit", None, True, False),
    "Acos": ((("{0}.acos()", lambda a: a.acos()),), torch.acos, "unit", None, True, False),
    "Atan": ((("{0}.atan()", lambda a: a.atan()),), torch.atan, "any", None, True, False),
    "Square": ((("{0}.square()", lambda a: a.square()), ("({0} ** 2)", lambda a: a ** 2)),
               lambda x: x * x, "square", None, True, False),
    "Sqrt": ((("{0}.sqrt()", lambda a: a.sqrt()), ("({0} ** 0.5)", lambda a: a ** 0.5)),
             torch.sqrt, "positive", None, True, False),
    "Rsqrt": ((("{0}.rsqrt()", lambda a: a.rsqrt()), ("({0} ** -0.5)", lambda a: a ** -0.5)),
              _rsqrt, "positive", None, True, False),
    "Inv": ((("{0}.inv()", lambda a: a.inv()), ("(1 / {0})", lambda a: 1 / a),
             ("(1.0 / {0})", lambda a: 1.0 / a)), torch.reciprocal, "nonzero", None, True,
            False),
    "ReLU": ((("{0}.relu()", lambda a: a.relu()),), torch.relu, "any", at_zero, True, False),
    "Sign": ((("{0}.sign()", lambda a: a.sign()),), torch.sign, "any", at_zero, False, True),
    "Step": ((("{0}.step()", lambda a: a.step()),), lambda x: (x >= 0).to(x.dtype), "any",
             at_zero, False, True),
    "Floor": ((("{0}.floor()", lambda a: a.floor()),), torch.floor, "any", at_integer, False,
              True),
}

# Elementwise binary ops: name -> (spellings, torch fn, domains, kink, smooth).
BINARY = {
    "Add": ((("({0} + {1})", lambda a, b: a + b),), torch.add, ("any", "any"), None, True),
    "Subtract": ((("({0} - {1})", lambda a, b: a - b),), torch.sub, ("any", "any"), None,
                 True),
    "Mult": ((("({0} * {1})", lambda a, b: a * b),), torch.mul, ("any", "any"), None, True),
    "Divide": ((("({0} / {1})", lambda a, b: a / b),), torch.div, ("any", "nonzero"), None,
               True),
    "Atan2": ((("{0}.atan2({1})", lambda a, b: a.atan2(b)),), torch.atan2,
              ("any", "positive"), None, True),
    "Atan2Cut": ((("{0}.atan2({1})", lambda a, b: a.atan2(b)),), torch.atan2,
                 ("any", "nonzero"), at_branch_cut, False),
    "Powf": ((("({0} ** {1})", lambda a, b: a ** b),), torch.pow, ("positive", "pow"), None,
             True),
    "LessThan": ((("({0} < {1})", lambda a, b: a < b), ("({1} > {0})", lambda a, b: b > a)),
                 lambda a, b: (a < b).to(a.dtype), ("any", "any"), at_equal, False),
    "LessOrEqual": ((("({0} <= {1})", lambda a, b: a <= b),
                     ("({1} >= {0})", lambda a, b: b >= a)),
                    lambda a, b: (a <= b).to(a.dtype), ("any", "any"), at_equal, False),
    "Equal": ((("({0} == {1})", lambda a, b: a == b),), lambda a, b: (a == b).to(a.dtype),
              ("integer", "integer"), None, False),
    "NotEqual": ((("({0} != {1})", lambda a, b: a != b),),
                 lambda a, b: (a != b).to(a.dtype), ("integer", "integer"), None, False),
}

NUMBERS = (0.5, 1.5, -0.25, 2.0, -1.0, 0.75, 3.0, 1, 2, 3, -1)

# Vector ops to dimension 1: name -> (spelling, torch fn, kink, smooth).
TO_SCALAR = {
    "SqNorm2": ("{0}.sqnorm2()", lambda a: a.sqnorm2(), lambda x: (x * x).sum(-1, True),
                None, True),
    "Norm2": ("{0}.norm2()", lambda a: a.norm2(),
              lambda x: torch.linalg.vector_norm(x, dim=-1, keepdim=True), at_norm_zero, True),
    "Norm": ("{0}.norm(dim=-1)", lambda a: a.norm(dim=-1),
             lambda x: torch.linalg.vector_norm(x, dim=-1, keepdim=True), at_norm_zero, True),
    "Sum": ("{0}.sum(-1)", lambda a: a.sum(-1), lambda x: x.sum(-1, keepdim=True), None, True),
    "SumDefault": ("{0}.sum()", lambda a: a.sum(), lambda x: x.sum(-1, keepdim=True), None,
                   True),
    "Max": ("{0}.max(-1)", lambda a: a.max(-1), lambda x: _first_extremum(x, torch.argmax),
            at_tie, True),
    "Min": ("{0}.min(dim=-1)", lambda a: a.min(dim=-1),
            lambda x: _first_extremum(x, torch.argmin), at_tie, True),
    "ArgMax": ("{0}.argmax(-1)", lambda a: a.argmax(-1),
               lambda x: x.argmax(-1, keepdim=True).to(x.dtype), at_tie, False),
    "ArgMin": ("{0}.argmin(axis=-1)", lambda a: a.argmin(axis=-1),
               lambda x: x.argmin(-1, keepdim=True).to(x.dtype), at_tie, False),
}


class Generator:
    """Random formulas of a given dimension on one group's inputs. `smooth` leaves out the
    ops with discontinuities (for gradients)."""

    def __init__(self, rng, inputs, ev, smooth=False, pool=None):
        self.rng, self.inputs, self.ev, self.smooth = rng, inputs, ev, smooth
        self.pool = pool        # dim -> the only variable of that dim to use, if given
        self.prefer = None      # a variable that leaf() picks often (inside Grad / Diff)
        self.in_derivative = False

    # ------------------------------------------------------------------ node building
    def node(self, text, dim, args, lazy, dense, integer=False, deriv=None):
        """The Expr, or None when its dense value is not finite on these inputs."""
        leaves = frozenset().union(*[a.leaves for a in args])
        e = Expr(text, dim, tuple(args), lazy, dense, integer=integer, deriv=deriv,
                 leaves=leaves)
        ref = self.ev(e).ref.detach()
        assert ref.shape[-1] == dim, (text, tuple(ref.shape), dim)
        if not bool(torch.isfinite(ref).all()):
            del self.ev.memo[e]
            return None
        e.lo, e.hi = float(ref.min()), float(ref.max())
        return e

    def pick(self, options):
        return options[self.rng.randrange(len(options))]

    def unary(self, name, a):
        spellings, fn, _, kink, _, integer = UNARY[name]
        text, lazy = self.pick(spellings)
        keeps = a.integer and name in ("Minus", "Abs", "Square", "ReLU")
        return self.node(text.format(a.text), a.dim, (a,), lazy, pointwise(fn, kink),
                         integer=integer or keeps)

    def binary(self, name, a, b):
        spellings, fn, _, kink, _ = BINARY[name]
        text, lazy = self.pick(spellings)
        integer = name in ("LessThan", "LessOrEqual", "Equal", "NotEqual") or \
            (a.integer and b.integer and name in ("Add", "Subtract", "Mult"))
        return self.node(text.format(a.text, b.text), max(a.dim, b.dim), (a, b), lazy,
                         pointwise(fn, kink), integer=integer)

    def number(self, value=None):
        v = self.pick(NUMBERS) if value is None else value
        return Expr(repr(v), 1, lazy=lambda: v, dense=lambda ev: D.const([float(v)]),
                    number=True, integer=isinstance(v, int), lo=float(v), hi=float(v))

    def values(self, dim, bound=1.5):
        """A Python list of dim numbers (a parameter when combined with a LazyTensor)."""
        vals = [round(self.rng.uniform(-bound, bound), 2) for _ in range(dim)]
        return Expr(repr(vals), dim, lazy=lambda: list(vals), dense=lambda ev: D.const(vals),
                    number=True, lo=min(vals), hi=max(vals))

    def scale(self, e, c):
        """e * c for a Python float c (rounded to 2 significant digits, towards 0)."""
        c = float(f"{c:.2g}")
        return self.binary("Mult", e, self.number(c)) if c != 1.0 else e

    # ------------------------------------------------------------------ expressions
    def expr(self, dim, depth):
        """A LazyTensor expression of dimension `dim`, about `depth` levels deep."""
        if depth <= 0 or self.rng.random() < 0.15:
            return self.leaf(dim)
        rules = [(w, r) for w, r, ok in RULES if ok(self, dim)]
        total = sum(w for w, _ in rules)
        for _ in range(6):
            x, acc = self.rng.random() * total, 0.0
            for w, rule in rules:
                acc += w
                if x < acc:
                    break
            e = rule(self, dim, depth - 1)
            if e is not None:
                return self.limited(e)
        return self.leaf(dim)

    def leaf(self, dim):
        if dim > 4:  # only concatenations reach matrix dimensions
            sizes = []
            while sum(sizes) < dim:
                sizes.append(min(self.rng.randint(1, 4), dim - sum(sizes)))
            return self.concat([self.leaf(s) for s in sizes])
        if self.prefer is not None and self.prefer.dim == dim and self.rng.random() < 0.6:
            return self.prefer
        return self.variable(dim, self.rng.random() < 0.3)

    def variable(self, dim, positive):
        """A variable of dimension dim <= 4 (valued in [0.5, 2] if `positive`, unless the
        pool decides)."""
        return self.pool[dim] if self.pool else self.inputs.leaf(self.rng, dim, positive)

    def limited(self, e):
        return e if e.bound <= LIMIT else self.bounded(e, LIMIT / 4)

    def bounded(self, e, bound):
        """e, squashed into [-bound, bound] if it leaves it."""
        if e is None or e.bound <= bound:
            return e
        if e.number:
            return self.number(0.5 * bound) if e.dim == 1 else self.values(e.dim, bound)
        choice = self.rng.randrange(4)
        if choice == 0 and e.bound < 1e6:
            out = self.scale(e, bound / e.bound)
        elif choice == 1:
            out = self.scale(self.unary("Atan", e), bound / 1.6)
        elif choice == 2:
            out = self.scale(self.unary("Sin", e), bound)
        else:
            b = float(f"{bound:.2g}")
            out = self.node(f"{e.text}.clamp({-b!r}, {b!r})", e.dim, (e,),
                            lambda a: a.clamp(-b, b),
                            pointwise(lambda x: torch.clamp(x, -b, b),
                                      lambda ev, x: ev.near(torch.abs(torch.abs(x.ref) - b), x)))
        return out if out is not None and out.bound <= bound * 1.01 else \
            self.leaf(e.dim)

    def operand(self, dim, depth, allow_number=True):
        """An argument of a binary op: an expression, or sometimes a number or a list."""
        if allow_number and self.rng.random() < 0.25:
            return self.number() if dim == 1 else self.values(dim)
        return self.expr(dim, depth)

    # ------------------------------------------------------------------ domains
    def arg(self, domain, dim, depth):
        """An expression of dimension `dim` inside `domain`."""
        if domain == "positive":
            return self.positive(dim, depth)
        if domain == "nonzero":
            return self.nonzero(dim, depth)
        if domain == "unit":
            return self.unit(dim, depth)
        if domain == "integer":
            return self.integer(dim, depth)
        e = self.expr(dim, depth)
        if domain == "exp":
            return self.bounded(e, 3.0)
        if domain == "square":
            return self.bounded(e, math.sqrt(LIMIT))
        if domain == "pow":
            return self.bounded(e, 2.0)
        return e

    def positive(self, dim, depth):
        """Values in [MARGIN, LIMIT]."""
        if dim <= 4 and (depth <= 0 or self.rng.random() < 0.3):
            e = self.variable(dim, True)
        else:
            e = self.expr(dim, depth)
        if MARGIN <= e.lo and e.hi <= LIMIT:
            return e
        c = self.number(self.pick((0.5, 1, 2.0)))
        choice = self.rng.randrange(4)
        if choice == 0:
            out = self.unary("Exp", self.bounded(e, 2.0))
        elif choice == 1:
            out = self.binary("Add", self.unary("Square", self.bounded(e, 5.0)), c)
        elif choice == 2:
            out = self.binary("Add", self.unary("Abs", self.bounded(e, 20.0)), c)
        else:
            out = self.binary("Add", self.unary("ReLU", self.bounded(e, 20.0)), c)
        if out is None or out.lo < MARGIN or out.hi > LIMIT:
            return self.positive(dim, 0)
        return out

    def nonzero(self, dim, depth):
        """Values at least MARGIN away from 0 (either sign)."""
        e = self.expr(dim, depth) if self.rng.random() < 0.5 else None
        if e is not None and min(abs(e.lo), abs(e.hi)) >= MARGIN and e.lo * e.hi > 0:
            return e
        p = self.positive(dim, depth)
        return self.unary("Minus", p) if self.rng.random() < 0.5 else p

    def unit(self, dim, depth):
        """Values in [-0.95, 0.95]."""
        e = self.expr(dim, depth)
        if e.bound <= 0.95:
            return e
        choice = self.rng.randrange(3)
        if choice == 0:
            return self.scale(self.unary("Sin", e), 0.9)
        if choice == 1:
            return self.scale(self.unary("Atan", e), 0.6)
        return self.bounded(e, 0.9)

    def integer(self, dim, depth):
        """Integer-valued expressions (Floor, Sign, Step, comparisons, Round(0))."""
        e = self.bounded(self.expr(dim, depth), 3.0)
        choice = self.rng.randrange(4)
        if choice == 0:
            return self.unary(self.pick(("Floor", "Sign", "Step")), e)
        if choice == 1:
            return self.node(f"{e.text}.round()", dim, (e,), lambda a: a.round(),
                             pointwise(_round, at_half), integer=True)
        if choice == 2:
            return self.binary("LessThan", e, self.operand(dim, depth))
        return self.node(f"{e.text}.clamp(-1, 2).floor()", dim, (e,),
                         lambda a: a.clamp(-1, 2).floor(),
                         pointwise(lambda x: torch.floor(torch.clamp(x, -1, 2)), at_integer),
                         integer=True)

    def concat(self, parts):
        if len(parts) == 2 and self.rng.random() < 0.5:
            text, lazy = "{0}.concat({1})", lambda a, b: a.concat(b)
        else:
            text = "LazyTensor.cat([" + ", ".join("{%d}" % k for k in range(len(parts))) + "])"
            lazy = lambda *ts: LazyTensor.cat(list(ts))  # noqa: E731
        return self.node(text.format(*[p.text for p in parts]), sum(p.dim for p in parts),
                         parts, lazy, _cat_frag, integer=all(p.integer for p in parts))


# ============================================================================ rule table
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


# ================================================================================= inputs
KNOT_DIMS = {"i": 6, "j": 7, "p": 5}
SPECIAL = {"any": (0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 0.25), "pos": (0.5, 1.0, 1.5, 2.0)}
EXCEPTIONAL = (float("nan"), float("inf"), -float("inf"))
PREFIX = {"i": "X", "j": "Y", "p": "P"}


@dataclass(eq=False)
class Leaf:
    """One variable: `arg` is the tensor given to the LazyTensor constructor (`code`
    spells it), `shape` its canonical (..., N|1, M|1, D) shape for the dense side."""

    name: str
    arg: torch.Tensor
    shape: tuple
    code: str
    make: Callable
    expr: Expr


class Inputs:
    """The variables of one group: i-variables, j-variables and parameters of dims 1-4,
    values in [-1.5, 1.5] (`X2`) or in [0.5, 2] (`X2p`), knot vectors (`Xk`), each with
    the group's batch dims, some of them, or none."""

    def __init__(self, seed, dtype, batch, n, m, requires_grad=False):
        self.seed, self.dtype, self.batch, self.n, self.m = seed, dtype, batch, n, m
        self.torch_gen = torch.Generator().manual_seed(seed)
        rng = random.Random(seed)
        self.leaves = {}
        for cat in "ijp":
            for dim in (1, 2, 3, 4):
                self._add(rng, cat, dim, "any", requires_grad)
                self._add(rng, cat, dim, "pos", requires_grad)
            self._add(rng, cat, KNOT_DIMS[cat], "knots", requires_grad)
        self._views()

    def _views(self):
        """The LazyTensors and the dense values of the variables."""
        self.lazy = {name: leaf.make(leaf.arg) for name, leaf in self.leaves.items()}
        self.env = {name: D(leaf.arg.detach().to(F64).reshape(leaf.shape),
                            leaf.arg.detach().to(F32).reshape(leaf.shape))
                    for name, leaf in self.leaves.items()}

    def with_exceptions(self, rng, names):
        """(a copy whose variables `names` hold NaN or an infinity in an entry or two,
        a description of those entries)."""
        out = copy.copy(self)
        out.leaves, notes = dict(self.leaves), []
        for name in names:
            leaf = self.leaves[name]
            arg = leaf.arg.detach().clone()
            flat = arg.view(-1)
            for _ in range(rng.randint(1, 2)):
                k, v = rng.randrange(flat.numel()), rng.choice(EXCEPTIONAL)
                flat[k] = v
                notes.append(f"{name.lower()}.view(-1)[{k}] = {v}")
            out.leaves[name] = dataclasses.replace(leaf, arg=arg)
        out._views()
        return out, "; ".join(notes)

    def _add(self, rng, cat, dim, kind, requires_grad):
        name = PREFIX[cat] + {"any": str(dim), "pos": f"{dim}p", "knots": "k"}[kind]
        lb = self._leaf_batch(rng)
        inner = {"i": (self.n, 1), "j": (1, self.m), "p": (1, 1)}[cat]
        shape = (*lb, *inner, dim)
        g = self.torch_gen
        if kind == "knots":
            gaps = 0.25 + 0.45 * torch.rand(shape, generator=g, dtype=F64)
            data = gaps.cumsum(-1) - gaps.sum(-1, keepdim=True) / 2
        elif kind == "pos":
            data = 0.5 + 1.5 * torch.rand(shape, generator=g, dtype=F64)
        else:
            data = 3.0 * torch.rand(shape, generator=g, dtype=F64) - 1.5
        if kind != "knots" and rng.random() < 0.3:  # exact special values: ties, 0, halves
            special = torch.tensor(SPECIAL[kind], dtype=F64)
            pick = special[torch.randint(len(special), shape, generator=g)]
            data = torch.where(torch.rand(shape, generator=g) < 0.3, pick, data)
        arg, code, make = self._spelling(rng, cat, data, lb)
        arg = arg.to(getattr(torch, self.dtype)).contiguous().requires_grad_(requires_grad)
        var = name.lower()
        values = arg.detach()
        expr = Expr(name, dim, leaf=name, leaves=frozenset([name]), lo=float(values.min()),
                    hi=float(values.max()))
        self.leaves[name] = Leaf(name, arg, shape, f"{name} = {code.format(var)}  "
                                 f"# {var}: {tuple(arg.shape)}", make, expr)

    def _leaf_batch(self, rng):
        if not self.batch:
            return ()
        x = rng.random()
        if x < 0.6:
            return self.batch
        if x < 0.8:
            return tuple(b if rng.random() < 0.5 else 1 for b in self.batch)
        return ()

    @staticmethod
    def _spelling(rng, cat, data, lb):
        """(tensor given to the constructor, its code, constructor) for one variable."""
        x = rng.random()
        if cat == "p":
            if lb:
                return data, "LazyTensor({})", LazyTensor
            flat = data.reshape(-1)
            return (flat, "Pm({})", Pm) if x < 0.4 else (flat, "LazyTensor({})", LazyTensor)
        if not lb and x < 0.3:
            flat = data.reshape(data.shape[-3] * data.shape[-2], -1)
            return (flat, "Vi({})", Vi) if cat == "i" else (flat, "Vj({})", Vj)
        if x < 0.65:
            return data, "LazyTensor({})", LazyTensor
        squeezed = data.squeeze(-2 if cat == "i" else -3)
        if cat == "i":
            return squeezed, "LazyTensor({}[..., :, None, :])", \
                lambda t: LazyTensor(t[..., :, None, :])
        return squeezed, "LazyTensor({}[..., None, :, :])", \
            lambda t: LazyTensor(t[..., None, :, :])

    def leaf(self, rng, dim, positive):
        cat = rng.choice("iijjp")
        return self.leaves[PREFIX[cat] + (f"{dim}p" if positive else str(dim))].expr

    def pool(self, rng):
        """One variable per dimension: gradient groups draw only from these (each
        variable of a Min / KMin gradient costs a kernel)."""
        return {dim: self.leaf(rng, dim, rng.random() < 0.3) for dim in (1, 2, 3, 4)}

    def knots(self, rng, n):
        """Strictly increasing knots: a knot variable of dim n, or a Python list."""
        named = [c for c, d in KNOT_DIMS.items() if d == n]
        if named and rng.random() < 0.7:
            return self.leaves[PREFIX[named[0]] + "k"].expr
        start = round(rng.uniform(-1.8, -1.2), 2)
        vals = [round(start + k * 3.0 / (n - 1) + rng.uniform(-0.05, 0.05), 2)
                for k in range(n)]
        return Expr(f"LazyTensor({vals})", n, lazy=lambda: LazyTensor(list(vals)),
                    dense=lambda ev: D.const(vals), lo=min(vals), hi=max(vals))

    def grad_env(self):
        """Dense leaves that require gradients (one set per precision)."""
        return {name: D(d.ref.clone().requires_grad_(True), d.low.clone().requires_grad_(True))
                for name, d in self.env.items()}

    def code(self, formulas):
        """How the variables of `formulas` are made (their data: `data` below)."""
        names = sorted(frozenset().union(*[e.leaves for e in formulas]))
        data = (f"data = formula_fuzz.Inputs({self.seed}, {self.dtype!r}, {self.batch}, "
                f"{self.n}, {self.m}).leaves   # x2 = data['X2'].arg, ...")
        return "\n".join([data] + [self.leaves[n].code for n in names])


# ============================================================================= reductions
# How each reduction is called: (spelling, fn(F, W, dim, K, options)).
CALLS = {
    "Sum": (("F.sum(dim={d})", lambda F, W, d, k, o: F.sum(dim=d, **o)),
            ("F.sum({d})", lambda F, W, d, k, o: F.sum(d, **o)),
            ("F.sum(axis={d})", lambda F, W, d, k, o: F.sum(axis=d, **o)),
            ("F.sum_reduction(dim={d})", lambda F, W, d, k, o: F.sum_reduction(dim=d, **o))),
    "LogSumExp": (("F.logsumexp(dim={d})", lambda F, W, d, k, o: F.logsumexp(dim=d, **o)),
                  ("F.logsumexp_reduction(axis={d})",
                   lambda F, W, d, k, o: F.logsumexp_reduction(axis=d, **o))),
    "LogSumExpWeight": (("F.logsumexp(dim={d}, weight=W)",
                         lambda F, W, d, k, o: F.logsumexp(dim=d, weight=W, **o)),),
    "SumSoftMaxWeight": (("F.sumsoftmaxweight(W, dim={d})",
                          lambda F, W, d, k, o: F.sumsoftmaxweight(W, dim=d, **o)),
                         ("F.sumsoftmaxweight_reduction(W, axis={d})",
                          lambda F, W, d, k, o: F.sumsoftmaxweight_reduction(W, axis=d, **o))),
    "Min": (("F.min(dim={d})", lambda F, W, d, k, o: F.min(dim=d, **o)),
            ("F.min_reduction(dim={d})", lambda F, W, d, k, o: F.min_reduction(dim=d, **o))),
    "Max": (("F.max({d})", lambda F, W, d, k, o: F.max(d, **o)),
            ("F.max_reduction(axis={d})", lambda F, W, d, k, o: F.max_reduction(axis=d, **o))),
    "ArgMin": (("F.argmin(dim={d})", lambda F, W, d, k, o: F.argmin(dim=d, **o)),
               ("F.argmin_reduction(axis={d})",
                lambda F, W, d, k, o: F.argmin_reduction(axis=d, **o))),
    "ArgMax": (("F.argmax(dim={d})", lambda F, W, d, k, o: F.argmax(dim=d, **o)),
               ("F.argmax_reduction(dim={d})",
                lambda F, W, d, k, o: F.argmax_reduction(dim=d, **o))),
    "Min_ArgMin": (("F.min_argmin(dim={d})", lambda F, W, d, k, o: F.min_argmin(dim=d, **o)),
                   ("F.min_argmin_reduction(axis={d})",
                    lambda F, W, d, k, o: F.min_argmin_reduction(axis=d, **o))),
    "Max_ArgMax": (("F.max_argmax(dim={d})", lambda F, W, d, k, o: F.max_argmax(dim=d, **o)),
                   ("F.max_argmax_reduction(dim={d})",
                    lambda F, W, d, k, o: F.max_argmax_reduction(dim=d, **o))),
    "KMin": (("F.Kmin({k}, dim={d})", lambda F, W, d, k, o: F.Kmin(k, dim=d, **o)),
             ("F.Kmin_reduction(K={k}, axis={d})",
              lambda F, W, d, k, o: F.Kmin_reduction(K=k, axis=d, **o))),
    "ArgKMin": (("F.argKmin({k}, dim={d})", lambda F, W, d, k, o: F.argKmin(k, dim=d, **o)),
                ("F.argKmin_reduction({k}, dim={d})",
                 lambda F, W, d, k, o: F.argKmin_reduction(k, dim=d, **o))),
    "KMin_ArgKMin": (("F.Kmin_argKmin({k}, dim={d})",
                      lambda F, W, d, k, o: F.Kmin_argKmin(k, dim=d, **o)),
                     ("F.Kmin_argKmin_reduction(K={k}, dim={d})",
                      lambda F, W, d, k, o: F.Kmin_argKmin_reduction(K=k, dim=d, **o))),
}
REDUCTIONS = tuple(CALLS)
SUM_SCHEMES = ("auto", "block_sum", "kahan_scheme", "direct_sum")
ACCS = ("auto", "float32", "float64")
GRAD_REDUCTIONS = ("Sum", "SumSoftMaxWeight", "Min", "LogSumExp", "KMin", "LogSumExpWeight",
                   "Max", "Min_ArgMin")
WEIGHTED = ("LogSumExpWeight", "SumSoftMaxWeight")
# Reference kind of each reduction; outputs: values, indices or both.
BASE = {"Sum": "sum", "LogSumExp": "lse", "LogSumExpWeight": "lsew", "SumSoftMaxWeight": "ssmw",
        "Min": "min", "ArgMin": "min", "Min_ArgMin": "min", "Max": "max", "ArgMax": "max",
        "Max_ArgMax": "max", "KMin": "kmin", "ArgKMin": "kmin", "KMin_ArgKMin": "kmin"}
INDICES_ONLY = ("ArgMin", "ArgMax", "ArgKMin")
WITH_INDICES = ("ArgMin", "ArgMax", "ArgKMin", "Min_ArgMin", "Max_ArgMax", "KMin_ArgKMin")


def reference(base, F, W, ax, k):
    """torch reduction of F (..., N, M, D) over axis `ax`: (..., n_out, [K,] D) values."""
    if base == "sum":
        return F.sum(ax)
    if base == "lse":
        return torch.logsumexp(F, ax)
    if base == "lsew":
        return torch.logsumexp(F + torch.log(W), ax)
    if base == "ssmw":
        return (torch.softmax(F, ax) * W).sum(ax)
    if base == "min":
        return F.amin(ax)
    if base == "max":
        return F.amax(ax)
    return torch.topk(F, k, dim=ax, largest=False, sorted=True).values.movedim(ax, -2)


def magnitude(base, a, w, ax):
    """The size of what rounding acts on, per output entry (tolerances scale with it),
    from the magnitudes `a` of F and `w` of W; sums of n terms (direct_sum, say) lose up
    to ~sqrt(n) roundings more."""
    length = max(1.0, math.sqrt(a.shape[ax]) / 8)
    if base == "sum":
        return a.sum(ax) * length
    if base == "ssmw":
        return w.amax(ax) * (1 + a.amax(ax)) * length
    if base == "lsew":
        return (a.amax(ax) + 1) * length
    if base == "lse":
        return a.amax(ax) * length
    return a.amax(ax).unsqueeze(-2) if base == "kmin" else a.amax(ax)


def tolerance(exp64, exp32, scale, dtype):
    """Rounding the float32 reference exhibits (scaled to `dtype`), plus a few ulps."""
    ratio = EPS[dtype] / EPS["float32"]
    return 8 * (exp32.to(F64) - exp64).abs() * ratio + 32 * EPS[dtype] * (exp64.abs() + scale)


def mismatches(got, exp, tol, skip):
    """Entries where `got` disagrees with `exp`: NaN must match NaN, inf the same inf."""
    both_nan = torch.isnan(got) & torch.isnan(exp)
    close = (got == exp) | ((got - exp).abs() <= tol)
    return ~(both_nan | close) & ~skip


def gather(F, idx, ax, kmin):
    """F's values at the indices a reduction returned (same layout as its values)."""
    if kmin:
        return F.take_along_dim(idx.movedim(-2, ax), dim=ax).movedim(ax, -2)
    return F.take_along_dim(idx.unsqueeze(ax), dim=ax).squeeze(ax)


# ================================================================================= checks
@dataclass
class Outcome:
    """What one run (one kernel) said: per formula, the first bad entry (or None); or an
    error for the whole run."""

    bad: dict = field(default_factory=dict)      # formula index -> detail
    error: Optional[str] = None
    compared: Counter = field(default_factory=Counter)   # formula index -> entries
    skipped: int = 0
    call: str = ""


@dataclass
class Group:
    index: int
    kind: str            # "forward" or "grad"
    reduction: str
    axis: int
    dtype: str
    batch: tuple
    n: int
    m: int
    k: Optional[int]
    seed: int            # the inputs' seed
    rng: random.Random
    inputs: Optional[Inputs] = None
    options: dict = field(default_factory=dict)    # sum_scheme= and dtype_acc= of the call
    spelling: tuple = (0, False)                   # the CALLS entry; dim counted from the end
    formulas: list = field(default_factory=list)   # concatenated (the weights, if weighted)
    f: Optional[Expr] = None                       # the shared formula of weighted groups
    exceptional: str = ""                          # the NaN / inf entries of the inputs

    def describe(self):
        k = f", K={self.k}" if self.k else ""
        options = "".join(f", {key}={value}" for key, value in self.options.items())
        nan = f"; NaN/inf inputs: {self.exceptional}" if self.exceptional else ""
        return (f"group {self.index} ({self.kind} {self.reduction}, axis={self.axis}, "
                f"batch={self.batch}, {self.dtype}, N={self.n}, M={self.m}{k}{options}; "
                f"inputs seed {self.seed}{nan})")


def assemble(group, formulas, ev):
    """(LazyTensor F, LazyTensor W or None, dense F, dense W or None, batch ndim): the
    concatenation of `formulas` (of the weights, for weighted reductions)."""
    memo = {}
    parts = [to_lazy(e, group.inputs.lazy, memo) for e in formulas]
    cat = parts[0] if len(parts) == 1 else LazyTensor.cat(parts)
    values = [ev(e) for e in formulas]
    shapes = [v.ref.shape[:-1] for v in values]
    if group.f is not None:
        fd = ev(group.f)
        shapes.append(fd.ref.shape[:-1])
    lead = torch.broadcast_shapes(*shapes)
    dense = D(*[torch.cat([getattr(v, p).expand(*lead, v.ref.shape[-1]) for v in values], -1)
                for p in ("ref", "low", "frag", "mag")])
    if group.f is None:
        return cat, None, dense, None, len(lead) - 2
    flazy = to_lazy(group.f, group.inputs.lazy, memo)
    fdense = D(*[getattr(fd, p).expand(*lead, 1) for p in ("ref", "low", "frag", "mag")])
    return flazy, cat, fdense, dense, len(lead) - 2


def reduce_lazy(group, F, W, nb, k):
    """Call the reduction through the public API; returns (spelling, result). The
    spelling is the group's (re-runs of part of a group call the same method)."""
    choice, from_end = group.spelling
    spelling, fn = CALLS[group.reduction][choice]
    d = F.nbatchdims + group.axis
    if F.nbatchdims != nb or from_end:
        d = group.axis - 3   # counted from the end: the same for any batch dims
    text = spelling.format(d=d, k=k)
    if group.options:
        extra = ", ".join(f"{key}={value!r}" for key, value in group.options.items())
        text = f"{text[:-1]}, {extra})"
    return text, fn(F, W, d, k, group.options)


def forward_run(group, formulas):
    """Reduce the concatenation of `formulas` once and compare it with the dense one."""
    out = Outcome()
    ev = Dense(group.inputs.env, group.dtype)
    try:
        F, W, Fd, Wd, nb = assemble(group, formulas, ev)
        ax, base = nb + group.axis, BASE[group.reduction]
        n_red = Fd.ref.shape[ax]
        k = min(group.k, n_red) if group.k else None
        out.call, result = reduce_lazy(group, F, W, nb, k)
    except Exception as err:  # noqa: BLE001  (any error is a finding)
        out.error = f"{type(err).__name__}: {err}"
        out.call = out.call or group.reduction
        return out
    exp64 = reference(base, Fd.ref, None if Wd is None else Wd.ref, ax, k)
    exp32 = reference(base, Fd.low, None if Wd is None else Wd.low, ax, k)
    scale = magnitude(base, Fd.mag, None if Wd is None else Wd.mag, ax)
    tol = tolerance(exp64, exp32, scale, group.dtype)
    frag = Fd.frag if Wd is None else (Fd.frag | Wd.frag)
    skip = frag.any(ax)
    if base in ("min", "max", "kmin") and not group.exceptional:
        skip = skip | ~torch.isfinite(Fd.ref).all(ax)
    if base == "kmin":
        skip = skip.unsqueeze(-2).expand(exp64.shape)
    values, indices = _split_result(group.reduction, result)
    bad = torch.zeros(exp64.shape, dtype=torch.bool)
    problem = _check_outputs(group, values, indices, exp64, base)
    if problem:
        out.error = problem
        return out
    if values is not None:
        got = values.detach().to(F64).reshape(exp64.shape)
        bad |= mismatches(got, exp64, tol, skip)
    if indices is not None:
        bad |= _index_mismatches(indices.reshape(exp64.shape), Fd, exp64, ax, n_red, base, tol,
                                 skip, group.dtype)
    _attribute(out, formulas, bad, skip, exp64, values, indices, tol)
    return out


def _split_result(reduction, result):
    if reduction in INDICES_ONLY:
        return None, result
    if reduction in WITH_INDICES:
        return result
    return result, None


def _check_outputs(group, values, indices, exp, base):
    """A message when the outputs' types, dtypes or shapes are wrong."""
    shape = tuple(exp.shape)
    if base == "kmin" and shape[-1] == 1:
        shape = shape[:-1]  # pykeops: (..., N, K) for a scalar formula
    for name, t, dtype in (("values", values, getattr(torch, group.dtype)),
                           ("indices", indices, torch.int64)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            return f"{name}: expected a tensor, got {type(t).__name__}"
        if t.dtype != dtype or tuple(t.shape) != shape:
            return f"{name}: expected {dtype} of shape {shape}, got {t.dtype} {tuple(t.shape)}"
    return None


def _index_mismatches(idx, Fd, exp64, ax, n_red, base, tol, skip, dtype):
    valid = (idx >= 0) & (idx < n_red)
    safe = idx.clamp(0, n_red - 1)
    kmin = base == "kmin"
    picked64, picked32 = gather(Fd.ref, safe, ax, kmin), gather(Fd.low, safe, ax, kmin)
    tol = tol + 8 * (picked32.to(F64) - picked64).abs() * (EPS[dtype] / EPS["float32"])
    bad = mismatches(picked64, exp64, tol, skip) | (~valid & ~skip)
    if kmin and idx.shape[-2] > 1:  # the K indices of one output are distinct
        same = idx.unsqueeze(-2) == idx.unsqueeze(-3)           # (..., K, K, D)
        bad |= (same.sum(-2) > 1) & ~skip
    return bad


def _attribute(out, formulas, bad, skip, exp, values, indices, tol):
    """Map bad components back to formulas; record the first bad entry of each."""
    start = 0
    for n, e in enumerate(formulas):
        sl = slice(start, start + e.dim)
        start += e.dim
        compared = int((~skip[..., sl]).sum())
        out.compared[n] = compared
        out.skipped += int(skip[..., sl].sum())
        where = bad[..., sl].nonzero()
        if len(where):
            pos = tuple(int(p) for p in where[0])
            full = pos[:-1] + (pos[-1] + sl.start,)
            got, exp, tol = [], exp.detach(), tol.detach()
            if values is not None:
                got.append(f"value {float(values.reshape(exp.shape)[full]):.10g}")
            if indices is not None:
                got.append(f"index {int(indices.reshape(exp.shape)[full])}")
            out.bad[n] = (f"at {full}: expected {float(exp[full]):.10g}, got "
                          f"{', '.join(got)} (tolerance {float(tol[full]):.3g}; "
                          f"{len(where)} bad entries)")


def grad_run(group, formulas):
    """torch.autograd.grad of the reduction of the concatenation of `formulas` with
    respect to every variable, against the same on the dense reference."""
    out = Outcome()
    ev = Dense(group.inputs.grad_env(), group.dtype)
    everything = formulas + ([group.f] if group.f is not None else [])
    names = sorted(frozenset().union(*[e.leaves for e in everything]))
    try:
        F, W, Fd, Wd, nb = assemble(group, formulas, ev)
        ax, base = nb + group.axis, BASE[group.reduction]
        k = min(group.k, Fd.ref.shape[ax]) if group.k else None
        out.call, result = reduce_lazy(group, F, W, nb, k)
        values = result[0] if isinstance(result, tuple) else result
        exp = {p: reference(base, getattr(Fd, p), None if Wd is None else getattr(Wd, p), ax, k)
               for p in ("ref", "low")}
        seed_gen = torch.Generator().manual_seed(group.seed + 1)
        G = torch.randn(exp["ref"].shape, generator=seed_gen, dtype=F64)
        args = [group.inputs.leaves[n].arg for n in names]
        got = torch.autograd.grad(values, args, G.to(values.dtype).reshape(values.shape),
                                  allow_unused=True)
    except Exception as err:  # noqa: BLE001
        out.error = f"{type(err).__name__}: {err}"
        return out
    refs = {p: torch.autograd.grad(exp[p], [getattr(ev.env[n], p) for n in names],
                                   G.to(exp[p].dtype), allow_unused=True)
            for p in ("ref", "low")}
    # One scale for all variables: a gradient that cancels to ~0 (d/dx of x.normalize()
    # in dim 1) is computed from terms as large as the others.
    scale = max([float(r.abs().max()) for r in refs["ref"] if r is not None] + [0.0])
    for n, name, g, r64, r32 in zip(range(len(names)), names, got, refs["ref"], refs["low"]):
        shape = group.inputs.leaves[name].shape
        g = torch.zeros(shape, dtype=F64) if g is None else g.to(F64).reshape(shape)
        r64 = torch.zeros(shape, dtype=F64) if r64 is None else r64
        r32 = torch.zeros(shape, dtype=F32) if r32 is None else r32
        tol = tolerance(r64, r32, scale, group.dtype) * 2
        bad = mismatches(g, r64, tol, torch.zeros(shape, dtype=torch.bool))
        out.compared[n] = g.numel()
        where = bad.nonzero()
        if len(where):
            pos = tuple(int(p) for p in where[0])
            out.bad[n] = (f"d/d{name} at {pos}: expected {float(r64[pos]):.10g}, got "
                          f"{float(g[pos]):.10g} (tolerance {float(tol[pos]):.3g}; "
                          f"{len(where)} bad entries)")
    return out


def grad_ready(group, e):
    """Whether a formula's gradient is well-defined on these inputs: no fragile entry and,
    for Min/Max/KMin, no near-tie along the reduced axis."""
    ev = Dense(group.inputs.env, group.dtype)
    value = ev(e)
    if bool(value.frag.any()):
        return False
    base = BASE[group.reduction]
    if base not in ("min", "max", "kmin") or e is group.f:
        return True
    ax = value.ref.dim() - 3 + group.axis
    if value.ref.shape[ax] < 2:
        return True
    k = min((group.k or 1) + 1, value.ref.shape[ax])
    v = value.ref if base != "max" else -value.ref
    top = torch.topk(v, k, dim=ax, largest=False).values
    gaps = top.diff(dim=ax)
    return bool((gaps > 1e-4 * (1 + v.abs().amax())).all())


# ================================================================================== groups
FORWARD_SLOTS, GRAD_SLOTS = len(REDUCTIONS), 3   # groups per period of the schedule


def schedule(index):
    """(kind, reduction) of group `index`: each period runs every reduction once, then
    three gradient groups (rotating over GRAD_REDUCTIONS)."""
    period, slot = divmod(index, FORWARD_SLOTS + GRAD_SLOTS)
    if slot < FORWARD_SLOTS:
        return "forward", REDUCTIONS[slot]
    turn = period * GRAD_SLOTS + slot - FORWARD_SLOTS
    return "grad", GRAD_REDUCTIONS[turn % len(GRAD_REDUCTIONS)]


def plan(count, forward_size=FORWARD_SIZE, grad_size=GRAD_SIZE):
    """The group indices and sizes that together hold `count` formulas."""
    out, total, index = [], 0, 0
    while total < count:
        full = forward_size if schedule(index)[0] == "forward" else grad_size
        size = min(full, count - total)
        out.append((index, size))
        total, index = total + size, index + 1
    return out


def draw_sizes(rng):
    """(outputs, reduced terms): mostly small, but also several tiles of j, several blocks
    of rows and enough work for the engine's OpenMP path."""
    x = rng.random()
    if x < 0.6:
        return tuple(rng.choice((1, 2, 3, 3, 4, 5, 6, 7, 8)) for _ in range(2))
    if x < 0.85:
        return rng.randint(9, 40), rng.randint(20, 120)
    if x < 0.9:
        return rng.randint(40, 90), rng.randint(40, 90)
    return (rng.randint(200, 700), rng.randint(2, 12)) if x < 0.95 else \
        (rng.randint(2, 12), rng.randint(200, 700))


def make_group(seed, index, size):
    """Group `index` of the run `seed`: its configuration, inputs and formulas, all drawn
    from its own random stream (so that --group G replays it alone)."""
    kind, reduction = schedule(index)
    rng = random.Random(f"{seed}/{index}")
    axis, dtype = rng.randrange(2), rng.choice(("float64", "float32"))
    n_out, n_red = draw_sizes(rng)
    batch = rng.choice(((), (), (2,), (2, 3)) if n_out * n_red <= 2000 else ((), (2,)))
    n, m = (n_out, n_red) if axis == 1 else (n_red, n_out)
    k = rng.randint(1, min(3, n_red)) if BASE[reduction] == "kmin" else None
    group = Group(index, kind, reduction, axis, dtype, batch, n, m, k, rng.getrandbits(31), rng)
    group.options = {name: value for name, value in
                     (("sum_scheme", rng.choice(SUM_SCHEMES)), ("dtype_acc", rng.choice(ACCS)))
                     if value != "auto"}
    group.spelling = (rng.randrange(len(CALLS[reduction])), rng.random() < 0.3)
    group.inputs = Inputs(group.seed, dtype, batch, n, m, requires_grad=(kind == "grad"))
    gen = Generator(rng, group.inputs, Dense(group.inputs.env, dtype), smooth=(kind == "grad"),
                    pool=group.inputs.pool(rng) if kind == "grad" else None)
    dims, depths = ((1, 2, 3, 4), (1, 2, 3, 4)) if kind == "forward" else ((1, 2, 3), (1, 2, 3))
    if kind == "grad" and BASE[reduction] in ("min", "max", "kmin"):
        dims = (1,)  # their backward compiles one kernel per component of the formula
    draw = lambda options, weights: rng.choices(options, weights[:len(options)])[0]  # noqa: E731
    if reduction in WEIGHTED:
        for _ in range(5):
            group.f = gen.expr(1, draw(depths, (2, 3.5, 3, 1.5)))
            if kind == "forward" or grad_ready(group, group.f):
                break
        else:
            group.f = group.inputs.leaf(rng, 1, False)
    for _ in range(size if kind == "forward" else 3 * size):
        dim, depth = draw(dims, (4, 2.5, 2, 1.5)), draw(depths, (2, 3.5, 3, 1.5))
        e = gen.positive(dim, depth) if reduction == "LogSumExpWeight" else gen.expr(dim, depth)
        if kind == "forward" or grad_ready(group, e):
            group.formulas.append(e)
        if len(group.formulas) == size:
            break
    return group


@dataclass
class Failure:
    kind: str
    group: str
    formula: str
    detail: str
    call: str
    code: str
    note: str = ""

    def __str__(self):
        lines = [f"FAIL [{self.kind}] {self.group}", f"  formula: {self.formula}",
                 f"  call:    {self.call}", f"  {self.detail}"]
        if self.note:
            lines.append(f"  {self.note}")
        lines += ["  variables:"] + [f"    {line}" for line in self.code.splitlines()]
        return "\n".join(lines)


@dataclass
class Tally:
    seed: int = 0
    formulas: int = 0            # checked: at least one entry compared
    skipped_formulas: int = 0    # every entry fragile, or dropped from a gradient group
    entries: int = 0
    skipped_entries: int = 0
    groups: Counter = field(default_factory=Counter)
    by_reduction: Counter = field(default_factory=Counter)
    by_op: Counter = field(default_factory=Counter)
    failures: list = field(default_factory=list)
    seconds: float = 0.0
    replay: str = ""
    exceptional: int = 0         # formulas checked again on inputs holding NaN / inf

    def report(self):
        lines = [f"lazykeops differential fuzz, seed {self.seed}: {self.formulas} formulas "
                 f"checked in {sum(self.groups.values())} groups "
                 f"({self.groups['forward']} forward, {self.groups['grad']} gradient), "
                 f"{self.seconds:.1f} s",
                 f"  entries compared {self.entries}, skipped {self.skipped_entries} "
                 f"(fragile); formulas skipped {self.skipped_formulas}; formulas checked "
                 f"again with NaN/inf inputs {self.exceptional}",
                 "  by reduction: " + ", ".join(f"{k} {v}" for k, v in
                                                sorted(self.by_reduction.items())),
                 "  by op: " + ", ".join(f"{k} {v}" for k, v in self.by_op.most_common())]
        kinds = Counter(f.kind for f in self.failures)
        lines.append(f"  failures: {len(self.failures)}" +
                     (" (" + ", ".join(f"{k} {v}" for k, v in kinds.items()) + ")"
                      if kinds else ""))
        if self.failures:
            lines.append(f"  replay one group: {self.replay}")
        return "\n".join(lines + [str(f) for f in self.failures])


def formula_text(group, e):
    if group.f is None:
        return e.text
    return f"F = {group.f.text}; W = {e.text}"


def run_group(group, size, tally, log=None):
    """Check one group, narrowing each failure down to one formula; half the forward
    groups are then checked again on inputs holding NaN or infinities (the same kernel)."""
    forward = group.kind == "forward"
    start, failures = time.time(), len(tally.failures)
    out = _check(group, tally)
    label = group.reduction if forward else f"grad {group.reduction}"
    for n, e in enumerate(group.formulas):
        checked = out.compared.get(n, 0) > 0 or out.error is not None
        tally.formulas += checked
        tally.skipped_formulas += not checked
        tally.entries += out.compared.get(n, 0)
        if checked:
            tally.by_reduction[label] += 1
            tally.by_op.update(_ops(group, e))
    if group.f is not None:
        tally.by_op.update(_ops(group, group.f))
    tally.skipped_entries += out.skipped
    tally.skipped_formulas += (size - len(group.formulas)) if not forward else 0
    tally.groups[group.kind] += 1
    if forward and group.rng.random() < 0.5:
        used = sorted(frozenset().union(*[e.leaves for e in group.formulas]) -
                      {n for n in group.inputs.leaves if n.endswith("k")})
        names = group.rng.sample(used, min(2, len(used)))
        inputs, notes = group.inputs.with_exceptions(group.rng, names)
        nan = _check(dataclasses.replace(group, inputs=inputs, exceptional=notes), tally)
        tally.exceptional += sum(1 for n in nan.compared.values() if n > 0)
    if log:
        log(f"{group.describe()}: {len(group.formulas)} formulas, "
            f"{len(tally.failures) - failures} failures, {time.time() - start:.1f} s")


def _check(group, tally):
    """Run a group once; narrow and record its failures. Returns the Outcome."""
    runner = forward_run if group.kind == "forward" else grad_run
    out = runner(group, group.formulas)
    if out.error or (out.bad and group.kind != "forward"):
        _narrow_whole(group, runner, out, tally)
        return out
    for n, detail in list(out.bad.items())[:3]:
        _narrow_one(group, runner, group.formulas[n], detail, out.call, tally)
    for n, detail in list(out.bad.items())[3:]:
        tally.failures.append(_failure(group, group.formulas[n], detail, out.call,
                                       "not re-run alone (more than 3 failures in group)"))
    return out


def _failure(group, e, detail, call, note=""):
    kind = ("index" if group.reduction in INDICES_ONLY else "value") \
        if group.kind == "forward" else "grad"
    if detail.startswith(("values:", "indices:")):
        kind = "output"
    elif detail.startswith("error:"):
        kind = "error" if group.kind == "forward" else "grad error"
    if group.exceptional:
        kind = f"NaN/inf {kind}"
    everything = [e] + ([group.f] if group.f is not None else [])
    return Failure(kind, group.describe(), formula_text(group, e), detail, call,
                   group.inputs.code(everything), note)


def _narrow_one(group, runner, e, detail, call, tally):
    alone = runner(group, [e])
    if alone.error:
        note = f"alone: {alone.error}"
    elif alone.bad:
        detail, note = alone.bad[0], "reproduces with the formula alone"
    else:
        note = "passes alone: fails only inside the concatenated group"
    tally.failures.append(_failure(group, e, detail, alone.call or call, note))


def _narrow_whole(group, runner, out, tally):
    """A run that raised (or a gradient run that failed): bisect to one formula."""
    budget = [10]
    found = _isolate(group, runner, group.formulas, budget)
    if not found:
        detail = f"error: {out.error}" if out.error else next(iter(out.bad.values()))
        tally.failures.append(Failure(
            "error" if out.error else "grad", group.describe(),
            f"{len(group.formulas)} formulas together (no single one fails alone): "
            + " ; ".join(formula_text(group, e) for e in group.formulas),
            detail, out.call, group.inputs.code(group.formulas)))
        return
    e, alone = found
    detail = f"error: {alone.error}" if alone.error else next(iter(alone.bad.values()))
    tally.failures.append(_failure(group, e, detail, alone.call,
                                   "isolated by bisection: fails alone"))


def _isolate(group, runner, formulas, budget):
    """(formula, outcome) of one formula that fails on its own, or None."""
    if len(formulas) == 1:
        budget[0] -= 1
        out = runner(group, formulas)
        return (formulas[0], out) if out.error or out.bad else None
    half = len(formulas) // 2
    for part in (formulas[:half], formulas[half:]):
        if budget[0] <= 0:
            return None
        if len(part) > 1:
            budget[0] -= 1
            out = runner(group, part)
            if not (out.error or out.bad):
                continue
        found = _isolate(group, runner, part, budget)
        if found:
            return found
    return None


def _ops(group, e):
    """The registry ops of a formula once lowered (each counted once per formula)."""
    try:
        (node,), _ = lower([to_lazy(e, group.inputs.lazy, {})])
    except Exception:  # noqa: BLE001  (a failure the checks report)
        return set()
    return {n.op for n in node.walk() if n.op != "Var"}


def run(seed, count, only=None, log=None, forward_size=FORWARD_SIZE, grad_size=GRAD_SIZE):
    """Check `count` formulas of the run `seed` (or only group `only`); returns a Tally."""
    tally, start = Tally(seed=seed), time.time()
    tally.replay = (f"python tests/fuzz/formula_fuzz.py --seed {seed} --count {count} "
                    f"--forward-size {forward_size} --grad-size {grad_size} --group G")
    for index, size in plan(count, forward_size, grad_size):
        if only is not None and index != only:
            continue
        try:
            group = make_group(seed, index, size)
        except Exception:  # noqa: BLE001  (the generator's own bug: say so, loudly)
            tally.failures.append(Failure("generator", f"group {index}", "", traceback
                                          .format_exc(limit=3), "", ""))
            continue
        run_group(group, size, tally, log)
    tally.seconds = time.time() - start
    return tally


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=300, help="formulas to check")
    parser.add_argument("--group", type=int, default=None, help="replay only this group")
    parser.add_argument("--forward-size", type=int, default=FORWARD_SIZE,
                        help="formulas per forward group (the CI test uses 16)")
    parser.add_argument("--grad-size", type=int, default=GRAD_SIZE,
                        help="formulas per gradient group (the CI test uses 5)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per group")
    args = parser.parse_args(argv)
    os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")  # hundreds of kernels: no chatter
    log = (lambda s: print(s, flush=True)) if args.verbose else None
    tally = run(args.seed, args.count, args.group, log, args.forward_size, args.grad_size)
    print(tally.report())
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
