"""Block-sparse clustering helpers for torch tensors, under pykeops.torch.cluster's names and
signatures: grid_cluster, cluster_ranges, cluster_centroids, cluster_ranges_centroids,
sort_clusters, from_matrix, swap_axes.

They compute labels, [start, end) ranges, centroids and block masks for the block-sparse
reductions (`ranges=`, docs/block_sparse.md). grid_mask, lazykeops's own (outside
`__all__`, which lists pykeops's names), gives the arguments of LazyTensor.block_sparse for
a truncated kernel on a grid. Results keep the input's device; labels are int32 and ranges
int64, as in pykeops. The algorithms and argument checks live in lazykeops.routines.cluster;
this module supplies its torch namespace. Deliberate differences from pykeops:

- grid_cluster labels cells by their exact coordinates (pykeops's hash gives points 1024 or
  more cells apart along an axis the same label) and accepts any dimension D >= 1;
- sort_clusters sorts stably, so a cluster's points keep their order (torch.sort's default
  is not stable, so pykeops's order within a cluster may vary);
- centroids and cluster weights are differentiable (pykeops builds them with
  torch.bincount, whose backward raises); cluster_ranges adds counts in int64, not float32.
"""

import torch

from ..routines import cluster as core
from ..routines.cluster import bad_argument


class _TorchOps:
    """The array namespace of routines/cluster.py, for torch tensors."""

    @staticmethod
    def divide_rows(a, d, like):
        return (a / d.reshape(-1, 1)).to(like.dtype)

    is_array = staticmethod(lambda a: isinstance(a, torch.Tensor))
    floor = staticmethod(torch.floor)
    to_float64 = staticmethod(lambda a: a.to(torch.float64))
    to_int64 = staticmethod(lambda a: a.to(torch.int64))
    to_bool = staticmethod(lambda a: a.to(torch.bool))
    amin0 = staticmethod(lambda a: a.amin(0))
    amax0 = staticmethod(lambda a: a.amax(0))
    nonzero_cols = staticmethod(lambda mask: torch.nonzero(mask)[:, 1])
    stack_cols = staticmethod(lambda a, b: torch.stack((a, b), dim=1))
    stable_argsort = staticmethod(lambda a: torch.sort(a, stable=True).indices)
    count = staticmethod(lambda idx, n: torch.bincount(idx, minlength=n))

    @staticmethod
    def kind(a):
        if a.dtype == torch.bool:
            return "b"
        if a.dtype.is_complex:
            return "c"
        if a.dtype.is_floating_point:
            return "f"
        return "i" if a.dtype.is_signed else "u"

    @staticmethod
    def arange(n, like):
        return torch.arange(n, dtype=torch.int64, device=like.device)

    @staticmethod
    def zeros_int64(n, like):
        return torch.zeros(n, dtype=torch.int64, device=like.device)

    @staticmethod
    def int64_like(values, like):
        return torch.tensor(values, dtype=torch.int64, device=like.device)

    @staticmethod
    def unique_inverse(a):
        values, inverse = torch.unique(a, sorted=True, return_inverse=True)
        return inverse.to(torch.int64), values.shape[0]

    @staticmethod
    def segment_sum(idx, values, n):
        # torch.bincount's output dtypes (float32 and float64 kept, others summed in
        # float64), but index_add_ instead, which autograd can differentiate.
        acc = values.dtype if values.dtype in (torch.float32, torch.float64) else torch.float64
        out = torch.zeros(n, dtype=acc, device=values.device)
        return out.index_add(0, idx, values.to(acc))


_OPS = _TorchOps()


def _same_device(fn, reference, **tensors):
    for arg, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.device != reference.device:
            raise bad_argument(fn, arg, f"must be on {reference.device}, like the other inputs",
                               f"a tensor on {t.device}")


def _voxel_size(size, x):
    if isinstance(size, (list, tuple)):
        dtype = x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()
        return torch.as_tensor(size, dtype=dtype, device=x.device)
    if isinstance(size, torch.Tensor) and size.ndim == 0:
        return size.to(x.device)  # 0-d tensors may live anywhere, as in torch itself
    return size


