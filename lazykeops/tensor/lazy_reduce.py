"""Reductions of LazyTensors (the linear-operator interface is in lazy_linear.py).

`lower` turns LazyTensor trees into formula nodes, numbering the variables in order of
first appearance; the same expression built twice gives the same nodes, so the Genred core
(and its compiled kernel) is found in `_CORES` by a dictionary lookup: building the
expression is the only per-call cost on top of a direct Genred call. The methods defined
here are attached to LazyTensor at the bottom of the module.
"""

import numbers

from ..errors import LazyKeOpsError
from ..formula import autodiff
from ..formula.node import _INTERNED, CAT_I, CAT_J, make, var
from ..formula.aliases import Alias
from ..runtime.launch import launch, prepare
from ..runtime.signature import Signature
from ..runtime.genred import HALF_DTYPES, GenredCore
from ..runtime.options import as_index, call_options, check_device_id, split_reduction_options
from ..runtime.ranges import block_sparse
from ..runtime.backends import get_backend
from .lazy import LazyTensor, _framework_of
from .lazy_blocks import LabelMask, masked_reduce
from .lazy_shapes import merge_into, postorder

_CORES = {}
_RECURSION_DEPTH = 200  # well inside Python's default limit of 1,000 frames
_FLOATS = ("float32", "float64", *HALF_DTYPES)
# formula.autodiff's derivatives (read-only there), plus what lazy_pykeops.py adds.
DERIVATIVES = dict(autodiff.DERIVATIVES)


def lower(roots):
    """(formula nodes of `roots`, their variable leaves in position order: the order in
    which a left-to-right walk first meets them). Each shared subtree is lowered once.
    This runs on every call: a plain recursion, fast for the usual shallow expressions,
    hands subtrees deeper than _RECURSION_DEPTH to postorder's explicit stack (the same
    left-to-right order), so that expressions built in loops lower at any depth."""
    leaves, symbolic, lowered = [], [], {}

    def one(t, children):
        op = t.op
        if op is not None:
            if op in DERIVATIVES:  # LazyTensor.grad / .diff: expanded symbolically
                return DERIVATIVES[op](*children)
            return _INTERNED.get((op, children, t.params)) or make(op, *children,
                                                                   params=t.params)
        if t.symbolic_pos is not None:
            symbolic.append(t)
            return var(t.symbolic_pos, t.inner_dim, t.category)
        params = (len(leaves), t.inner_dim, t.category)
        leaves.append(t)
        return _INTERNED.get(("Var", (), params)) or var(*params)

    def visit(t, depth):
        node = lowered.get(id(t))
        if node is not None:
            return node
        if depth > _RECURSION_DEPTH:
            for s in postorder([t]):
                if id(s) not in lowered:
                    lowered[id(s)] = one(s, tuple([lowered[id(a)] for a in s.args]))
            return lowered[id(t)]
        args, depth = t.args, depth + 1  # unrolled for the usual arities: the hot path
        children = () if not args else (visit(args[0], depth),) if len(args) == 1 else \
            (visit(args[0], depth), visit(args[1], depth)) if len(args) == 2 else \
            tuple([visit(a, depth) for a in args])
        node = lowered[id(t)] = one(t, children)
        return node

    nodes = tuple([visit(r, 0) for r in roots])
    if symbolic and leaves:
        raise LazyKeOpsError("a LazyTensor cannot mix symbolic variables (Vi(ind, dim), ...) "
                             "with variables holding data")
    return nodes, (symbolic_table(symbolic) if symbolic else leaves)


def symbolic_table(symbolic):
    """One leaf per position 0..n-1, checking that the positions agree and have no gap."""
    table = {}
    for t in symbolic:
        other = table.setdefault(t.symbolic_pos, t)
        if (other.category, other.inner_dim) != (t.category, t.inner_dim):
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


