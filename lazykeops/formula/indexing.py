"""Indexing ops: picking, placing and concatenating components, one-hot encodings and
B-spline bases.

Elem/ElemT and Extract/ExtractT are adjoint pairs (each is the other's vjp): the first
reads components of a vector, the second writes a vector into zeros. Index parameters
are checked when the node is built, so generated code never reads out of bounds.

Semantics follow pykeops 2.3 (keopscore/formulas/maths), with two deliberate choices:
- OneHot(x, d) sets component round(x) with round(x) = floor(x + 1/2); when that index is
  outside 0..d-1 the output is all zeros (pykeops writes out of bounds there).
- BSpline(knots, x, order) gives the B-spline basis functions of degree `order` on the
  knots (order 0: indicator of t_j <= x < t_{j+1}, half-open), by the Cox-de Boor
  recursion with 0/0 taken as 0 (repeated knots); output dim = dim(knots) - order - 1.

Derivatives: OneHot is piecewise constant (no derivative). BSpline is differentiable in x
and in the knots, away from the knots (where the pieces meet, and where torch autograd of
the recursion also picks one side): d/dx by the classical formula in terms of the basis
of degree order - 1; d/dknots by transposing one Cox-de Boor step at a time, down to the
piecewise constant degree 0 (see `_bspline_vjp`). Both are written with BSpline nodes of
lower degree, so they are again differentiable.
"""

from .algebra import add, cst, div, mul, neg, op, sub
from .emit import block, loop
from .lazy_torch import torch
from .node import OpSpec, dim_error, make, register


def _require_scalar(op, dim, what="the argument"):
    if dim != 1:
        raise dim_error(op, f"{what} must have dimension 1, got {dim}")


# ------------------------------------------------------------------------- Elem / ElemT
def _elem_dim(dims, p):
    (m,) = p
    if not 0 <= m < dims[0]:
        raise dim_error("Elem", f"index {m} is out of range for a vector of dimension "
                                f"{dims[0]} (valid: 0..{dims[0] - 1})")
    return 1


def _elemt_dim(dims, p):
    n, m = p
    _require_scalar("ElemT", dims[0])
    if n < 1:
        raise dim_error("ElemT", f"the output dimension must be >= 1, got {n}")
    if not 0 <= m < n:
        raise dim_error("ElemT", f"index {m} is out of range for an output of dimension {n}")
    return n


def _emit_elemt(out, args, p):
    n, m = p
    (a,) = args
    return loop(n, lambda k: f"{out(k)} = {k} == {m} ? {a(0)} : T(0);")


def _elemt_ref(args, p):
    n, m = p
    x = args[0]
    return torch.where(torch.arange(n) == m, x, torch.zeros_like(x))


register(OpSpec("Elem", 1, ("m",), _elem_dim,
                lambda out, args, p: [f"{out(0)} = {args[0](p[0])};"],
                lambda args, p: args[0][..., p[0]:p[0] + 1],
                domain=("any",), example_params=(2,), example_dims=(4,),
                vjp=lambda n, g: (op("ElemT", g, params=(n.args[0].dim, n.params[0])),),
                doc="Component m of a vector (x[m] in the formula language)."))
register(OpSpec("ElemT", 1, ("n", "m"), _elemt_dim, _emit_elemt, _elemt_ref,
                domain=("any",), example_params=(4, 1), example_dims=(1,),
                vjp=lambda n, g: (op("Elem", g, params=(n.params[1],)),),
                doc="A vector of dimension n, zero except x at index m."))


# ---------------------------------------------------------------------- Extract / ExtractT
def _extract_dim(dims, p):
    start, length = p
    if start < 0 or length < 1 or start + length > dims[0]:
        raise dim_error("Extract", f"components {start}..{start + length - 1} (start "
                                   f"{start}, length {length}) do not fit in a vector of "
                                   f"dimension {dims[0]}")
    return length