def grid_cluster(x, size):
    """Labels of the cubic cells ("voxels") of side `size` that the points fall in.

    x is an (M, D) tensor of points; size a positive number or a (D,) tensor of cell sides.
    The grid starts at the smallest coordinates of x. Returns an (M,) int32 tensor: points
    share a label exactly when they share a cell; labels run over 0..C-1 for the C occupied
    cells, in lexicographic order of the cells' coordinates.
    """
    fn = "grid_cluster"
    core.check_points(_OPS, fn, x)
    size = _voxel_size(size, x)
    core.check_voxel_size(_OPS, fn, size, x.shape[1])
    _same_device(fn, x, size=size)
    with torch.no_grad():
        if x.shape[0] == 0:
            return torch.zeros(0, dtype=torch.int32, device=x.device)
        cells = torch.floor((x - x.amin(0, keepdim=True)) / size)
        return core.cell_labels(_OPS, fn, cells).to(torch.int32)


def cluster_ranges(lab, Nlab=None):
    """[start, end) indices of each cluster in a point cloud sorted by label.

    lab is an (M,) integer tensor of labels in 0..C-1, Nlab (optional) the (C,) number of
    points per label, which replaces lab when given. Returns a (C, 2) int64 tensor whose row
    k is the slice of cluster k once the points are sorted with sort_clusters.
    """
    fn = "cluster_ranges"
    if Nlab is None:
        counts = torch.bincount(core.check_labels(_OPS, fn, lab).to(torch.int64))
    else:
        counts = core.check_counts(_OPS, fn, Nlab)
    return core.ranges_from_counts(_OPS, counts)


def _checked_inputs(fn, x, lab, weights, **others):
    """Checks shared by the centroid functions: returns (lab as int64, weights as (M,))."""
    n_points = core.check_points(_OPS, fn, x)[0]
    _same_device(fn, x, lab=lab, weights=weights, **others)
    lab = core.check_labels(_OPS, fn, lab, n_points).to(torch.int64)
    if weights is not None:
        weights = core.check_per_item(_OPS, fn, "weights", weights, n_points, "point weights")
    return lab, weights


def cluster_centroids(x, lab, Nlab=None, weights=None, weights_c=None):
    """(Weighted) barycentres of the clusters given by integer labels.

    x: (M, D) points; lab: (M,) labels in 0..C-1; Nlab: the (C,) number of points per label
    (counted from lab if None); weights: (M,) point weights (1 if None); weights_c: the (C,)
    total weight per label (summed from weights if None; unused without weights).
    Returns the (C, D) centroids, in x's dtype; an empty cluster's centroid is NaN.
    """
    fn = "cluster_centroids"
    lab, weights = _checked_inputs(fn, x, lab, weights, Nlab=Nlab, weights_c=weights_c)
    if Nlab is None:
        Nlab = torch.bincount(lab).float()
    else:
        core.check_counts(_OPS, fn, Nlab)
        core.check_cluster_count(_OPS, fn, lab, Nlab.shape[0])
    return core.centroids(_OPS, fn, x, lab, Nlab, weights, weights_c)[0]


def cluster_ranges_centroids(x, lab, weights=None, min_weight=1e-9):
    """Ranges, centroids and total weights of the clusters of a labelled point cloud.

    x: (M, D) points; lab: (M,) labels in 0..C-1; weights: (M,) point weights, raised to at
    least min_weight before use (1 for every point if None). Returns the (C, 2) int64 ranges
    (as cluster_ranges), the (C, D) centroids (as cluster_centroids) and the (C,) total
    weight of each cluster: the float32 point counts when weights is None.
    """
    fn = "cluster_ranges_centroids"
    lab, weights = _checked_inputs(fn, x, lab, weights)
    if isinstance(min_weight, bool) or not isinstance(min_weight, (int, float)):
        raise bad_argument(fn, "min_weight", "must be a number", core.describe(_OPS, min_weight))
    Nlab = torch.bincount(lab).float()
    ranges = core.ranges_from_counts(_OPS, Nlab.to(torch.int64))
    if weights is not None:
        weights = weights.masked_fill(weights <= min_weight, min_weight)
    centroids, weights_c = core.centroids(_OPS, fn, x, lab, Nlab, weights, None)
    return ranges, centroids, (Nlab if weights is None else weights_c)


