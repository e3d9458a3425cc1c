"""Block-sparse clustering helpers for numpy arrays, under pykeops.numpy.cluster's names and
signatures: grid_cluster, cluster_ranges, cluster_centroids, cluster_ranges_centroids,
sort_clusters, from_matrix, swap_axes.

They compute labels, [start, end) ranges, centroids and block masks for the block-sparse
reductions (`ranges=`, docs/block_sparse.md). grid_mask, lazykeops's own (outside
`__all__`, which lists pykeops's names), gives the arguments of LazyTensor.block_sparse for
a truncated kernel on a grid. This module imports numpy only (no torch). Labels and ranges
are numpy's default integers, from_matrix's outputs int64 and cluster weights float64, as in
pykeops. The algorithms and argument checks live in lazykeops.routines.cluster; this module
supplies its numpy namespace.
Deliberate differences from pykeops:

- grid_cluster labels cells by their exact coordinates (pykeops's hash gives points 1024 or
  more cells apart along an axis the same label) and accepts any dimension D >= 1;
- sort_clusters sorts stably, so a cluster's points keep their order (numpy's default sort
  is not stable, so pykeops's order within a cluster may vary between machines).
"""

import numpy as np

from ..routines import cluster as core
from ..routines.cluster import bad_argument


class _NumpyOps:
    """The array namespace of routines/cluster.py, for numpy arrays."""

    @staticmethod
    def divide_rows(a, d, like):
        with np.errstate(invalid="ignore", divide="ignore"):  # empty clusters: NaN
            return (a / d.reshape(-1, 1)).astype(like.dtype)

    is_array = staticmethod(lambda a: isinstance(a, (np.ndarray, np.generic)))
    kind = staticmethod(lambda a: a.dtype.kind)
    floor = staticmethod(np.floor)
    to_float64 = staticmethod(lambda a: np.asarray(a, dtype=np.float64))
    to_int64 = staticmethod(lambda a: np.asarray(a).astype(np.int64))
    to_bool = staticmethod(lambda a: np.asarray(a).astype(bool))
    amin0 = staticmethod(lambda a: a.min(0))
    amax0 = staticmethod(lambda a: a.max(0))
    arange = staticmethod(lambda n, like: np.arange(n, dtype=np.int64))
    zeros_int64 = staticmethod(lambda n, like: np.zeros(n, dtype=np.int64))
    int64_like = staticmethod(lambda values, like: np.array(values, dtype=np.int64))
    nonzero_cols = staticmethod(lambda mask: np.nonzero(mask)[1])
    stack_cols = staticmethod(lambda a, b: np.stack((a, b), axis=1))
    count = staticmethod(lambda idx, n: np.bincount(idx, minlength=n))
    # np.bincount sums in float64 whatever the weights' dtype, as pykeops's numpy code does.
    segment_sum = staticmethod(lambda idx, values, n: np.bincount(idx, weights=values,
                                                                  minlength=n))

    @staticmethod
    def stable_argsort(labels):
        # numpy's stable sort is a radix sort on 16-bit integers, a merge sort otherwise.
        if labels.shape[0] and 0 <= labels.min() and labels.max() < 2 ** 16:
            labels = labels.astype(np.uint16)
        return np.argsort(labels, kind="stable")

    @staticmethod
    def unique_inverse(a):
        values, inverse = np.unique(a, return_inverse=True)
        return inverse.reshape(-1).astype(np.int64), values.shape[0]


_OPS = _NumpyOps()


def grid_cluster(x, size):
    """Labels of the cubic cells ("voxels") of side `size` that the points fall in.

    x is an (M, D) array of points; size a positive number or a (D,) array of cell sides.
    The grid is anchored at the origin: cell (k_1, ..., k_D) holds the points with
    k_d <= x_d / size_d < k_d + 1. Returns an (M,) integer array: points share a label
    exactly when they share a cell; labels run over 0..C-1 for the C occupied cells, in
    lexicographic order of the cells' coordinates.
    """
    fn = "grid_cluster"
    core.check_points(_OPS, fn, x)
    if isinstance(size, (list, tuple)):
        size = np.asarray(size)
    core.check_voxel_size(_OPS, fn, size, x.shape[1])
    if x.shape[0] == 0:
        return np.zeros(0, dtype=int)
    cells = np.floor(x / size)
    return core.cell_labels(_OPS, fn, cells).astype(int)


def cluster_ranges(lab, Nlab=None):
    """[start, end) indices of each cluster in a point cloud sorted by label.

    lab is an (M,) integer array of labels in 0..C-1, Nlab (optional) the (C,) number of
    points per label, which replaces lab when given. Returns a (C, 2) integer array whose
    row k is the slice of cluster k once the points are sorted with sort_clusters.
    """
    fn = "cluster_ranges"
    if Nlab is None:
        counts = np.bincount(core.check_labels(_OPS, fn, lab).astype(np.int64))
    else:
        counts = core.check_counts(_OPS, fn, Nlab)
    return core.ranges_from_counts(_OPS, counts).astype(int)


def _checked_inputs(fn, x, lab, weights):
    """Checks shared by the centroid functions: returns (lab as int64, weights as (M,))."""
    n_points = core.check_points(_OPS, fn, x)[0]
    lab = core.check_labels(_OPS, fn, lab, n_points).astype(np.int64)
    if weights is not None:
        weights = core.check_per_item(_OPS, fn, "weights", weights, n_points, "point weights")
    return lab, weights