def _extractt_dim(dims, p):
    start, dim = p
    if start < 0 or start + dims[0] > dim:
        raise dim_error("ExtractT", f"a vector of dimension {dims[0]} placed at {start} "
                                    f"does not fit in dimension {dim}")
    return dim


def _emit_extract(out, args, p):
    start = p[0]
    return [f"for (int k = 0; k < {out.dim}; ++k) {{ {out('k')} = {args[0](f'k + {start}')}; }}"]


def _copy_into(out, start, a):
    """Lines writing a into out[start:start + dim(a)]."""
    return [f"for (int k = 0; k < {a.dim}; ++k) {{ {out(f'k + {start}')} = {a('k')}; }}"]


def _zeros(out, lo, hi):
    if hi <= lo:
        return []
    return [f"for (int k = {lo}; k < {hi}; ++k) {{ {out('k')} = T(0); }}"]


def _emit_extractt(out, args, p):
    start = p[0]
    (a,) = args
    return _zeros(out, 0, start) + _copy_into(out, start, a) + \
        _zeros(out, start + a.dim, out.dim)


def _extractt_ref(args, p):
    start, dim = p
    x = args[0]
    pad = (start, dim - start - x.shape[-1])
    return torch.nn.functional.pad(x, pad)


def _extract(x, start, length):
    """Components start..start+length-1 of x (x itself when that is all of it)."""
    return x if start == 0 and length == x.dim else op("Extract", x, params=(start, length))


def _extractt(x, start, dim):
    """x placed at start in zeros of dimension dim (x itself when it fills them)."""
    return x if start == 0 and dim == x.dim else op("ExtractT", x, params=(start, dim))


# Slicing rules (formula/slicing.py): generators yielding part(arg, start, length), the
# slice of an argument, so that a slice reaches the variables without the other components.
def _slice_extract(node, start, length, part):
    return (yield part(node.args[0], node.params[0] + start, length))


def _slice_extractt(node, start, length, part):
    (x,), (offset, _) = node.args, node.params
    lo, hi = max(start, offset), min(start + length, offset + x.dim)
    if lo >= hi:
        return make("Zero", params=(length,))
    inner = yield part(x, lo - offset, hi - lo)
    return inner if (lo, hi) == (start, start + length) else \
        make("ExtractT", inner, params=(lo - start, length))


register(OpSpec("Extract", 1, ("start", "length"), _extract_dim, _emit_extract,
                lambda args, p: args[0][..., p[0]:p[0] + p[1]],
                domain=("any",), example_params=(1, 3), example_dims=(5,),
                slice=_slice_extract,
                vjp=lambda n, g: (_extractt(g, n.params[0], n.args[0].dim),),
                doc="Components start..start+length-1 of a vector."))
register(OpSpec("ExtractT", 1, ("start", "dim"), _extractt_dim, _emit_extractt, _extractt_ref,
                domain=("any",), example_params=(1, 6), example_dims=(3,),
                slice=_slice_extractt,
                vjp=lambda n, g: (_extract(g, n.params[0], n.args[0].dim),),
                doc="A vector of dimension dim, zero except x at start..start+dim(x)-1."))


def _emit_concat(out, args, p):
    a, b = args
    return _copy_into(out, 0, a) + _copy_into(out, a.dim, b)


def _concat_ref(args, p):
    a, b = args
    lead = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*lead, a.shape[-1]), b.expand(*lead, b.shape[-1])], dim=-1)


def _concat_vjp(node, g):
    a, b = node.args
    return _extract(g, 0, a.dim), _extract(g, a.dim, b.dim)


def _slice_concat(node, start, length, part):
    a, b = node.args
    if start + length <= a.dim:
        return (yield part(a, start, length))
    if start >= a.dim:
        return (yield part(b, start - a.dim, length))
    head = yield part(a, start, a.dim - start)
    return make("Concat", head, (yield part(b, 0, length - head.dim)))


