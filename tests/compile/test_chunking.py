"""The chunk planner (compile/chunking.py): which sums over wide variables the CUDA engine
computes chunk by chunk, and when it must not."""

from lazykeops.compile.chunking import CHUNK, PART_POS, plan_chunks, restricted_sums
from lazykeops.formula import var
from lazykeops.formula.aliases import parse_aliases
from lazykeops.formula.parser import parse_formula


def plan(formula, aliases, dtype="float32"):
    parsed = parse_aliases(aliases)
    nodes = {a.name: var(a.pos, a.dim, a.cat) for a in parsed}
    return plan_chunks((parse_formula(formula, nodes),), tuple((a.cat, a.dim) for a in parsed),
                       dtype)


WIDE = ["X = Vi(1000)", "Y = Vj(1000)", "B = Vj(2)", "W = Pm(1000)", "G = Pm(1)"]


def test_narrow_formulas_are_not_chunked():
    narrow = ["X = Vi(160)", "Y = Vj(160)", "B = Vj(2)"]
    assert plan("Exp(-SqDist(X,Y)) * B", narrow) is None
    # float64 takes two registers per component: 160 of them are wide
    assert plan("Exp(-SqDist(X,Y)) * B", narrow, "float64") is not None


def test_sums_over_wide_variables_are_chunked_and_replaced_by_placeholders():
    p = plan("Exp(-G * SqDist(X,Y) + Sum(W * X * Y)) * B", WIDE)
    assert p.width == 1000 and p.wide == {0, 1}
    assert [s.op for s in p.sums] == ["SqDist", "Sum"]
    rest_vars = {v.params[0] for v in p.rest[0].variables()}
    assert rest_vars == {2, 4, PART_POS, PART_POS + 1}   # B, G and the two sums


def test_the_lazytensor_spelling_of_a_distance_is_chunked():
    p = plan("Sum(Square(X - Y))", WIDE)
    assert [s.op for s in p.sums] == ["Sum"]


def test_a_wide_variable_used_outside_a_sum_prevents_chunking():
    assert plan("Exp(-SqDist(X,Y)) * Elem(X, 0)", WIDE) is None
    assert plan("SqDist(X,Y) * Sum(X)", WIDE) is not None
    # Norm2 is not additive over components, but the square root of a sum that is.
    p = plan("Norm2(X - Y)", WIDE)
    assert [s.op for s in p.sums] == ["SqNorm2"] and p.rest[0].op == "Sqrt"


def test_restricted_sums_read_chunks_of_the_wide_leaves():
    p = plan("Sum(W * X * Y) + SqDist(X, Y)", WIDE)
    for length in (CHUNK, 1000 % CHUNK):
        for node in restricted_sums(p, length):
            dims = {v.params[0]: v.dim for v in node.variables()}
            assert all(dims[pos] == length for pos in (0, 1) if pos in dims)
            assert dims.get(3, length) == length    # W, a wide parameter
