"""Each reduction is defined once, in formula/reductions.py: its derivative rules, C++
policy, slicing rule and engines are checked here without compiling anything.

The derivative rules (cotangents for reverse mode, tangents for forward mode) are
evaluated densely with the ops' torch references and compared with torch autograd of the
reduction's own dense reference, in float64: two computations that share no code but the
reference of each op."""

import pytest
import torch

from lazykeops.compile.codegen import SUM_SCHEMES
from lazykeops.errors import LazyKeOpsError
from lazykeops.formula import CAT_I, CAT_J, autodiff, make, var
from lazykeops.formula.evaluate import evaluate
from lazykeops.formula.reductions import REDUCTIONS, lookup

N, M, D, E = 5, 7, 3, 2
X, Y, W = var(0, D, CAT_I), var(1, D, CAT_J), var(2, E, CAT_J)
G, OUT, L = var(3, E, CAT_I), var(4, E, CAT_I), var(5, 1, CAT_I)
U, V = var(6, D, CAT_I), var(7, E, CAT_J)  # tangents of X and W
F1 = make("Minus", make("SqDist", X, Y))                       # dim 1
FD = make("Mult", make("Exp", F1), make("Subtract", X, Y))   # dim D
SUM_CASES = {  # reduction: (formula, weights)
    "Sum": (FD, None), "LogSumExp": (F1, None), "LogSumExp weighted": (F1, W),
    "SumSoftMaxWeight": (F1, W)}


def _data():
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(N, D, generator=g, dtype=torch.float64), torch.rand(M, D, generator=g,
                                                                             dtype=torch.float64)
    w = torch.rand(M, E, generator=g, dtype=torch.float64) + 0.5
    return x, y, w


def _dense(node, values):
    """node evaluated on every pair, as an (N, M, dim) tensor."""
    v = evaluate(node, values, torch.float64)
    return torch.broadcast_to(v, (N, M, node.dim))


def _forward(name, formula, weights, x, y, w):
    values = {0: x[:, None], 1: y[None], 2: w[None]}
    F = _dense(formula, values)
    Wd = _dense(weights, values) if weights is not None else None
    return lookup(name).reference(F, Wd, None)[0]


@pytest.mark.parametrize("case", sorted(SUM_CASES))
def test_cotangents_give_torch_autograd_gradients(case):
    name = case.split()[0]
    spec, (f, w) = lookup(name), SUM_CASES[case]
    x, y, wv = (t.requires_grad_() for t in _data())
    out = _forward(name, f, w, x, y, wv)
    g = torch.rand(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    expected = torch.autograd.grad((out * g).sum(), (x, y, wv), allow_unused=True)
    width = out.shape[-1]
    Gv, Ov = var(3, width, CAT_I), var(4, width, CAT_I)
    values = {0: x.detach()[:, None], 1: y.detach()[None], 2: wv.detach()[None],
              3: g[:, None], 4: out.detach()[:, None],
              5: torch.logsumexp(_dense(f, {0: x.detach()[:, None], 1: y.detach()[None]}),
                                 dim=1)[:, None]}
    for v, axis, want in ((X, 1, expected[0]), (Y, 0, expected[1]), (W, 0, expected[2])):
        if w is None and v is W:
            continue
        got = _dense(spec.gradient_formula(f, w, v, Gv, Ov, L), values).sum(axis)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", sorted(SUM_CASES))
def test_tangents_give_torch_forward_mode_derivatives(case):
    name = case.split()[0]
    spec, (f, w) = lookup(name), SUM_CASES[case]
    x, y, wv = _data()
    gen = torch.Generator().manual_seed(7)
    dx, dwv = torch.rand(N, D, generator=gen, dtype=torch.float64), torch.rand(
        M, E, generator=gen, dtype=torch.float64)
    out, expected = torch.func.jvp(lambda a, b: _forward(name, f, w, a, y, b), (x, wv),
                                   (dx, dwv))
    width = out.shape[-1]
    values = {0: x[:, None], 1: y[None], 2: wv[None], 4: out[:, None], 6: dx[:, None],
              7: dwv[None], 5: torch.logsumexp(_dense(f, {0: x[:, None], 1: y[None]}),
                                               dim=1)[:, None]}
    df = autodiff.diff(f, X, U)  # f depends on X (and Y), the weights w = W on W only
    dw = autodiff.diff(w, W, V) if w is not None else None
    node = spec.tangent(f, w, df, dw, var(4, width, CAT_I), L)
    torch.testing.assert_close(_dense(node, values).sum(1), expected, rtol=1e-10, atol=1e-12)


def test_every_reduction_says_how_it_is_differentiated():
    for spec in REDUCTIONS.values():
        vals, idx = spec.outputs(D, E, 4)
        if spec.kind == "sum":
            assert spec.cotangents and spec.tangent and idx == 0
        elif spec.kind == "selection":
            # The companion returns the same values and their indices.
            companion = REDUCTIONS[spec.companion]
            assert companion.outputs(D, E, 4) == (vals, vals)
            assert companion.policy(D, E, 4, "s", False)[0] == spec.policy(D, E, 4, "s", False)[0]
        elif spec.kind == "indices":
            assert vals == 0 and idx > 0 and spec.companion is None
        else:
            assert spec.kind == "dual" and spec.name == "DualSum"


def test_sliced_outputs_are_the_last_formulas_components():
    for spec in REDUCTIONS.values():
        if not spec.slices:
            continue
        dims = {"none": [(D,)], "optional": [(D,), (1, E)], "required": [(1, E)]}[spec.weight]
        for formula_dims in dims:
            # One output component per component of the sliced formula.
            width = max(spec.outputs(formula_dims[0], E if len(formula_dims) > 1 else 0, None))
            assert width == formula_dims[spec.sliced_formula(len(formula_dims))], spec.name
    assert lookup("ArgKMin").sliced_formula(1) is None


def test_policies_are_built_from_parameters():
    scheme = next(iter(SUM_SCHEMES.values()))
    assert lookup("Sum").cpp_policy(3, 0, None, scheme) == f"lk::SumRed<3, {scheme}>"
    assert lookup("LogSumExp").cpp_policy(1, 2, None, scheme) == "lk::LogSumExpRed<1, 2>"
    assert lookup("ArgKMin").cpp_policy(2, 0, 7, scheme) == "lk::KMinRed<2, 7, 0, 1>"
    assert lookup("Max_ArgMax").cpp_policy(2, 0, None, scheme) == "lk::ArgExtremumRed<2, 1, 1, 1>"
    dual = lookup("DualSum")
    assert dual.cpp_policy(3, 3, None, scheme) == "lk::DualSumRed<3, 3>"
    assert dual.cpp_policy(3, 3, None, scheme, negated=True) == "lk::DualSumRed<3, 3, 0, -1>"


def test_a_reduction_refuses_an_engine_it_has_no_policy_for():
    lookup("DualSum").check_target("cpu", "f")
    with pytest.raises(LazyKeOpsError, match="DualSum has no cuda kernel.*formula 'X-Y'"):
        lookup("DualSum").check_target("cuda", "X-Y")
    for name in ("Sum", "LogSumExp", "ArgKMin"):
        lookup(name).check_target("cuda", "f")
