"""The facts on the op registry's rows that the passes read (formula/node.py: OpSpec's
componentwise, additive, uniform, constant, slice), checked against each op's own torch
reference in float64; and the passes driven by those facts, not by op names: an op
registered here under a new name with a fact gets the treatment, without it does not."""

import dataclasses

import pytest
import torch

from lazykeops.compile.chunking import CHUNK, plan_chunks, restricted
from lazykeops.compile.codegen import render_formula_struct
from lazykeops.formula import CAT_I, CAT_J, CAT_P, OPS, make, var
from lazykeops.formula.evaluate import evaluate
from lazykeops.formula.slicing import components
from op_samples import CASES, SAMPLERS, case_id, default_dims

D = 7  # components of the arguments of the ops checked at a dimension of our choosing


def _args(spec, dim, seed=0):
    """Reference arguments of shape (2, dim) (a dimension-1 example argument stays one)."""
    g = torch.Generator().manual_seed(seed)
    domains = spec.domain or ("any",) * spec.arity
    dims = [1 if d == 1 else dim for d in default_dims(spec)]
    return [SAMPLERS[dom](g, (2, d)) for dom, d in zip(domains, dims)]


def _names(fact):
    return sorted(name for name, spec in OPS.items() if getattr(spec, fact))


def test_the_facts_are_where_the_passes_expect_them():
    assert _names("additive") == ["Scalprod", "SqDist", "SqNorm2", "Sum"]
    assert _names("uniform") == ["SumT", "Zero"]
    assert sorted(n for n, s in OPS.items() if s.constant) == [
        "FloatCst", "IntCst", "IntInv", "RatCst", "Zero"]
    assert sorted(n for n, s in OPS.items() if s.slice) == [
        "Concat", "Extract", "ExtractT", "Zero"]
    for name, spec in OPS.items():
        assert not (spec.componentwise and spec.slice), name  # one slicing rule per op
        assert spec.constant is None or spec.arity == 0, name


@pytest.mark.parametrize("name", _names("componentwise"))
def test_componentwise_ops_commute_with_slices(name):
    spec = OPS[name]
    args = _args(spec, D)
    whole = spec.reference(args, spec.example_params)
    for lo, hi in ((0, 3), (2, 7), (4, 5)):
        part = [a if a.shape[-1] == 1 else a[..., lo:hi] for a in args]
        torch.testing.assert_close(spec.reference(part, spec.example_params),
                                   whole[..., lo:hi], rtol=0, atol=0)


