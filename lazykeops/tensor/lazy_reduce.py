"""Reductions of LazyTensors, the linear-operator interface and dense materialisation.

`lower` turns LazyTensor trees into formula nodes, numbering the variables in order of
first appearance; the same expression built twice gives the same nodes, so the Genred core
(and its compiled kernel) is found in `_CORES` by a dictionary lookup: building the
expression is the only per-call cost on top of a direct Genred call. The methods defined
here are attached to LazyTensor at the bottom of the module.
"""

import numbers

from ..errors import LazyKeOpsError
from ..formula.evaluate import evaluate
from ..formula import autodiff
from ..formula.node import _INTERNED, CAT_I, CAT_J, make, var
from ..formula.parser import Alias
from .genred import GenredCore
from .backends import get_backend
from .lazy import LazyTensor, _merge_into

_CORES = {}
_FLOATS = ("float32", "float64")
DERIVATIVES = {"Grad": autodiff.grad, "Diff": autodiff.diff}
DENSE_LIMIT = 2 ** 26  # entries of the (..., N, M, D) array that dense() may build


def lower(roots):
    """(formula nodes of `roots`, their variable leaves in position order)."""
    leaves, symbolic, positions = [], [], {}

    def visit(t):
        op = t.op
        if op is not None:  # shared subtrees are walked again: interning makes it cheap
            args = t.args
            children = (visit(args[0]),) if len(args) == 1 else \
                (visit(args[0]), visit(args[1])) if len(args) == 2 else \
                tuple([visit(a) for a in args])
            if op in DERIVATIVES:  # LazyTensor.grad / .diff: expanded symbolically
                return DERIVATIVES[op](*children)
            return _INTERNED.get((op, children, t.params)) or make(op, *children,
                                                                   params=t.params)
        if t.symbolic_pos is not None:
            symbolic.append(t)
            return var(t.symbolic_pos, t.dim, t.category)
        node = positions.get(id(t))
        if node is None:
            params = (len(leaves), t.dim, t.category)
            node = _INTERNED.get(("Var", (), params)) or var(*params)
            positions[id(t)] = node
            leaves.append(t)
        return node

    nodes = tuple([visit(r) for r in roots])
    if symbolic and leaves:
        raise LazyKeOpsError("a LazyTensor cannot mix symbolic variables (Vi(ind, dim), ...) "
                             "with variables holding data")
    return nodes, (symbolic_table(symbolic) if symbolic else leaves)


def symbolic_table(symbolic):
    """One leaf per position 0..n-1, checking that the positions agree and have no gap."""
    table = {}
    for t in symbolic:
        other = table.setdefault(t.symbolic_pos, t)
        if (other.category, other.dim) != (t.category, t.dim):
            raise LazyKeOpsError(f"symbolic variable {t.symbolic_pos} is used with two "
                                 "different categories or dimensions")
    if sorted(table) != list(range(len(table))):
        raise LazyKeOpsError(f"symbolic variable indices {sorted(table)} must be 0..n-1")
    return [table[p] for p in range(len(table))]


def reduction_axis(t, dim):
    """pykeops's dim (counting batch dims, negative allowed) -> 0 (over i) or 1 (over j)."""
    nb = len(t.batch)
    if type(dim) is not int and not isinstance(dim, numbers.Integral):
        raise LazyKeOpsError(f"a reduction of a LazyTensor of shape {t.shape} needs dim={nb} "
                             f"(over i) or dim={nb + 1} (over j), got {dim!r}")
    d = dim + nb + 3 if dim < 0 else dim
    if d - nb not in (0, 1):
        raise LazyKeOpsError(f"a LazyTensor of shape {t.shape} cannot be reduced over dim={dim}:"
                             f" use dim={nb} (over i) or dim={nb + 1} (over j)")
    return d - nb


