"""What the differential fuzz builds formulas from: the Expr node and the op tables.

This module owns `Expr` (a formula node: its public-API spelling, how to build its
LazyTensor from its children's, how to compute it densely) and `to_lazy`; the torch
versions of the ops that torch spells differently from the library's convention
(`_round`, `_rsqrt`, ..., `_bspline`, `_cat_frag`); the tables of elementwise unary and
binary ops and of vector-to-scalar ops (spellings, torch function, argument domain, kink,
smoothness), which fuzz_generator and fuzz_rules draw from; and the domain constants
LIMIT and MARGIN that keep every op's arguments inside its domain.
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from fuzz_dense import (at_branch_cut, at_equal, at_integer, at_norm_zero, at_tie,
                        at_zero, pointwise)

LIMIT = 40.0        # largest |value| a subexpression may take before it is squashed
MARGIN = 0.1        # how far "positive" and "nonzero" arguments stay from 0


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
