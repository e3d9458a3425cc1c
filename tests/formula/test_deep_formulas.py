"""Formulas 10,000 nodes deep, as loops build them: every pass over the tree works.

No pass may recurse in Python (the default limit is 1,000 frames): building, text
rendering, variables, the reference evaluator, symbolic gradients (reverse and forward),
slicing, chunk planning and the C++ rendering. Nothing is compiled here: a kernel this
deep would take minutes to build.
"""

import pytest
import torch

from lazykeops.compile.codegen import render_source
from lazykeops.compile.spec import KernelSpec
from lazykeops.formula import autodiff, make, var
from lazykeops.formula.evaluate import evaluate
from lazykeops.formula.node import render
from lazykeops.formula.parser import parse_formula
from lazykeops.formula.slicing import components

DEPTH = 10_000
X, Y, E = var(0, 3, 0), var(1, 3, 1), var(2, 3, 2)
WIDE_X, WIDE_Y = var(0, 100, 0), var(1, 100, 1)  # chunked by both engines, with a tail


def sum_chain(x, y):
    """x + y + x + y + ...: DEPTH additions, each the left argument of the next."""
    f = x
    for k in range(DEPTH):
        f = make("Add", f, y if k % 2 == 0 else x)
    return f


def unary_chain(x):
    """Sin(Cos(Sin(... x))): DEPTH nested unary ops."""
    f = x
    for k in range(DEPTH):
        f = make("Sin" if k % 2 else "Cos", f)
    return f


CHAINS = {"sum": lambda: sum_chain(X, Y), "unary": lambda: unary_chain(X)}


@pytest.fixture(params=sorted(CHAINS))
def deep(request):
    return request.param, CHAINS[request.param]()


def test_text_reads_back(deep):
    _, f = deep
    text = str(f)
    assert render(f, 100).endswith("...") and len(render(f, 100)) == 103
    assert parse_formula(text, {"X": X, "Y": Y}) is f
    assert [v.params[0] for v in f.variables()] == [0, 1][:len(f.variables())]


def test_reference_value(deep):
    kind, f = deep
    x = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 1, 3)
    y = torch.linspace(0, 2, 12, dtype=torch.float64).reshape(1, 4, 3)
    value = evaluate(f, {0: x, 1: y}, torch.float64)
    if kind == "sum":
        expected = (DEPTH // 2 + 1) * x + (DEPTH // 2) * y
    else:
        expected = x
        for k in range(DEPTH):
            expected = torch.sin(expected) if k % 2 else torch.cos(expected)
    torch.testing.assert_close(torch.broadcast_to(value, (2, 4, 3)), expected.expand(2, 4, 3))


def test_gradients(deep):
    kind, f = deep
    g = autodiff.grad(f, X, E)
    d = autodiff.diff(f, X, E)
    assert {v.params[0] for v in g.variables()} <= {0, 1, 2}
    x = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 1, 3).requires_grad_()
    y = torch.linspace(0, 2, 12, dtype=torch.float64).reshape(1, 4, 3)
    e = torch.tensor([[[1.0, -2.0, 0.5]]], dtype=torch.float64)
    values = {0: x, 1: y, 2: e}
    if kind == "unary":  # torch autograd of the reference, itself 10,000 ops deep
        expected, = torch.autograd.grad((evaluate(f, values, torch.float64) * e).sum(), x)
    else:
        expected = (DEPTH // 2 + 1) * e
    for formula in (g, d):  # the vjp and the jvp of a componentwise map are equal
        value = evaluate(formula, values, torch.float64)
        torch.testing.assert_close(torch.broadcast_to(value, (2, 1, 3)),
                                   torch.broadcast_to(expected, (2, 1, 3)))


def test_slices_and_cpp_source(deep):
    kind, _ = deep
    f = sum_chain(WIDE_X, WIDE_Y) if kind == "sum" else unary_chain(WIDE_X)
    part = components(f, 3, 5)
    assert part.dim == 5 and part.op == f.op
    reduced = make("Sum", f)
    for target in ("cpu", "cuda"):
        spec = KernelSpec((reduced,), ((0, 100), (1, 100)), "Sum", None, "float64",
                          "auto", target)
        source = render_source(spec)
        assert source.count("T v") >= DEPTH
