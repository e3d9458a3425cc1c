"""LazyTensor.block_sparse: reductions restricted to the pairs that a cluster-by-cluster
mask keeps, for data in any order (pykeops's `ranges=` without sorting the data by hand
or writing its six index arrays).

`K.block_sparse(x_labels, y_labels, keep)` is K carrying a LabelMask where pykeops's
6-tuples go (`_ranges`), so that the mask follows K into the expressions built from it,
as `K.ranges = ...` does. A reduction of such an expression (lazy_reduce.reduce hands it
to `masked_reduce`):

1. copies the expression with each i-indexed leaf's rows sorted by x_labels and each
   j-indexed leaf's by y_labels (stable sorts: a cluster keeps its points' order);
2. runs the block-sparse reduction over the ranges of the sorted labels (cluster_ranges
   of the label counts, then from_matrix(keep)); reductions over i, and gradients, read
   the transposed half of the same ranges;
3. puts the output rows back in the data's order and maps index outputs (ArgMin,
   ArgKMin, Min_ArgMin, ...) to the data's indices, -1 (no term) staying -1.

Steps 1 and 3 are array indexing, which torch differentiates: gradients reach the
unsorted data. The sort permutations and the ranges are built once per (x_labels,
y_labels, keep): a cache keyed by the three arrays' identities, held weakly, and checked
against torch's version counters (numpy arrays have none: against copies of their
values), so that in-place changes to the labels are seen and repeated reductions (a
Sinkhorn loop) skip the sorting.
"""

import contextlib
import weakref

import numpy as np

from ..errors import LazyKeOpsError
from ..formula.node import CAT_I, CAT_J
from ..formula.reductions import lookup
from ..runtime.backends import get_backend
from .lazy import LazyTensor
from .lazy_shapes import merge_into, postorder

FN = "block_sparse"
_CACHE_SIZE = 32
_CACHE = {}  # (id(x_labels), id(y_labels), id(keep)) -> MaskLayout


class LabelMask:
    """The (x_labels, y_labels, keep) of one K.block_sparse call.

    Iterating gives the three arrays: lazy_shapes.merge_into compares the ranges carried by
    an op's arguments item by item, by identity, so two masks of the same arrays agree and
    a mask never agrees with a pykeops 6-tuple (an op mixing them is an error)."""

    def __init__(self, x_labels, y_labels, keep, framework):
        self.x_labels, self.y_labels, self.keep = x_labels, y_labels, keep
        self.framework = framework

    def __iter__(self):
        return iter((self.x_labels, self.y_labels, self.keep))

    def transposed(self):
        """The mask of K.T: the sides exchanged (a new keep array, hence a new layout)."""
        return LabelMask(self.y_labels, self.x_labels, self.keep.T, self.framework)

    def layout(self):
        """The MaskLayout of these arrays, from the cache while they are unchanged."""
        key = (id(self.x_labels), id(self.y_labels), id(self.keep))
        hit = _CACHE.get(key)
        if hit is not None and hit.describes(self):
            return hit
        layout = MaskLayout(self)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        layout.refs = tuple(weakref.ref(a, lambda ref, key=key: _forget(key, ref))
                            for a in self)
        _CACHE[key] = layout
        return layout


def _forget(key, dead):
    """Drop a cache entry once one of its arrays is gone: its permutations are as long as
    the data, too large to keep for arrays nobody can pass again."""
    entry = _CACHE.get(key)
    if entry is not None and dead in entry.refs:
        del _CACHE[key]


