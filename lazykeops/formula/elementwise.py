"""Elementwise operations and constants.

Every op here applies componentwise; a dimension-1 argument broadcasts against the others
(as in pykeops: `Exp(-G*SqDist(X,Y)) * B` multiplies a scalar by the vector B). Each row of
the tables below is one op: its C++ expression (see formula.emit) and its torch reference.
"""

import torch

from .emit import elementwise
from .node import OpSpec, dim_error, register


def broadcast_dim(op):
    """Dimension rule of elementwise ops: all dims equal, or 1 (broadcast scalar)."""

    def rule(dims, params):
        if len(dims) == 1:
            return dims[0]
        if len(dims) == 2 and (dims[0] == dims[1] or dims[1] == 1):
            return dims[0]
        wide = {d for d in dims if d != 1}
        if len(wide) > 1:
            shown = ", ".join(str(d) for d in dims)
            raise dim_error(op, f"arguments have dimensions {shown}; they must be equal or 1")
        return wide.pop() if wide else 1

    return rule


def _bcast(*tensors):
    return torch.broadcast_tensors(*tensors)


# Unary ops: name -> (C++ expression, torch reference, domain of the argument).
UNARY = {
    "Minus": ("(-{0})", lambda x: -x, "any"),
    "Inv": ("(T(1) / {0})", lambda x: 1 / x, "nonzero"),
    "Exp": ("lk::exp({0})", torch.exp, "any"),
    "Log": ("lk::log({0})", torch.log, "positive"),
    "XLogX": ("lk::xlogx({0})", lambda x: torch.where(x == 0, 0 * x, x * torch.log(x)),
              "positive"),
    "Sin": ("lk::sin({0})", torch.sin, "any"),
    "Cos": ("lk::cos({0})", torch.cos, "any"),
    "SinXDivX": ("lk::sinxdivx({0})",
                 lambda x: torch.where(x == 0, 1 + 0 * x, torch.sin(x) / x), "any"),
    "Asin": ("lk::asin({0})", torch.asin, "unit"),
    "Acos": ("lk::acos({0})", torch.acos, "unit"),
    "Atan": ("lk::atan({0})", torch.atan, "any"),
    "Square": ("({0} * {0})", torch.square, "any"),
    "Sqrt": ("lk::sqrt({0})", torch.sqrt, "positive"),
    "Rsqrt": ("lk::rsqrt({0})", lambda x: torch.where(x == 0, 0 * x, torch.rsqrt(x)),
              "positive"),
    "Abs": ("lk::abs({0})", torch.abs, "nonzero"),
    "Sign": ("lk::sign({0})", torch.sign, "nonzero"),
    "Step": ("lk::step({0})", lambda x: (x >= 0).to(x.dtype), "nonzero"),
    "ReLU": ("lk::relu({0})", torch.relu, "nonzero"),
    "Floor": ("lk::floor({0})", torch.floor, "nonzero"),
}

# Binary ops: name -> (C++ expression, torch reference, domains of the two arguments).
BINARY = {
    "Add": ("({0} + {1})", torch.add, ("any", "any")),
    "Subtract": ("({0} - {1})", torch.sub, ("any", "any")),
    "Mult": ("({0} * {1})", torch.mul, ("any", "any")),
    "Divide": ("({0} / {1})", torch.div, ("any", "nonzero")),
    "Equal": ("({0} == {1} ? T(1) : T(0))", lambda a, b: (a == b).to(a.dtype),
              ("small_int", "small_int")),
    "NotEqual": ("({0} != {1} ? T(1) : T(0))", lambda a, b: (a != b).to(a.dtype),
                 ("small_int", "small_int")),
    "LessThan": ("({0} < {1} ? T(1) : T(0))", lambda a, b: (a < b).to(a.dtype),
                 ("any", "any")),
    "LessOrEqual": ("({0} <= {1} ? T(1) : T(0))", lambda a, b: (a <= b).to(a.dtype),
                    ("any", "any")),
    "Atan2": ("lk::atan2({0}, {1})", torch.atan2, ("any", "nonzero")),
    "Powf": ("lk::pow({0}, {1})", torch.pow, ("positive", "any")),
}

# Ternary ops, same layout.
TERNARY = {
    "Clamp": ("lk::clamp({0}, {1}, {2})",
              lambda x, a, b: torch.minimum(torch.maximum(x, a), b),
              ("any", "negative", "positive")),
    "IfElse": ("lk::ifelse({0}, {1}, {2})",
               lambda c, a, b: torch.where(c >= 0, a, b), ("nonzero", "any", "any")),
    "Mod": ("lk::mod({0}, {1}, {2})",
            lambda x, n, d: x - n * torch.floor((x - d) / n), ("any", "positive", "any")),
}


