"""Interning: equal formulas are one object while alive, and dropped formulas are freed."""

import gc

from lazykeops.formula import make, node, var
from lazykeops.formula.parser import parse_formula


def _chain(x, length, salt):
    """A formula of `length` fresh nodes over x (the salt keeps them new to the table)."""
    f = x
    for k in range(length):
        f = make("Exp", f) if k % 2 else make("Add", f, make("IntCst", params=(salt + k,)))
    return f


def test_equal_formulas_are_identical():
    aliases = {"X": var(0, 3, 0), "Y": var(1, 3, 1)}
    a = parse_formula("Exp(-SqDist(X, Y)) * X", aliases)
    b = make("Mult", make("Exp", make("Minus", make("SqDist", var(0, 3, 0), var(1, 3, 1)))),
             var(0, 3, 0))
    assert a is b
    assert parse_formula("Exp(-SqDist(X, Y)) * X", aliases) is a


def test_dropped_formulas_are_freed():
    x = var(0, 3, 0)
    gc.collect()
    before = len(node._INTERNED)
    f = _chain(x, 20_000, salt=10 ** 9)  # 10,000 deep: the release cascades all the way
    assert len(node._INTERNED) >= before + 30_000
    kept = f.args[0].args[0]  # a live subformula keeps itself and its own subgraph
    del f
    gc.collect()
    assert len(node._INTERNED) < before + 30_000 - 2
    assert node._INTERNED.get((kept.op, kept.args, kept.params)) is kept
    del kept
    gc.collect()
    assert len(node._INTERNED) <= before
    assert node._INTERNED.get(("Var", (), (0, 3, 0))) is x
