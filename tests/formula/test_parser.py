"""Tests of the string front end: alias strings and formula strings to interned nodes.

Nodes are interned, so a parse result is compared to the expected tree with `is`.
"""

import pytest

from lazykeops.errors import LazyKeOpsError
from lazykeops.formula import CAT_I, CAT_J, CAT_P, OPS, make, var
from lazykeops.formula.aliases import Alias, alias_vars, parse_aliases, parse_output_alias
from lazykeops.formula.parser import parse_formula, tokenize

G, X, Y, B = var(0, 1, CAT_P), var(1, 3, CAT_I), var(2, 3, CAT_J), var(3, 2, CAT_J)
U, V = var(4, 3, CAT_I), var(5, 3, CAT_J)
ALIASES = {"G": G, "X": X, "Y": Y, "B": B, "U": U, "V": V}


def parse(text):
    return parse_formula(text, ALIASES)


def cst(n):
    return make("IntCst", params=(n,))


def flt(x):
    return make("FloatCst", params=(x,))


def raises(text, *fragments, aliases=None):
    """Parsing `text` fails; the message names the formula and every fragment."""
    with pytest.raises(LazyKeOpsError) as info:
        parse_formula(text, ALIASES if aliases is None else aliases)
    message = str(info.value)
    assert text in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ---------------------------------------------------------------- aliases

def test_seed_aliases_implicit_positions():
    aliases = parse_aliases(["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"])
    assert aliases == [Alias("G", 0, CAT_P, 1), Alias("X", 1, CAT_I, 3),
                       Alias("Y", 2, CAT_J, 3), Alias("B", 3, CAT_J, 2)]
    assert alias_vars(aliases) == {"G": G, "X": X, "Y": Y, "B": B}


@pytest.mark.parametrize("text, expected", [
    ("X = Vi(0, 3)", Alias("X", 0, CAT_I, 3)),
    ("X=Vj(3)", Alias("X", 0, CAT_J, 3)),
    ("  X  =  Pm ( 2 , 4 )  ", Alias("X", 2, CAT_P, 4)),
    ("V = Var(5, 2, 1)", Alias("V", 5, CAT_J, 2)),
    ("P = Var(1, 4, 2)", Alias("P", 1, CAT_P, 4)),
    ("x_1 = Vx(3)", Alias("x_1", 0, CAT_I, 3)),
    ("y = Vy(7, 3)", Alias("y", 7, CAT_J, 3)),
])
def test_alias_forms(text, expected):
    assert parse_aliases([text]) == [expected]


def test_single_alias_string_and_mixed_positions():
    assert parse_aliases("X = Vi(3)") == [Alias("X", 0, CAT_I, 3)]
    assert parse_aliases(["X = Vi(3)", "Y = Vj(5, 3)", "Z = Vj(3)"]) == [
        Alias("X", 0, CAT_I, 3), Alias("Y", 5, CAT_J, 3), Alias("Z", 2, CAT_J, 3)]


@pytest.mark.parametrize("aliases, culprit, detail", [
    (["X Vi(3)"], "X Vi(3)", "malformed"),
    (["X = Vi(3"], "X = Vi(3", "malformed"),
    (["X = Vi(1.5)"], "X = Vi(1.5)", "malformed"),
    (["X = Vk(3)"], "X = Vk(3)", "unknown category 'Vk'"),
    (["X = Var(0, 3, 5)"], "X = Var(0, 3, 5)", "unknown category 5"),
    (["X = Var(0, 3)"], "X = Var(0, 3)", "Var takes"),
    (["X = Vi(1, 2, 3)"], "X = Vi(1, 2, 3)", "takes (dim) or (pos, dim)"),
    (["X = Vi(0)"], "X = Vi(0)", "dimension must be >= 1"),
    (["X = Vi(-1, 3)"], "X = Vi(-1, 3)", "position must be >= 0"),
    (["X = Vi(3)", "X = Vj(3)"], "X = Vj(3)", "already defined"),
    (["X = Vi(1, 3)", "Y = Vj(3)"], "Y = Vj(3)", "position 1 is already taken"),
])
def test_alias_errors(aliases, culprit, detail):
    formula = "SqDist(X, Y)"
    with pytest.raises(LazyKeOpsError) as info:
        parse_aliases(aliases, formula)
    message = str(info.value)
    assert f"'{culprit}'" in message and formula in message and detail in message