def reduce(t, reduction_op, dim, weight=None, k=None, backend="auto", out=None,
           dtype_acc="auto", sum_scheme="auto", **unknown):
    if unknown:
        raise LazyKeOpsError(f"{reduction_op} reduction got unknown keyword arguments "
                             f"{sorted(unknown)}")
    axis = reduction_axis(t, dim)
    if weight is not None:
        roots = (t, LazyTensor._wrap(weight))
        merged = LazyTensor.__new__(LazyTensor)  # the weight's sizes, dtype, batch vs t's
        merged.op = f"{reduction_op} with weight"
        _merge_into(merged, roots)
        shape_of = merged
    else:
        roots, shape_of = (t,), t
    nodes, leaves = lower(roots)
    table = tuple([(leaf.category, leaf.dim) for leaf in leaves])
    options = (reduction_op, axis, k, dtype_acc, sum_scheme)
    if leaves and leaves[0].symbolic_pos is not None:
        return SymbolicReduction(nodes, table, options)
    if shape_of.framework is None:
        raise LazyKeOpsError(f"a LazyTensor of shape {t.shape} whose variables are all "
                             "Python numbers cannot be reduced: there is no i or j axis")
    if shape_of.dtype not in _FLOATS:
        raise LazyKeOpsError(f"a LazyTensor of shape {t.shape} holds {shape_of.dtype} data; "
                             "reductions need float32 or float64")
    # pykeops's convention: with no variable indexed by i (or j), that size is 1.
    if shape_of.ni is None or shape_of.nj is None:
        for category, size in ((CAT_I, shape_of.ni), (CAT_J, shape_of.nj)):
            if size is None:
                leaves = leaves + [_unit_axis(category, shape_of)]
                table = table + ((category, 1),)
    core = _core(nodes, table, options, shape_of.framework)
    if shape_of.framework == "torch" and _needs_autograd(leaves):
        from .autograd import call  # torch only; recorded for backward

        args = [_genred_layout(leaf) for leaf in leaves]
        return _pykeops_shape(call(core, args, backend=backend, out=out), t, k)
    core.check_backend(backend, shape_of.device)
    if shape_of.device != "cpu":
        core.check_device(shape_of.device)
    batch = shape_of.batch
    prepared, strides = _prepare_leaves(leaves, batch, core.backend, shape_of.dtype,
                                        shape_of.device)
    nout, nred = (shape_of.ni or 1, shape_of.nj or 1)
    if axis == 0:
        nout, nred = nred, nout
    result = core.run(shape_of.dtype, batch, nout, nred, prepared, strides, out)
    return _pykeops_shape(result, t, k)


def _unit_axis(category, like):
    """A zero variable of length 1 along an axis that no variable indexes."""
    leaf = LazyTensor.__new__(type(like))
    leaf.category, leaf.dim = category, 1
    leaf.framework, leaf.dtype, leaf.device = like.framework, like.dtype, like.device
    leaf.data = get_backend(like.framework).as_array([[[0.0]]], like.dtype, like.device)
    leaf.ni, leaf.nj = (1, None) if category == CAT_I else (None, 1)
    return leaf


_IS_RECORDED = []  # tensor.autograd.is_recorded, imported on first use (it imports torch)


def _needs_autograd(leaves):
    if not _IS_RECORDED:
        from .autograd import is_recorded

        _IS_RECORDED.append(is_recorded)
    is_recorded = _IS_RECORDED[0]
    for leaf in leaves:
        if leaf.framework is not None and is_recorded(leaf.data):
            return True
    return False


def _genred_layout(leaf):
    """Leaf data in Genred's shapes: (..., N, D), (..., M, D) or (..., D)."""
    x = leaf.data
    if leaf.framework is None:
        return x
    keep = -2 if leaf.category == CAT_I else -3 if leaf.category == CAT_J else None
    return x.squeeze(keep) if keep is not None else x.squeeze(-2).squeeze(-2)


def _prepare_leaves(leaves, batch, backend, dtype, device="cpu"):
    """Leaf data as the Genred core's run() wants it. LazyTensor construction already
    checked sizes, dims, dtypes and batch dims, so this only makes memory contiguous."""
    prepared, strides = [], []
    for leaf in leaves:
        x = leaf.data
        if leaf.framework is None:  # a Python number or list: a parameter
            x = _python_parameter(x, backend, dtype, device)
        own = leaf.batch
        if not own or all(s == 1 for s in own):
            strides.append(0)
        else:
            if tuple(own) != tuple(batch):
                x = backend.prepare(x, (*batch, *x.shape[-3:]))
            strides.append((leaf.ni or 1) * (leaf.nj or 1) * leaf.dim)
        prepared.append(backend.contiguous(x))
    return prepared, strides


