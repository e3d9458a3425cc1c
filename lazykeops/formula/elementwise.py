"""Elementwise operations and constants.

Every op here applies componentwise; a dimension-1 argument broadcasts against the others
(as in pykeops: `Exp(-G*SqDist(X,Y)) * B` multiplies a scalar by the vector B). Each row of
the tables below is one op: its C++ expression (see formula.emit), its torch reference,
the domain its test samples arguments from and its derivative. The constants' rows give
their values as C++ expressions (`constant`), which the code generator inlines.
"""

import math

from ..errors import LazyKeOpsError
from .algebra import add, cst, div, flt, mul, neg, op, sub
from .emit import elementwise
from .lazy_torch import torch
from .node import OpSpec, dim_error, make, param_error, register


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


# Derivative rules of the tables' rows that take more than a line. Conventions at kinks
# follow torch: |x|' = 0 and relu'(0) = 0; sqrt and rsqrt use lk::rsqrt(0) = 0, so that
# their gradient at 0 is 0 rather than inf or NaN.
def _sinxdivx_vjp(node, g):
    (x,) = node.args
    at_zero = op("Equal", x, cst(0))  # (cos x - sin x / x) / x, continued by 0 at x = 0
    slope = div(mul(sub(cst(1), at_zero), sub(op("Cos", x), node)), add(x, at_zero))
    return (mul(g, slope),)


def _atan2_vjp(node, g):
    y, x = node.args
    r2 = add(op("Square", x), op("Square", y))
    return mul(g, div(x, r2)), neg(mul(g, div(y, r2)))


def _powf_vjp(node, g):
    a, b = node.args
    # d(a^b)/db = a^b log a, continued by 0 at a = 0 (as torch) rather than 0 * -inf.
    log_a = op("Log", add(a, op("Equal", a, cst(0))))
    return mul(g, mul(b, op("Powf", a, sub(b, cst(1))))), mul(g, mul(log_a, node))


def _clamp_vjp(node, g):
    x, a, b = node.args
    inside = mul(op("LessOrEqual", a, x), op("LessOrEqual", x, b))
    return mul(g, inside), mul(g, op("LessThan", x, a)), mul(g, op("LessThan", b, x))


def _ifelse_vjp(node, g):
    c, a, b = node.args
    return None, mul(g, op("Step", c)), mul(g, sub(cst(1), op("Step", c)))


def _mod_vjp(node, g):
    x, n, d = node.args
    return g, neg(mul(g, op("Floor", div(sub(x, d), n)))), None


def _one_minus_square(x):
    return sub(cst(1), op("Square", x))


# Unary ops: name -> (C++ expression, torch reference, domain of the argument, derivative:
# vjp(node, g) giving one cotangent per argument, None for a zero one).
UNARY = {
    "Minus": ("(-{0})", lambda x: -x, "any", lambda n, g: (neg(g),)),
    "Inv": ("(T(1) / {0})", lambda x: 1 / x, "nonzero",
            lambda n, g: (neg(mul(g, op("Square", n))),)),
    "Exp": ("lk::exp({0})", lambda x: x.exp(), "any", lambda n, g: (mul(g, n),)),
    "Log": ("lk::log({0})", lambda x: x.log(), "positive", lambda n, g: (div(g, n.args[0]),)),
    "XLogX": ("lk::xlogx({0})", lambda x: torch.where(x == 0, 0 * x, x * torch.log(x)),
              "positive", lambda n, g: (mul(g, add(op("Log", n.args[0]), cst(1))),)),
    "Sin": ("lk::sin({0})", lambda x: x.sin(), "any",
            lambda n, g: (mul(g, op("Cos", n.args[0])),)),
    "Cos": ("lk::cos({0})", lambda x: x.cos(), "any",
            lambda n, g: (neg(mul(g, op("Sin", n.args[0]))),)),
    "SinXDivX": ("lk::sinxdivx({0})",
                 lambda x: torch.where(x == 0, 1 + 0 * x, torch.sin(x) / x), "any",
                 _sinxdivx_vjp),
    "Asin": ("lk::asin({0})", lambda x: x.asin(), "unit",
             lambda n, g: (mul(g, op("Rsqrt", _one_minus_square(n.args[0]))),)),
    "Acos": ("lk::acos({0})", lambda x: x.acos(), "unit",
             lambda n, g: (neg(mul(g, op("Rsqrt", _one_minus_square(n.args[0])))),)),
    "Atan": ("lk::atan({0})", lambda x: x.atan(), "any",
             lambda n, g: (div(g, add(cst(1), op("Square", n.args[0]))),)),
    "Square": ("({0} * {0})", lambda x: x.square(), "any",
               lambda n, g: (mul(cst(2), mul(g, n.args[0])),)),
    "Sqrt": ("lk::sqrt({0})", lambda x: x.sqrt(), "positive",
             lambda n, g: (mul(flt(0.5), mul(g, op("Rsqrt", n.args[0]))),)),
    "Rsqrt": ("lk::rsqrt({0})", lambda x: torch.where(x == 0, 0 * x, torch.rsqrt(x)),
              "positive", lambda n, g: (mul(flt(-0.5), mul(g, op("Pow", n, params=(3,)))),)),
    "Abs": ("lk::abs({0})", lambda x: x.abs(), "nonzero",
            lambda n, g: (mul(g, op("Sign", n.args[0])),)),
    "Sign": ("lk::sign({0})", lambda x: x.sign(), "nonzero", lambda n, g: (None,)),
    "Step": ("lk::step({0})", lambda x: (x >= 0).to(x.dtype), "nonzero", lambda n, g: (None,)),
    "ReLU": ("lk::relu({0})", lambda x: x.relu(), "nonzero",
             lambda n, g: (mul(g, op("LessThan", cst(0), n.args[0])),)),
    "Floor": ("lk::floor({0})", lambda x: x.floor(), "nonzero", lambda n, g: (None,)),
}