class MaskLayout:
    """What reductions of one LabelMask need: the stable sort permutations of the labels,
    their inverses, and pykeops's 6-tuple of the sorted data's ranges. Building one checks
    the three arrays (each error names the argument)."""

    refs = ()

    def __init__(self, mask):
        ops = _ops(mask.framework)
        x_labels, y_labels, keep = mask
        _check_keep(ops, keep)
        self.device = ops.device(x_labels)
        for arg, labels, n_clusters, side in (("x_labels", x_labels, keep.shape[0], "rows"),
                                              ("y_labels", y_labels, keep.shape[1], "columns")):
            _check_labels(ops, arg, labels, n_clusters, side)
            if ops.device(labels) != self.device:
                raise _bad("y_labels", f"must be on the device of x_labels ({self.device})",
                           f"an array on {ops.device(labels)}")
        self.n, self.m = x_labels.shape[0], y_labels.shape[0]
        cluster = ops.cluster_module()
        with ops.building():
            keep = ops.to_device(keep, self.device)
            self.perm_x, self.inv_x = ops.sort_permutation(x_labels)
            self.perm_y, self.inv_y = ops.sort_permutation(y_labels)
            # Sorted by label, cluster c is the c-th run of rows: cluster_ranges of the
            # counts (empty clusters are empty runs, which from_matrix and ranges= accept).
            ranges_x = cluster.cluster_ranges(x_labels,
                                              Nlab=ops.counts(x_labels, keep.shape[0]))
            ranges_y = cluster.cluster_ranges(y_labels,
                                              Nlab=ops.counts(y_labels, keep.shape[1]))
            self.ranges = tuple(cluster.from_matrix(ranges_x, ranges_y, keep))
        self.snapshot = ops.snapshot(mask)

    def describes(self, mask):
        """Whether this layout was built from these very arrays, unchanged since."""
        alive = [ref() for ref in self.refs]
        return len(alive) == 3 and all(a is b for a, b in zip(alive, mask)) and \
            _ops(mask.framework).unchanged(self.snapshot, mask)


# ------------------------------------------------------------------ array namespaces
class _TorchOps:
    """The few array operations the layouts and the reductions need, for torch."""

    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch

    device = staticmethod(lambda a: get_backend("torch").device(a))
    to_device = staticmethod(lambda a, device: a.to(device))
    take = staticmethod(lambda a, index, axis: a.index_select(axis, index))

    def is_array(self, a):
        return isinstance(a, self.torch.Tensor)

    def kind(self, a):
        t = self.torch
        return "b" if a.dtype == t.bool else "f" if a.dtype.is_floating_point or \
            a.dtype.is_complex else "i"

    def building(self):
        """Layouts are ordinary tensors even when built under torch.inference_mode: the
        ranges' cache (runtime/ranges.py) reads their version counters."""
        return self.torch.inference_mode(False)

    def sort_permutation(self, labels):
        perm = self.torch.sort(labels, stable=True).indices
        inverse = self.torch.empty_like(perm)
        inverse[perm] = self.torch.arange(perm.shape[0], device=perm.device)
        return perm, inverse

    def counts(self, labels, n):
        return self.torch.bincount(labels.to(self.torch.int64), minlength=n)

    def remap(self, index, perm):
        return self.torch.where(index < 0, index, perm[index.clamp(min=0)])

    def cluster_module(self):
        from ..torch import cluster

        return cluster

    def snapshot(self, mask):
        # torch counts in-place changes in the version counters; inference tensors have
        # none (and cannot change outside inference mode): their values are kept instead.
        return tuple(a.clone() if a.is_inference() else a._version for a in mask)

    def unchanged(self, snapshot, mask):
        return all(self.torch.equal(s, a) if isinstance(s, self.torch.Tensor) else
                   s == a._version for s, a in zip(snapshot, mask))


class _NumpyOps:
    """The same operations for numpy."""

    name = "numpy"
    is_array = staticmethod(lambda a: isinstance(a, np.ndarray))
    device = staticmethod(lambda a: "cpu")
    to_device = staticmethod(lambda a, device: a)
    take = staticmethod(lambda a, index, axis: np.take(a, index, axis=axis))
    kind = staticmethod(lambda a: "b" if a.dtype.kind == "b" else
                        "i" if a.dtype.kind in "iu" else "f")
    counts = staticmethod(lambda labels, n: np.bincount(labels.astype(np.int64), minlength=n))
    remap = staticmethod(lambda index, perm: np.where(index < 0, index,
                                                      perm[np.maximum(index, 0)]))

    @staticmethod
    def building():
        return contextlib.nullcontext()

    @staticmethod
    def sort_permutation(labels):
        perm = np.argsort(labels, kind="stable")
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(perm.shape[0])
        return perm, inverse

    @staticmethod
    def cluster_module():
        from ..numpy import cluster

        return cluster

    @staticmethod
    def snapshot(mask):  # numpy counts no in-place changes: keep copies of the values
        return tuple(np.array(a, copy=True) for a in mask)

    @staticmethod
    def unchanged(snapshot, mask):
        return all(np.array_equal(s, a) for s, a in zip(snapshot, mask))


