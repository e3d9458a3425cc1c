"""The random formula generator of the differential fuzz.

This module owns `Generator`: random formulas of a given dimension on one group's inputs,
built node by node (each node's range is measured on the actual inputs, so that every op's
arguments are kept inside its domain: `arg`, `positive`, `nonzero`, `unit`, `integer`,
and values above LIMIT squashed by `bounded`). Which node to build next is the rule
table's choice (fuzz_rules.RULES); the ops themselves are in fuzz_ops.
"""

import math

import torch

import lazykeops.torch as lkt
from fuzz_dense import D, at_half, at_integer, pointwise
from fuzz_ops import BINARY, LIMIT, MARGIN, NUMBERS, UNARY, Expr, _cat_frag, _round
from fuzz_rules import RULES

LazyTensor = lkt.LazyTensor


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