# Binary ops: name -> (C++ expression, torch reference, domains of the two arguments,
# derivative).
BINARY = {
    "Add": ("({0} + {1})", lambda a, b: a + b, ("any", "any"), lambda n, g: (g, g)),
    "Subtract": ("({0} - {1})", lambda a, b: a - b, ("any", "any"), lambda n, g: (g, neg(g))),
    "Mult": ("({0} * {1})", lambda a, b: a * b, ("any", "any"),
             lambda n, g: (mul(g, n.args[1]), mul(g, n.args[0]))),
    "Divide": ("({0} / {1})", lambda a, b: a / b, ("any", "nonzero"),
               lambda n, g: (div(g, n.args[1]), neg(mul(g, div(n, n.args[1]))))),
    "Equal": ("({0} == {1} ? T(1) : T(0))", lambda a, b: (a == b).to(a.dtype),
              ("small_int", "small_int"), lambda n, g: (None, None)),
    "NotEqual": ("({0} != {1} ? T(1) : T(0))", lambda a, b: (a != b).to(a.dtype),
                 ("small_int", "small_int"), lambda n, g: (None, None)),
    "LessThan": ("({0} < {1} ? T(1) : T(0))", lambda a, b: (a < b).to(a.dtype),
                 ("any", "any"), lambda n, g: (None, None)),
    "LessOrEqual": ("({0} <= {1} ? T(1) : T(0))", lambda a, b: (a <= b).to(a.dtype),
                    ("any", "any"), lambda n, g: (None, None)),
    "Atan2": ("lk::atan2({0}, {1})", lambda a, b: a.atan2(b), ("any", "nonzero"), _atan2_vjp),
    "Powf": ("lk::pow({0}, {1})", lambda a, b: a.pow(b), ("positive", "any"), _powf_vjp),
}

# Ternary ops, same layout.
TERNARY = {
    "Clamp": ("lk::clamp({0}, {1}, {2})",
              lambda x, a, b: torch.minimum(torch.maximum(x, a), b),
              ("any", "negative", "positive"), _clamp_vjp),
    "IfElse": ("lk::ifelse({0}, {1}, {2})",
               lambda c, a, b: torch.where(c >= 0, a, b), ("nonzero", "any", "any"),
               _ifelse_vjp),
    "Mod": ("lk::mod({0}, {1}, {2})",
            lambda x, n, d: x - n * torch.floor((x - d) / n), ("any", "positive", "any"),
            _mod_vjp),
}


def _pow_vjp(node, g):
    (x,), (n,) = node.args, node.params
    lower = cst(1) if n == 1 else x if n == 2 else op("Pow", x, params=(n - 1,))
    return (mul(g, mul(cst(n), lower)),)


def _clampint_vjp(node, g):
    (x,), (a, b) = node.args, node.params
    return (mul(g, mul(op("LessOrEqual", cst(a), x), op("LessOrEqual", x, cst(b)))),)


def _ref_elementwise(fn):
    return lambda args, params: fn(*_bcast(*args))


for _name, (_cpp, _ref, _dom, _vjp) in UNARY.items():
    register(OpSpec(_name, 1, (), broadcast_dim(_name), elementwise(_cpp),
                    _ref_elementwise(_ref), domain=(_dom,), vjp=_vjp, componentwise=True))

for _table, _arity in ((BINARY, 2), (TERNARY, 3)):
    for _name, (_cpp, _ref, _dom, _vjp) in _table.items():
        register(OpSpec(_name, _arity, (), broadcast_dim(_name), elementwise(_cpp),
                        _ref_elementwise(_ref), domain=_dom, vjp=_vjp, componentwise=True))


# Ops with integer parameters.
def _dim_same(dims, params):
    return dims[0]


def _check_nonzero_int(op, name):
    def rule(dims, params):
        if params[0] == 0:
            raise dim_error(op, f"{name} must be a nonzero integer")
        return dims[0] if dims else 1

    return rule


# Integer parameters that reach C++ as int64 (Pow's exponent) must fit in one.
INT64_LIMIT = 2 ** 63 - 1


