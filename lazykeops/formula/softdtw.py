"""Soft-DTW between two vectors seen as 1-D time series: `SoftDTW_SqDist(x, y, gamma)`
(pykeops's op of that name) and its gradient op `SoftDTW_SqDist_Grad(x, y, gamma)`.

With d(i, j) = (x_i - y_j)^2, the soft-DTW value is R(n-1, m-1) of the recursion
(Cuturi & Blondel 2017, 0-based)

    R(i, j) = d(i, j) + softmin_gamma(R(i-1, j-1), R(i-1, j), R(i, j-1)),
    softmin_gamma(a) = -gamma log sum_k exp(-a_k / gamma),

where cells outside the grid are left out (R(0, 0) = d(0, 0), the first row and column
are cumulative sums). gamma is any formula of dimension 1 (a parameter, a variable or a
constant, as in keopscore) and must be positive: gamma = 0 gives NaN, as in pykeops.

Derivatives: SoftDTW_SqDist_Grad (dimension n + m + 1) is the gradient with respect to
(x, y, gamma). Its backward recursion computes the expected alignment matrix
E(i, j) = dR(n-1, m-1)/dR(i, j) = sum over successors s of E(s) p_s(i, j), with
p_s(i, j) = exp((R(s) - d(s) - R(i, j)) / gamma) the softmin weight of (i, j) at s; then
dR/dx_i = sum_j 2 (x_i - y_j) E(i, j), dR/dy_j = -sum_i 2 (x_i - y_j) E(i, j), and,
since d softmin/d gamma = sum_k p_k log p_k, dR/dgamma = sum over edges (i, j) -> s of
E(s) p_s(i, j) log p_s(i, j): the exponent is computed anyway, so the gamma derivative
costs one multiply-add per edge (pykeops refuses it). Second derivatives would need the
Hessian-vector recursion (Mensch & Blondel 2018): the gradient op's vjp refuses clearly.

Memory per pair (the engines keep intermediates on each thread's stack): the recursion
runs along the shorter series (the inner one, length la) for each element of the longer
one (lb); the value needs la scalars. The gradient needs R in reverse order: when the full
la x lb table is small it is stored; otherwise only every K-th column is (checkpoints,
K ~ sqrt(lb)) and each block of K columns is recomputed from its checkpoint before its
backward sweep: about (2 sqrt(lb) + 2) la scalars for one extra forward pass. These
buffers are not Formula nodes, so the dimension rules bound them (SCRATCH_LIMIT) rather
than compile.codegen.check_stack_size.
"""

import math

from ..errors import LazyKeOpsError
from .algebra import mul
from .emit import block
from .lazy_torch import torch
from .node import OpSpec, dim_error, make, register

# Scalars of the per-pair buffers that the recursions may hold (the engine's budget for a
# whole formula is compile.codegen.MAX_SCALARS_PER_PAIR = 16384).
SCRATCH_LIMIT = 12288
# Below this many scalars the gradient stores the whole R table (no recomputation).
FULL_TABLE_LIMIT = 4096


def _orient(a, b):
    """(inner, outer, swapped): the recursion runs along the shorter series (the DP is
    symmetric under exchanging x and y)."""
    return (b, a, True) if b.dim < a.dim else (a, b, False)