def _ref_elementwise(fn):
    return lambda args, params: fn(*_bcast(*args))


for _name, (_cpp, _ref, _dom) in UNARY.items():
    register(OpSpec(_name, 1, (), broadcast_dim(_name), elementwise(_cpp),
                    _ref_elementwise(_ref), domain=(_dom,)))

for _table, _arity in ((BINARY, 2), (TERNARY, 3)):
    for _name, (_cpp, _ref, _dom) in _table.items():
        register(OpSpec(_name, _arity, (), broadcast_dim(_name), elementwise(_cpp),
                        _ref_elementwise(_ref), domain=_dom))


# Ops with integer parameters.
def _dim_same(dims, params):
    return dims[0]


def _check_nonzero_int(op, name):
    def rule(dims, params):
        if params[0] == 0:
            raise dim_error(op, f"{name} must be a nonzero integer")
        return dims[0] if dims else 1

    return rule


register(OpSpec("Pow", 1, ("n",), _dim_same, elementwise("lk::int_pow({0}, {1})"),
                lambda args, p: args[0] ** p[0], domain=("nonzero",), example_params=(3,)))


def _emit_round(out, args, params):
    # Round(x, d) rounds to d decimals: the scale 10^d is folded here, not at run time.
    return elementwise(f"lk::round_to({{0}}, T({10.0 ** params[0]!r}))")(out, args, ())


register(OpSpec("Round", 1, ("d",), _dim_same, _emit_round,
                lambda args, p: torch.round(args[0] * 10.0 ** p[0]) / 10.0 ** p[0],
                domain=("any",), example_params=(2,)))


def _clampint_dim(dims, params):
    if params[0] > params[1]:
        raise dim_error("ClampInt", f"lower bound {params[0]} exceeds upper bound {params[1]}")
    return dims[0]


register(OpSpec("ClampInt", 1, ("a", "b"), _clampint_dim,
                elementwise("lk::clamp({0}, T({1}), T({2}))"),
                lambda args, p: torch.clamp(args[0], p[0], p[1]),
                domain=("any",), example_params=(-1, 1)))


# Constants: no formula argument, dimension from their parameters.
register(OpSpec("IntCst", 0, ("n",), lambda dims, p: 1, None,
                lambda args, p: torch.tensor([float(p[0])], dtype=torch.float64),
                example_params=(3,)))
register(OpSpec("IntInv", 0, ("n",), _check_nonzero_int("IntInv", "n"), None,
                lambda args, p: torch.tensor([1.0 / p[0]], dtype=torch.float64),
                example_params=(3,)))


def _ratcst_dim(dims, params):
    if params[1] == 0:
        raise dim_error("RatCst", "the denominator must be nonzero")
    return 1


register(OpSpec("RatCst", 0, ("p", "q"), _ratcst_dim, None,
                lambda args, p: torch.tensor([p[0] / p[1]], dtype=torch.float64),
                example_params=(2, 3)))


register(OpSpec("FloatCst", 0, ("value",), lambda dims, p: 1, None,
                lambda args, p: torch.tensor([float(p[0])], dtype=torch.float64),
                example_params=(0.25,),
                doc="A float literal of the string language (pykeops accepts integers only)."))


def _zero_dim(dims, params):
    if params[0] < 1:
        raise dim_error("Zero", f"dimension must be a positive integer, got {params[0]}")
    return params[0]


register(OpSpec("Zero", 0, ("dim",), _zero_dim, None,
                lambda args, p: torch.zeros(p[0], dtype=torch.float64), example_params=(2,)))


def _var_dim(dims, params):
    pos, dim, cat = params
    if pos < 0:
        raise dim_error("Var", f"position must be >= 0, got {pos}")
    if dim < 1:
        raise dim_error("Var", f"dimension must be >= 1, got {dim}")
    if cat not in (0, 1, 2):
        raise dim_error("Var", f"category must be 0 (i), 1 (j) or 2 (parameter), got {cat}")
    return dim


register(OpSpec("Var", 0, ("pos", "dim", "cat"), _var_dim, None, None))

# Constant values known to Python, so the code generator can inline them.
CONSTANT_VALUE = {
    "IntCst": lambda p: f"T({p[0]})",
    "IntInv": lambda p: f"(T(1) / T({p[0]}))",
    "RatCst": lambda p: f"(T({p[0]}) / T({p[1]}))",
    "Zero": lambda p: "T(0)",
    "FloatCst": lambda p: f"T({float(p[0])!r})",
}
