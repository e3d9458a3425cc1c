"""Tables defined once and read by several passes: the symbolic derivatives by name
(autodiff.DERIVATIVES) and the placeholder variable positions (node.py)."""

import pytest

from lazykeops.compile import chunking, codegen
from lazykeops.formula import autodiff, make, node, var
from lazykeops.formula.parser import parse_formula

X, Y = var(0, 3, 0), var(1, 3, 1)
ALIASES = {"X": X, "Y": Y, "U": var(2, 3, 2), "E": var(3, 1, 2)}
FORMULA = make("Exp", make("Minus", make("SqDist", X, Y)))
CALLS = {"Grad": "Grad(Exp(-SqDist(X, Y)), X, E)", "Diff": "Diff(Exp(-SqDist(X, Y)), X, U)",
         "GradMatrix": "GradMatrix(Exp(-SqDist(X, Y)), X)",
         "Divergence": "Divergence(Exp(-SqDist(X, Y)) * X, X)",
         "Laplacian": "Laplacian(Exp(-SqDist(X, Y)), X)"}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_the_parser_reads_the_derivative_table(name):
    f = make("Mult", FORMULA, X) if name == "Divergence" else FORMULA
    extra = {"Grad": [ALIASES["E"]], "Diff": [ALIASES["U"]]}.get(name, [])
    assert parse_formula(CALLS[name], ALIASES) is autodiff.DERIVATIVES[name](f, X, *extra)


def test_the_derivative_table_is_read_only():
    assert sorted(autodiff.DERIVATIVES) == sorted(CALLS)
    with pytest.raises(TypeError):
        autodiff.DERIVATIVES["TraceOperator"] = None


def test_placeholder_positions_are_defined_once():
    assert chunking.PART_POS is node.PART_POS and codegen.SCALAR_POS is node.SCALAR_POS
    # Each kind has its own range: a base plus an index far below the next base.
    assert node.SCALAR_POS < node.PART_POS < node.PLACEHOLDER_POS
    assert node.PART_POS - node.SCALAR_POS >= 1 << 20
    d = autodiff.diff(FORMULA, X, ALIASES["U"])
    assert all(v.params[0] < node.SCALAR_POS for v in d.variables())