def sort_clusters(x, lab):
    """Sorts points by label, so that each cluster is stored contiguously.

    x is an (M, ...) tensor, or a tuple or list of them, all sorted along their first axis;
    lab holds the M integer labels. Returns (the sorted tensor(s), in the container type of
    x, and the (M,) sorted labels). Points with equal labels keep their order.
    """
    fn = "sort_clusters"
    flat = core.check_labels(_OPS, fn, lab, any_shape=True)
    arrays = list(x) if isinstance(x, (tuple, list)) else [x]
    for position, a in enumerate(arrays):
        arg = "x" if a is x else f"x[{position}]"
        if not isinstance(a, torch.Tensor) or a.ndim == 0 or a.shape[0] != flat.shape[0]:
            raise bad_argument(fn, arg, f"must be a tensor with one row per label "
                               f"({flat.shape[0]})", core.describe(_OPS, a))
    perm = _OPS.stable_argsort(flat)
    moved = [a[perm.to(a.device)] for a in arrays]
    if isinstance(x, (tuple, list)):
        moved = list(moved) if isinstance(x, list) else tuple(moved)
    else:
        moved = moved[0]
    return moved, flat[perm]


def from_matrix(ranges_i, ranges_j, keep):
    """Turns cluster ranges and a cluster-to-cluster mask into a `ranges=` 6-tuple.

    ranges_i: (M, 2) [start, end) of the clusters of i-indexed points; ranges_j: (N, 2) the
    same for j; keep: (M, N) boolean mask, True where cluster k of i must interact with
    cluster l of j. Returns (ranges_i, slices_i, redranges_j, ranges_j, slices_j,
    redranges_i): redranges_j lists, for each i cluster in turn, the ranges of the j clusters
    it keeps, and slices_i[k] is where cluster k's list ends; the last three mirror this for
    reductions over i. Slices are int64; ranges keep their dtype.
    """
    fn = "from_matrix"
    keep = core.check_block_mask(_OPS, fn, ranges_i, ranges_j, keep)
    _same_device(fn, keep, ranges_i=ranges_i, ranges_j=ranges_j)
    return core.blocks_of_mask(_OPS, ranges_i, ranges_j, keep)


def grid_mask(x, y, size, radius):
    """(x_labels, y_labels, keep) for LazyTensor.block_sparse: the pairs of grid cells whose
    centroids are closer than `radius`.

    x: (N, D) and y: (M, D) points, each cut into the cells of grid_cluster(., size);
    keep[a, b] is True when the centroid of x's cell a and that of y's cell b are closer
    than radius. A block approximation: pairs are kept by cell, not by their own distance,
    so a kept block holds pairs farther apart than radius, and a pair closer than r can be
    dropped unless radius >= r + 2 * size * sqrt(D) (with cubic cells of side `size`, each
    point is within size * sqrt(D) of its cell's centroid). Labels are int32, keep bool,
    on x's device; none of them is differentiable.
    """
    fn = "grid_mask"
    core.check_radius(fn, radius)
    dim = core.check_points(_OPS, fn, x)[1]
    if core.check_points(_OPS, fn, y, "y")[1] != dim:
        raise bad_argument(fn, "y", f"must have the D = {dim} columns of x",
                           core.describe(_OPS, y))
    _same_device(fn, x, y=y)
    core.check_voxel_size(_OPS, fn, _voxel_size(size, x), dim)
    with torch.no_grad():
        x_labels, y_labels = grid_cluster(x, size), grid_cluster(y, size)
        keep = core.centroid_mask(_OPS, cluster_centroids(x, x_labels),
                                  cluster_centroids(y, y_labels), radius)
    return x_labels, y_labels, keep


def swap_axes(ranges):
    """The `ranges=` 6-tuple of the reduction over the other axis (None stays None)."""
    return core.swapped_ranges("swap_axes", ranges)


__all__ = sorted(["grid_cluster", "cluster_ranges", "cluster_centroids",
                  "cluster_ranges_centroids", "sort_clusters", "from_matrix", "swap_axes"])
