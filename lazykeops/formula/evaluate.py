"""Reference evaluator: a formula computed densely with the ops' torch references.

Used by `LazyTensor.dense()` and by the tests as an independent check of the compiled
kernels. Values are torch tensors whose last axis is the formula dimension and whose
leading axes broadcast: i-variables as (..., N, 1, D), j-variables as (..., 1, M, D),
parameters as (..., 1, 1, D).
"""

from .node import OPS


def evaluate(node, values, dtype, device="cpu"):
    """The value of `node`; `values[pos]` is the tensor of variable `pos`; constants are
    made with `dtype` on `device`."""
    cache = {}
    for n in node.walk():
        if n.op == "Var":
            cache[n] = values[n.params[0]]
        else:
            args = [cache[a] for a in n.args]
            spec = OPS[n.op]
            result = spec.reference(args, n.params)
            cache[n] = result.to(device, dtype) if spec.constant is not None else result
    return cache[node]
