"""Building blocks for the C++ emission rules of the ops.

An op's `emit(out, args, params)` returns C++ statements that fill its output. `out` and
each of `args` is a `Ref`: `ref(k)` is the C++ expression of component k (k is itself a C++
expression, usually a loop counter), `ref.at(k)` is the same but broadcasts dimension-1
values, and `ref.dim` is the Python-side dimension. Inside a statement, the scalar type is
`T`. Emitted code must compile both with g++ and nvcc: only lk:: math from lk_math.h,
no standard library containers, no exceptions.
"""


class Ref:
    """How generated code reads (or writes) component k of a value."""

    __slots__ = ("dim", "pattern")

    def __init__(self, dim, pattern):
        self.dim = dim
        self.pattern = pattern

    def __call__(self, k):
        return self.pattern.format(k=k)

    def at(self, k):
        """Component k, or component 0 when the value is a broadcast scalar."""
        return self(0) if self.dim == 1 else self(k)


def loop(dim, body_of_k):
    """`for k in range(dim): body(k)`, written without a loop when dim is 1."""
    if dim == 1:
        return [body_of_k("0")]
    return [f"for (int k = 0; k < {dim}; ++k) {{ {body_of_k('k')} }}"]


def elementwise(cpp):
    """Emission rule for an elementwise op: `cpp` is a format string over the args, e.g.
    "lk::exp({0})" or "({0} + {1})"; dimension-1 arguments broadcast."""

    def emit(out, args, params):
        def body(k):
            return f"{out(k)} = {cpp.format(*[a.at(k) for a in args], *params)};"

        return loop(out.dim, body)

    return emit


def block(*lines):
    """Scope temporaries of an emission rule so that two uses never collide."""
    return ["{"] + [f"  {line}" for line in lines] + ["}"]
