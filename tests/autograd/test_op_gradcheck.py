"""torch.autograd.gradcheck and gradgradcheck, in float64, of a Sum reduction of every op
of the registry (through Genred, its autograd Function and the compiled gradient
kernels), on inputs inside each op's domain (tests/formula/op_samples.py)."""

import pytest
import torch

from lazykeops.formula import OPS, make, var
from lazykeops.torch import Genred
from lazykeops.errors import LazyKeOpsError
from tests.formula.op_samples import CASES, VJP_REFUSED, case_id, categories, sample

N, M = 3, 2
# Their gradient is zero, but finite differences of a 0/1 jump on integer inputs are not.
INTEGER_JUMPS = {"Equal", "NotEqual"}
DIFFERENTIABLE = [c for c in CASES if OPS[c[0]].arity > 0 and c[0] not in INTEGER_JUMPS
                  and c[0] not in VJP_REFUSED]
# Their gradient is an op whose own vjp refuses (VJP_REFUSED): first order only.
FIRST_ORDER_ONLY = {"SoftDTW_SqDist"}


def routine_and_inputs(case, index):
    name, dims, params = case
    spec = OPS[name]
    cats = categories(spec.arity, shift=index)
    g = torch.Generator().manual_seed(index)
    nodes = [var(k, d, c) for k, (d, c) in enumerate(zip(dims, cats))]
    args = [sample(dom, c, d, g, N, M).requires_grad_()
            for dom, c, d in zip(spec.domain, cats, dims)]
    aliases = [f"a{k} = Var({k},{d},{c})" for k, (d, c) in enumerate(zip(dims, cats))]
    # Every formula needs an i- and a j-indexed variable: add unused ones if missing.
    for c, n in ((0, N), (1, M)):
        if c not in cats:
            aliases.append(f"a{len(aliases)} = Var({len(aliases)},1,{c})")
            args.append(torch.zeros(n, 1, dtype=torch.float64))
    node = make(name, *nodes, params=params)
    return Genred(str(node), aliases, axis=1), args


@pytest.mark.parametrize("index", range(len(DIFFERENTIABLE)),
                         ids=[case_id(c) for c in DIFFERENTIABLE])
def test_gradcheck_and_gradgradcheck_every_op(index):
    routine, args = routine_and_inputs(DIFFERENTIABLE[index], index)
    assert torch.autograd.gradcheck(routine, args)
    if DIFFERENTIABLE[index][0] in FIRST_ORDER_ONLY:
        with pytest.raises(LazyKeOpsError, match="second derivatives"):
            torch.autograd.gradgradcheck(routine, args)
    else:
        assert torch.autograd.gradgradcheck(routine, args)
