"""One generic test over the op registry: every op, compiled and run as a Sum reduction
over j, against the sum over j of its torch reference (float64). Plus registry
completeness, dimension-rule errors and checks of the less obvious references against
independent implementations (torch.tensordot, torch.kron, B-spline partition of unity).

Each op is built from Var nodes (argument k has category k mod 3: i, j, parameter), its
text `str(node)` is handed to `lazykeops.torch.Genred`, so the parser round trip is
exercised too. Ops that leave the i or the j category unused are multiplied by a scalar
i- or j-indexed dummy variable, so that constants really run through compiled code.
"""

import pytest
import torch

from lazykeops.errors import LazyKeOpsError
from lazykeops.formula import CAT_I, CAT_J, OPS, make, var
from lazykeops.formula.parser import parse_formula
from lazykeops.torch import Genred
from op_samples import CASES, CATS, SAMPLERS, sample
from op_samples import as_ij as _as_ij
from op_samples import case_id as _case_id
from op_samples import default_dims as _default_dims

N, M = 7, 5


def _sample(domain, cat, dim, g):
    return sample(domain, cat, dim, g, N, M)


def run_case(name, dims, params, seed=0):
    """(compiled result, reference) for op `name` with argument dims and params."""
    spec = OPS[name]
    g = torch.Generator().manual_seed(seed)
    cats = [CATS[k % 3] for k in range(spec.arity)]
    domains = spec.domain or ("any",) * spec.arity
    args = [var(k, d, c) for k, (d, c) in enumerate(zip(dims, cats))]
    values = [_sample(dom, c, d, g) for dom, c, d in zip(domains, cats, dims)]
    node = make(name, *args, params=params)
    ref = spec.reference([_as_ij(v, c) for v, c in zip(values, cats)], params)
    for needed in (CAT_I, CAT_J):   # a dummy scalar for each missing category
        if needed not in cats:
            pos = len(cats)
            dummy = _sample("any", needed, 1, g)
            node = make("Mult", node, var(pos, 1, needed))
            ref = ref * _as_ij(dummy, needed)
            cats.append(needed)
            values.append(dummy)
            dims = (*dims, 1)
    aliases = [f"a{k} = Var({k},{d},{c})" for k, (d, c) in enumerate(zip(dims, cats))]
    result = Genred(str(node), aliases, reduction_op="Sum", axis=1)(*values)
    expected = ref.expand(N, M, node.dim).sum(dim=1)
    return result, expected


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_op_compiled_matches_reference(case):
    result, expected = run_case(*case)
    assert result.shape == expected.shape
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------ registry shape
def test_every_op_is_complete():
    for name, spec in OPS.items():
        if name == "Var":
            continue
        assert spec.reference is not None, name
        if spec.arity == 0:
            assert spec.constant is not None, f"constant {name} cannot be inlined"
        else:
            assert spec.emit is not None, f"{name} has no emission rule"
            assert len(spec.domain) == spec.arity, f"{name}: one domain per argument"
            assert all(d in SAMPLERS for d in spec.domain), name
        assert len(spec.example_params) == len(spec.params), name
        assert len(_default_dims(spec)) == spec.arity, name


def test_pykeops_ops_are_registered():
    pykeops = """Abs Acos Add ArgMax ArgMin Asin Atan Atan2 BSpline Clamp ClampInt Concat Cos
        Divide Elem ElemT Equal Exp Extract ExtractT Floor IfElse IntCst IntInv Inv Kron
        LessOrEqual LessThan Log MatVecMult Max Min Minus Mod Mult Norm2 Normalize NotEqual
        OneHot Pow Powf RatCst ReLU Round Rsqrt Scalprod Sign Sin SinXDivX SqDist SqNorm2
        SqNormDiag SqNormIso Sqrt Square Step Subtract Sum SumT SymSqNorm TensorDot
        TensorProd Var VecMatMult WeightedSqDist WeightedSqNorm XLogX Zero""".split()
    assert not set(pykeops) - set(OPS)


def test_index_tuple_params_round_trip_through_the_parser():
    a, b = var(0, 24, CAT_I), var(1, 24, CAT_J)
    node = make("TensorDot", a, b, params=((2, 3, 4), (4, 2, 3), (2, 1), (0, 2)))
    text = str(node)
    assert "Ind(2,3,4)" in text
    assert parse_formula(text, {}) is node