def _plan(la, lb):
    """(K, C): columns per block and number of checkpoints for the gradient."""
    if (lb + 3) * la <= FULL_TABLE_LIMIT:
        return lb, 1
    k = math.isqrt(lb - 1) + 1  # ceil(sqrt(lb))
    return k, -(-lb // k)


def _grad_scratch(la, lb):
    k, c = _plan(la, lb)
    return (k + c + 2) * la


def _check(op, dims, scratch):
    n, m, g = dims
    if g != 1:
        raise dim_error(op, f"gamma must have dimension 1, got {g}")
    if scratch > SCRATCH_LIMIT:
        raise LazyKeOpsError(f"{op} of series of lengths {n} and {m} needs {scratch} scalars "
                             f"of recursion buffers per pair, more than the supported "
                             f"{SCRATCH_LIMIT}")


def _value_dim(dims, params):
    _check("SoftDTW_SqDist", dims, min(dims[0], dims[1]))
    return 1


def _grad_dim(dims, params):
    la, lb = sorted(dims[:2])
    _check("SoftDTW_SqDist_Grad", dims, _grad_scratch(la, lb))
    return dims[0] + dims[1] + 1


# ------------------------------------------------------------------------ C++ emission
# Loop bounds are named constants, not literals: codegen marks literal-bounded loops for
# full unrolling, which nested over la x lb would explode the code size.
def _first_column(a, b, col):
    """col[i] = R(i, 0): cumulative sums of the costs against b_0."""
    return [f"{{ T dd = {a('0')} - {b('0')}; {col}[0] = dd * dd; }}",
            f"for (int i = 1; i < sd_la; ++i) {{ T dd = {a('i')} - {b('0')}; "
            f"{col}[i] = {col}[i - 1] + dd * dd; }}"]


def _next_column(a, b, col, j):
    """Turn col = R(:, j-1) into R(:, j) in place (`diag` carries R(i-1, j-1))."""
    return [
        "{",
        f"  T diag = {col}[0];",
        f"  {{ T dd = {a('0')} - {b(j)}; {col}[0] = diag + dd * dd; }}",
        "  for (int i = 1; i < sd_la; ++i) {",
        f"    T up = {col}[i], left = {col}[i - 1], dd = {a('i')} - {b(j)};",
        # the smallest of the three weighs exp(0) = 1: sort them, two exps per cell
        "    T lo = diag < up ? diag : up, hi = diag < up ? up : diag;",
        "    T mn = left < lo ? left : lo, mid = left < lo ? lo : left;",
        "    T s = T(1) + lk::exp((mn - mid) * sd_inv) + lk::exp((mn - hi) * sd_inv);",
        f"    {col}[i] = dd * dd + mn - sd_gamma * lk::log(s);",
        "    diag = up;",
        "  }",
        "}"]


def _prologue(a, b, g):
    return [f"const int sd_la = {a.dim};", f"const int sd_lb = {b.dim};",
            f"const T sd_gamma = {g('0')};", "const T sd_inv = T(1) / sd_gamma;"]


def _emit_value(out, args, params):
    a, b, swapped = _orient(args[0], args[1])
    return block(*_prologue(a, b, args[2]), f"T col[{a.dim}];",
                 *_first_column(a, b, "col"),
                 "for (int j = 1; j < sd_lb; ++j)", *_next_column(a, b, "col", "j"),
                 f"{out('0')} = col[sd_la - 1];")


def _emit_grad(out, args, params):
    x, y, g = args
    a, b, swapped = _orient(x, y)
    la, lb = a.dim, b.dim
    k, c = _plan(la, lb)
    oa, ob = (x.dim, 0) if swapped else (0, x.dim)   # where the grads of a and b go

    def edge(e_ref, r_succ, i_succ, j_succ):
        """The contribution of the edge (i, j) -> successor: E(s) p_s and its log p_s."""
        return (f"{{ T dd = {a(i_succ)} - {b(j_succ)}; "
                f"T z = ({r_succ} - dd * dd - r[i]) * sd_inv; "
                f"T w = {e_ref} * lk::exp(z); e += w; sd_dg += w * z; }}")

    return block(
        *_prologue(a, b, g), f"const int sd_k = {k};",
        f"T ck[{c * la}], blk[{k * la}], ebuf[{2 * la}];",
        "T* en = ebuf; T* ec = ebuf + sd_la;  // E(:, j+1) and E(:, j)",
        "T sd_dg = T(0);",
        f"for (int q = 0; q < {out.dim}; ++q) {{ {out('q')} = T(0); }}",
        # forward sweep: checkpoint every K-th column
        *_first_column(a, b, "blk"),
        "for (int i = 0; i < sd_la; ++i) { ck[i] = blk[i]; }",
        f"for (int j = 1; j <= {(c - 1) * k}; ++j) {{",
        *_next_column(a, b, "blk", "j"),
        "  if (j % sd_k == 0) { for (int i = 0; i < sd_la; ++i) "
        "{ ck[(j / sd_k) * sd_la + i] = blk[i]; } }",
        "}",
        # backward sweep, block by block from the last one
        f"for (int bb = {c - 1}; bb >= 0; --bb) {{",
        "  const int j0 = bb * sd_k;",
        "  const int j1 = j0 + sd_k < sd_lb ? j0 + sd_k : sd_lb;",
        "  for (int i = 0; i < sd_la; ++i) { blk[i] = ck[bb * sd_la + i]; }",
        "  for (int t = 1; t < j1 - j0; ++t) {",
        "    T* cur = blk + t * sd_la;",
        "    for (int i = 0; i < sd_la; ++i) { cur[i] = cur[i - sd_la]; }",
        "    const int j = j0 + t;",
        *[f"    {line}" for line in _next_column(a, b, "cur", "j")],
        "  }",
        "  for (int j = j1 - 1; j >= j0; --j) {",
        "    const T* r = blk + (j - j0) * sd_la;",
        "    const T* rn = j + 1 < j1 ? r + sd_la : ck + (bb + 1) * sd_la;  // R(:, j+1)",
        "    const bool last = j == sd_lb - 1;",
        "    for (int i = sd_la - 1; i >= 0; --i) {",
        "      T e = T(0);",
        "      if (last && i == sd_la - 1) { e = T(1); }",
        "      if (i + 1 < sd_la) " + edge("ec[i + 1]", "r[i + 1]", "i + 1", "j"),
        "      if (!last) {",
        "        " + edge("en[i]", "rn[i]", "i", "j + 1"),
        "        if (i + 1 < sd_la) " + edge("en[i + 1]", "rn[i + 1]", "i + 1", "j + 1"),
        "      }",
        "      ec[i] = e;",
        f"      T dd = T(2) * ({a('i')} - {b('j')}) * e;",
        f"      {out(f'{oa} + i')} += dd;",
        f"      {out(f'{ob} + j')} -= dd;",
        "    }",
        "    T* swap = en; en = ec; ec = swap;",
        "  }",
        "}",
        f"{out(str(out.dim - 1))} = sd_dg;")


# ------------------------------------------------------------------- torch references
def _reference(args, params):
    """The plain recursion on tensors (leading axes broadcast), differentiable by torch."""
    x, y, g = _lead(args)
    n, m = x.shape[-1], y.shape[-1]
    gamma = g[..., 0]
    rows = []
    for i in range(n):
        row = []
        for j in range(m):
            cost = (x[..., i] - y[..., j]) ** 2
            preds = [rows[i - 1][j - 1]] if i and j else []
            preds += [rows[i - 1][j]] if i else []
            preds += [row[j - 1]] if j else []
            if not preds:
                row.append(cost)
            elif len(preds) == 1:
                row.append(cost + preds[0])
            else:
                soft = -gamma * torch.logsumexp(torch.stack(preds, -1) / -gamma[..., None], -1)
                row.append(cost + soft)
        rows.append(row)
    return rows[-1][-1][..., None]


def _lead(args):
    """x, y, gamma with their leading axes broadcast (last axes kept)."""
    lead = torch.broadcast_shapes(*[t.shape[:-1] for t in args])
    return [t.expand(*lead, t.shape[-1]) for t in args]


def _grad_reference(args, params):
    """Per-pair gradient of the reference: the pairs are independent, so the gradient of
    the sum over pairs with respect to broadcast copies is each pair's gradient."""
    with torch.enable_grad():
        leaves = [t.detach().clone().requires_grad_() for t in _lead(args)]
        value = _reference(leaves, params).sum()
        grads = torch.autograd.grad(value, leaves)
    return torch.cat(grads, dim=-1)


# ------------------------------------------------------------------------- derivatives
def _value_vjp(node, g):
    x, y, gamma = node.args
    full = make("SoftDTW_SqDist_Grad", x, y, gamma)
    n, m = x.dim, y.dim
    return (mul(g, make("Extract", full, params=(0, n))),
            mul(g, make("Extract", full, params=(n, m))),
            mul(g, make("Extract", full, params=(n + m, 1))))


def _grad_vjp(node, g):
    raise LazyKeOpsError("second derivatives of SoftDTW_SqDist (the derivative of "
                         "SoftDTW_SqDist_Grad) are not supported")


register(OpSpec("SoftDTW_SqDist", 3, (), _value_dim, _emit_value, _reference,
                domain=("any", "any", "positive"), example_dims=(4, 3, 1), vjp=_value_vjp,
                doc="Soft-DTW between x and y seen as time series, cost (x_i - y_j)^2, "
                    "smoothing gamma (dim 1, positive)."))
register(OpSpec("SoftDTW_SqDist_Grad", 3, (), _grad_dim, _emit_grad, _grad_reference,
                domain=("any", "any", "positive"), example_dims=(4, 3, 1), vjp=_grad_vjp,
                doc="Internal (derivative of SoftDTW_SqDist): its gradient with respect to "
                    "x, y and gamma, concatenated (dim n + m + 1)."))