_PARAMETERS = {}


def _python_parameter(values, backend, dtype, device):
    """Python numbers as a read-only array, converted once: `K * 0.5` on every call of a
    small problem would otherwise pay an array allocation each time."""
    key = (tuple(values), backend.name, dtype, device)
    array = _PARAMETERS.get(key)
    if array is None:
        if len(_PARAMETERS) > 1024:
            _PARAMETERS.clear()
        array = _PARAMETERS[key] = backend.as_array(values, dtype, device)
    return array


def _core(nodes, table, options, framework):
    key = (nodes, table, options, framework)
    core = _CORES.get(key)
    if core is None:
        reduction_op, axis, k, dtype_acc, sum_scheme = options
        aliases = [Alias(f"var{p}", p, cat, dim) for p, (cat, dim) in enumerate(table)]
        core = _CORES[key] = GenredCore(nodes, aliases, reduction_op, axis, k, dtype_acc,
                                        sum_scheme, framework=framework)
    return core


def _pykeops_shape(result, t, k):
    """K-reductions of a vector formula give (..., N, K, D), as in pykeops."""
    if k is None or t.dim == 1:
        return result
    if isinstance(result, tuple):
        return tuple(r.reshape(*r.shape[:-1], k, t.dim) for r in result)
    return result.reshape(*result.shape[:-1], k, t.dim)


class SymbolicReduction:
    """What a reduction of symbolic variables returns: call it with the arrays, by index
    (i-variables (..., N, D), j-variables (..., M, D), parameters (..., D))."""

    def __init__(self, nodes, table, options):
        self.nodes, self.table, self.options = nodes, table, options

    def __call__(self, *args, backend="auto", out=None):
        framework = next((f for f in map(_framework_name, args) if f), None)
        if framework is None:
            raise LazyKeOpsError("a symbolic reduction needs at least one torch tensor or "
                                 "numpy array argument")
        return _core(self.nodes, self.table, self.options, framework)(
            *args, backend=backend, out=out)


def _framework_name(x):
    module = type(x).__module__
    return "torch" if module.startswith("torch") else "numpy" if module.startswith("numpy") \
        else None


# ------------------------------------------------------------------ reduction methods
def _inner_or_reduce(inner_op, reduction_op):
    def method(self, axis=-1, dim=None, **kwargs):
        dim = axis if dim is None else dim
        if self._is_inner_dim(dim):
            if kwargs:
                raise LazyKeOpsError(f"{inner_op} over the last dimension takes no keyword "
                                     f"arguments, got {sorted(kwargs)}")
            return self._apply(inner_op)
        return reduce(self, reduction_op, dim, **kwargs)

    method.__name__ = reduction_op.lower()
    return method


def _reduction_only(reduction_op, uses_k=False):
    if uses_k:
        def method(self, K, axis=None, dim=None, **kwargs):
            return reduce(self, reduction_op, _dim(self, axis, dim), k=K, **kwargs)
    else:
        def method(self, axis=None, dim=None, **kwargs):
            return reduce(self, reduction_op, _dim(self, axis, dim), **kwargs)
    method.__name__ = reduction_op.lower()
    return method


def _dim(t, axis, dim):
    dim = axis if dim is None else dim
    if dim is None:
        raise LazyKeOpsError(f"a reduction of a LazyTensor of shape {t.shape} needs dim "
                             f"({t.nbatchdims} for over i, {t.nbatchdims + 1} for over j)")
    return dim


def logsumexp(self, axis=None, dim=None, weight=None, **kwargs):
    return reduce(self, "LogSumExp", _dim(self, axis, dim), weight=weight, **kwargs)


def sumsoftmaxweight(self, weight, axis=None, dim=None, **kwargs):
    return reduce(self, "SumSoftMaxWeight", _dim(self, axis, dim), weight=weight, **kwargs)


