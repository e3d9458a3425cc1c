"""Linear algebra on flattened tensors: matrix-vector products, outer products, tensor
contractions and Kronecker products.

As in pykeops, a formula value is a flat vector; a matrix or tensor is its row-major
flattening (A of shape (n, m) is a vector of dim n*m with A[i, j] at i*m + j), and the ops
with index-tuple parameters (`Ind(2,3,4)` in the formula language, Python tuples of ints in
`Node.params`) say how to reshape their arguments.

TensorDot(a, b, dimfa, dimfb, contfa, contfb) contracts the axes `contfa` of a (shape
dimfa) with the axes `contfb` of b (shape dimfb), paired in order, like
`torch.tensordot(A, B, dims=(contfa, contfb))`: the output axes are a's kept axes, then
b's, row-major. pykeops also accepts an optional 7th argument `permute` (a permutation of
the output axes, used by its own derivative rules). OpSpec params have a fixed count and
the string parser checks it, so the 6-argument form is TensorDot and the permuted one is
the internal op TensorDotPermuted(a, b, dimfa, dimfb, contfa, contfb, order): output axis
k is kept axis order[k]. Kron (which pykeops builds as a permuted TensorDot) is its own
op, sharing the emission code.

Derivatives: the vjp of a contraction is a contraction of the cotangent with the other
argument, but its axes come out in the wrong order whenever a's kept and contracted axes
interleave (e.g. d/da of a_{xyz} b_{zy} must be laid out as x, y, z). TensorDotPermuted
is that contraction with its permutation fused into the output index: no temporary and
no O(dim) chain of Elem/Concat nodes, and its own vjp is again a TensorDotPermuted, so
derivatives of any order stay in this one op family. `_contract` writes contractions in
einsum style (axis labels) and falls back to plain TensorDot when no permutation is
needed. MatVecMult, VecMatMult and TensorProd are each other's vjps.

Emission writes nested loops with the shapes folded into constant strides: no index
arithmetic at run time beyond multiply-adds, and no temporary arrays.
"""

import string

from .emit import block
from .lazy_torch import torch
from .node import OpSpec, dim_error, make, register


def _prod(values):
    result = 1
    for v in values:
        result *= v
    return result


def _strides(shape):
    """Row-major strides of a shape."""
    out, acc = [], 1
    for extent in reversed(shape):
        out.append(acc)
        acc *= extent
    return out[::-1]


def _flat_index(names, shape):
    """C++ expression of the row-major flat index of loop counters `names` in `shape`."""
    terms = [name if stride == 1 else f"{name} * {stride}"
             for name, extent, stride in zip(names, shape, _strides(shape)) if extent > 1]
    return " + ".join(terms) or "0"


def _nest(loops, body):
    """Nested for loops over (counter, extent) around the lines of `body`."""
    lines = list(body)
    for name, extent in reversed(loops):
        lines = [f"for (int {name} = 0; {name} < {extent}; ++{name}) {{",
                 *[f"  {line}" for line in lines], "}"]
    return lines


# ------------------------------------------------------------ matrix-vector and outer products
def _matvec_dim(op, mat_arg):
    def rule(dims, p):
        mat, vec = (dims[0], dims[1]) if mat_arg == 0 else (dims[1], dims[0])
        if mat % vec != 0:
            raise dim_error(op, f"the matrix has dimension {mat}, which is not a multiple of "
                                f"the vector's dimension {vec}")
        return mat // vec

    return rule


def _emit_matvec(out, args, p):
    a, v = args  # a: n x m row-major, v: m
    m = v.dim
    return block(*_nest([("i", out.dim)], [
        "T s = T(0);",
        f"for (int k = 0; k < {m}; ++k) {{ s += {a(f'i * {m} + k')} * {v('k')}; }}",
        f"{out('i')} = s;"]))


def _emit_vecmat(out, args, p):
    v, a = args  # v: n, a: n x m row-major
    m = out.dim
    return block(*_nest([("j", m)], [
        "T s = T(0);",
        f"for (int k = 0; k < {v.dim}; ++k) {{ s += {v('k')} * {a(f'k * {m} + j')}; }}",
        f"{out('j')} = s;"]))