def reduce(t, reduction_op, dim, weight=None, k=None, **options):
    """The reduction of `t` over pykeops's `dim`; `options` are pykeops's reduction
    keywords (runtime/options.py), plus `call=False` for a reduction to run later."""
    deferred = False
    ranges = None
    if options:
        deferred = not options.pop("call", True)
        init, call = split_reduction_options(options, _what(t, reduction_op))
        dtype_acc, sum_scheme = init["dtype_acc"], init["sum_scheme"]
        backend, out, device_id = call["backend"], call["out"], call["device_id"]
        ranges = call["ranges"]
    else:  # the common case, without building messages
        dtype_acc = sum_scheme = backend = "auto"
        out, device_id = None, -1
    if t.backend is not None and backend == "auto":  # pykeops's `K.backend = "CPU"`
        backend = call_options(_what(t, reduction_op), backend=t.backend)["backend"]
    if k is not None:
        k = as_index(k, "K", _what(t, reduction_op))
    axis = reduction_axis(t, dim)
    if weight is not None:
        roots = (t, LazyTensor._wrap(weight))
        merged = LazyTensor.__new__(LazyTensor)  # the weight's sizes, dtype, batch vs t's
        merged.op = f"{reduction_op} with weight"
        merge_into(merged, roots)
        shape_of = merged
    else:
        roots, shape_of = (t,), t
    if ranges is None:  # pykeops's `K.ranges = ...`, carried through the expression
        ranges = shape_of._ranges
    if isinstance(ranges, LabelMask):  # K.block_sparse(...): lazy_blocks.py sorts the data
        return masked_reduce(t, reduction_op, dim, weight, k, ranges, deferred, options)
    spec = (reduction_op, axis, k, dtype_acc, sum_scheme)
    if shape_of.framework == "torch" and is_compiling():  # under torch.compile
        _check_dtype(t, shape_of)
        if ranges is not None:
            raise LazyKeOpsError(f"block-sparse ranges cannot be used under torch.compile "
                                 f"yet ({_what(t, reduction_op)}): reduce outside the "
                                 f"compiled function, or without ranges")
        if device_id != -1:
            check_device_id(device_id, shape_of.device, _what(t, reduction_op))
        from ..torch.custom_ops import compiled_reduce

        return _pykeops_shape(compiled_reduce(roots, spec, shape_of, backend, out), t, k)
    nodes, leaves = lower(roots)
    table = tuple([(leaf.category, leaf.inner_dim) for leaf in leaves])
    if leaves and leaves[0].symbolic_pos is not None:
        return SymbolicReduction(nodes, table, spec, ranges)
    if deferred:  # options keep ranges=, if given; t keeps its own
        return DeferredReduction(t, reduction_op, dim, weight, k, options)
    if shape_of.framework is None:
        raise LazyKeOpsError(f"a LazyTensor of shape {t.shape} whose variables are all "
                             "Python numbers cannot be reduced: there is no i or j axis")
    _check_dtype(t, shape_of)
    # pykeops's convention: with no variable indexed by i (or j), that size is 1.
    if shape_of.ni is None or shape_of.nj is None:
        for category, size in ((CAT_I, shape_of.ni), (CAT_J, shape_of.nj)):
            if size is None:
                leaves = leaves + [_unit_axis(category, shape_of)]
                table = table + ((category, 1),)
    if device_id != -1:
        check_device_id(device_id, shape_of.device, _what(t, reduction_op))
    core = _core(nodes, table, spec, shape_of.framework)
    half_cpu = shape_of.device == "cpu" and shape_of.dtype in HALF_DTYPES  # widened by the core
    if not half_cpu:
        core.check_backend(backend, shape_of.device)
        if shape_of.device != "cpu":
            core.check_device(shape_of.device)
    arrays, sig = _signature(leaves, shape_of, axis, core.backend)
    if ranges is not None:
        ranges = block_sparse(ranges, core.backend, shape_of.device, _what(t, reduction_op))
    if shape_of.framework == "torch" and _needs_autograd(leaves):
        from ..torch.autograd import call  # torch only; recorded for backward

        args = [_genred_layout(leaf, x) for leaf, x in zip(leaves, arrays)]
        return _pykeops_shape(call(core, args, backend, out, None if half_cpu else sig, ranges),
                              t, k)
    if half_cpu:
        args = [_genred_layout(leaf, x) for leaf, x in zip(leaves, arrays)]
        return _pykeops_shape(core(*args, backend=backend, out=out, ranges=ranges), t, k)
    # The fast path: the expression's construction checked what a signature checks.
    return _pykeops_shape(launch(core, sig, prepare(core, sig, arrays, lazy=True), out, backend,
                                 ranges), t, k)


def _check_dtype(t, shape_of):
    if shape_of.dtype not in _FLOATS:
        raise LazyKeOpsError(f"a LazyTensor of shape {t.shape} holds {shape_of.dtype} data; "
                             f"reductions need one of {', '.join(_FLOATS)}")


def _what(t, reduction_op):
    return f"the {reduction_op} reduction of a LazyTensor of shape {t.shape}"


