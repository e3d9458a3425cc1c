"""Complex operations on interleaved real vectors, the ops of pykeops's ComplexLazyTensor.

A complex vector (z_0, ..., z_{d-1}) is the real vector (Re z_0, Im z_0, Re z_1, ...) of
dimension 2d, so complex values travel through variables, engines and reductions as plain
reals. The ops here read and write those pairs; they are those of pykeops 2.3
(keopscore/formulas/complex) under the same names and dimension rules:

- elementwise complex ops (ComplexAdd, ComplexSubtract, ComplexMult, ComplexDivide, Conj,
  ComplexExp) take even dimensions, equal, or 2 (one complex scalar) against any;
- ComplexReal, ComplexImag, ComplexAngle, ComplexAbs, ComplexSquareAbs map 2d to d reals;
  Real2Complex, Imag2Complex and ComplexExp1j map d reals to 2d;
- ComplexRealScal(s, z) scales z by the real scalar s (dimension 1, the first argument:
  pykeops's builder also accepts it second, the op itself takes this one order);
- ComplexSum(z) sums the complex components (dimension 2), ComplexSumT is its adjoint.

Derivatives are the transposes of the real-linear maps of the pairs, which is torch's
convention for complex gradients (the cotangent of z in w = a z is conj(a) times that of
w), so torch.view_as_real / view_as_complex around a reduction give torch's gradients.
ComplexAbs and ComplexAngle follow torch at 0 for Abs (gradient 0, through
lk::rsqrt(0) = 0); the angle's derivative is undefined there.

The torch references go through torch's complex arithmetic (complex128 for float64
inputs), independent of the pair formulas of the emission rules.
"""

from .algebra import cst, mul, neg, op
from .emit import block, loop
from .lazy_torch import torch
from .node import OpSpec, dim_error, register


# ------------------------------------------------------------------------ dimension rules
def _check_even(name, d, what="the argument"):
    if d % 2:
        raise dim_error(name, f"{what} has dimension {d}: a complex vector has an even "
                              "dimension (real and imaginary parts interleaved)")


def _complex_broadcast(name):
    """Elementwise complex ops: even dims, equal or 2 (a complex scalar broadcasts)."""

    def rule(dims, params):
        for d in dims:
            _check_even(name, d)
        wide = {d for d in dims if d != 2}
        if len(wide) > 1:
            raise dim_error(name, f"complex arguments of dimensions "
                                  f"{', '.join(str(d // 2) for d in dims)} (real dimensions "
                                  f"{', '.join(map(str, dims))}); they must be equal or 1")
        return wide.pop() if wide else 2

    return rule


def _halving(name):
    def rule(dims, params):
        _check_even(name, dims[0])
        return dims[0] // 2

    return rule


def _doubling(dims, params):
    return 2 * dims[0]


def _realscal_dim(dims, params):
    if dims[0] != 1:
        raise dim_error("ComplexRealScal", f"the real factor must have dimension 1, got "
                                           f"{dims[0]}")
    _check_even("ComplexRealScal", dims[1], "the complex factor")
    return dims[1]


def _sum_dim(dims, params):
    _check_even("ComplexSum", dims[0])
    return 2


def _sumt_dim(dims, params):
    if dims[0] != 2:
        raise dim_error("ComplexSumT", f"the argument must be one complex number (real "
                                       f"dimension 2), got dimension {dims[0]}")
    if params[0] < 2 or params[0] % 2:
        raise dim_error("ComplexSumT", f"the output dimension must be even and >= 2, got "
                                       f"{params[0]}")
    return params[0]


# ------------------------------------------------------------------------------ emission
def _re(a, k):
    """C++ real part of complex component k of a (component 0 for a complex scalar)."""
    return a(0) if a.dim == 2 else a(f"2 * {k}")


def _im(a, k):
    return a(1) if a.dim == 2 else a(f"2 * {k} + 1")


