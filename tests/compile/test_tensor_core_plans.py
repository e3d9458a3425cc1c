"""The tensor-core planner (compile/tensor_cores.py): which formulas the CUDA engine
computes through a matrix product of their wide i- and j-variables, and which it must not."""

import pytest

import torch

import lazykeops
from lazykeops import LazyKeOpsError
from lazykeops.compile.tensor_cores import mode_for, plan_tensor_cores
from lazykeops.formula import var
from lazykeops.formula.aliases import parse_aliases
from lazykeops.formula.parser import parse_formula

ALIASES = ["X = Vi(64)", "Y = Vj(64)", "B = Vj(2)", "G = Pm(1)", "W = Pm(64)", "Z = Vi(64)"]


def plan(formula, aliases=ALIASES, mode="tf32"):
    parsed = parse_aliases(aliases)
    nodes = {a.name: var(a.pos, a.dim, a.cat) for a in parsed}
    return plan_tensor_cores((parse_formula(formula, nodes),),
                             tuple((a.cat, a.dim) for a in parsed), mode)


@pytest.mark.parametrize("formula, kind, scale", [
    ("Exp(-G * SqDist(X,Y)) * B", "dist", 1.0),
    ("Exp(-SqNorm2(X - Y)) * B", "dist", 1.0),
    ("Sum(Square(X - Y))", "dist", 1.0),
    ("Sum(Square(Y - X)) / IntCst(2)", "dist", 1.0),
    ("Sum(IntCst(3) * (X - Y) * (X - Y))", "dist", 3.0),
    ("Sqrt(IntCst(5) * Norm2(X - Y)) * B", "dist", 1.0),
    ("(X | Y) * B", "dot", 1.0),
    ("Sum(X * Y * IntCst(-2))", "dot", -2.0),
])
def test_contractions_of_x_and_y_are_planned_with_their_kind_and_scale(formula, kind, scale):
    p = plan(formula)
    assert p is not None and (p.x, p.y) == (0, 1)
    assert p.kinds == (kind,) and p.scales == (scale,)
    assert p.distances == (kind == "dist")


@pytest.mark.parametrize("formula, kind, scale", [
    ("Exp(-WeightedSqDist(W, X, Y)) * B", "dist", 1.0),
    ("Sum(W * Square(X - Y))", "dist", 1.0),
    ("Sum((X - Y) ** 2 * W * IntCst(3))", "dist", 3.0),
    ("Sum(X * W * Y)", "dot", 1.0),
])
def test_sums_weighted_by_a_parameter_are_planned_with_the_weight(formula, kind, scale):
    p = plan(formula)
    assert p is not None and p.weight == 4
    assert p.kinds == (kind,) and p.scales == (scale,)


def test_a_scalar_weight_is_a_number_times_the_distance():
    p = plan("Exp(-WeightedSqDist(G, X, Y)) * B")
    assert p is not None and p.weight == -1 and p.kinds == ("dist",)
    assert plan("Exp(-SqDist(X, Y)) * B").weight == -1


@pytest.mark.parametrize("formula", [
    "Sum(W * W * X * Y)",              # two weights
    "Sum(W * Square(X - Y)) + SqDist(X, Y)",  # weighted and not: one X operand
    "WeightedSqDist(W, X, Y) + Sum(Square(X - W))",  # W also outside a weight
    "Sum(Z * X * Y)",                  # an i-variable as the weight
    "Sum(X * X * Y)",                  # degree 3
    "Sum(Square(X - IntCst(2) * Y))",  # not a distance, not a product alone
    "Sum(Exp(X - Y))",                 # not polynomial
    "SqDist(X, Y) + (X | Y)",          # a distance and a product: no common centring
    "Exp(-SqDist(X, Y)) * X",          # X outside its sums
    "SqDist(Z, Y) + SqDist(X, Y)",     # two wide i-variables
])
def test_other_formulas_are_not_planned(formula):
    assert plan(formula) is None


def test_widths_modes_and_dtypes_bound_the_plan():
    narrow = ["X = Vi(16)", "Y = Vj(16)"]
    assert plan("SqDist(X, Y)", narrow) is None  # CUDA cores are as fast
    assert plan("SqDist(X, Y)", ["X = Vi(300)", "Y = Vj(300)"], "f16") is not None
    assert plan("SqDist(X, Y)", ["X = Vi(300)", "Y = Vj(300)"], "tf32") is None  # shared memory
    assert plan("SqDist(X, Y)", mode="") is None  # float64, or float32 at "highest"
    # Narrow j-variables of up to 256 components in all, beside X and Y (shared memory).
    weights = ["X = Vi(128)", "Y = Vj(128)", "B = Vj(100)", "C = Vj(100)", "E = Vj(56)"]
    formula = "Exp(-SqDist(X, Y)) * (B + C) * Sum(E)"
    assert plan(formula, weights) is not None
    assert plan(formula, weights[:4] + ["E = Vj(57)"]) is None


def test_the_mode_follows_the_dtype_the_architecture_and_torchs_setting():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert mode_for("float32", "cuda:sm_90") == ""
        torch.set_float32_matmul_precision("high")
        assert mode_for("float32", "cuda:sm_90") == "tf32"
        assert mode_for("float32", "cuda:sm_75") == "" and mode_for("float32", "cpu") == ""
    finally:
        torch.set_float32_matmul_precision(before)
    assert mode_for("float16", "cuda:sm_80") == "f16"
    assert mode_for("bfloat16", "cuda:sm_90") == "bf16"
    assert mode_for("float64", "cuda:sm_90") == ""


def test_float32_precision_overrides_torchs_setting_within_its_block():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        with lazykeops.float32_precision("high"):
            assert mode_for("float32", "cuda:sm_90") == "tf32"
            with lazykeops.float32_precision("highest"):
                assert mode_for("float32", "cuda:sm_90") == ""
            assert mode_for("float32", "cuda:sm_90") == "tf32"
            assert mode_for("float16", "cuda:sm_90") == "f16"  # halves: always
        assert mode_for("float32", "cuda:sm_90") == ""
        torch.set_float32_matmul_precision("medium")
        with lazykeops.float32_precision("highest"):
            assert mode_for("float32", "cuda:sm_90") == ""
    finally:
        torch.set_float32_matmul_precision(before)
    with pytest.raises(LazyKeOpsError, match="one of .*'TF32'"):
        with lazykeops.float32_precision("TF32"):
            pass