_NAMESPACES = {}


def _ops(framework):
    """The namespace of `framework` ("torch" or "numpy"), made once (torch imported then)."""
    ops = _NAMESPACES.get(framework)
    if ops is None:
        ops = _NAMESPACES[framework] = (_TorchOps if framework == "torch" else _NumpyOps)()
    return ops


# ------------------------------------------------------------------ checks
def _bad(arg, expected, got):
    return LazyKeOpsError(f"{FN}(): argument '{arg}' {expected}; got {got}")


def _describe(a):
    if hasattr(a, "dtype") and hasattr(a, "shape"):
        return f"an array of dtype {str(a.dtype).replace('torch.', '')} and shape " \
               f"{tuple(a.shape)}"
    return type(a).__name__


def _check_keep(ops, keep):
    if not ops.is_array(keep) or ops.kind(keep) != "b" or keep.ndim != 2:
        raise _bad("keep", "must be a boolean (clusters of x_labels, clusters of y_labels) "
                   "array", _describe(keep))


def _check_labels(ops, arg, labels, n_clusters, side):
    if not ops.is_array(labels) or ops.kind(labels) != "i" or labels.ndim != 1:
        raise _bad(arg, "must be a 1-D integer array (one cluster label per point)",
                   _describe(labels))
    if labels.shape[0]:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= n_clusters:
            raise _bad(arg, f"must hold labels in [0, {n_clusters}) (keep has {n_clusters} "
                       f"{side})", f"labels from {low} to {high}")


def _check_target(t, fn_what):
    """What block_sparse can restrict: a real expression of data, with no batch dims."""
    if getattr(t, "is_complex", False):
        raise LazyKeOpsError(f"{fn_what}: complex LazyTensors are not supported")
    if t.batch:
        raise LazyKeOpsError(f"{fn_what}: batch dims are not supported (shape {t.shape}); "
                             "use ranges= with one set of ranges per batch element")
    for leaf in postorder([t]):
        if leaf.symbolic_pos is not None:
            raise LazyKeOpsError(f"{fn_what}: the LazyTensor must hold data (its symbolic "
                                 "variables Vi(ind, dim), ... have no rows to sort)")
    if t.framework is None:
        raise LazyKeOpsError(f"{fn_what}: the LazyTensor has no torch or numpy variable")


def _check_sizes(layout, n, m, fn_what):
    for arg, length, size, letter in (("x_labels", layout.n, n, "N"),
                                      ("y_labels", layout.m, m, "M")):
        if length != size:
            raise _bad(arg, f"must hold one label per point ({letter} = {size} for "
                       f"{fn_what})", f"{length} labels")


# ------------------------------------------------------------------ the method
def block_sparse(self, x_labels, y_labels, keep):
    """This LazyTensor, reduced only over the pairs (i, j) with keep[x_labels[i],
    y_labels[j]] True.

    x_labels: (N,) integer cluster labels of the i-indexed points, in [0, keep.shape[0]);
    y_labels: (M,) those of the j-indexed points, in [0, keep.shape[1]); both arrays of
    this LazyTensor's framework, on its device; keep: a boolean (clusters of x, clusters
    of y) array (torch: on any device). The data need not be sorted by label. Reductions
    of the result, and of the expressions built from it, over i or j, give what the dense
    reduction with the other pairs removed gives (empty rows: the reduction's identity, as
    with ranges=), in the data's order; indices are the data's. Gradients flow to the data.
    `K.ranges = None` on the result gives the full reduction back.

        x_labels = grid_cluster(x, 0.5); y_labels = grid_cluster(y, 0.5)
        keep = torch.cdist(cx, cy) < 1.0      # cx, cy: the clusters' centroids
        K = (-Vi(x).sqdist(Vj(y))).exp().block_sparse(x_labels, y_labels, keep)
        a = K @ b
    """
    fn_what = f"{FN}() of a LazyTensor of shape {self.shape}"
    _check_target(self, fn_what)
    mask = LabelMask(x_labels, y_labels, keep, self.framework)
    ops = _ops(self.framework)
    for arg, a in (("x_labels", x_labels), ("y_labels", y_labels), ("keep", keep)):
        if not ops.is_array(a):
            raise _bad(arg, f"must be a {self.framework} array", _describe(a))
    layout = mask.layout()  # the checks, and the sort, now rather than at a reduction
    if layout.device != self.device:
        raise _bad("x_labels", f"must be on the data's device {self.device}",
                   f"an array on {layout.device}")
    _check_sizes(layout, self.ni or layout.n, self.nj or layout.m, fn_what)
    restricted = type(self).__new__(type(self))
    restricted.__dict__.update(self.__dict__)
    restricted._ranges = mask
    return restricted


