"""Slices of a formula's components, computed without the rest.

`components(f, start, length)` is a formula equal to Extract(f, start, length) that does
not compute the other components where it can avoid it: the slice moves down through
componentwise ops (dimension-1 arguments stay whole, they broadcast), Concat, Extract and
ExtractT, down to the variables, which are read in place. Elsewhere (a matrix product,
say) the whole node is computed and sliced.

The CUDA engine uses it for wide outputs: a reduction whose outputs are independent per
component (Sum, Min, Max, ..., LogSumExp) runs as one kernel per slice of components,
each with the registers for its slice only (runtime/cuda.py).
"""

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
    op = node.op
    if op == "Zero":
        return make("Zero", params=(length,))
    if OPS[op].componentwise:
        args = []
        for a in node.args:
            args.append(a if a.dim == 1 else (yield _components(a, start, length, memo)))
        return make(op, *args, params=node.params)
    if op == "Concat":
        a, b = node.args
        if start + length <= a.dim:
            return (yield _components(a, start, length, memo))
        if start >= a.dim:
            return (yield _components(b, start - a.dim, length, memo))
        head = yield _components(a, start, a.dim - start, memo)
        return make("Concat", head, (yield _components(b, 0, length - head.dim, memo)))
    if op == "Extract":
        return (yield _components(node.args[0], node.params[0] + start, length, memo))
    if op == "ExtractT":
        (x,), (offset, _) = node.args, node.params
        lo, hi = max(start, offset), min(start + length, offset + x.dim)
        if lo >= hi:
            return make("Zero", params=(length,))
        inner = yield _components(x, lo - offset, hi - lo, memo)
        return inner if (lo, hi) == (start, start + length) else \
            make("ExtractT", inner, params=(lo - start, length))
    return make("Extract", node, params=(start, length))