def test_output_alias():
    assert parse_output_alias("A = Vi(2)") == Alias("A", -1, CAT_I, 2)
    assert parse_output_alias("A = Vx(2)") == Alias("A", -1, CAT_I, 2)
    assert parse_output_alias("A = Vj(0, 4)") == Alias("A", -1, CAT_J, 4)
    with pytest.raises(LazyKeOpsError, match="output alias 'A = Pm"):
        parse_output_alias("A = Pm(2)", "Exp(X)")
    with pytest.raises(LazyKeOpsError, match="malformed.*"):
        parse_output_alias("A == Vi(2)", "Exp(X)")


# ---------------------------------------------------------------- formulas

def test_seed_formula():
    aliases = alias_vars(parse_aliases(["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)",
                                        "B = Vj(2)"]))
    node = parse_formula("Exp(-G*SqDist(X,Y)) * B", aliases)
    expected = make("Mult", make("Exp", make("Mult", make("Minus", G),
                                             make("SqDist", X, Y))), B)
    assert node is expected
    assert node.dim == 2


def test_keops_2018_formula():
    node = parse("Exp(-G*SqDist(X,Y)) * ( IntCst(1) + Pow((U,V), 2) )")
    gauss = make("Exp", make("Mult", make("Minus", G), make("SqDist", X, Y)))
    rest = make("Add", cst(1), make("Pow", make("Scalprod", U, V), params=(2,)))
    assert node is make("Mult", gauss, rest)


def test_parse_accepts_list_of_alias():
    aliases = parse_aliases(["X = Vi(3)", "Y = Vj(3)"])
    assert parse_formula("SqDist(X,Y)", aliases) is make("SqDist", var(0, 3, 0),
                                                         var(1, 3, 1))


@pytest.mark.parametrize("text, expected", [
    ("X + Y", make("Add", X, Y)),
    ("X - Y", make("Subtract", X, Y)),
    ("X * Y", make("Mult", X, Y)),
    ("X / Y", make("Divide", X, Y)),
    ("X - Y - G", make("Subtract", make("Subtract", X, Y), G)),      # left-assoc
    ("X + Y * G", make("Add", X, make("Mult", Y, G))),
    ("(X + Y) * G", make("Mult", make("Add", X, Y), G)),
    ("X / Y / G", make("Divide", make("Divide", X, Y), G)),
    ("-X", make("Minus", X)),
    ("--X", make("Minus", make("Minus", X))),
    ("X * -Y", make("Mult", X, make("Minus", Y))),
    ("-3", cst(-3)),
    ("2 - -3*G", make("Subtract", cst(2), make("Mult", cst(-3), G))),
    ("-2.5", flt(-2.5)),
])
def test_arithmetic(text, expected):
    assert parse(text) is expected


@pytest.mark.parametrize("text, expected", [
    ("X**2", make("Square", X)),
    ("X**3", make("Pow", X, params=(3,))),
    ("X**-1", make("Pow", X, params=(-1,))),
    ("X**0.5", make("Sqrt", X)),
    ("X**-0.5", make("Rsqrt", X)),
    ("X**1.5", make("Powf", X, flt(1.5))),
    ("X**G", make("Powf", X, G)),
    ("X**(G+1)", make("Powf", X, make("Add", G, cst(1)))),
    ("-X**2", make("Minus", make("Square", X))),                     # like Python
    ("G**2**3", make("Powf", G, make("Pow", cst(2), params=(3,)))),  # right-assoc
    ("2*X**2", make("Mult", cst(2), make("Square", X))),
])
def test_power(text, expected):
    assert parse(text) is expected


@pytest.mark.parametrize("text, expected", [
    ("(X|Y)", make("Scalprod", X, Y)),
    ("(X + Y | Y)", make("Scalprod", make("Add", X, Y), Y)),
    ("(X, Y)", make("Scalprod", X, Y)),
    ("Pow((U,V), 2)", make("Pow", make("Scalprod", U, V), params=(2,))),
    ("Exp(-(X|Y))", make("Exp", make("Minus", make("Scalprod", X, Y)))),
])
def test_scalar_product(text, expected):
    assert parse(text) is expected


