"""The inputs of the differential fuzz: the variables of one group, and their NaN / inf
variants.

This module owns `Inputs`: seeded i-variables, j-variables and parameters of dims 1-4
(values in [-1.5, 1.5] or in [0.5, 2], sprinkled with exact special values), knot vectors,
each with the group's batch dims, some of them or none, spelled through one of the public
constructors; their LazyTensors and dense values; copies holding NaN or infinities; and
the code that rebuilds them in a failure report.
"""

import copy
import dataclasses
import random
from dataclasses import dataclass
from typing import Callable

import torch

import lazykeops.torch as lkt
from fuzz_dense import D, F32, F64
from fuzz_ops import Expr

LazyTensor, Vi, Vj, Pm = lkt.LazyTensor, lkt.Vi, lkt.Vj, lkt.Pm

KNOT_DIMS = {"i": 6, "j": 7, "p": 5}
SPECIAL = {"any": (0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 0.25), "pos": (0.5, 1.0, 1.5, 2.0)}
EXCEPTIONAL = (float("nan"), float("inf"), -float("inf"))
PREFIX = {"i": "X", "j": "Y", "p": "P"}


@dataclass(eq=False)
class Leaf:
    """One variable (named by its key in Inputs.leaves): `arg` is the tensor given to the
    LazyTensor constructor (`code` spells it), `shape` its canonical (..., N|1, M|1, D)
    shape for the dense side."""

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
        self.leaves[name] = Leaf(arg, shape, f"{name} = {code.format(var)}  "
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
        data = (f"data = fuzz_inputs.Inputs({self.seed}, {self.dtype!r}, {self.batch}, "
                f"{self.n}, {self.m}).leaves   # x2 = data['X2'].arg, ...")
        return "\n".join([data] + [self.leaves[n].code for n in names])
