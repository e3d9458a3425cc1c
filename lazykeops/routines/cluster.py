"""The framework-free half of the block-sparse clustering helpers (`lazykeops.torch.cluster`,
`lazykeops.numpy.cluster`): argument checks and the vectorised algorithms behind
grid_cluster, cluster_ranges, cluster_centroids, sort_clusters and from_matrix, and
lazykeops's grid_mask (the three arguments of LazyTensor.block_sparse for a grid).

Everything here is written against a tiny array namespace `ops`, an object with these
methods (both front ends define one; plain array syntax such as indexing, arithmetic,
comparisons, `.reshape`, `.sum(axis)`, `.cumsum(0)`, `.any()`, `.tolist()` is shared):

    is_array(a)               is `a` an array of this framework
    kind(a)                   'b' bool, 'i' signed int, 'u' unsigned int, 'f' float, 'c' complex
    floor(a), to_float64(a), to_int64(a), to_bool(a)
    amin0(a), amax0(a)        minimum / maximum over axis 0
    arange(n, like)           int64 0..n-1 on `like`'s device
    zeros_int64(n, like), int64_like(list of ints, like)
    unique_inverse(a)         (labels of a 1-D array's distinct values in sorted order, count)
    count(idx, n)             occurrences of each index in [0, n)
    segment_sum(idx, values, n)  sums of `values` per index in [0, n), pykeops's dtype rules
    stable_argsort(a)
    nonzero_cols(mask)        column index of each True entry of a 2-D mask, row-major order
    stack_cols(a, b)          (n, 2) array of two 1-D arrays
    divide_rows(a, d, like)   a / d[:, None] in `like`'s dtype (0 / 0 is NaN, silently)

Cells of grid_cluster are told apart by their exact integer coordinates, not by pykeops's
10-bits-per-axis hash: see `cell_labels`.
"""

import math

from ..errors import LazyKeOpsError

# Integers below 2**53 are exact in float64, so cell offsets under this bound convert safely.
_EXACT_FLOAT_INTEGERS = 2.0 ** 53
# Up to this many possible cells per point, cells are ranked with a table, not a sort.
_DENSE_KEYS_PER_POINT = 4


def bad_argument(fn, arg, expected, got):
    """The standard message: which function, which argument, what was expected, what came."""
    return LazyKeOpsError(f"{fn}(): argument '{arg}' {expected}; got {got}")


def describe(ops, a):
    if ops.is_array(a):
        return f"an array of dtype {a.dtype} and shape {tuple(a.shape)}"
    return f"{type(a).__name__} {a!r}" if isinstance(a, (int, float)) else type(a).__name__


def require_array(ops, fn, arg, a, kinds, what):
    if not ops.is_array(a) or ops.kind(a) not in kinds:
        raise bad_argument(fn, arg, f"must be {what}", describe(ops, a))


def check_points(ops, fn, x, arg="x"):
    """x must be a real (M, D) array; returns (M, D)."""
    require_array(ops, fn, arg, x, "iuf", "a real-valued (M, D) array of points")
    if x.ndim != 2:
        raise bad_argument(fn, arg, "must be a 2-D array of shape (M, D)", describe(ops, x))
    return tuple(x.shape)


def check_labels(ops, fn, lab, length=None, arg="lab", any_shape=False):
    """Integer labels, all >= 0, 1-D (or any shape when `any_shape`), with `length` entries
    when given. Returns them flattened."""
    require_array(ops, fn, arg, lab, "iu", "an array of integer labels")
    if lab.ndim != 1 and not any_shape:
        raise bad_argument(fn, arg, "must be a 1-D array of labels", describe(ops, lab))
    flat = lab.reshape(-1)
    if length is not None and flat.shape[0] != length:
        raise bad_argument(fn, arg, f"must hold one label per point ({length})",
                           describe(ops, lab))
    if ops.kind(lab) == "i" and flat.shape[0] and bool((flat < 0).any()):
        raise bad_argument(fn, arg, "must hold labels >= 0", f"a minimum of {int(flat.min())}")
    return flat


def check_counts(ops, fn, counts, arg="Nlab"):
    """A 1-D array of non-negative whole numbers (of any real dtype), as int64."""
    require_array(ops, fn, arg, counts, "iuf", "a 1-D array of counts")
    if counts.ndim != 1:
        raise bad_argument(fn, arg, "must be a 1-D array of counts", describe(ops, counts))
    if ops.kind(counts) == "f" and bool((ops.floor(counts) != counts).any()):
        raise bad_argument(fn, arg, "must hold whole numbers of points", "a fractional count")
    if counts.shape[0] and bool((counts < 0).any()):
        raise bad_argument(fn, arg, "must hold counts >= 0", "a negative count")
    return ops.to_int64(counts)


