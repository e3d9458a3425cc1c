"""Shape bookkeeping of LazyTensor trees: merging the sizes, batch dims, framework,
dtype and device of an operation's arguments (with errors that name the shapes), and the
iterative post-order walk that reductions, transposes and rebinding use."""

from ..errors import LazyKeOpsError
from ..runtime.signature import broadcast


def _shape_text(t):
    return str(tuple(t.shape))


def _shapes(args):
    return " and ".join(_shape_text(a) for a in args)


def merge_into(out, args):
    """Sizes, batch dims, framework, dtype, device and block-sparse ranges of an op's
    result; errors name the shapes involved. Written as one plain loop: it runs for every
    op of every call."""
    ni = nj = framework = ranges = None
    batches = None
    for a in args:
        if a._ranges is not None:
            if ranges is not None and any(p is not q for p, q in zip(ranges, a._ranges)):
                raise LazyKeOpsError(f"{out.op}: LazyTensors of shapes {_shapes(args)} carry "
                                     "different block-sparse ranges; set one (K.ranges = ...)"
                                     " on the result, or pass ranges= to the reduction")
            ranges = a._ranges
        if a.ni is not None:
            if ni is not None and ni != a.ni:
                raise LazyKeOpsError(f"{out.op}: LazyTensors of shapes {_shapes(args)} have "
                                     f"different N ({ni} and {a.ni})")
            ni = a.ni
        if a.nj is not None:
            if nj is not None and nj != a.nj:
                raise LazyKeOpsError(f"{out.op}: LazyTensors of shapes {_shapes(args)} have "
                                     f"different M ({nj} and {a.nj})")
            nj = a.nj
        if a.framework is not None:
            if framework is None:
                framework, dtype, device = a.framework, a.dtype, a.device
            elif (framework, dtype, device) != (a.framework, a.dtype, a.device):
                raise LazyKeOpsError(f"{out.op}: LazyTensors of shapes {_shapes(args)} mix "
                                     f"{(framework, dtype, device)} and "
                                     f"{(a.framework, a.dtype, a.device)} (framework, dtype, "
                                     "device)")
        if a.batch:
            batches = [a.batch] if batches is None else batches + [a.batch]
    out.ni, out.nj = ni, nj
    if ranges is not None:
        out._ranges = ranges
    if framework is not None:
        out.framework, out.dtype, out.device = framework, dtype, device
    if batches is not None:
        out.batch = batches[0] if len(batches) == 1 else broadcast_batch(batches, args, out.op)


def broadcast_batch(batches, args, op):
    result = broadcast(batches)
    if result is None:
        raise LazyKeOpsError(f"{op}: batch dimensions of LazyTensors of shapes "
                             f"{_shapes(args)} do not broadcast")
    return result


def postorder(roots):
    """The LazyTensors under `roots`, each once, children before parents: an explicit
    stack, since expressions built in loops are deeper than Python's recursion limit."""
    order, seen = [], set()
    stack = [(r, False) for r in reversed(roots)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        stack.extend((a, False) for a in reversed(t.args) if id(a) not in seen)
    return order
