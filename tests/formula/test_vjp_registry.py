"""One generic test of the derivative rules over the op registry: for every op with formula
arguments, `Grad(op(...), v, E)` for each argument v, compiled through the string API and
summed over j, against torch.autograd of the op's torch reference (float64). Plus second
derivatives for a handful of representative ops, and registry completeness.

One kernel per case: Concat(f, Grad(f, a0, E), Grad(f, a1, E), ...). Argument k has
category CATS[(k + shift) % 3], the shift cycling with the case index so that across the
registry every kind of rule meets i-, j- and parameter variables (the rules themselves do
not depend on categories). E is i-indexed and the reduction is a Sum over j, so the
compiled gradient with respect to a j-indexed or parameter v is, for each i, the sum over
j of the per-pair gradients: the reference differentiates with respect to the (N, M, dim)
broadcast copies of the arguments and sums those over j. A parameter's full gradient
(summed over i too) follows from this one.

Inputs are drawn in the ops' domains (tests/formula/op_samples.py), away from kinks: the
samplers keep Abs, Sign, Step, ReLU away from 0, and a random point is almost surely not on
a kink of Clamp, Mod, Floor, Round, Max/Min or a B-spline knot.
"""

import pytest
import torch

from lazykeops.formula import CAT_I, CAT_J, OPS, make, var
from lazykeops.torch import Genred
from op_samples import CASES, VJP_REFUSED, as_ij, case_id, categories, sample

N, M = 4, 3
TOL = dict(rtol=1e-9, atol=1e-9)

VJP_CASES = [case for case in CASES if OPS[case[0]].arity > 0 and case[0] not in VJP_REFUSED]

# Second derivatives: a few ops of each kind of rule (composite, by-node, linear algebra).
SECOND_ORDER = ["Exp", "Sqrt", "SinXDivX", "Atan2", "Powf", "Normalize", "Max",
                "WeightedSqDist", "MatVecMult", "TensorDot", "TensorDotPermuted", "BSpline"]


class Case:
    """An op applied to Var nodes of mixed categories, with values and dummy factors."""

    def __init__(self, name, dims, params, shift, seed=0):
        spec = OPS[name]
        self.spec, self.params, self.g = spec, params, torch.Generator().manual_seed(seed)
        self.cats = categories(spec.arity, shift)
        self.dims = list(dims)
        self.args = [var(k, d, c) for k, (d, c) in enumerate(zip(dims, self.cats))]
        self.values = [self.draw(dom, c, d)
                       for dom, c, d in zip(spec.domain, self.cats, dims)]
        self.node = make(name, *self.args, params=params)
        self.dummies = []   # a scalar factor for each category that no argument has
        for needed in (CAT_I, CAT_J):
            if needed not in self.cats:
                self.dummies.append(self.new_var(1, needed))
                self.node = make("Mult", self.node, self.dummies[-1][0])

    def draw(self, domain, cat, dim):
        return sample(domain, cat, dim, self.g, N, M)

    def new_var(self, dim, cat, domain="any"):
        """A new Var at the next position with random values: (node, values)."""
        node, value = var(len(self.dims), dim, cat), self.draw(domain, cat, dim)
        self.dims.append(dim)
        self.cats.append(cat)
        self.values.append(value)
        return node, value

    def aliases(self):
        return [f"a{k} = Var({k},{d},{c})" for k, (d, c) in enumerate(zip(self.dims, self.cats))]

    def torch_leaves(self):
        """The op's arguments as (N, M, dim) tensors that require grad."""
        return [as_ij(v, c).expand(N, M, d).clone().requires_grad_()
                for v, c, d in zip(self.values, self.cats, self.dims[:self.spec.arity])]

    def torch_forward(self, leaves):
        out = self.spec.reference(leaves, self.params)
        for node, value in self.dummies:
            out = out * as_ij(value, node.params[2])
        return out.expand(N, M, self.node.dim)

    def compiled(self, formula):
        return Genred(formula, self.aliases(), reduction_op="Sum", axis=1)(*self.values)


def _grads(out, leaves, create_graph=False):
    """torch.autograd.grad with zeros for unused leaves and for constant outputs."""
    if not out.requires_grad:
        return [torch.zeros_like(x) for x in leaves]
    found = torch.autograd.grad(out, leaves, allow_unused=True, create_graph=create_graph)
    return [torch.zeros_like(x) if d is None else d for x, d in zip(leaves, found)]


def _concat(parts):
    text = parts[0]
    for part in parts[1:]:
        text = f"Concat({text}, {part})"
    return text


def _names(case):
    return [f"a{k}" for k in range(case.spec.arity)]


@pytest.mark.parametrize("index", range(len(VJP_CASES)),
                         ids=[case_id(c) for c in VJP_CASES])