@pytest.mark.parametrize("text, expected", [
    ("1", cst(1)),
    ("1.5", flt(1.5)),
    (".5", flt(0.5)),
    ("1e-3", flt(1e-3)),
    ("2.5e+3", flt(2500.0)),
    ("3.", flt(3.0)),
    ("X * 2", make("Mult", X, cst(2))),
    ("IntCst(4) + IntInv(2) + RatCst(2, 3)",
     make("Add", make("Add", cst(4), make("IntInv", params=(2,))),
          make("RatCst", params=(2, 3)))),
    ("FloatCst(-0.25)", flt(-0.25)),
    ("Zero(3)", make("Zero", params=(3,))),
])
def test_literals_and_constants(text, expected):
    assert parse(text) is expected


@pytest.mark.parametrize("text, expected", [
    ("Var(1,3,0)", X),
    ("Vi(1,3) + Vx(1, 3)", make("Add", X, X)),
    ("Vj(2,3) - Vy(2,3)", make("Subtract", Y, Y)),
    ("Pm(0,1) * Var(0, 1, 2)", make("Mult", G, G)),
    ("Exp(Vi(7, 2))", make("Exp", var(7, 2, CAT_I))),
])
def test_inline_variables(text, expected):
    assert parse(text) is expected
    assert parse_formula(text, {}) is expected


@pytest.mark.parametrize("text, expected", [
    ("Exp(X)", make("Exp", X)),
    ("Clamp(X, Y, G)", make("Clamp", X, Y, G)),
    ("Pow(X, -2)", make("Pow", X, params=(-2,))),
    ("ClampInt(X, -1, 1)", make("ClampInt", X, params=(-1, 1))),
    ("Round(X * G, 2)", make("Round", make("Mult", X, G), params=(2,))),
    ("Exp(2)", make("Exp", cst(2))),
    ("Exp(-2)", make("Exp", cst(-2))),
    (" Exp ( - G * SqDist ( X , Y ) ) ", make("Exp", make("Mult", make("Minus", G),
                                                           make("SqDist", X, Y)))),
])
def test_calls(text, expected):
    assert parse(text) is expected


def test_indexing_and_tuple_params():
    for op in ("Elem", "Extract", "TensorDot", "Concat"):
        if op not in OPS:
            pytest.skip(f"{op} not registered yet")
    assert parse("X[1]") is make("Elem", X, params=(1,))
    assert parse("X[0]**2") is make("Square", make("Elem", X, params=(0,)))
    assert parse("-X[2]") is make("Minus", make("Elem", X, params=(2,)))
    assert parse("Elem(X, 1)") is parse("X[1]")
    assert parse("Extract(X, 1, 2)") is make("Extract", X, params=(1, 2))
    assert parse("Concat(X, Y)[4]") is make("Elem", make("Concat", X, Y), params=(4,))
    a, b = var(0, 6, CAT_I), var(1, 3, CAT_J)
    td = parse_formula("TensorDot(A, B, Ind(2, 3), Ind(3), Ind(1), Ind(0))",
                       {"A": a, "B": b})
    assert td is make("TensorDot", a, b, params=((2, 3), (3,), (1,), (0,)))
    assert td.dim == 2


# ---------------------------------------------------------------- round trip

@pytest.mark.parametrize("text", [
    "Exp(-G*SqDist(X,Y)) * B",
    "Exp(-G*SqDist(X,Y)) * ( IntCst(1) + Pow((U,V), 2) )",
    "X**-0.5 + X**1.5 - 3 * ClampInt(X, -1, 1) / FloatCst(1e-20)",
    "Round(-X, 2) + FloatCst(0.1) * IntCst(-4)",
    "RatCst(2, 3) * IntInv(5) + Zero(3)",
])
def test_str_round_trip(text):
    node = parse(text)
    assert parse_formula(str(node), {}) is node


