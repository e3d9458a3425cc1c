"""`__torch_function__` of the torch LazyTensor: a tensor meeting a LazyTensor in an
arithmetic operator gives a LazyTensor, also under torch.compile.

Eagerly, `b * K` already reaches `K.__rmul__` (torch's operator gives up on a LazyTensor);
this hook only makes it direct. Dynamo, though, sends every operator with a tensor operand
to torch, and dispatches it to the `__torch_function__` of the other operand: `K / b`
arrives as `Tensor.__rdiv__(b, K)`, `b / K` as `Tensor.div(b, K)`, and `K * b` as
`Tensor.mul(b, K)` (the operands swapped, which only commutative operators allow; the
formula is then b * K, the same values). `K @ b` arrives as `Tensor.matmul(b, K)`, the
operands swapped without a reflected name: under compilation that is read as `K @ b`
(eagerly, `b @ K` stays an error: a LazyTensor has no `__rmatmul__`). Other torch
functions of a LazyTensor stay unsupported (NotImplemented: torch raises its TypeError).
"""

import torch

# torch's function name -> the LazyTensor method that computes it, the tensor being the
# function's first argument and the LazyTensor its second.
_METHODS = {"add": "__radd__", "mul": "__rmul__", "sub": "__rsub__", "div": "__rtruediv__",
            "pow": "__rpow__", "__rsub__": "__sub__", "__rdiv__": "__truediv__",
            "__rpow__": "__pow__"}


def torch_function(cls, func, types, args=(), kwargs=None):
    name = getattr(func, "__name__", None)
    if kwargs or len(args) != 2 or not isinstance(args[1], cls) or \
            isinstance(args[0], cls):
        return NotImplemented
    tensor, lazy = args
    if name == "matmul":  # the method, not `@`: Dynamo would send `@` back here
        return lazy.__matmul__(tensor) if torch.compiler.is_compiling() else NotImplemented
    method = _METHODS.get(name)
    return NotImplemented if method is None else getattr(lazy, method)(tensor)
