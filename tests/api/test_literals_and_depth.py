"""Hostile formula strings: literals past the range of C++ integers or of float64,
exponents past int32, and formulas far deeper than Python's recursion limit. Each either
computes the value numpy computes in float64, or is refused with LazyKeOpsError before any
compile; none may crash, hang or give a silently wrong number."""

import numpy as np
import pytest

from lazykeops import LazyKeOpsError
from lazykeops.compile import build
from lazykeops.numpy import Genred

XY = ["X = Vi(1)", "Y = Vj(1)"]
RNG = np.random.default_rng(7)
X = RNG.uniform(0.5, 2.0, (6, 1))
Y = RNG.uniform(0.5, 2.0, (9, 1))


def row_sums(formula, x=X, y=Y):
    return Genred(formula, XY, axis=1)(x, y)[:, 0]


@pytest.mark.parametrize("formula, dense", [
    # C++ integer literals would wrap modulo 2^64 (to 0 for 2**64) or overflow.
    ("(X*Y) * 18446744073709551616", lambda x, y: x * y * 2.0 ** 64),
    ("X*Y + 99999999999999999999", lambda x, y: x * y + 1e20),
    ("ClampInt(X*Y, -9223372036854775807, 3)", lambda x, y: np.clip(x * y, -2.0 ** 63, 3)),
])
def test_integer_literals_past_64_bits(formula, dense):
    np.testing.assert_allclose(row_sums(formula), dense(X, Y.T).sum(1), rtol=1e-12)


def test_integer_exponents_past_32_bits():
    x = np.array([[-1.0], [1.0], [0.5], [1.0 + 1e-10], [-1.0 - 1e-10]])
    y = np.ones((1, 1))
    for n in (2 ** 31 + 8, -(2 ** 31 + 8), 2 ** 40 + 1):
        with np.errstate(over="ignore", divide="ignore"):
            expected = x[:, 0] ** float(n)
        np.testing.assert_allclose(row_sums(f"Pow(X, {n})", x, y), expected, rtol=1e-6)


@pytest.mark.parametrize("formula, words", [
    ("X * 1e400", "'1e400'"),
    ("X * -1e999", "'1e999'"),
    ("X + " + "9" * 400, "out of the float64 range"),
    ("Pow(X, 9223372036854775808)", "64-bit"),
    ("ClampInt(X, -99999999999999999999, 3)", "64-bit"),
    ("Round(X, 400)", "400 decimals"),
    ("Round(X, -400)", "-400 decimals"),
])
def test_literals_out_of_range_are_refused_before_compiling(formula, words):
    before = build.stats["builds"]
    with pytest.raises(LazyKeOpsError, match=words.replace("(", r"\(")):
        Genred(formula, XY, axis=1)
    assert build.stats["builds"] == before


def test_round_inside_the_range_rounds_halves_away_from_zero():
    x = np.array([[1.23456], [-2.5e-3], [0.0], [0.125]])  # as C's round and pykeops
    np.testing.assert_allclose(row_sums("Round(X, 2)", x, np.ones((1, 1))),
                               [1.23, -0.0, 0.0, 0.13], rtol=0, atol=1e-15)


def test_deeply_nested_formula_compiles_and_matches_numpy():
    depth = 1000  # a 10,000-deep one takes 15 s to compile: its parsing is tested in
    formula = "Sin(" * depth + "X*Y" + ")" * depth  # tests/formula/test_parser.py
    expected = X * Y.T
    for _ in range(depth):
        expected = np.sin(expected)
    np.testing.assert_allclose(row_sums(formula), expected.sum(1), rtol=1e-12)


def test_ten_thousand_summed_terms_in_a_string():
    formula = " + ".join(f"X*Y*{k % 7}" for k in range(10_000))
    factor = sum(k % 7 for k in range(10_000))
    np.testing.assert_allclose(row_sums(formula), (X * Y.T).sum(1) * factor, rtol=1e-12)
