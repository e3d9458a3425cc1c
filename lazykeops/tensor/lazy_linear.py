"""LazyTensors as linear operators: K @ v, K.T, matvec/rmatvec (so that scipy's
aslinearoperator works), solve by conjugate gradient, and dense() for inspection.
Attached to LazyTensor at the bottom of the module, like the reductions.
"""

import numbers

from ..errors import LazyKeOpsError
from ..formula.evaluate import evaluate
from ..formula.node import CAT_I, CAT_J
from ..routines.kernel_solve import conjugate_gradient
from ..runtime.backends import get_backend
from .lazy import LazyTensor, _framework_of
from .lazy_shapes import merge_into, postorder
from .lazy_reduce import lower, reduce

DENSE_LIMIT = 2 ** 26  # entries of the (..., N, M, D) array that dense() may build


def matmul(self, v, **options):
    """K @ v = sum_j K_ij v_j for K of last dim 1 and v of shape (M,), (M, E), (..., M, E);
    `K.__matmul__(v, **options)` takes the reduction keywords of pykeops (sum_scheme=...)."""
    if self.inner_dim != 1:
        raise LazyKeOpsError(f"K @ v needs a LazyTensor K whose last dim is 1, got K of shape "
                             f"{self.shape} and v of shape "
                             f"{tuple(getattr(v, 'shape', ())) or type(v).__name__}")
    framework = _framework_of(v)
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
        vj.inner_dim, vj.nj, vj.data = 1, shape[0], v.reshape(1, shape[0], 1)
    else:
        vj.inner_dim, vj.nj, vj.batch = shape[-1], shape[-2], tuple(shape[:-2])
        vj.data = v.reshape(*shape[:-2], 1, shape[-2], shape[-1])
    if self.nj is not None and vj.nj != self.nj:
        raise LazyKeOpsError(f"K @ v: K of shape {self.shape} has M = {self.nj}, but v has "
                             f"shape {tuple(shape)}")
    result = reduce(self._apply("Mult", vj), "Sum", len(self.batch) + 1, **options)
    return result.reshape(-1) if vector else result


def transpose(self):
    """K.T: the same formula with the roles of i and j exchanged (symbolic variables
    Vi(k, d) become Vj(k, d) and the other way round)."""
    flipped = {}
    for t in postorder([self]):
        new = type(t).__new__(type(t))
        new.__dict__.update(t.__dict__)
        new.ni, new.nj = t.nj, t.ni
        if t.category in (CAT_I, CAT_J):
            new.category = CAT_J if t.category == CAT_I else CAT_I
            x = t.data  # (..., N, 1, D) <-> (..., 1, N, D): the same memory, a reshape
            if x is not None:
                new.data = x.reshape(*x.shape[:-3], x.shape[-2], x.shape[-3], x.shape[-1])
        new.args = tuple(flipped[id(a)] for a in t.args)
        if t._ranges is not None:
            new._ranges = _transposed_ranges(t._ranges)
        flipped[id(t)] = new
    return flipped[id(self)]


def _transposed_ranges(ranges):
    """Block-sparse ranges of K.T: pykeops's two halves exchanged, or a mask's sides."""
    if hasattr(ranges, "transposed"):  # a LabelMask (tensor/lazy_blocks.py)
        return ranges.transposed()
    return (*ranges[3:], *ranges[:3])


def matvec(self, v):
    return matmul(self, v)


def rmatvec(self, v):
    return matmul(transpose(self), v)


def dense(self, limit=DENSE_LIMIT):
    """The LazyTensor as a torch tensor or numpy array of shape self.shape (small ones only:
    at most `limit` entries)."""
    import torch

    if not isinstance(limit, numbers.Integral):
        raise LazyKeOpsError(f"dense(limit=...) takes an integer, got {limit!r}")
    size = self.inner_dim * (self.ni or 1) * (self.nj or 1)
    for b in self.batch:
        size *= b
    if size > limit:
        raise LazyKeOpsError(f"dense() of a LazyTensor of shape {self.shape} would hold "
                             f"{size:,} entries, above the limit {limit:,} (pass limit=...)")
    (node,), leaves = lower([self])
    if any(leaf.symbolic_pos is not None for leaf in leaves) or self.framework is None:
        raise LazyKeOpsError("dense() needs a LazyTensor whose variables hold data")
    dtype = getattr(torch, self.dtype)
    # Half precisions are evaluated in float32 (as the kernels do), then rounded.
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    values = [_dense_leaf(leaf, compute, self.device, torch) for leaf in leaves]
    full = (*self.batch, self.ni or 1, self.nj or 1, self.inner_dim)
    result = torch.broadcast_to(evaluate(node, values, compute, self.device), full)
    result = result.reshape(self.shape).to(dtype)
    return result.contiguous() if self.framework == "torch" else result.numpy().copy()


