"""Slices of a formula's components, computed without the rest.

`components(f, start, length)` is a formula equal to Extract(f, start, length) that does
not compute the other components where it can avoid it: the slice moves down through
componentwise ops (dimension-1 arguments stay whole, they broadcast) and through the ops
whose row has a slicing rule (OpSpec.slice: Concat, Extract, ExtractT, Zero), down to the
variables, which are read in place. Elsewhere (a matrix product, say) the whole node is
computed and sliced.

The CUDA engine uses it for wide outputs: a reduction whose outputs are independent per
component (Sum, Min, Max, ..., LogSumExp) runs as one kernel per slice of components,
each with the registers for its slice only (runtime/cuda.py).
"""

from types import GeneratorType

from .node import OPS, make
from .trampoline import trampoline


def components(node, start, length):
    """Components start .. start + length - 1 of `node`, as a formula."""
    return trampoline(_components(node, start, length, {}))


def _components(node, start, length, memo):
    """components(), memoised (shared subtrees are sliced once), as a generator yielding
    its recursive calls (formula/trampoline.py)."""
    key = (node, start, length)
    if key not in memo:
        memo[key] = yield _slice(node, start, length, memo)
    return memo[key]


def _slice(node, start, length, memo):
    if start == 0 and length == node.dim:
        return node
    if node.dim == 1:
        return node  # a broadcast scalar: the same for every component
    spec = OPS[node.op]
    if spec.componentwise:
        args = []
        for a in node.args:
            args.append(a if a.dim == 1 else (yield _components(a, start, length, memo)))
        return make(node.op, *args, params=node.params)
    if spec.slice is not None:
        result = spec.slice(node, start, length,
                            lambda x, s, n: _components(x, s, n, memo))
        if type(result) is GeneratorType:  # a rule that slices arguments
            result = yield from result
        return result
    return make("Extract", node, params=(start, length))