def _emit_tensorprod(out, args, p):
    a, b = args
    return _nest([("i", a.dim), ("j", b.dim)],
                 [f"{out(f'i * {b.dim} + j')} = {a('i')} * {b('j')};"])


def _matvec_ref(args, p):
    a, v = args
    m = v.shape[-1]
    return (a.reshape(*a.shape[:-1], -1, m) * v[..., None, :]).sum(-1)


def _vecmat_ref(args, p):
    v, a = args
    n = v.shape[-1]
    return (v[..., :, None] * a.reshape(*a.shape[:-1], n, -1)).sum(-2)


def _tensorprod_ref(args, p):
    a, b = args
    outer = a[..., :, None] * b[..., None, :]
    return outer.reshape(*outer.shape[:-2], -1)


def _matvec_vjp(node, g):
    a, v = node.args  # d(A v) = dA v + A dv: dA = g v^T, dv = g^T A
    return make("TensorProd", g, v), make("VecMatMult", g, a)


def _vecmat_vjp(node, g):
    v, a = node.args  # d(v^T A) = dv^T A + v^T dA: dv = A g, dA = v g^T
    return make("MatVecMult", a, g), make("TensorProd", v, g)


def _tensorprod_vjp(node, g):
    a, b = node.args  # g is an n x m matrix: da = g b, db = g^T a
    return make("MatVecMult", g, b), make("VecMatMult", a, g)


register(OpSpec("MatVecMult", 2, (), _matvec_dim("MatVecMult", 0), _emit_matvec, _matvec_ref,
                domain=("any", "any"), example_dims=(6, 3), vjp=_matvec_vjp,
                doc="A v for A of dim n*m (row-major n x m matrix) and v of dim m."))
register(OpSpec("VecMatMult", 2, (), _matvec_dim("VecMatMult", 1), _emit_vecmat, _vecmat_ref,
                domain=("any", "any"), example_dims=(2, 6), vjp=_vecmat_vjp,
                doc="v^T A for v of dim n and A of dim n*m (row-major n x m matrix)."))
register(OpSpec("TensorProd", 2, (), lambda dims, p: dims[0] * dims[1], _emit_tensorprod,
                _tensorprod_ref, domain=("any", "any"), example_dims=(2, 3),
                vjp=_tensorprod_vjp, doc="Outer product: a_i b_j at i * dim(b) + j."))


# ------------------------------------------------------------------ TensorDot and Kron
def _check_shape(op, name, shape, dim):
    if not isinstance(shape, tuple) or not shape or \
            not all(isinstance(e, int) and e >= 1 for e in shape):
        raise dim_error(op, f"{name} must be a non-empty index tuple Ind(...) of positive "
                            f"integers, got {shape!r}")
    if _prod(shape) != dim:
        raise dim_error(op, f"{name} = {shape} has {_prod(shape)} entries but the argument "
                            f"has dimension {dim}")


def _check_axes(op, name, axes, ndim):
    if not isinstance(axes, tuple) or not all(isinstance(e, int) for e in axes):
        raise dim_error(op, f"{name} must be an index tuple Ind(...), got {axes!r}")
    if any(not 0 <= e < ndim for e in axes) or len(set(axes)) != len(axes):
        raise dim_error(op, f"{name} = {axes} must be distinct axes in 0..{ndim - 1}")


def _tensordot_dim(dims, p, op="TensorDot"):
    dimfa, dimfb, contfa, contfb = p[:4]
    _check_shape(op, "dimfa", dimfa, dims[0])
    _check_shape(op, "dimfb", dimfb, dims[1])
    _check_axes(op, "contfa", contfa, len(dimfa))
    _check_axes(op, "contfb", contfb, len(dimfb))
    if len(contfa) != len(contfb):
        raise dim_error(op, f"contfa = {contfa} and contfb = {contfb} must have "
                            "the same length")
    for ea, eb in zip(contfa, contfb):
        if dimfa[ea] != dimfb[eb]:
            raise dim_error(op, f"axis {ea} of a (size {dimfa[ea]}) is contracted "
                                f"with axis {eb} of b (size {dimfb[eb]})")
    return dims[0] * dims[1] // _prod(dimfa[e] for e in contfa) ** 2