register(OpSpec("Concat", 2, (), lambda dims, p: dims[0] + dims[1], _emit_concat, _concat_ref,
                domain=("any", "any"), example_dims=(2, 3), vjp=_concat_vjp,
                slice=_slice_concat))


# ------------------------------------------------------------------------------ OneHot
def _onehot_dim(dims, p):
    _require_scalar("OneHot", dims[0])
    if p[0] < 1:
        raise dim_error("OneHot", f"the output dimension must be >= 1, got {p[0]}")
    return p[0]


def _emit_onehot(out, args, p):
    # Compare floats, not an int cast: an index out of int range stays harmless.
    return block(f"const T r = lk::floor({args[0](0)} + T(0.5));",
                 f"for (int k = 0; k < {out.dim}; ++k) {{ {out('k')} = r == T(k) ? T(1) : T(0); }}")


def _onehot_ref(args, p):
    x = args[0]
    return (torch.floor(x + 0.5) == torch.arange(p[0], dtype=x.dtype)).to(x.dtype)


register(OpSpec("OneHot", 1, ("d",), _onehot_dim, _emit_onehot, _onehot_ref,
                domain=("index",), example_params=(4,), example_dims=(1,),
                vjp=lambda n, g: (None,),
                doc="One-hot encoding of round(x) in dimension d (zeros when out of range)."))


# ------------------------------------------------------------------------------ BSpline
def _bspline_dim(dims, p):
    (order,) = p
    nknots, xdim = dims
    if order < 0:
        raise dim_error("BSpline", f"the order must be >= 0, got {order}")
    _require_scalar("BSpline", xdim, "the sampling point x")
    if nknots < order + 2:
        raise dim_error("BSpline", f"B-splines of order {order} need at least {order + 2} "
                                   f"knots, got {nknots}")
    return nknots - order - 1


def _emit_bspline(out, args, p):
    (order,) = p
    t, xs = args
    n = t.dim - 1  # order-0 basis functions; each degree step drops the last one
    lines = [f"const T x = {xs(0)};",
             f"T b[{n}];",
             f"for (int j = 0; j < {n}; ++j) {{ b[j] = ({t('j')} <= x && x < {t('j + 1')}) "
             "? T(1) : T(0); }"]
    if order > 0:
        # In place: b[i] <- w(i, d) b[i] + (1 - w(i + 1, d)) b[i + 1], ascending i, with
        # w(i, d) = (x - t_i) / (t_{i+d} - t_i), or 0 when t_{i+d} <= t_i.
        lines += [
            f"for (int d = 1; d <= {order}; ++d) {{",
            f"  T w0 = {t('0')} < {t('d')} ? (x - {t('0')}) / ({t('d')} - {t('0')}) : T(0);",
            f"  for (int i = 0; i < {n} - d; ++i) {{",
            f"    const T w1 = {t('i + 1')} < {t('i + 1 + d')} ? "
            f"(x - {t('i + 1')}) / ({t('i + 1 + d')} - {t('i + 1')}) : T(0);",
            "    b[i] = w0 * b[i] + (T(1) - w1) * b[i + 1];",
            "    w0 = w1;",
            "  }",
            "}"]
    lines.append(f"for (int j = 0; j < {out.dim}; ++j) {{ {out('j')} = b[j]; }}")
    return block(*lines)


def _bspline_ref(args, p):
    (order,) = p
    t, x = args
    lead = torch.broadcast_shapes(t.shape[:-1], x.shape[:-1])
    t = t.expand(*lead, t.shape[-1])
    x = x.expand(*lead, 1)
    b = ((t[..., :-1] <= x) & (x < t[..., 1:])).to(t.dtype)
    for d in range(1, order + 1):
        n = b.shape[-1] - 1
        left, right = t[..., :n + 1], t[..., d:d + n + 1]
        w = torch.where(left < right, (x - left) / (right - left), torch.zeros_like(left))
        b = w[..., :n] * b[..., :n] + (1 - w[..., 1:]) * b[..., 1:]
    return b