def _pairwise(body):
    """Emission of an op whose complex output component k is body(out, args, k): C++
    lines reading the pairs of the args (broadcasting complex scalars)."""

    def emit(out, args, params):
        return loop(out.dim // 2, lambda k: " ".join(["{", *body(out, args, k), "}"]))

    return emit


def _write(out, k, re, im):
    return [f"{out(f'2 * {k}')} = {re};", f"{out(f'2 * {k} + 1')} = {im};"]


def _load(name, a, k):
    return [f"const T {name}r = {_re(a, k)};", f"const T {name}i = {_im(a, k)};"]


def _mult_body(out, args, k):
    a, b = args
    return [*_load("a", a, k), *_load("b", b, k),
            *_write(out, k, "ar * br - ai * bi", "ar * bi + ai * br")]


def _divide_body(out, args, k):
    a, b = args
    return [*_load("a", a, k), *_load("b", b, k), "const T d = br * br + bi * bi;",
            *_write(out, k, "(ar * br + ai * bi) / d", "(ai * br - ar * bi) / d")]


def _exp_body(out, args, k):
    (a,) = args
    return [*_load("a", a, k), "const T r = lk::exp(ar);",
            *_write(out, k, "r * lk::cos(ai)", "r * lk::sin(ai)")]


def _per_real(expr):
    """Emission of a halving op: out(k) = expr(re, im) of complex component k."""

    def emit(out, args, params):
        (a,) = args
        return loop(out.dim, lambda k: f"{out(k)} = {expr(a(f'2 * {k}'), a(f'2 * {k} + 1'))};")

    return emit


def _from_real(re, im):
    """Emission of a doubling op: component k of the real argument x gives the pair
    (re(x_k), im(x_k))."""

    def emit(out, args, params):
        (x,) = args
        return loop(x.dim, lambda k: " ".join(
            ["{", f"const T x = {x(k)};", *_write(out, k, re("x"), im("x")), "}"]))

    return emit


def _emit_realscal(out, args, params):
    s, z = args
    return block(f"const T s = {s(0)};",
                 f"for (int k = 0; k < {out.dim}; ++k) {{ {out('k')} = s * {z('k')}; }}")


def _emit_sum(out, args, params):
    (z,) = args
    return block("T re = T(0), im = T(0);",
                 f"for (int k = 0; k < {z.dim // 2}; ++k) {{ re += {z('2 * k')}; "
                 f"im += {z('2 * k + 1')}; }}",
                 f"{out(0)} = re;", f"{out(1)} = im;")


def _emit_sumt(out, args, params):
    (z,) = args
    return block(f"const T re = {z(0)}, im = {z(1)};",
                 f"for (int k = 0; k < {out.dim // 2}; ++k) {{ {out('2 * k')} = re; "
                 f"{out('2 * k + 1')} = im; }}")


# ---------------------------------------------------------------------------- references
def as_complex(x):
    """Interleaved reals (..., 2d) as complex (..., d), differentiably."""
    return torch.complex(x[..., 0::2], x[..., 1::2])


def as_pairs(z):
    """Complex (..., d) as interleaved reals (..., 2d), differentiably."""
    return torch.stack((z.real, z.imag), dim=-1).flatten(-2)


def _complex_ref(fn):
    """Reference of an op from complex args to a complex value."""
    return lambda args, params: as_pairs(fn(*[as_complex(a) for a in args]))


def _real_to_complex(fn):
    return lambda args, params: as_pairs(fn(args[0].to(torch.complex128 if args[0].dtype
                                                        == torch.float64 else torch.complex64)))


def _complex_to_real(fn):
    return lambda args, params: fn(as_complex(args[0]))


def _sum_ref(args, params):
    return as_pairs(as_complex(args[0]).sum(-1, keepdim=True))


def _sumt_ref(args, params):
    z = as_complex(args[0])
    return as_pairs(z.expand(*z.shape[:-1], params[0] // 2))


def _realscal_ref(args, params):
    s, z = args
    return as_pairs(s * as_complex(z))


# ------------------------------------------------------------------------- derivatives
def _fit(grad, arg, out_dim):
    """The cotangent of a complex-scalar argument broadcast against a vector: summed."""
    return op("ComplexSum", grad) if arg.dim == 2 and out_dim > 2 else grad


def _add_vjp(node, g):
    a, b = node.args
    return _fit(g, a, node.dim), _fit(g, b, node.dim)


def _subtract_vjp(node, g):
    a, b = node.args
    return _fit(g, a, node.dim), _fit(neg(g), b, node.dim)


def _mult_vjp(node, g):
    a, b = node.args
    return (_fit(op("ComplexMult", op("Conj", b), g), a, node.dim),
            _fit(op("ComplexMult", op("Conj", a), g), b, node.dim))


def _divide_vjp(node, g):
    a, b = node.args
    ga = op("ComplexDivide", g, op("Conj", b))
    gb = neg(op("ComplexMult", op("Conj", op("ComplexDivide", node, b)), g))
    return _fit(ga, a, node.dim), _fit(gb, b, node.dim)


def _squareabs_vjp(node, g):
    (z,) = node.args
    return (mul(cst(2), op("ComplexMult", op("Real2Complex", g), z)),)


def _abs_vjp(node, g):
    (z,) = node.args
    scale = mul(g, op("Rsqrt", op("ComplexSquareAbs", z)))  # 0 at z = 0, as torch
    return (op("ComplexMult", op("Real2Complex", scale), z),)


def _angle_vjp(node, g):
    (z,) = node.args
    # d arg z = Im(dz / z): the cotangent is i z g / |z|^2.
    scale = op("Divide", g, op("ComplexSquareAbs", z))
    return (op("ComplexMult", op("Imag2Complex", scale), z),)


def _realscal_vjp(node, g):
    s, z = node.args
    return op("Scalprod", z, g), op("ComplexRealScal", s, g)


def _spec(name, arity, dim, emit, reference, vjp, example_dims, domain=None, params=(),
          example_params=(), doc=""):
    return OpSpec(name, arity, params, dim, emit, reference,
                  domain=domain or ("any",) * arity, example_params=example_params,
                  example_dims=example_dims, vjp=vjp, doc=doc)


for _name, _body, _fn, _vjp, _dom in (
        ("ComplexMult", _mult_body, lambda a, b: a * b, _mult_vjp, None),
        ("ComplexDivide", _divide_body, lambda a, b: a / b, _divide_vjp, ("any", "nonzero"))):
    register(_spec(_name, 2, _complex_broadcast(_name), _pairwise(_body), _complex_ref(_fn),
                   _vjp, (6, 6), _dom))

for _name, _cpp, _fn, _vjp in (
        ("ComplexAdd", "({0} + {1})", lambda a, b: a + b, _add_vjp),
        ("ComplexSubtract", "({0} - {1})", lambda a, b: a - b, _subtract_vjp)):
    # Adding pairs is adding reals; only the broadcasting of complex scalars differs.
    register(_spec(_name, 2, _complex_broadcast(_name), _pairwise(
        lambda out, args, k, cpp=_cpp: _write(
            out, k, cpp.format(_re(args[0], k), _re(args[1], k)),
            cpp.format(_im(args[0], k), _im(args[1], k)))),
        _complex_ref(_fn), _vjp, (6, 6)))

register(_spec("Conj", 1, _complex_broadcast("Conj"),
               _pairwise(lambda out, args, k: _write(out, k, _re(args[0], k),
                                                     f"-{_im(args[0], k)}")),
               _complex_ref(lambda z: z.conj()), lambda n, g: (op("Conj", g),), (6,)))
register(_spec("ComplexExp", 1, _complex_broadcast("ComplexExp"), _pairwise(_exp_body),
               _complex_ref(lambda z: z.exp()),
               lambda n, g: (op("ComplexMult", op("Conj", n), g),), (6,)))

register(_spec("ComplexReal", 1, _halving("ComplexReal"), _per_real(lambda re, im: re),
               _complex_to_real(lambda z: z.real), lambda n, g: (op("Real2Complex", g),), (6,)))
register(_spec("ComplexImag", 1, _halving("ComplexImag"), _per_real(lambda re, im: im),
               _complex_to_real(lambda z: z.imag), lambda n, g: (op("Imag2Complex", g),), (6,)))
register(_spec("ComplexSquareAbs", 1, _halving("ComplexSquareAbs"),
               _per_real(lambda re, im: f"({re} * {re} + {im} * {im})"),
               _complex_to_real(lambda z: z.abs() ** 2), _squareabs_vjp, (6,)))
register(_spec("ComplexAbs", 1, _halving("ComplexAbs"),
               _per_real(lambda re, im: f"lk::sqrt({re} * {re} + {im} * {im})"),
               _complex_to_real(lambda z: z.abs()), _abs_vjp, (6,), ("nonzero",)))
register(_spec("ComplexAngle", 1, _halving("ComplexAngle"),
               _per_real(lambda re, im: f"lk::atan2({im}, {re})"),
               _complex_to_real(lambda z: z.angle()), _angle_vjp, (6,), ("nonzero",)))

register(_spec("Real2Complex", 1, _doubling, _from_real(lambda x: x, lambda x: "T(0)"),
               _real_to_complex(lambda z: z), lambda n, g: (op("ComplexReal", g),), (3,)))
register(_spec("Imag2Complex", 1, _doubling, _from_real(lambda x: "T(0)", lambda x: x),
               _real_to_complex(lambda z: 1j * z), lambda n, g: (op("ComplexImag", g),), (3,)))
register(_spec("ComplexExp1j", 1, _doubling,
               _from_real(lambda x: f"lk::cos({x})", lambda x: f"lk::sin({x})"),
               _real_to_complex(lambda z: (1j * z).exp()),
               lambda n, g: (op("ComplexImag", op("ComplexMult", op("Conj", n), g)),), (3,)))

register(_spec("ComplexRealScal", 2, _realscal_dim, _emit_realscal, _realscal_ref,
               _realscal_vjp, (1, 6)))
register(_spec("ComplexSum", 1, _sum_dim, _emit_sum, _sum_ref,
               lambda n, g: (op("ComplexSumT", g, params=(n.args[0].dim,)),), (6,)))
register(_spec("ComplexSumT", 1, _sumt_dim, _emit_sumt, _sumt_ref,
               lambda n, g: (op("ComplexSum", g),), (2,), params=("d",), example_params=(6,),
               doc="Adjoint of ComplexSum: one complex number repeated d / 2 times."))