def check_per_item(ops, fn, arg, a, n, what):
    """Weights given as (n,) or (n, 1): returned as (n,)."""
    require_array(ops, fn, arg, a, "iuf", f"a real-valued array of {what}")
    if tuple(a.shape) not in ((n,), (n, 1)):
        raise bad_argument(fn, arg, f"must have shape ({n},) or ({n}, 1), one per {what[:-1]}",
                           describe(ops, a))
    return a.reshape(-1)


def check_cluster_count(ops, fn, lab, n_clusters):
    """Labels must index into the `n_clusters` given by Nlab."""
    if lab.shape[0] and int(lab.max()) >= n_clusters:
        raise bad_argument(fn, "Nlab", f"must have an entry for every label (the largest label "
                           f"is {int(lab.max())})", f"{n_clusters} entries")


def check_voxel_size(ops, fn, size, dim):
    """size: a positive finite number, or an array of shape (), (1,), (D,) or (1, D)."""
    if ops.is_array(size):
        require_array(ops, fn, "size", size, "iuf", "a positive number or (D,) array")
        if tuple(size.shape) not in ((), (1,), (dim,), (1, dim)):
            raise bad_argument(fn, "size", f"must be a number or have shape ({dim},)",
                               describe(ops, size))
        values = size.reshape(-1).tolist()
    elif isinstance(size, bool) or not isinstance(size, (int, float)):
        raise bad_argument(fn, "size", "must be a positive number or (D,) array",
                           describe(ops, size))
    else:
        values = [size]
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise bad_argument(fn, "size", "must be positive and finite", values)


def cell_labels(ops, fn, cells):
    """Labels 0..C-1 of the distinct rows of `cells` (integer-valued floats), in
    lexicographic order of the rows.

    pykeops hashes cells as c0 * 2**20 + c1 * 2**10 + c2, whose order is the lexicographic
    one as long as no axis but the first spans 1024 cells or more; past that it can give two
    cells the same label. Ranking the exact coordinates gives the same labels in the first
    case and distinct ones in the second."""
    if cells.shape[0] == 0:
        return ops.zeros_int64(0, cells)
    lo = ops.to_float64(ops.amin0(cells))
    lows, highs = lo.tolist(), ops.to_float64(ops.amax0(cells)).tolist()
    if not all(math.isfinite(b) for b in lows + highs):
        raise LazyKeOpsError(f"{fn}(): x / size must be finite, but x holds NaN or infinite "
                             "values (or size is so small that x / size overflows)")
    spans = [h - l + 1 for l, h in zip(lows, highs)]
    if math.prod(spans) < _EXACT_FLOAT_INTEGERS:
        return _labels_from_offsets(ops, cells, lo, spans)
    return _labels_axis_by_axis(ops, cells)


def _labels_from_offsets(ops, cells, lo, spans):
    """One mixed-radix key per cell: exact, as every key is below 2**53."""
    strides = [math.prod(spans[k + 1:]) for k in range(len(spans))]
    offsets = ops.to_int64(ops.to_float64(cells) - lo)
    key = (offsets * ops.int64_like([int(s) for s in strides], offsets)).sum(1)
    n_keys = math.prod(spans)
    if n_keys > _DENSE_KEYS_PER_POINT * key.shape[0] + 2 ** 16:
        return ops.unique_inverse(key)[0]
    # Few possible keys: a table of occupied cells replaces unique's sort.
    rank_of_key = ops.to_int64(ops.count(key, int(n_keys)) > 0).cumsum(0) - 1
    return rank_of_key[key]


def _labels_axis_by_axis(ops, cells):
    """For huge coordinate spreads: fold the axes in one at a time, re-ranking after each so
    that keys stay below (number of points)**2."""
    rank = ops.zeros_int64(cells.shape[0], cells)
    for axis in range(cells.shape[1]):
        axis_rank, n_axis = ops.unique_inverse(cells[:, axis] + 0.0)  # + 0.0: -0.0 == 0.0
        rank = ops.unique_inverse(rank * n_axis + axis_rank)[0]
    return rank


def ranges_from_counts(ops, counts):
    """[start, end) of each cluster when the clusters are stored one after the other."""
    ends = counts.cumsum(0)
    return ops.stack_cols(ends - counts, ends)