def _dense_leaf(leaf, dtype, device, torch):
    # canonical (..., N|1, M|1, D) layout; numbers and lists become tensors on `device`
    return torch.as_tensor(leaf.data, dtype=dtype, device=device)


def solve(self, other, var=None, call=True, alpha=1e-10, eps=None, maxiter=None, dim=None,
          **options):
    """x such that (alpha Id + K) x = b (K symmetric positive definite, of last dim 1), or,
    with `var` a symbolic j-variable that `self` is linear in, such that
    alpha x + sum_j self(x_j) = b; by conjugate gradient: at most `maxiter` iterations
    (default 10 N + 100), stopping when the residual is below eps |b| (eps: 1e-6 in
    float32, 1e-10 in float64). b is an array (N,) or (..., N, E), or the i-indexed
    LazyTensor of one (pykeops's way); `options` are reduction keywords (backend=...);
    call=False gives a function of no argument that solves when called."""
    b = _right_hand_side(self, other)
    if not call:
        return lambda: solve(self, b, var, True, alpha, eps, maxiter, dim, **options)
    if var is None:
        if self.inner_dim != 1 or self.ni is None or self.ni != self.nj:
            raise LazyKeOpsError(f"solve needs a square kernel LazyTensor with last dim 1, "
                                 f"got shape {self.shape}")
        apply = lambda p: matmul(self, p, **options)  # noqa: E731
    else:
        apply = _linear_in(self, var, options)
    if dim not in (None, self.nbatchdims + 1):
        raise LazyKeOpsError(f"solve reduces over j (dim={self.nbatchdims + 1}), got {dim}")
    eps = eps if eps is not None else (1e-6 if self.dtype == "float32" else 1e-10)
    maxiter = maxiter if maxiter is not None else 10 * (self.ni or 1) + 100
    return conjugate_gradient(lambda p: alpha * p + apply(p), b, eps, maxiter,
                              f"solve with a LazyTensor of shape {self.shape}")


def _right_hand_side(self, other):
    if not isinstance(other, LazyTensor):
        return other
    if other.op is not None or other.category != CAT_I or other.data is None:
        raise LazyKeOpsError(f"solve of a LazyTensor of shape {self.shape} takes b as an "
                             "array or as the i-indexed LazyTensor of one, got a LazyTensor "
                             f"of shape {other.shape}")
    return other.data.reshape(*other.data.shape[:-3], other.data.shape[-3], other.inner_dim)


def _linear_in(self, var, options):
    """p -> sum_j self with the symbolic j-variable `var` bound to p."""
    if not isinstance(var, LazyTensor) or var.symbolic_pos is None or var.category != CAT_J:
        raise LazyKeOpsError(f"solve(var=...) takes the symbolic j-variable (Vj(index, dim)) "
                             f"that the LazyTensor of shape {self.shape} is linear in, got "
                             f"{var!r}")

    def apply(p):
        leaf = type(self)(p.reshape(*p.shape[:-2], 1, *p.shape[-2:]))
        bound = {}
        for t in postorder([self]):
            if t.symbolic_pos == var.symbolic_pos:
                bound[id(t)] = leaf
            else:
                bound[id(t)] = _rebuilt(t, [bound[id(a)] for a in t.args]) if t.args else t
        return reduce(bound[id(self)], "Sum", self.nbatchdims + 1, **options)

    return apply


def _rebuilt(t, args):
    """The operation t on new arguments, its shapes merged again."""
    new = type(t).__new__(type(t))
    new.__dict__.update(t.__dict__)
    new.args = tuple(args)
    merge_into(new, new.args)
    return new


LazyTensor.__matmul__ = matmul
LazyTensor.matvec = matvec
LazyTensor.rmatvec = rmatvec
LazyTensor.t = transpose
LazyTensor.T = property(transpose)
LazyTensor.dense = dense
LazyTensor.solve = solve