# ----------------------------------------------------------------------- dimension rules
BAD = [
    ("MatVecMult", (6, 4), ()),
    ("VecMatMult", (4, 6), ()),
    ("TensorDot", (24, 24), ((2, 3, 4), (4, 2, 3), (2, 1), (2, 0))),   # sizes 4,3 vs 3,4
    ("TensorDot", (24, 24), ((2, 3, 4), (4, 2, 3), (1,), (0, 2))),     # unequal lengths
    ("TensorDot", (24, 12), ((2, 3, 4), (4, 2, 3), (), ())),           # 24 != 12
    ("TensorDot", (6, 6), ((2, 3), (2, 3), (0, 0), (0, 1))),           # repeated axis
    ("TensorDot", (6, 6), ((2, 3), (2, 3), (2,), (0,))),               # axis out of range
    ("TensorDot", (6, 6), (6, (2, 3), (), ())),                        # not a tuple
    ("Kron", (6, 6), ((2, 3), (6,))),
    ("WeightedSqNorm", (5, 3), ()),
    ("WeightedSqDist", (1, 3, 2), ()),
    ("SqNormIso", (3, 3), ()),
    ("SqNormDiag", (9, 3), ()),
    ("SymSqNorm", (3, 3), ()),
    ("SumT", (2,), (3,)),
    ("Elem", (3,), (3,)),
    ("Elem", (3,), (-1,)),
    ("ElemT", (1,), (3, 3)),
    ("ElemT", (2,), (3, 0)),
    ("Extract", (5,), (3, 3)),
    ("Extract", (5,), (0, 0)),
    ("ExtractT", (3,), (4, 6)),
    ("OneHot", (2,), (4,)),
    ("OneHot", (1,), (0,)),
    ("BSpline", (4, 1), (3,)),
    ("BSpline", (7, 2), (1,)),
    ("BSpline", (7, 1), (-1,)),
]


@pytest.mark.parametrize("case", BAD, ids=_case_id)
def test_bad_dimensions_raise(case):
    name, dims, params = case
    args = [var(k, d, CATS[k % 3]) for k, d in enumerate(dims)]
    with pytest.raises(LazyKeOpsError, match=f"dimension mismatch in {name}"):
        make(name, *args, params=params)


def test_bad_dimensions_in_a_formula_string():
    with pytest.raises(LazyKeOpsError, match="MatVecMult"):
        Genred("MatVecMult(A, v)", ["A = Vi(6)", "v = Vj(4)"], axis=1)


# ------------------------------------------------------------- conventions at the edges
def test_edge_conventions_compiled():
    """Normalize(0) = 0 (rsqrt(0) = 0), ArgMax/ArgMin pick the first of tied components,
    BSpline intervals are half-open, OneHot is zero out of range."""
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 3.0, 3.0], [2.0, -1.0, -1.0]], dtype=torch.float64)
    one = torch.ones(1, 1, dtype=torch.float64)
    f = Genred("Concat(Normalize(X) * Y, Concat(ArgMax(X), ArgMin(X)))",
               ["X = Vi(3)", "Y = Vj(1)"], axis=1)
    expected = torch.tensor([[0, 0, 0, 0, 0], [1 / 19 ** 0.5, 3 / 19 ** 0.5, 3 / 19 ** 0.5, 1, 0],
                             [2 / 6 ** 0.5, -1 / 6 ** 0.5, -1 / 6 ** 0.5, 0, 1]],
                            dtype=torch.float64)
    torch.testing.assert_close(f(x, one), expected, rtol=1e-12, atol=1e-15)
    knots = torch.arange(5, dtype=torch.float64)[None, :]
    t = torch.tensor([[0.0], [1.0], [3.9], [4.0], [-0.6], [3.4]], dtype=torch.float64)
    g = Genred("Concat(BSpline(K, T, 0), OneHot(T, 4))", ["T = Vi(1)", "K = Vj(5)"], axis=1)
    eye = torch.eye(4, dtype=torch.float64)
    zero = torch.zeros(4, dtype=torch.float64)
    expected = torch.stack([torch.cat([eye[0], eye[0]]), torch.cat([eye[1], eye[1]]),
                            torch.cat([eye[3], zero]), torch.cat([zero, zero]),
                            torch.cat([zero, zero]), torch.cat([eye[3], eye[3]])])
    torch.testing.assert_close(g(t, knots), expected)


# -------------------------------------------------------- references vs independent code
def test_tensordot_and_kron_references():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(24, generator=g, dtype=torch.float64)
    b = torch.randn(24, generator=g, dtype=torch.float64)
    p = ((2, 3, 4), (4, 2, 3), (2, 1), (0, 2))
    expected = torch.tensordot(a.reshape(2, 3, 4), b.reshape(4, 2, 3), dims=([2, 1], [0, 2]))
    torch.testing.assert_close(OPS["TensorDot"].reference([a, b], p), expected.reshape(-1))
    a6, b6 = a[:6], b[:6]
    expected = torch.kron(a6.reshape(2, 3), b6.reshape(3, 2))
    got = OPS["Kron"].reference([a6, b6], ((2, 3), (3, 2)))
    torch.testing.assert_close(got, expected.reshape(-1))


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_bspline_reference_is_a_partition_of_unity(order):
    knots = torch.linspace(0.0, 1.0, 9, dtype=torch.float64)
    x = torch.linspace(knots[order].item(), knots[-1 - order].item(), 50,
                       dtype=torch.float64)[:-1, None]
    basis = OPS["BSpline"].reference([knots, x], (order,))
    assert basis.shape == (49, 9 - order - 1)
    torch.testing.assert_close(basis.sum(-1), torch.ones(49, dtype=torch.float64))
    assert (basis >= 0).all()