# ------------------------------------------------------------------ linear operator
def matmul(self, v):
    """K @ v = sum_j K_ij v_j for K of last dim 1 and v of shape (M,), (M, E), (..., M, E)."""
    if self.dim != 1:
        raise LazyKeOpsError(f"K @ v needs a LazyTensor K whose last dim is 1, got K of shape "
                             f"{self.shape} and v of shape "
                             f"{tuple(getattr(v, 'shape', ())) or type(v).__name__}")
    framework = _framework_name(v)
    if framework is None:
        raise LazyKeOpsError(f"K @ v needs v to be an array, got {type(v).__name__}")
    shape = v.shape
    vector = len(shape) == 1
    if not shape:
        raise LazyKeOpsError(f"K @ v needs v of shape (M,) or (..., M, E), got {tuple(shape)}")
    # v as a j-variable, built directly: this is on the path of every small K @ v.
    backend = get_backend(framework)
    vj = type(self).__new__(type(self))
    vj.category, vj.framework = CAT_J, framework
    vj.dtype, vj.device = backend.dtype_name(v), backend.device(v)
    if vector:
        vj.dim, vj.nj, vj.data = 1, shape[0], v.reshape(1, shape[0], 1)
    else:
        vj.dim, vj.nj, vj.batch = shape[-1], shape[-2], tuple(shape[:-2])
        vj.data = v.reshape(*shape[:-2], 1, shape[-2], shape[-1])
    if self.nj is not None and vj.nj != self.nj:
        raise LazyKeOpsError(f"K @ v: K of shape {self.shape} has M = {self.nj}, but v has "
                             f"shape {tuple(shape)}")
    result = reduce(self._apply("Mult", vj), "Sum", len(self.batch) + 1)
    return result.reshape(-1) if vector else result


def transpose(self):
    """K.T: the same formula with the roles of i and j exchanged."""
    memo = {}

    def flip(t):
        done = memo.get(id(t))
        if done is not None:
            return done
        new = type(t).__new__(type(t))
        new.__dict__.update(t.__dict__)
        new.ni, new.nj = t.nj, t.ni
        if t.category in (CAT_I, CAT_J):
            new.category = CAT_J if t.category == CAT_I else CAT_I
            x = t.data  # (..., N, 1, D) <-> (..., 1, N, D): the same memory, a reshape
            new.data = x.reshape(*x.shape[:-3], x.shape[-2], x.shape[-3], x.shape[-1])
        new.args = tuple(flip(a) for a in t.args)
        memo[id(t)] = new
        return new

    return flip(self)


def matvec(self, v):
    return matmul(self, v)


def rmatvec(self, v):
    return matmul(transpose(self), v)


def dense(self, limit=DENSE_LIMIT):
    """The LazyTensor as a torch tensor or numpy array of shape self.shape (small ones only:
    at most `limit` entries)."""
    import torch

    size = self.dim * (self.ni or 1) * (self.nj or 1)
    for b in self.batch:
        size *= b
    if size > limit:
        raise LazyKeOpsError(f"dense() of a LazyTensor of shape {self.shape} would hold "
                             f"{size:,} entries, above the limit {limit:,} (pass limit=...)")
    (node,), leaves = lower([self])
    if any(leaf.symbolic_pos is not None for leaf in leaves) or self.framework is None:
        raise LazyKeOpsError("dense() needs a LazyTensor whose variables hold data")
    dtype = {"float32": torch.float32, "float64": torch.float64}[self.dtype]
    values = [_dense_leaf(leaf, dtype, torch) for leaf in leaves]
    full = (*self.batch, self.ni or 1, self.nj or 1, self.dim)
    result = torch.broadcast_to(evaluate(node, values, dtype), full).reshape(self.shape)
    return result.contiguous() if self.framework == "torch" else result.numpy().copy()


def _dense_leaf(leaf, dtype, torch):
    return torch.as_tensor(leaf.data, dtype=dtype)  # canonical (..., N|1, M|1, D) layout