@pytest.mark.parametrize("name", _names("additive"))
def test_additive_ops_are_sums_over_any_split_of_the_components(name):
    spec = OPS[name]
    args = _args(spec, D)
    assert all(a.shape[-1] == D for a in args)
    whole = spec.reference(args, spec.example_params)
    assert whole.shape[-1] == 1
    for cut in (1, 3, 6):
        halves = [spec.reference([a[..., s] for a in args], spec.example_params)
                  for s in (slice(0, cut), slice(cut, D))]
        torch.testing.assert_close(halves[0] + halves[1], whole, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name", _names("uniform"))
def test_uniform_ops_repeat_one_value_and_resize(name):
    spec = OPS[name]
    node = make(name, *[var(k, 1, CAT_P) for k in range(spec.arity)],
                params=spec.example_params)
    values = {k: torch.randn(1, dtype=torch.float64) for k in range(spec.arity)}
    out = evaluate(node, values, torch.float64)
    assert out.shape[-1] == node.dim > 1 and torch.equal(out, out[..., :1].expand_as(out))
    small = spec.resized(node, 2)
    assert small.dim == 2 and small.op == name and small.args == node.args
    torch.testing.assert_close(evaluate(small, values, torch.float64), out[..., :2])


@pytest.mark.parametrize("name", sorted(n for n, s in OPS.items() if s.constant))
def test_constants_emit_their_reference_value(name):
    spec = OPS[name]
    for params in (spec.example_params, tuple(2 * p + 1 for p in spec.example_params)):
        cpp = spec.constant(params)
        value = eval(cpp.replace("T(", "float("), {"__builtins__": {"float": float}})  # noqa: S307
        want = spec.reference([], params)
        assert torch.equal(want, torch.full_like(want, value)), (name, params, cpp)


@pytest.mark.parametrize("case", [c for c in CASES if OPS[c[0]].slice], ids=case_id)
def test_slicing_rules_give_the_components_and_avoid_extracting_the_node(case):
    name, dims, params = case
    spec = OPS[name]
    cats = [(CAT_I, CAT_J, CAT_P)[k % 3] for k in range(spec.arity)]
    node = make(name, *[var(k, d, c) for k, (d, c) in enumerate(zip(dims, cats))],
                params=params)
    shapes = {CAT_I: (3, 1), CAT_J: (1, 4), CAT_P: (1, 1)}
    g = torch.Generator().manual_seed(1)
    values = {k: torch.randn(*shapes[c], d, generator=g, dtype=torch.float64)
              for k, (d, c) in enumerate(zip(dims, cats))}
    whole = evaluate(node, values, torch.float64)
    for start in range(node.dim):
        for length in range(1, node.dim - start + 1):
            part = components(node, start, length)
            assert part.dim == length
            assert node not in part.walk() or (start, length) == (0, node.dim)
            got = evaluate(part, values, torch.float64)
            torch.testing.assert_close(got.expand(*whole.shape[:-1], length),
                                       whole[..., start:start + length], rtol=0, atol=0)


# ------------------------------------------------- the passes read the facts, not names
@pytest.fixture
def twin():
    """twin(name, **facts): OPS[name]'s row registered again under a new name, with the
    given facts; removed after the test."""
    added = []

    def register_twin(name, **facts):
        new = f"LkTestTwin{name}{len(added)}"
        OPS[new] = dataclasses.replace(OPS[name], name=new, **facts)
        added.append(new)
        return new

    yield register_twin
    for name in added:
        del OPS[name]


WIDE = 200  # wide for both engines in float32
ARGS = ((CAT_I, WIDE), (CAT_J, WIDE), (CAT_P, 1))


def _wide():
    return var(0, WIDE, CAT_I), var(1, WIDE, CAT_J), var(2, 1, CAT_P)


def test_the_chunk_planner_chunks_the_ops_marked_additive(twin):
    x, y, _ = _wide()
    summed = make("Exp", make(twin("Sum", additive=True), make("Mult", x, y)))
    plan = plan_chunks((summed,), ARGS, "float32", "cuda")
    assert plan is not None and [s.args for s in plan.sums] == [(make("Mult", x, y),)]
    unmarked = make("Exp", make(twin("Sum", additive=False), make("Mult", x, y)))
    assert plan_chunks((unmarked,), ARGS, "float32", "cuda") is None


def test_the_chunk_functions_resize_the_ops_marked_uniform(twin):
    x, _, g = _wide()
    repeat = twin("SumT", uniform=True)
    (node,) = restricted([make("Mult", x, make(repeat, g, params=(WIDE,)))], WIDE, CHUNK)
    assert node.dim == CHUNK and make(repeat, g, params=(CHUNK,)) in node.walk()
    # a CPU chunked output through it: x * repeat(g) is componentwise in x and a scalar
    cpu = plan_chunks((make("Mult", x, make(repeat, g, params=(WIDE,))),), ARGS, "float32",
                      "cpu")
    assert cpu is not None and cpu.outputs
    plain = twin("SumT", uniform=False)
    assert plan_chunks((make("Mult", x, make(plain, g, params=(WIDE,))),), ARGS, "float32",
                       "cpu") is None


def test_slicing_follows_the_rows_slicing_rule(twin):
    x, y, _ = _wide()
    joined = make(twin("Concat"), x, y)
    assert components(joined, WIDE + 3, 5) is components(y, 3, 5)
    opaque = make(twin("Concat", slice=None), x, y)
    assert components(opaque, WIDE + 3, 5) is make("Extract", opaque, params=(WIDE + 3, 5))


def test_the_code_generator_inlines_the_ops_with_a_constant(twin):
    x = var(0, 3, CAT_I)
    inlined = render_formula_struct([make("Mult", x, make(twin("IntCst"), params=(5,)))],
                                    ((CAT_I, 3),))
    assert "T(5.0)" in inlined and "// LkTestTwin" not in inlined