def _pow_dim(dims, params):
    if abs(params[0]) > INT64_LIMIT:
        raise param_error("Pow", f"the exponent {params[0]} does not fit in a 64-bit integer "
                        "(use Powf for a real exponent)")
    return dims[0]


register(OpSpec("Pow", 1, ("n",), _pow_dim, elementwise("lk::int_pow({0}, int64_t({1}))"),
                lambda args, p: args[0] ** p[0], domain=("nonzero",), example_params=(3,),
                vjp=_pow_vjp))


def _round_half_away(x):
    """C's round (pykeops's Round): halves away from zero, where torch.round goes to even."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _emit_round(out, args, params):
    # Round(x, d) rounds to d decimals: the scale 10^d is folded here, not at run time.
    return elementwise(f"lk::round_to({{0}}, T({10.0 ** params[0]!r}))")(out, args, ())


# 10**d must be a finite float64 for the scale of Round(x, d) (as torch, a scale that
# overflows float32 gives NaN there).
ROUND_DECIMALS = 300


def _round_dim(dims, params):
    if abs(params[0]) > ROUND_DECIMALS:
        raise param_error("Round", f"{params[0]} decimals: expected between -{ROUND_DECIMALS} "
                        f"and {ROUND_DECIMALS}")
    return dims[0]


register(OpSpec("Round", 1, ("d",), _round_dim, _emit_round,
                lambda args, p: _round_half_away(args[0] * 10.0 ** p[0]) / 10.0 ** p[0],
                domain=("any",), example_params=(2,), vjp=lambda n, g: (None,),
                componentwise=True))


def real_literal(value):
    """A C++ literal of the number `value` in T: always a floating literal, so that an
    integer constant such as 2**64 is never a C++ integer literal (which wraps modulo
    2**64). The constants' rules below keep `value` a finite float64."""
    return f"T({float(value)!r})"


def _clampint_dim(dims, params):
    if params[0] > params[1]:
        raise dim_error("ClampInt", f"lower bound {params[0]} exceeds upper bound {params[1]}")
    return dims[0]


register(OpSpec("ClampInt", 1, ("a", "b"), _clampint_dim,
                lambda out, args, p: elementwise(
                    f"lk::clamp({{0}}, {real_literal(p[0])}, {real_literal(p[1])})")(out, args, ()),
                lambda args, p: torch.clamp(args[0], p[0], p[1]),
                domain=("any",), example_params=(-1, 1), vjp=_clampint_vjp,
                componentwise=True))


# Constants: no formula argument, dimension from their parameters.
def _finite_constant(op):
    """Dimension rule of the constants: 1, if every parameter is a finite float64 (an
    integer literal past 1.8e308 has no value in any engine type)."""
    def rule(dims, params):
        for value in params:
            try:
                ok = math.isfinite(float(value))
            except OverflowError:
                ok = False
            if not ok:
                raise LazyKeOpsError(f"{op}: the constant {_short(value)} is not a finite "
                                     "float64 number")
        return 1

    return rule


def _short(value):
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-10:]} ({len(text)} digits)"


register(OpSpec("IntCst", 0, ("n",), _finite_constant("IntCst"), None,
                lambda args, p: torch.tensor([float(p[0])], dtype=torch.float64),
                example_params=(3,), constant=lambda p: real_literal(p[0])))
def _intinv_dim(dims, params):
    _finite_constant("IntInv")(dims, params)
    return _check_nonzero_int("IntInv", "n")(dims, params)


register(OpSpec("IntInv", 0, ("n",), _intinv_dim, None,
                lambda args, p: torch.tensor([1.0 / p[0]], dtype=torch.float64),
                example_params=(3,), constant=lambda p: f"(T(1) / {real_literal(p[0])})"))


def _ratcst_dim(dims, params):
    _finite_constant("RatCst")(dims, params)
    if params[1] == 0:
        raise dim_error("RatCst", "the denominator must be nonzero")
    return 1


register(OpSpec("RatCst", 0, ("p", "q"), _ratcst_dim, None,
                lambda args, p: torch.tensor([p[0] / p[1]], dtype=torch.float64),
                example_params=(2, 3),
                constant=lambda p: f"({real_literal(p[0])} / {real_literal(p[1])})"))


register(OpSpec("FloatCst", 0, ("value",), _finite_constant("FloatCst"), None,
                lambda args, p: torch.tensor([float(p[0])], dtype=torch.float64),
                example_params=(0.25,), constant=lambda p: real_literal(p[0]),
                doc="A float literal of the string language (pykeops accepts integers only)."))


def _zero_dim(dims, params):
    if params[0] < 1:
        raise dim_error("Zero", f"dimension must be a positive integer, got {params[0]}")
    return params[0]


# Zeros of any dimension: a slice of them is zeros (formula/slicing.py), and so is a chunk
# (compile/chunking.py).
register(OpSpec("Zero", 0, ("dim",), _zero_dim, None,
                lambda args, p: torch.zeros(p[0], dtype=torch.float64), example_params=(2,),
                constant=lambda p: "T(0)", uniform=True,
                slice=lambda node, start, length, part: make("Zero", params=(length,))))


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