def _safe_inverse_gap(t, lo, hi, length):
    """(1 / (t[hi + k] - t[lo + k]))_k for k < length, 0 where the gap is not positive
    (the 0/0 = 0 convention of repeated knots)."""
    gap = sub(_extract(t, hi, length), _extract(t, lo, length))
    positive = op("LessThan", cst(0), gap)
    return div(positive, add(gap, sub(cst(1), positive)))


def _shifted_difference(u, length):
    """(u_k - u_{k+1})_{k < length} for u of dimension length + 1."""
    return sub(_extract(u, 0, length), _extract(u, 1, length))


def _shifted_difference_t(g, length):
    """Adjoint of _shifted_difference: v_k = g_k - g_{k-1} (g_{-1} = g_length = 0)."""
    return sub(_extractt(g, 0, length + 1), _extractt(g, 1, length + 1))


def _dot(a, b):
    return mul(a, b) if a.dim == 1 else op("Scalprod", a, b)


def _bspline_vjp(node, g):
    """Cotangents of the knots t and of x, for B = BSpline(t, x, p), p >= 1.

    d/dx: B'_i = p (B^{p-1}_i / (t_{i+p} - t_i) - B^{p-1}_{i+1} / (t_{i+p+1} - t_{i+1})),
    with 1/0 taken as 0.
    d/dt: one Cox-de Boor step of degree d is B^d_i = w_i B^{d-1}_i + (1 - w_{i+1})
    B^{d-1}_{i+1} with w_i = (x - t_i) / (t_{i+d} - t_i) (0 on an empty interval). Its
    transpose sends g to w (explicitly through t_i and t_{i+d}) and to B^{d-1}, whose own
    step is transposed next, down to degree 0, which is piecewise constant."""
    t, x = node.args
    (order,) = node.params
    if order == 0:
        return None, None
    width = t.dim - order  # dimension of the degree order - 1 basis
    lower = op("BSpline", t, x, params=(order - 1,))
    inv = _safe_inverse_gap(t, 0, order, width)
    grad_x = mul(cst(order), _dot(g, _shifted_difference(mul(inv, lower), width - 1)))
    grad_t = None
    for d in range(order, 0, -1):
        n = t.dim - d  # dimension of the weights and of the degree d - 1 basis
        below = lower if d == order else op("BSpline", t, x, params=(d - 1,))
        inv = _safe_inverse_gap(t, 0, d, n)
        w = mul(sub(x, _extract(t, 0, n)), inv)
        spread = _shifted_difference_t(g, n - 1)  # g_i - g_{i-1}, the cotangent of w
        grad_w = mul(below, spread)
        # w = (x - t_lo) / (t_hi - t_lo): dw/dt_lo = (x - t_hi) / gap^2, dw/dt_hi = -w / gap
        grad_lo = mul(grad_w, mul(sub(x, _extract(t, d, n)), op("Square", inv)))
        grad_hi = neg(mul(grad_w, mul(w, inv)))
        step = add(_extractt(grad_lo, 0, t.dim), _extractt(grad_hi, d, t.dim))
        grad_t = step if grad_t is None else add(grad_t, step)
        if d > 1:  # cotangent of the degree d - 1 basis: w_i g_i + (1 - w_i) g_{i-1}
            g = add(mul(w, _extractt(g, 0, n)), mul(sub(cst(1), w), _extractt(g, 1, n)))
    return grad_t, grad_x


register(OpSpec("BSpline", 2, ("order",), _bspline_dim, _emit_bspline, _bspline_ref,
                domain=("sorted", "any"), example_params=(2,), example_dims=(7, 1),
                vjp=_bspline_vjp,
                doc="B-spline basis of degree `order` on the knots, at the scalar x "
                    "(LazyTensor.bspline in pykeops)."))