LazyTensor.block_sparse = block_sparse


# ------------------------------------------------------------------ reductions
def masked_reduce(t, reduction_op, dim, weight, k, mask, deferred, options):
    """lazy_reduce.reduce of `t` (and `weight`) under a LabelMask: see the module docstring.
    `options`: the reduction's keywords, less `call`."""
    from . import lazy_reduce  # which imports this module

    if deferred:
        return lazy_reduce.DeferredReduction(t, reduction_op, dim, weight, k, options)
    what = lazy_reduce._what(t, reduction_op)
    if lazy_reduce.is_compiling():
        raise LazyKeOpsError(f"{FN}() masks cannot be used under torch.compile yet ({what})")
    roots = (t,) if weight is None else (t, LazyTensor._wrap(weight))
    shape_of = t
    if weight is not None:
        shape_of = LazyTensor.__new__(LazyTensor)
        shape_of.op = f"{reduction_op} with weight"
        merge_into(shape_of, roots)
    axis = lazy_reduce.reduction_axis(t, dim)
    _check_target(t, what)
    if shape_of.batch:  # batch dims that came with the weight
        _check_target(shape_of, what)
    if mask.framework != shape_of.framework:
        raise LazyKeOpsError(f"{what}: its {FN}() labels are {mask.framework} arrays, its "
                             f"data {shape_of.framework} arrays")
    layout = mask.layout()
    if layout.device != shape_of.device:
        raise _bad("x_labels", f"must be on the data's device {shape_of.device} for {what}",
                   f"an array on {layout.device}")
    _check_sizes(layout, shape_of.ni or 1, shape_of.nj or 1, what)
    ops = _ops(mask.framework)
    sorted_roots = _sorted_copies(roots, layout, ops)
    inner = {key: v for key, v in options.items() if key != "ranges"}
    result = lazy_reduce.reduce(sorted_roots[0], reduction_op, dim,
                                sorted_roots[1] if weight is not None else None, k,
                                ranges=layout.ranges, **inner)
    return _in_data_order(result, reduction_op, axis, layout, ops, options.get("out"))


def _sorted_copies(roots, layout, ops):
    """`roots` rebuilt with the i-indexed leaves' rows in x_labels order and the
    j-indexed ones' in y_labels order; the copies carry no mask."""
    copies = {}
    for t in postorder(list(roots)):
        new = type(t).__new__(type(t))
        new.__dict__.update(t.__dict__)
        new._ranges = None
        if t.data is not None and t.framework is not None:
            if t.category == CAT_I:  # canonical layouts: (N, 1, D) and (1, M, D)
                new.data = ops.take(t.data, layout.perm_x, -3)
            elif t.category == CAT_J:
                new.data = ops.take(t.data, layout.perm_y, -2)
        new.args = tuple(copies[id(a)] for a in t.args)
        copies[id(t)] = new
    return [copies[id(r)] for r in roots]


def _in_data_order(result, reduction_op, axis, layout, ops, out):
    """A reduction of the sorted data back in the data's order: rows unsorted, indices of
    the sorted reduced axis mapped to the data's. With out=, the engine wrote the sorted
    values there: they are unsorted in place."""
    rows = layout.inv_x if axis == 1 else layout.inv_y
    positions = layout.perm_y if axis == 1 else layout.perm_x
    has_indices = lookup(reduction_op).outputs(1, 1, 1)[1] > 0
    parts = list(result) if isinstance(result, tuple) else [result]
    for p, part in enumerate(parts):
        unsorted = ops.take(part, rows, 0)  # no batch dims: rows are the first axis
        if has_indices and p == len(parts) - 1:
            unsorted = ops.remap(unsorted, positions)
        if out is not None and p == 0 and not (has_indices and len(parts) == 1):
            get_backend(ops.name).copy_into(part, unsorted)
            unsorted = part
        parts[p] = unsorted
    return tuple(parts) if isinstance(result, tuple) else parts[0]