def _tensordot_permuted_dim(dims, p):
    dim = _tensordot_dim(dims, p, "TensorDotPermuted")
    dimfa, dimfb, contfa, contfb, order = p
    kept = len(dimfa) + len(dimfb) - 2 * len(contfa)
    if not isinstance(order, tuple) or sorted(order) != list(range(kept)):
        raise dim_error("TensorDotPermuted", f"order = {order!r} must be a permutation "
                                             f"Ind(...) of the {kept} kept axes 0..{kept - 1}")
    return dim


# ------------------------------------------------------------ derivatives of contractions
def _axis_labels(dimfa, dimfb, contfa, contfb):
    """Einsum-style labels: a's axes are 0..ra-1, b's contracted axes reuse the label of
    their partner in a, b's kept axes are ra, ra+1, ...; also the label sizes and the
    kept labels (a's then b's, the unpermuted output axes)."""
    labels_a = list(range(len(dimfa)))
    labels_b, fresh = [], len(dimfa)
    for ax in range(len(dimfb)):
        if ax in contfb:
            labels_b.append(contfa[contfb.index(ax)])
        else:
            labels_b.append(fresh)
            fresh += 1
    size = dict(zip(labels_a, dimfa))
    size.update(zip(labels_b, dimfb))
    kept = [lab for lab in labels_a if lab not in contfa] + \
           [lab for lab in labels_b if lab >= len(dimfa)]
    return labels_a, labels_b, kept, size


def _contract(x, labels_x, y, labels_y, labels_out, size):
    """The node sum over shared labels of x[labels_x] y[labels_y], laid out as labels_out
    (a permutation of the labels that are not shared)."""
    shared = [lab for lab in labels_x if lab in labels_y]
    contx = tuple(labels_x.index(lab) for lab in shared)
    conty = tuple(labels_y.index(lab) for lab in shared)
    kept = [lab for lab in labels_x if lab not in shared] + \
           [lab for lab in labels_y if lab not in shared]
    order = tuple(kept.index(lab) for lab in labels_out)
    params = (tuple(size[lab] for lab in labels_x), tuple(size[lab] for lab in labels_y),
              contx, conty)
    if order == tuple(range(len(order))):
        return make("TensorDot", x, y, params=params)
    return make("TensorDotPermuted", x, y, params=(*params, order))


def _contraction_vjp(node, g, dimfa, dimfb, contfa, contfb, order):
    """vjp of out = contraction of a and b with output axes permuted by `order`:
    da[A] = sum g[O] b[B] and db[B] = sum a[A] g[O], over the labels missing on the left."""
    a, b = node.args
    labels_a, labels_b, kept, size = _axis_labels(dimfa, dimfb, contfa, contfb)
    labels_out = [kept[k] for k in order] if order is not None else kept
    extra = []  # a full contraction makes g a scalar: give it one axis of size 1
    if not labels_out:
        size[max(size) + 1] = 1
        extra, labels_out = [max(size)], [max(size)]
    return (_contract(g, labels_out, b, labels_b, extra + labels_a, size),
            _contract(a, labels_a, g, labels_out, extra + labels_b, size))


def _emit_contraction(out, a, b, dimfa, dimfb, contfa, contfb, order=None):
    """out = a contracted with b; output axes are the kept axes of a then of b, taken in
    `order` (a permutation of them; identity when None)."""

    def counter(side, ax, cont):
        return f"c{cont.index(ax)}" if ax in cont else f"{side}{ax}"

    names_a = [counter("ia", ax, contfa) for ax in range(len(dimfa))]
    names_b = [counter("ib", ax, contfb) for ax in range(len(dimfb))]
    kept = [(n, e) for n, e in zip(names_a, dimfa) if not n.startswith("c")] + \
           [(n, e) for n, e in zip(names_b, dimfb) if not n.startswith("c")]
    if order is not None:
        kept = [kept[k] for k in order]
    contracted = [(f"c{q}", dimfa[ax]) for q, ax in enumerate(contfa)]
    index_a = _flat_index(names_a, dimfa)
    index_b = _flat_index(names_b, dimfb)
    index_out = _flat_index([n for n, _ in kept], [e for _, e in kept])
    if contracted:
        body = ["T s = T(0);",
                *_nest(contracted, [f"s += {a(index_a)} * {b(index_b)};"]),
                f"{out(index_out)} = s;"]
    else:
        body = [f"{out(index_out)} = {a(index_a)} * {b(index_b)};"]
    return block(*_nest(kept, body))