class DeferredReduction:
    """What a reduction given `call=False` returns (as pykeops): calling it runs the
    reduction, with keyword arguments added to those given at first."""

    def __init__(self, t, reduction_op, dim, weight, k, options):
        self.t, self.reduction_op, self.inner_dim = t, reduction_op, dim
        self.weight, self.k, self.options = weight, k, options

    def __call__(self, *args, **kwargs):
        if args:
            raise LazyKeOpsError(f"{_what(self.t, self.reduction_op)} was built with "
                                 "call=False from variables holding data: call it without "
                                 "positional arguments (use symbolic Vi/Vj/Pm variables for "
                                 "a reduction that takes its arrays when called)")
        return reduce(self.t, self.reduction_op, self.inner_dim, self.weight, self.k,
                      **{**self.options, **kwargs})


def _unit_axis(category, like):
    """A zero variable of length 1 along an axis that no variable indexes."""
    leaf = LazyTensor.__new__(type(like))
    leaf.category, leaf.inner_dim = category, 1
    leaf.framework, leaf.dtype, leaf.device = like.framework, like.dtype, like.device
    leaf.data = get_backend(like.framework).as_array([[[0.0]]], like.dtype, like.device)
    leaf.ni, leaf.nj = (1, None) if category == CAT_I else (None, 1)
    return leaf


def is_compiling():
    """Whether torch.compile traces this call: torch.compiler.is_compiling once
    lazykeops.torch is imported (torch/autograd.py sets it; this module imports no torch)."""
    return False


_IS_RECORDED = []  # torch.autograd.is_recorded, imported on first use (it imports torch)


def _needs_autograd(leaves):
    if not _IS_RECORDED:
        from ..torch.autograd import is_recorded

        _IS_RECORDED.append(is_recorded)
    is_recorded = _IS_RECORDED[0]
    for leaf in leaves:
        if leaf.framework is not None and is_recorded(leaf.data):
            return True
    return False


def _genred_layout(leaf, x):
    """Leaf data `x` in Genred's shapes: (..., N, D), (..., M, D) or (..., D) (views).
    A Python number's array (see _signature) is (D,) already."""
    if leaf.framework is None:
        return x
    keep = -2 if leaf.category == CAT_I else -3 if leaf.category == CAT_J else None
    return x.squeeze(keep) if keep is not None else x.squeeze(-2).squeeze(-2)


def _signature(leaves, shape_of, axis, backend):
    """(the leaves' arrays, the call's Signature), from what the LazyTensor construction
    checked: no second validation. Python numbers become (cached) arrays."""
    arrays = [leaf.data if leaf.framework is not None else  # else a Python number or list
              _python_parameter(leaf.data, backend, shape_of.dtype, shape_of.device)
              for leaf in leaves]
    if shape_of.batch:
        strides = [0 if all(s == 1 for s in leaf.batch) else
                   (leaf.ni or 1) * (leaf.nj or 1) * leaf.inner_dim for leaf in leaves]
    else:
        strides = [0] * len(leaves)
    nout, nred = (shape_of.ni or 1, shape_of.nj or 1)
    if axis == 0:
        nout, nred = nred, nout
    return arrays, Signature(shape_of.dtype, shape_of.device, shape_of.batch, nout, nred, strides)


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
    if k is None or t.inner_dim == 1:
        return result
    if isinstance(result, tuple):
        return tuple(r.reshape(*r.shape[:-1], k, t.inner_dim) for r in result)
    return result.reshape(*result.shape[:-1], k, t.inner_dim)


class SymbolicReduction:
    """What a reduction of symbolic variables returns: call it with the arrays, by index
    (i-variables (..., N, D), j-variables (..., M, D), parameters (..., D)). Block-sparse
    ranges given to the reduction (or set on the expression) apply unless the call gives
    its own."""

    def __init__(self, nodes, table, options, ranges=None):
        self.nodes, self.table, self.options, self.ranges = nodes, table, options, ranges

    def __call__(self, *args, **kwargs):
        framework = next((f for f in map(_framework_of, args) if f), None)
        if framework is None:
            raise LazyKeOpsError("a symbolic reduction needs at least one torch tensor or "
                                 "numpy array argument")
        if self.ranges is not None and kwargs.get("ranges") is None:
            kwargs["ranges"] = self.ranges
        core = _core(self.nodes, self.table, self.options, framework)
        return core(*args, **call_options(f"formula '{core.text}'", **kwargs))


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
    if "other" in kwargs:  # pykeops passes keywords on to reduction(), whose name is other
        other = kwargs.pop("other")
        if weight is not None:
            raise LazyKeOpsError("logsumexp got both weight= and other=: give one of them")
        weight = other
    return reduce(self, "LogSumExp", _dim(self, axis, dim), weight=weight, **kwargs)


def sumsoftmaxweight(self, weight, axis=None, dim=None, **kwargs):
    return reduce(self, "SumSoftMaxWeight", _dim(self, axis, dim), weight=weight, **kwargs)


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
