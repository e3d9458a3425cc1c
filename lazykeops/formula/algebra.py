"""Short constructors for writing derivative rules with formula nodes.

`mul(g, x)` reads better than `make("Mult", g, x)` in the vjp tables of the family
modules. The few algebraic shortcuts here (x * 1 = x, x + 0 = x with None as zero) keep
gradient formulas small; they never change a value.
"""

from .node import make


def cst(n):
    """An integer constant."""
    return make("IntCst", params=(n,))


def flt(x):
    """A float constant."""
    return make("FloatCst", params=(float(x),))


def _is_cst(node, value):
    return node.op == "IntCst" and node.params[0] == value


def mul(a, b):
    if _is_cst(a, 1):
        return b
    if _is_cst(b, 1):
        return a
    return make("Mult", a, b)


def div(a, b):
    return make("Divide", a, b)


def add(a, b):
    return make("Add", a, b)


def sub(a, b):
    return make("Subtract", a, b)


def neg(a):
    return make("Minus", a)


def op(name, *args, params=()):
    return make(name, *args, params=params)