def _emit_tensordot(out, args, p):
    return _emit_contraction(out, *args, *p)


def _einsum_ref(a, b, dimfa, dimfb, contfa, contfb, order=None):
    """torch.einsum over the reshaped last axes; leading axes broadcast. The output axes
    are the kept axes of a then b, taken in `order` (identity when None)."""
    letters = iter(string.ascii_letters)
    sub_a = [next(letters) for _ in dimfa]
    sub_b = [sub_a[contfa[contfb.index(ax)]] if ax in contfb else next(letters)
             for ax in range(len(dimfb))]
    out_letters = [c for k, c in enumerate(sub_a) if k not in contfa] + \
                  [c for k, c in enumerate(sub_b) if k not in contfb]
    if order is not None:
        out_letters = [out_letters[k] for k in order]
    A = a.reshape(*a.shape[:-1], *dimfa)
    B = b.reshape(*b.shape[:-1], *dimfb)
    res = torch.einsum(f"...{''.join(sub_a)},...{''.join(sub_b)}->...{''.join(out_letters)}",
                       A, B)
    lead = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return res.reshape(*lead, -1)


register(OpSpec("TensorDot", 2, ("dimfa", "dimfb", "contfa", "contfb"), _tensordot_dim,
                _emit_tensordot, lambda args, p: _einsum_ref(*args, *p),
                domain=("any", "any"), example_dims=(24, 24),
                example_params=((2, 3, 4), (4, 2, 3), (2, 1), (0, 2)),
                vjp=lambda n, g: _contraction_vjp(n, g, *n.params, None),
                doc="Tensor contraction, as torch.tensordot(A, B, dims=(contfa, contfb)) "
                    "with A, B the arguments reshaped to dimfa, dimfb (row-major)."))
register(OpSpec("TensorDotPermuted", 2, ("dimfa", "dimfb", "contfa", "contfb", "order"),
                _tensordot_permuted_dim, _emit_tensordot,
                lambda args, p: _einsum_ref(*args, *p),
                domain=("any", "any"), example_dims=(24, 24),
                example_params=((2, 3, 4), (4, 2, 3), (2, 1), (0, 2), (1, 0)),
                vjp=lambda n, g: _contraction_vjp(n, g, *n.params),
                doc="Internal (derivatives of TensorDot and Kron): TensorDot with its output "
                    "axes permuted, output axis k being kept axis order[k]."))


def _kron_dim(dims, p):
    dimfa, dimfb = p
    _check_shape("Kron", "dimfa", dimfa, dims[0])
    _check_shape("Kron", "dimfb", dimfb, dims[1])
    if len(dimfa) != len(dimfb):
        raise dim_error("Kron", f"dimfa = {dimfa} and dimfb = {dimfb} must have the same "
                                "number of axes")
    return dims[0] * dims[1]


def _kron_order(rank):
    """Output axes (a0, b0, a1, b1, ...): kept axes are numbered a0..a_{r-1}, b0..b_{r-1}."""
    return [k for t in range(rank) for k in (t, rank + t)]


def _emit_kron(out, args, p):
    dimfa, dimfb = p
    return _emit_contraction(out, *args, dimfa, dimfb, (), (), _kron_order(len(dimfa)))


def _kron_ref(args, p):
    dimfa, dimfb = p
    return _einsum_ref(*args, dimfa, dimfb, (), (), _kron_order(len(dimfa)))


def _kron_vjp(node, g):
    dimfa, dimfb = node.params
    return _contraction_vjp(node, g, dimfa, dimfb, (), (), _kron_order(len(dimfa)))


register(OpSpec("Kron", 2, ("dimfa", "dimfb"), _kron_dim, _emit_kron, _kron_ref,
                domain=("any", "any"), example_dims=(6, 6),
                example_params=((2, 3), (3, 2)), vjp=_kron_vjp,
                doc="Kronecker product of tensors of shapes dimfa and dimfb (same rank), "
                    "as torch.kron on the reshaped arguments."))
