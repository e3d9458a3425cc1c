"""Index-tuple arguments in formula strings: Ind(2,3) (KeOps 1), [2,3] and (2,3) (pykeops
2, whose strings are Python), pykeops's 7-argument TensorDot(..., permute), and the round
trip str(node) -> parser for every op with parameters."""

import pytest
import torch

import lazykeops.torch as lkt
from lazykeops import LazyKeOpsError
from lazykeops.formula import CAT_I, CAT_J, OPS, make, var
from lazykeops.formula.parser import parse_formula

from op_samples import CASES, case_id, categories

X, Y, Z = var(0, 4, CAT_I), var(1, 6, CAT_J), var(2, 6, CAT_I)
ALIASES = {"x": X, "y": Y, "z": Z}


@pytest.mark.parametrize("text", ["Kron(x, y, [2, 2], [2, 3])", "Kron(x,y,(2,2),(2,3))",
                                  "Kron(x, y, Ind(2,2), Ind(2,3))"])
def test_three_spellings_of_kron(text):
    assert parse_formula(text, ALIASES) is make("Kron", X, Y, params=((2, 2), (2, 3)))


@pytest.mark.parametrize("text", ["TensorDot(z, y, [2, 3], [3, 2], [1], [0])",
                                  "TensorDot(z, y, (2, 3), (3, 2), (1,), (0,))",
                                  "TensorDot(z, y, Ind(2,3), Ind(3,2), Ind(1), Ind(0))",
                                  "TensorDot(z, y, [2, 3], [3, 2], [1], [0], None)",
                                  "TensorDot(z, y, [2, 3], [3, 2], [1], [0], [0, 1])"])
def test_spellings_of_tensordot(text):
    expected = make("TensorDot", Z, Y, params=((2, 3), (3, 2), (1,), (0,)))
    assert parse_formula(text, ALIASES) is expected


def test_python_parentheses_keep_their_meaning():
    # (4) is the number 4; (2,3) in a formula is still the 2018 scalar product (2|3).
    assert parse_formula("Elem(x, (2))", ALIASES) is make("Elem", X, params=(2,))
    two_three = make("Scalprod", make("IntCst", params=(2,)), make("IntCst", params=(3,)))
    assert parse_formula("Exp((2,3))", ALIASES) is make("Exp", two_three)
    assert parse_formula("Pow(x, (3)) + (x|x)", ALIASES) is \
        make("Add", make("Pow", X, params=(3,)), make("Scalprod", X, X))


@pytest.mark.parametrize("text, word", [
    ("Kron(x, y, [2, 2.5], [2, 3])", "integer"),
    ("Kron(x, y, [2, 2], [2, 3)", "']'"),
    ("Kron(x, [2], [2, 2], [2, 3])", "index tuple"),
    ("Kron(x, y, [2, 2], [2, 2])", "dimension"),
    ("TensorDot(z, y, [2, 3], [2, 3], [], [], [1, 1, 0, 3])", "permutation"),
    ("TensorDot(z, y, [2, 3], [2, 3], [], [], x)", "permutation"),
    ("Exp(None)", "None"),
    ("Elem(x, None)", "None"),
])
def test_bad_lists(text, word):
    with pytest.raises(LazyKeOpsError) as info:
        parse_formula(text, ALIASES)
    assert word in str(info.value) and text in str(info.value)


@pytest.mark.parametrize("case", [c for c in CASES if c[2]], ids=case_id)
def test_every_op_with_parameters_reads_back(case):
    name, dims, params = case
    args = [var(k, d, cat) for k, (d, cat) in enumerate(zip(dims, categories(len(dims))))]
    node = make(name, *args, params=params)
    names = {f"v{k}": a for k, a in enumerate(args)}
    assert parse_formula(str(node), names) is node


def test_permuted_tensordot_reads_back():
    node = parse_formula("TensorDot(z, y, [2, 3], [2, 3], [], [], [1, 2, 0, 3])", ALIASES)
    assert node.op == "TensorDotPermuted"
    assert parse_formula(str(node), ALIASES) is node


def test_values_against_dense_torch():
    """One kernel for the three forms. pykeops's permute: kept axis k goes to output axis
    permute[k] (checked by hand against pykeops 2.3)."""
    conv = lkt.Genred("Concat(Kron(x, y, [2, 2], [2, 3]), Concat("
                      "TensorDot(z, y, [2, 3], [2, 3], [], [], [1, 2, 0, 3]), "
                      "TensorDot(z, y, (2, 3), (3, 2), (1,), (0,))))",
                      ["x = Vi(4)", "y = Vj(6)", "z = Vi(6)"], axis=1)
    gen = torch.Generator().manual_seed(3)
    x, y, z = (torch.randn(n, d, generator=gen, dtype=torch.float64)
               for n, d in ((5, 4), (7, 6), (5, 6)))
    got = conv(x, y, z)
    kron = torch.stack([torch.kron(a.view(2, 2), b.view(2, 3)).reshape(-1)
                        for a in x for b in y]).view(5, 7, -1)
    outer = torch.einsum("npq,mrs->nmpqrs", z.view(5, 2, 3), y.view(7, 2, 3))
    # kept axes (p, q, r, s) = (0, 1, 2, 3) go to output axes (1, 2, 0, 3): (r, p, q, s)
    permuted = outer.permute(0, 1, 4, 2, 3, 5).reshape(5, 7, -1)
    contracted = torch.einsum("npq,mqs->nmps", z.view(5, 2, 3), y.view(7, 3, 2))
    dense = torch.cat([kron, permuted, contracted.reshape(5, 7, -1)], -1).sum(1)
    torch.testing.assert_close(got, dense)