def solve(self, b, alpha=1e-10, eps=None, maxiter=None, dim=None):
    """x such that (alpha Id + K) x = b, K symmetric positive definite, by conjugate
    gradient: at most `maxiter` iterations (default 10 N + 100), stopping when the residual
    is below eps |b| (eps: 1e-6 in float32, 1e-10 in float64)."""
    if self.dim != 1 or self.ni is None or self.ni != self.nj:
        raise LazyKeOpsError(f"solve needs a square kernel LazyTensor with last dim 1, got "
                             f"shape {self.shape}")
    if dim not in (None, self.nbatchdims + 1):
        raise LazyKeOpsError(f"solve reduces over j (dim={self.nbatchdims + 1}), got {dim}")
    eps = eps if eps is not None else (1e-6 if self.dtype == "float32" else 1e-10)
    maxiter = maxiter if maxiter is not None else 10 * self.ni + 100
    return conjugate_gradient(lambda p: alpha * p + matmul(self, p), b, eps, maxiter,
                              f"solve with a LazyTensor of shape {self.shape}")


def conjugate_gradient(apply, b, eps, maxiter, what):
    """Solve apply(x) = b column by column (b: (N,) or (..., N, E)), all columns at once."""
    x = b * 0
    r = b - apply(x)
    p = r
    rs = (r * r).sum(-2 if len(b.shape) > 1 else -1)
    target = float(((b * b).sum()) ** 0.5) * eps
    for _ in range(maxiter):
        if float(rs.sum()) ** 0.5 <= target:
            return x
        ap = apply(p)
        curvature = (p * ap).sum(-2 if len(b.shape) > 1 else -1)
        if float(curvature.min()) <= 0:
            raise LazyKeOpsError(f"{what}: the operator is not positive definite "
                                 "(conjugate gradient met a direction of non-positive "
                                 "curvature)")
        step = rs / curvature
        expand = (lambda s: s[..., None, :]) if len(b.shape) > 1 else (lambda s: s)
        x = x + expand(step) * p
        r = r - expand(step) * ap
        rs_new = (r * r).sum(-2 if len(b.shape) > 1 else -1)
        p = r + expand(rs_new / rs) * p
        rs = rs_new
    if float(rs.sum()) ** 0.5 <= target:
        return x
    raise LazyKeOpsError(f"{what}: conjugate gradient did not converge in {maxiter} "
                         f"iterations (residual {float(rs.sum()) ** 0.5:.3e}, target "
                         f"{target:.3e}); raise maxiter or eps, or increase alpha")


LazyTensor.sum = _inner_or_reduce("Sum", "Sum")
LazyTensor.min = _inner_or_reduce("Min", "Min")
LazyTensor.max = _inner_or_reduce("Max", "Max")
LazyTensor.argmin = _inner_or_reduce("ArgMin", "ArgMin")
LazyTensor.argmax = _inner_or_reduce("ArgMax", "ArgMax")
LazyTensor.logsumexp = logsumexp
LazyTensor.sumsoftmaxweight = sumsoftmaxweight
for _name, _op, _k in (("sum_reduction", "Sum", False), ("min_reduction", "Min", False),
                       ("max_reduction", "Max", False), ("argmin_reduction", "ArgMin", False),
                       ("argmax_reduction", "ArgMax", False),
                       ("min_argmin", "Min_ArgMin", False), ("max_argmax", "Max_ArgMax", False),
                       ("Kmin", "KMin", True), ("argKmin", "ArgKMin", True),
                       ("Kmin_argKmin", "KMin_ArgKMin", True)):
    setattr(LazyTensor, _name, _reduction_only(_op, _k))
LazyTensor.min_argmin_reduction = LazyTensor.min_argmin
LazyTensor.max_argmax_reduction = LazyTensor.max_argmax
LazyTensor.Kmin_reduction = LazyTensor.Kmin
LazyTensor.argKmin_reduction = LazyTensor.argKmin
LazyTensor.Kmin_argKmin_reduction = LazyTensor.Kmin_argKmin
LazyTensor.logsumexp_reduction = logsumexp
LazyTensor.sumsoftmaxweight_reduction = sumsoftmaxweight
LazyTensor.__matmul__ = matmul
LazyTensor.matvec = matvec
LazyTensor.rmatvec = rmatvec
LazyTensor.t = transpose
LazyTensor.T = property(transpose)
LazyTensor.dense = dense
LazyTensor.solve = solve