def test_vjp_compiled_matches_torch_autograd(index):
    case = Case(*VJP_CASES[index], shift=index % 3)
    f = str(case.node)
    e_node, e = case.new_var(case.node.dim, CAT_I)
    grads = [f"Grad({f}, {v}, a{e_node.params[0]})" for v in _names(case)]
    result = case.compiled(_concat([f] + grads))

    leaves = case.torch_leaves()
    out = case.torch_forward(leaves)
    expected = [out.sum(1)] + [d.sum(1) for d in _grads((out * e[:, None, :]).sum(), leaves)]
    torch.testing.assert_close(result, torch.cat(expected, dim=-1), **TOL)


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_second_derivatives_match_torch(name):
    """Concat over b of Grad(S, v_b, 1), S = sum over a of (Grad(f, v_a, E) | F_a): every
    block Grad(Grad(f, v_a, E), v_b, F_a) of the second derivative, summed over a."""
    spec = OPS[name]
    case = Case(name, spec.example_dims or (3,) * spec.arity, spec.example_params, shift=0)
    f = str(case.node)
    e_node, e = case.new_var(case.node.dim, CAT_I)
    cotangents = [case.new_var(d, CAT_I) for d in case.dims[:spec.arity]]
    s = " + ".join(f"(Grad({f}, {v}, a{e_node.params[0]}) | a{fa.params[0]})"
                   for v, (fa, _) in zip(_names(case), cotangents))
    result = case.compiled(_concat([f"Grad({s}, {v}, 1)" for v in _names(case)]))

    leaves = case.torch_leaves()
    first = _grads((case.torch_forward(leaves) * e[:, None, :]).sum(), leaves,
                   create_graph=True)
    total = sum((d * fa[:, None, :]).sum() for d, (_, fa) in zip(first, cotangents))
    expected = [d.sum(1) for d in _grads(total, leaves)]
    torch.testing.assert_close(result, torch.cat(expected, dim=-1), rtol=1e-8, atol=1e-8)


def test_every_op_with_arguments_has_a_vjp():
    missing = [name for name, spec in OPS.items() if spec.arity > 0 and spec.vjp is None]
    assert not missing, f"ops without a derivative rule: {missing}"


# ------------------------------------------------------------- conventions at the edges
def test_derivatives_at_kinks_compiled():
    """Norm2 and Normalize have gradient 0 at x = 0 (not NaN), Max/Min send the gradient to
    the first of tied components, as their forward pass picks it."""
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 3.0, 3.0], [2.0, -1.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 2.0, 3.0]] * 3, dtype=torch.float64)
    a, one = torch.ones(3, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)
    f = Genred("Concat(Concat(Grad(Norm2(X), X, A), Grad(Normalize(X), X, B)), "
               "Concat(Grad(Max(X), X, A), Grad(Min(X), X, A))) * Y",
               ["X = Vi(3)", "A = Vi(1)", "B = Vi(3)", "Y = Vj(1)"], axis=1)
    norm = x.norm(dim=1, keepdim=True)
    u = torch.where(norm > 0, x / norm, 0 * x)
    d_normalize = torch.where(norm > 0, (b - u * (u * b).sum(1, keepdim=True)) / norm, 0 * x)
    eye = torch.eye(3, dtype=torch.float64)
    expected = torch.cat([u, d_normalize, eye[[0, 1, 0]], eye[[0, 0, 1]]], dim=1)
    torch.testing.assert_close(f(x, a, b, one), expected, rtol=1e-12, atol=1e-15)


def test_bspline_derivatives_with_repeated_knots():
    """Clamped knots (0/0 = 0 in the recursion): finite derivatives, equal to central
    differences in x and in the knots that are not repeated."""
    knots = torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 3.0, 3.0], dtype=torch.float64)
    x = torch.tensor([[0.5], [1.25], [2.9]], dtype=torch.float64)
    e = torch.tensor([[1.0, -2.0, 0.5, 3.0, 1.5]] * 3, dtype=torch.float64)
    one = torch.ones(1, 1, dtype=torch.float64)
    f = Genred("Concat(Grad(BSpline(K, T, 2), T, E), Grad(BSpline(K, T, 2), K, E)) * Y",
               ["T = Vi(1)", "K = Pm(8)", "E = Vi(5)", "Y = Vj(1)"], axis=1)
    result = f(x, knots, e, one)
    assert torch.isfinite(result).all()

    def energy(t, xs):
        return (OPS["BSpline"].reference([t, xs], (2,)) * e).sum(-1)

    h = 1e-6
    d_x = (energy(knots, x + h) - energy(knots, x - h)) / (2 * h)
    torch.testing.assert_close(result[:, 0], d_x, rtol=1e-6, atol=1e-6)
    for k in (3, 4):
        step = h * torch.eye(8, dtype=torch.float64)[k]
        d_k = (energy(knots + step, x) - energy(knots - step, x)) / (2 * h)
        torch.testing.assert_close(result[:, 1 + k], d_k, rtol=1e-6, atol=1e-6)