def test_str_round_trip_tuple_params():
    if "TensorDot" not in OPS:
        pytest.skip("TensorDot not registered yet")
    node = make("TensorDot", var(0, 6, 0), var(1, 3, 1), params=((2, 3), (3,), (1,), (0,)))
    assert "Ind(" in str(node)
    assert parse_formula(str(node), {}) is node
    elem = make("Elem", node, params=(1,))
    assert parse_formula(str(elem), {}) is elem


# ---------------------------------------------------------------- errors

def test_unknown_operation_suggests():
    raises("Expp(-G*SqDist(X,Y))", "unknown operation 'Expp'", "Exp")
    raises("X + SqDst(X, Y)", "'SqDst'", "SqDist")
    raises("Frobnicate(X)", "'Frobnicate'")


def test_unknown_variable_lists_aliases():
    message = raises("Exp(-G*SqDist(X,Z))", "unknown variable 'Z'")
    assert "X" in message and "Y" in message and "G" in message
    raises("W", "'W'", "none", aliases={})


def test_wrong_arity():
    raises("Exp(X, Y)", "'Exp'", "expected 1 formula argument", "got 2")
    raises("SqDist(X)", "'SqDist'", "expected 2")
    raises("Pow(X)", "'Pow'", "1 parameter", "got 1")
    raises("Pow(X, 2, 3)", "'Pow'", "got 3")
    raises("Exp()", "'Exp'", "got 0")


def test_formula_where_integer_expected_and_vice_versa():
    raises("Pow(X, Y)", "'Y'", "parameter 'n' of Pow")
    raises("Pow(X, 1+1)", "'1+1'", "integer")
    raises("Pow(X, 2.5)", "'2.5'", "integer")
    raises("Exp(Ind(1, 2))", "'Ind(1, 2)'", "formula")
    raises("Ind(1) + X", "Ind", "formula")
    raises("X[Y]", "'Y'", "integer")
    raises("Vi(3) + X", "'Vi'", "(pos, dim)")


@pytest.mark.parametrize("text, culprit, column", [
    ("(X + Y", "end of formula", 6),
    ("X + Y)", "')'", 5),
    ("Exp(X", "end of formula", 5),
    ("X +", "end of formula", 3),
    ("X * * Y", "'*'", 4),
    ("X Y", "'Y'", 2),
    ("X | Y", "'|'", 2),
    ("X $ Y", "'$'", 2),
    ("Exp(X,)", "')'", 6),
])
def test_syntax_errors_show_position(text, culprit, column):
    message = raises(text, culprit, f"position {column}")
    assert "\n    " + " " * column + "^" in message


def test_dimension_mismatch_names_formula():
    message = raises("Exp(-G*SqDist(X,Y)) * (X + B)", "dimension mismatch in Add",
                     "in formula 'Exp(-G*SqDist(X,Y)) * (X + B)'")
    assert "3, 2" in message
    raises("SqDist(X, B)", "SqDist", "3, 2")
    raises("Var(0, 0, 0)", "Var", "dimension")


def test_empty_and_non_string():
    with pytest.raises(LazyKeOpsError, match="empty"):
        parse_formula("  ", ALIASES)
    with pytest.raises(LazyKeOpsError, match="string"):
        parse_formula(3, ALIASES)


def test_no_python_evaluation():
    # Python syntax outside the language is rejected, never evaluated.
    raises("__import__(os)", "unknown operation '__import__'")
    raises("Exp(X).real", "'.'", "position 6")
    raises("X if Y else G", "'if'")
    with pytest.raises(LazyKeOpsError):
        tokenize("X; Y")


def test_formulas_deeper_than_the_recursion_limit_parse():
    x = var(0, 1, 0)
    assert parse_formula("(" * 5000 + "X" + ")" * 5000, {"X": x}) is x
    nested = parse_formula("Exp(" * 10_000 + "X" + ")" * 10_000, {"X": x})
    assert len(nested.walk()) == 10_001 and nested.op == "Exp"
    assert str(nested) == "Exp(" * 10_000 + "Var(0,1,0)" + ")" * 10_000
    total = parse_formula(" + ".join(["X"] * 10_000), {"X": x})
    assert len(total.walk()) == 10_000  # X, then 9,999 additions
