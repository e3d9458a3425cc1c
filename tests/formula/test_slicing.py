"""formula.slicing.components: every slice of a formula equals the same components of the
whole formula (reference evaluator, float64), and the slice of a componentwise formula
reads only slices of its variables."""

import pytest
import torch

from lazykeops.formula import var
from lazykeops.formula.aliases import parse_aliases
from lazykeops.formula.evaluate import evaluate
from lazykeops.formula.parser import parse_formula
from lazykeops.formula.slicing import components

ALIASES = ["X = Vi(6)", "Y = Vj(6)", "B = Vj(9)", "G = Pm(1)", "U = Vj(3)", "M = Pm(18)"]
FORMULAS = [
    "Exp(-G * SqDist(X, Y)) * B",                     # scalar times a wide variable
    "X * Y + Sin(X) / (2 + Cos(Y))",                  # componentwise throughout
    "Concat(X - Y, Exp(-SqDist(X,Y)) * B)",           # a slice across the Concat
    "Extract(Concat(B, X), 4, 8)",
    "ExtractT(U * G, 2, 9) + B",                      # a slice across zeros and U
    "MatVecMult(M, U) + Elem(B, 1)",                  # a matrix product: sliced after
    "IfElse(X - Y, X, Y*G)",
]


def nodes_and_values():
    parsed = parse_aliases(ALIASES)
    nodes = {a.name: var(a.pos, a.dim, a.cat) for a in parsed}
    g = torch.Generator().manual_seed(0)
    shapes = {0: (4, 1), 1: (1, 5), 2: (1, 1)}
    values = {a.pos: torch.randn(*shapes[a.cat], a.dim, generator=g, dtype=torch.float64)
              for a in parsed}
    return nodes, values


@pytest.mark.parametrize("text", FORMULAS)
def test_every_slice_matches_the_whole_formula(text):
    nodes, values = nodes_and_values()
    f = parse_formula(text, nodes)
    whole = evaluate(f, values, torch.float64).expand(4, 5, f.dim)
    for start in range(f.dim):
        for length in range(1, f.dim - start + 1):
            part = components(f, start, length)
            assert part.dim == length
            got = evaluate(part, values, torch.float64).expand(4, 5, length)
            torch.testing.assert_close(got, whole[..., start:start + length])


def test_a_componentwise_slice_reads_slices_of_its_variables():
    nodes, _ = nodes_and_values()
    part = components(parse_formula("Exp(-G * SqDist(X, Y)) * B", nodes), 3, 4)
    extracts = [n for n in part.walk() if n.op == "Extract"]
    assert [(n.args[0].op, n.params) for n in extracts] == [("Var", (3, 4))]