def label_sums(ops, values, lab, n_clusters):
    """(C, D) sums of the rows of `values` (M, D) per label: one segment sum over flat
    indices lab * D + d, which adds each cluster's points in their order, as pykeops's
    per-column bincount does."""
    dim = values.shape[1]
    flat = (lab.reshape(-1, 1) * dim + ops.arange(dim, lab).reshape(1, -1)).reshape(-1)
    return ops.segment_sum(flat, values.reshape(-1), n_clusters * dim).reshape(n_clusters, dim)


def centroids(ops, fn, x, lab, Nlab, weights, weights_c):
    """cluster_centroids after its checks: (centroids in x's dtype, weights_c). Empty
    clusters divide 0 by 0: NaN, as in pykeops."""
    n_clusters = Nlab.shape[0]
    if weights is None:
        sums, denominator = label_sums(ops, x, lab, n_clusters), Nlab
    else:
        if weights_c is None:
            weights_c = ops.segment_sum(lab, weights, n_clusters)
        weights_c = check_per_item(ops, fn, "weights_c", weights_c, n_clusters,
                                   "cluster weights")
        sums = label_sums(ops, x * weights.reshape(-1, 1), lab, n_clusters)
        denominator = weights_c
    return ops.divide_rows(sums, denominator, x), weights_c


def blocks_of_mask(ops, ranges_i, ranges_j, keep):
    """from_matrix's six arrays, for keep given as a bool (M, N) mask."""
    redranges_j = ranges_j[ops.nonzero_cols(keep)]
    redranges_i = ranges_i[ops.nonzero_cols(keep.T)]
    slices_i = ops.to_int64(keep.sum(1)).cumsum(0)
    slices_j = ops.to_int64(keep.sum(0)).cumsum(0)
    return ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i


def check_block_mask(ops, fn, ranges_i, ranges_j, keep):
    """ranges_* must be (n, 2) integer arrays of [start, end) pairs; keep a (M, N) mask of
    bools (or of integers 0 and 1). Returns keep as bools."""
    for arg, ranges in (("ranges_i", ranges_i), ("ranges_j", ranges_j)):
        require_array(ops, fn, arg, ranges, "iu", "an (n, 2) integer array of [start, end) pairs")
        if ranges.ndim != 2 or ranges.shape[1] != 2:
            raise bad_argument(fn, arg, "must have shape (n, 2)", describe(ops, ranges))
        if ranges.shape[0] and bool(((ranges[:, 0] < 0) | (ranges[:, 1] < ranges[:, 0])).any()):
            raise bad_argument(fn, arg, "must hold pairs with 0 <= start <= end", "a bad pair")
    require_array(ops, fn, "keep", keep, "biu", "a boolean (M, N) mask")
    expected = (ranges_i.shape[0], ranges_j.shape[0])
    if tuple(keep.shape) != expected:
        raise bad_argument(fn, "keep", f"must have shape {expected} (clusters of ranges_i, "
                           "clusters of ranges_j)", describe(ops, keep))
    if ops.kind(keep) != "b":
        flat = keep.reshape(-1)
        if flat.shape[0] and bool(((flat != 0) & (flat != 1)).any()):
            raise bad_argument(fn, "keep", "must hold only 0 and 1 when not boolean",
                               "other values")
        keep = ops.to_bool(keep)
    return keep


def check_radius(fn, radius):
    """grid_mask's radius: a positive finite number."""
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or \
            not (math.isfinite(radius) and radius > 0):
        raise bad_argument(fn, "radius", "must be a positive finite number", repr(radius))


def centroid_mask(ops, cx, cy, radius):
    """grid_mask's keep: whether centroid a of x and centroid b of y are closer than
    `radius`, as a (Cx, Cy) boolean array (built densely: clusters are few)."""
    gaps = cx.reshape(cx.shape[0], 1, -1) - cy.reshape(1, cy.shape[0], -1)
    return (gaps * gaps).sum(2) < radius * radius


def swapped_ranges(fn, ranges):
    """The six ranges arrays with the i and j halves exchanged."""
    if ranges is None:
        return None
    if not isinstance(ranges, (tuple, list)) or len(ranges) != 6:
        raise LazyKeOpsError(f"{fn}(): argument 'ranges' must be None or the 6-tuple returned "
                             f"by from_matrix; got {type(ranges).__name__}"
                             + (f" of length {len(ranges)}" if hasattr(ranges, "__len__") else ""))
    return (*ranges[3:6], *ranges[0:3])