def cluster_centroids(x, lab, Nlab=None, weights=None, weights_c=None):
    """(Weighted) barycentres of the clusters given by integer labels.

    x: (M, D) points; lab: (M,) labels in 0..C-1; Nlab: the (C,) number of points per label
    (counted from lab if None); weights: (M,) point weights (1 if None); weights_c: the (C,)
    total weight per label (summed from weights if None; unused without weights).
    Returns the (C, D) centroids, in x's dtype (sums taken in float64); an empty cluster's
    centroid is NaN.
    """
    fn = "cluster_centroids"
    lab, weights = _checked_inputs(fn, x, lab, weights)
    if Nlab is None:
        Nlab = np.bincount(lab).astype(float)
    else:
        core.check_counts(_OPS, fn, Nlab)
        core.check_cluster_count(_OPS, fn, lab, Nlab.shape[0])
    return core.centroids(_OPS, fn, x, lab, Nlab, weights, weights_c)[0]


def cluster_ranges_centroids(x, lab, weights=None):
    """Ranges, centroids and total weights of the clusters of a labelled point cloud.

    x: (M, D) points; lab: (M,) labels in 0..C-1; weights: (M,) point weights (1 for every
    point if None). Returns the (C, 2) integer ranges (as cluster_ranges), the (C, D)
    centroids (as cluster_centroids) and the (C,) float64 total weight of each cluster
    (the point counts when weights is None).
    """
    fn = "cluster_ranges_centroids"
    lab, weights = _checked_inputs(fn, x, lab, weights)
    Nlab = np.bincount(lab).astype(float)
    ranges = core.ranges_from_counts(_OPS, Nlab.astype(np.int64)).astype(int)
    centroids, weights_c = core.centroids(_OPS, fn, x, lab, Nlab, weights, None)
    return ranges, centroids, (Nlab if weights is None else weights_c)


def sort_clusters(x, lab):
    """Sorts points by label, so that each cluster is stored contiguously.

    x is an (M, ...) array, or a tuple or list of them, all sorted along their first axis;
    lab holds the M integer labels. Returns (the sorted array(s), in the container type of
    x, and the sorted labels, in lab's shape). Points with equal labels keep their order.
    """
    fn = "sort_clusters"
    flat = core.check_labels(_OPS, fn, lab, any_shape=True)
    arrays = list(x) if isinstance(x, (tuple, list)) else [x]
    for position, a in enumerate(arrays):
        arg = "x" if a is x else f"x[{position}]"
        if not isinstance(a, np.ndarray) or a.ndim == 0 or a.shape[0] != flat.shape[0]:
            raise bad_argument(fn, arg, f"must be an array with one row per label "
                               f"({flat.shape[0]})", core.describe(_OPS, a))
    perm = _OPS.stable_argsort(flat)
    moved = [a[perm] for a in arrays]
    if isinstance(x, (tuple, list)):
        moved = list(moved) if isinstance(x, list) else tuple(moved)
    else:
        moved = moved[0]
    return moved, flat[perm].reshape(np.shape(lab))


def from_matrix(ranges_i, ranges_j, keep):
    """Turns cluster ranges and a cluster-to-cluster mask into a `ranges=` 6-tuple.

    ranges_i: (M, 2) [start, end) of the clusters of i-indexed points; ranges_j: (N, 2) the
    same for j; keep: (M, N) boolean mask, True where cluster k of i must interact with
    cluster l of j. Returns (ranges_i, slices_i, redranges_j, ranges_j, slices_j,
    redranges_i), all int64: redranges_j lists, for each i cluster in turn, the ranges of
    the j clusters it keeps, and slices_i[k] is where cluster k's list ends; the last three
    mirror this for reductions over i.
    """
    keep = core.check_block_mask(_OPS, "from_matrix", ranges_i, ranges_j, keep)
    return tuple(a.astype(np.int64) for a in core.blocks_of_mask(_OPS, ranges_i, ranges_j,
                                                                 keep))


def grid_mask(x, y, size, radius):
    """(x_labels, y_labels, keep) for LazyTensor.block_sparse: the pairs of grid cells whose
    centroids are closer than `radius`.

    x: (N, D) and y: (M, D) points, each cut into the cells of grid_cluster(., size);
    keep[a, b] is True when the centroid of x's cell a and that of y's cell b are closer
    than radius. A block approximation: pairs are kept by cell, not by their own distance,
    so a kept block holds pairs farther apart than radius, and a pair closer than r can be
    dropped unless radius >= r + 2 * size * sqrt(D) (with cubic cells of side `size`, each
    point is within size * sqrt(D) of its cell's centroid).
    """
    fn = "grid_mask"
    core.check_radius(fn, radius)
    dim = core.check_points(_OPS, fn, x)[1]
    if core.check_points(_OPS, fn, y, "y")[1] != dim:
        raise bad_argument(fn, "y", f"must have the D = {dim} columns of x",
                           core.describe(_OPS, y))
    core.check_voxel_size(_OPS, fn, np.asarray(size) if isinstance(size, (list, tuple))
                          else size, dim)
    x_labels, y_labels = grid_cluster(x, size), grid_cluster(y, size)
    keep = core.centroid_mask(_OPS, cluster_centroids(x, x_labels),
                              cluster_centroids(y, y_labels), radius)
    return x_labels, y_labels, keep


def swap_axes(ranges):
    """The `ranges=` 6-tuple of the reduction over the other axis (None stays None)."""
    return core.swapped_ranges("swap_axes", ranges)


__all__ = sorted(["grid_cluster", "cluster_ranges", "cluster_centroids",
                  "cluster_ranges_centroids", "sort_clusters", "from_matrix", "swap_axes"])
