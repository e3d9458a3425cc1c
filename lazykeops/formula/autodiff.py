"""Symbolic differentiation of formulas, written with formula nodes.

Each op's `vjp(node, g)` (in its family module) returns, for each formula argument of
`node`, the vector-Jacobian product of the cotangent `g` (a node of dimension node.dim),
or None where it is zero. `grad(f, v, e)` chains them in reverse topological order: the
result is again a formula, so derivatives of derivatives are just `grad` applied twice.

Forward mode, `diff(f, v, u)`, uses that the vjp is linear in its cotangent: the
derivative of <grad(f, v, e), u> with respect to e is the jvp, whatever e is; e is a
placeholder variable, replaced by zero afterwards.

Also here: GradMatrix, Divergence and Laplacian, built from grad, and DERIVATIVES, the
table of all five by name that the front ends read.
"""

from types import MappingProxyType

from ..errors import LazyKeOpsError
from .node import PLACEHOLDER_POS, make, var


def add(a, b):
    """a + b where None stands for zero (keeps gradient formulas free of Zero nodes)."""
    if a is None:
        return b
    if b is None:
        return a
    return make("Add", a, b)


def unbroadcast(g, dim):
    """The cotangent of an argument of dimension `dim` that was broadcast to g.dim."""
    if g is None or g.dim == dim:
        return g
    if dim == 1:
        return make("Sum", g)
    raise LazyKeOpsError(f"internal error: cannot reduce a gradient of dim {g.dim} to {dim}")


def grad(f, v, e):
    """The gradient of <f, e> with respect to the variable node `v` (a Var node)."""
    if v.op != "Var":
        raise LazyKeOpsError(f"Grad differentiates with respect to a variable, got {v}")
    if e.dim != f.dim:
        raise LazyKeOpsError(f"Grad of a formula of dim {f.dim} needs a cotangent of the same "
                             f"dim, got dim {e.dim}")
    from .node import OPS

    cotangent = {f: e}
    for node in reversed(f.walk()):
        g = cotangent.pop(node, None)
        if g is None:
            continue
        if node is v:  # a leaf comes after all its consumers: g is complete
            return g
        if not node.args:
            continue
        spec = OPS[node.op]
        if spec.vjp is None:
            raise LazyKeOpsError(f"operation {node.op} has no derivative rule yet")
        for arg, contribution in zip(node.args, spec.vjp(node, g)):
            if contribution is not None:
                cotangent[arg] = add(cotangent.get(arg), unbroadcast(contribution, arg.dim))
    return make("Zero", params=(v.dim,))


def substitute(node, mapping):
    """`node` with the nodes in `mapping` replaced (used to drop placeholders)."""
    memo = dict(mapping)
    for n in node.walk():  # children first; a replaced node's own subtree is unused
        if n not in memo:
            memo[n] = make(n.op, *[memo[a] for a in n.args], params=n.params) if n.args \
                else n
    return memo[node]


def diff(f, v, u):
    """Forward-mode derivative of f at v in the direction u (dim u = dim v)."""
    if u.dim != v.dim:
        raise LazyKeOpsError(f"Diff in direction of dim {u.dim} for a variable of dim {v.dim}")
    e = var(PLACEHOLDER_POS, f.dim, 2)
    linear = make("Scalprod", grad(f, v, e), u) if v.dim > 1 else make("Mult", grad(f, v, e), u)
    jvp = grad(linear, e, make("IntCst", params=(1,)))
    return substitute(jvp, {e: make("Zero", params=(f.dim,))})


def _basis(dim, k):
    return make("ElemT", make("IntCst", params=(1,)), params=(dim, k))


def grad_matrix(f, v):
    """Concatenation over k of grad(f, v, e_k): dim(f) * dim(v) values, row k = df_k/dv."""
    rows = [grad(f, v, _basis(f.dim, k) if f.dim > 1 else make("IntCst", params=(1,)))
            for k in range(f.dim)]
    result = rows[0]
    for row in rows[1:]:
        result = make("Concat", result, row)
    return result


def divergence(f, v):
    """sum_k d f_k / d v_k, for dim f = dim v."""
    if f.dim != v.dim:
        raise LazyKeOpsError(f"Divergence needs dim f = dim v, got {f.dim} and {v.dim}")
    total = None
    for k in range(f.dim):
        e_k = _basis(f.dim, k) if f.dim > 1 else make("IntCst", params=(1,))
        term = grad(f, v, e_k)
        total = add(total, make("Elem", term, params=(k,)) if v.dim > 1 else term)
    return total


def laplacian(f, v):
    """sum_k d^2 f / d v_k^2, for a scalar formula f."""
    if f.dim != 1:
        raise LazyKeOpsError(f"Laplacian needs a scalar formula, got dim {f.dim}")
    return divergence(grad(f, v, make("IntCst", params=(1,))), v)


# The symbolic derivatives by their formula-language names, for every front end (the
# string parser, LazyTensor lowering): name -> builder over formula nodes. Read-only: a
# front end with derivatives of its own extends a copy, not the language.
DERIVATIVES = MappingProxyType({"Grad": grad, "Diff": diff, "GradMatrix": grad_matrix,
                                "Divergence": divergence, "Laplacian": laplacian})
