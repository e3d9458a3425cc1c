"""Vector operations: scalar products, norms, distances and reductions over a vector's
components. Fused emission: SqDist(x, y) is one loop accumulating (x_k - y_k)^2, with no
temporary array for x - y.
"""

import torch

from .emit import block
from .node import OpSpec, dim_error, register


def _same_dims(op):
    def rule(dims, params):
        if len(set(dims)) != 1:
            raise dim_error(op, f"arguments have dimensions {', '.join(map(str, dims))}; "
                                "they must be equal")
        return 1

    return rule


def _accumulate(out, n, term):
    """out(0) = sum over k < n of term(k), as one fused loop."""
    return block("T s = T(0);",
                 f"for (int k = 0; k < {n}; ++k) {{ s += {term('k')}; }}",
                 f"{out(0)} = s;")


def _emit_scalprod(out, args, params):
    a, b = args
    return _accumulate(out, a.dim, lambda k: f"{a(k)} * {b(k)}")


def _emit_sqnorm2(out, args, params):
    (a,) = args
    return _accumulate(out, a.dim, lambda k: f"{a(k)} * {a(k)}")


def _emit_sqdist(out, args, params):
    a, b = args
    return _accumulate(out, a.dim, lambda k: f"({a(k)} - {b(k)}) * ({a(k)} - {b(k)})")


def _emit_sum(out, args, params):
    (a,) = args
    return _accumulate(out, a.dim, lambda k: a(k))


register(OpSpec("Scalprod", 2, (), _same_dims("Scalprod"), _emit_scalprod,
                lambda args, p: (args[0] * args[1]).sum(-1, keepdim=True),
                domain=("any", "any"), example_dims=(3, 3)))
register(OpSpec("SqNorm2", 1, (), lambda dims, p: 1, _emit_sqnorm2,
                lambda args, p: (args[0] ** 2).sum(-1, keepdim=True),
                domain=("any",), example_dims=(3,)))
register(OpSpec("SqDist", 2, (), _same_dims("SqDist"), _emit_sqdist,
                lambda args, p: ((args[0] - args[1]) ** 2).sum(-1, keepdim=True),
                domain=("any", "any"), example_dims=(3, 3)))
register(OpSpec("Sum", 1, (), lambda dims, p: 1, _emit_sum,
                lambda args, p: args[0].sum(-1, keepdim=True),
                domain=("any",), example_dims=(3,)))
