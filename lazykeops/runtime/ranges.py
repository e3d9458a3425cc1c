"""Block-sparse reductions: pykeops's `ranges`, checked, and laid out for the engines.

pykeops's six arrays, `(ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i)`,
int32 or int64, on the data's device. A reduction over j (axis=1) reads the first half:
row cluster k is the rows [ranges_i[k, 0], ranges_i[k, 1]) and reduces over the intervals
of j `redranges_j[slices_i[k-1]:slices_i[k]]` (slices_i[-1] read as 0), each a row
[start, end). A reduction over i (axis=0) reads the second half the same way, its clusters
of j reducing over intervals of i; a gradient takes the half of its own axis, so backward
passes use the transposed ranges with no more work from the user. Pairs outside the
ranges contribute nothing: a row in no cluster, or in a cluster with no interval, gets
the reduction's identity (0 for sums, -inf for LogSumExp, +inf / -inf with index -1 for
Min / Max and their K-variants); SumSoftMaxWeight, an average over no term, gives NaN
(as torch.softmax of a row of -inf).

Checks, before anything is compiled or launched, each naming the array at fault: six
arrays of the call's framework on its device, integer dtype, shapes (K, 2), (K,), (R, 2);
clusters within [0, N) sorted and disjoint; slices nondecreasing, ending at R; intervals
within [0, M), each cluster's sorted and disjoint (empty ones are allowed anywhere); the
two halves keeping as many pairs (a cheap test that they describe the same mask).

Batch dims (pykeops refuses them): arrays of shapes (K, 2), (K,), (R, 2) serve every
batch element; arrays (B..., K, 2), (B..., K), (B..., R, 2), whose batch dims broadcast to
the call's, give one set per batch element, with indices local to it. Elements with fewer
clusters or intervals pad with empty ones ([N, N) clusters at the end, [0, 0) intervals
counted in the last cluster's slice).

Layout for the engines (csrc/lk_ranges.h, lk_launch.h): per set, the rows partitioned into
the clusters and the gaps between them (which reduce over nothing): row bounds
(2K + 2), interval offsets (2K + 2) and the intervals (R, 2), int64, on the data's device;
on the GPU also the cumulative thread-block counts of the clusters, for the kernel's rows
per block. Checking reads the arrays on the host (one copy from the GPU); torch tensors
are checked once per (tensor, version): a later call on the same, unmodified ranges
reuses the layout, as GeomLoss's Sinkhorn loops do.
"""

import weakref

import numpy as np

from ..errors import LazyKeOpsError

NAMES = ("ranges_i", "slices_i", "redranges_j", "ranges_j", "slices_j", "redranges_i")
_CACHE_SIZE = 64
_CACHE = {}  # id() of the six tensors -> (weakrefs, versions, BlockSparse)


def block_sparse(ranges, backend, device, what):
    """pykeops's ranges -> a BlockSparse (None stays None), its arrays' types checked."""
    if ranges is None:
        return None
    if isinstance(ranges, BlockSparse):
        return ranges
    if not isinstance(ranges, (tuple, list)) or len(ranges) != 6:
        got = f"{type(ranges).__name__} of length {len(ranges)}" \
            if isinstance(ranges, (tuple, list)) else type(ranges).__name__
        raise LazyKeOpsError(f"ranges for {what} must be pykeops's 6-tuple ({', '.join(NAMES)}), "
                             f"got {got}")
    # Inference tensors have no version counter: checked again at each call.
    tensors = backend.name == "torch" and all(backend.is_array(r) and not r.is_inference()
                                              for r in ranges)
    if tensors:
        key = tuple(id(r) for r in ranges)
        hit = _CACHE.get(key)
        if hit is not None and all(ref() is r for ref, r in zip(hit[0], ranges)) and \
                hit[1] == tuple(r._version for r in ranges) and hit[2].device == device:
            return hit[2]
    result = BlockSparse(ranges, backend, device, what)
    if tensors:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = (tuple(weakref.ref(r) for r in ranges),
                       tuple(r._version for r in ranges), result)
    return result


class BlockSparse:
    """The six arrays of one `ranges=`, on the host, and their layouts per call shape."""

    def __init__(self, ranges, backend, device, what):
        self.backend, self.device, self.what = backend, device, what
        host = []
        for name, r in zip(NAMES, ranges):
            if not backend.is_array(r):
                raise _error(what, name, f"must be a {backend.name} integer array",
                             type(r).__name__)
            if backend.device(r) != device:
                raise _error(what, name, f"must be on the data's device {device}",
                             f"an array on {backend.device(r)}")
            a = backend.to_host(r)
            if a.dtype.kind not in "iu":
                raise _error(what, name, "must be an integer array (int32 or int64, as in "
                             "pykeops)", f"dtype {a.dtype}")
            host.append(a.astype(np.int64, copy=False))
        self.host = tuple(host)
        self._layouts = {}

    def layout(self, axis, nout, nred, batch):
        """The RangeLayout of a reduction over `axis` with these sizes and batch shape.
        The other half is checked too, and must keep as many pairs: the gradients read it
        (on the GPU; the CPU's fused DualSum reads this one), so two halves describing
        different masks would give different numbers on the two engines."""
        key = (axis, nout, nred, tuple(batch))
        lay = self._layouts.get(key)
        if lay is None:
            lay = self._build(axis, nout, nred, tuple(batch))
            other_key = (1 - axis, nred, nout, tuple(batch))
            other = self._layouts.get(other_key) or self._build(1 - axis, nred, nout,
                                                                tuple(batch))
            if other.pairs != lay.pairs:
                names = [", ".join(NAMES[h]) for h in (slice(0, 3), slice(3, 6))]
                counts = (lay.pairs, other.pairs) if axis == 1 else (other.pairs, lay.pairs)
                raise _error(self.what, "ranges", f"must describe one set of pairs with both "
                             f"halves ({names[0]}; {names[1]})",
                             f"{counts[0]} and {counts[1]} (row, term) pairs")
            self._layouts[key], self._layouts[other_key] = lay, other
        return lay

    def _build(self, axis, nout, nred, batch):
        half = slice(0, 3) if axis == 1 else slice(3, 6)
        names = NAMES[half]
        rows, slices, intervals = self.host[half]
        rows, slices, intervals = _batched(self.what, names, (rows, slices, intervals), batch)
        out_letter, red_letter = ("N", "M") if axis == 1 else ("M", "N")
        sets = []
        for s in range(rows.shape[0]):
            where = f" (batch element {s})" if rows.shape[0] > 1 else ""
            sets.append(_checked_set(self.what, names, rows[s], slices[s], intervals[s], nout,
                                     nred, out_letter, red_letter, where))
        return RangeLayout(self.backend, self.device, rows, sets, nout)


class RangeLayout:
    """One call's range sets as the engines read them (the module docstring's layout)."""

    def __init__(self, backend, device, rows, sets, nout):
        slices, intervals = _joined(sets, rows.shape[1])
        nsets, nclusters = rows.shape[0], rows.shape[1]
        bounds = np.concatenate([np.zeros((nsets, 1), np.int64), rows.reshape(nsets, -1),
                                 np.full((nsets, 1), nout, np.int64)], axis=1)
        starts = np.concatenate([np.zeros((nsets, 1), np.int64), slices], axis=1)
        offsets = np.repeat(starts, 2, axis=1)
        self.host_bounds = bounds
        self.nsets, self.nclusters = nsets, 2 * nclusters + 1
        self.nintervals = intervals.shape[1]
        lengths = intervals[..., 1] - intervals[..., 0]
        ends = np.concatenate([np.zeros((nsets, 1), np.int64), np.cumsum(lengths, axis=1)], axis=1)
        terms = np.take_along_axis(ends, offsets[:, 1:], 1) - \
            np.take_along_axis(ends, offsets[:, :-1], 1)  # per cluster
        self.max_cluster_terms = int(terms.max()) if terms.size else 0
        self.pairs = int((terms * np.diff(bounds, axis=1)).sum())  # (row, term) pairs kept
        self.backend, self.device = backend, device
        self.arrays = [backend.from_host(np.require(a, requirements=["C", "W"]), device)
                       for a in (bounds, offsets, intervals if intervals.size else
                                 np.zeros((nsets, 1, 2), np.int64))]
        self._blocks = {}

    def fill(self, a):
        """The block-sparse fields of an LkLaunch (runtime/abi.py)."""
        B = self.backend
        a.row_bounds, a.interval_offsets, a.intervals = (B.data_ptr(x) for x in self.arrays)
        a.nclusters, a.nintervals, a.range_sets = self.nclusters, self.nintervals, self.nsets
        a.max_cluster_terms = self.max_cluster_terms

    def fill_cuda(self, a, block_rows):
        """Also the thread blocks of a CUDA kernel of `block_rows` rows per block."""
        blocks = self._blocks.get(block_rows)
        if blocks is None:
            sizes = np.diff(self.host_bounds, axis=1)
            ends = np.cumsum((sizes + block_rows - 1) // block_rows, axis=1)
            blocks = self._blocks[block_rows] = (
                self.backend.from_host(np.require(ends, requirements=["C", "W"]), self.device),
                int(ends[:, -1].max()))
        a.block_ends, a.range_blocks = self.backend.data_ptr(blocks[0]), blocks[1]


def _joined(sets, nclusters):
    """Each set's cluster slices and intervals (_checked_set's nonempty ones) with the
    touching intervals of a cluster joined, the sets padded with empty intervals to one
    width. from_matrix gives one interval per kept cluster pair, and neighbouring grid
    cells are often consecutive: a GeomLoss multiscale layout at 2e4 points has ~440
    intervals of ~9 terms per cluster, ~150 once joined, each a tile of its own (and on
    the GPU two barriers)."""
    joined = []
    for cluster, begin, end in sets:
        first = np.ones(begin.shape[0], bool)  # the intervals that start a joined one
        np.not_equal(cluster[1:], cluster[:-1], out=first[1:])
        first[1:] |= begin[1:] != end[:-1]
        starts = np.flatnonzero(first)
        last = np.empty_like(starts)
        last[:-1], last[-1:] = starts[1:] - 1, begin.shape[0] - 1
        counts = np.bincount(cluster[starts], minlength=nclusters)
        joined.append((np.cumsum(counts), np.stack([begin[starts], end[last]], axis=1)))
    width = max(j.shape[0] for _, j in joined)
    slices = np.stack([c for c, _ in joined]).astype(np.int64)
    intervals = np.zeros((len(joined), width, 2), np.int64)
    for s, (_, j) in enumerate(joined):
        intervals[s, :j.shape[0]] = j
    return slices, intervals


def _error(what, name, expected, got):
    return LazyKeOpsError(f"{name} (in ranges=) for {what} {expected}; got {got}")


def _batched(what, names, arrays, batch):
    """The three arrays of one half as (sets, K, 2), (sets, K), (sets, R, 2)."""
    inner = (2, 1, 2)
    for name, a, n in zip(names, arrays, inner):
        if a.ndim < n or (n == 2 and a.shape[-1] != 2):
            expected = "(..., K, 2)" if name.startswith("ranges") else \
                "(..., K)" if name.startswith("slices") else "(..., R, 2)"
            raise _error(what, name, f"must have shape {expected}", f"shape {a.shape}")
    own = [a.shape[:a.ndim - n] for a, n in zip(arrays, inner)]
    if arrays[0].shape[-2] != arrays[1].shape[-1]:
        raise _error(what, names[1], f"must have one entry per cluster of {names[0]} "
                     f"({arrays[0].shape[-2]})", f"shape {arrays[1].shape}")
    if len(set(own)) > 1:
        shown = ", ".join(f"{n}: {s}" for n, s in zip(names, own))
        raise _error(what, names[0], "and the other arrays of its half must share their batch "
                     "dims", shown)
    own = own[0]
    if not own or all(s == 1 for s in own):
        return tuple(a.reshape(1, *a.shape[a.ndim - n:]) for a, n in zip(arrays, inner))
    try:
        full = np.broadcast_shapes(own, batch)
    except ValueError:
        full = None
    if full != tuple(batch):
        raise _error(what, names[0], f"must have batch dims that broadcast to the call's "
                     f"{tuple(batch)} (or none)", f"batch dims {own}")
    return tuple(np.broadcast_to(a, (*batch, *a.shape[a.ndim - n:])).reshape(
        -1, *a.shape[a.ndim - n:]) for a, n in zip(arrays, inner))


def _checked_set(what, names, rows, slices, intervals, nout, nred, out_letter, red_letter,
                 where):
    """Checks one range set; returns its nonempty intervals as (cluster, begin, end)."""
    rname, sname, iname = names
    _check_intervals(what, rname, rows[:, 0], rows[:, 1], nout, out_letter, where)
    if rows.shape[0] > 1:
        bad = np.nonzero(rows[1:, 0] < rows[:-1, 1])[0]
        if bad.size:
            k = int(bad[0])
            raise _error(what, rname, f"must list disjoint clusters in increasing order{where}",
                         f"cluster {k} {rows[k].tolist()} then {k + 1} {rows[k + 1].tolist()}")
    nint = intervals.shape[0]
    if slices.size:
        bad = np.nonzero(np.diff(slices) < 0)[0]
        if slices[0] < 0 or bad.size:
            k = 0 if slices[0] < 0 else int(bad[0]) + 1
            raise _error(what, sname, f"must be nondecreasing from 0{where}",
                         f"slices[{k}] = {int(slices[k])}")
        if slices[-1] != nint:
            raise _error(what, sname, f"must end at the number of intervals of {iname} "
                         f"({nint}){where}", f"a last entry {int(slices[-1])}")
    # One-dimensional copies of the columns: numpy computes on them several times faster
    # than on the (R, 2) array's (a GeomLoss layout has a million intervals).
    begin, end = intervals[:, 0].copy(), intervals[:, 1].copy()
    _check_intervals(what, iname, begin, end, nred, red_letter, where)
    # Within a cluster, nonempty intervals sorted and disjoint (ties keep the smallest j,
    # and an overlap would count its terms twice).
    if not slices.size:  # no clusters: no interval is read
        begin = end = begin[:0]
    cluster = np.repeat(np.arange(slices.shape[0]), np.diff(slices, prepend=0))
    nonempty = end > begin
    if not nonempty.all():
        index = np.flatnonzero(nonempty)
        cluster, begin, end = cluster[index], begin[index], end[index]
    else:
        index = None
    bad = np.flatnonzero((cluster[1:] == cluster[:-1]) & (begin[1:] < end[:-1]))
    if bad.size:
        k = int(bad[0])
        p, q = (k, k + 1) if index is None else (int(index[k]), int(index[k + 1]))
        raise _error(what, iname, f"must list each cluster's intervals disjoint and in "
                     f"increasing order{where}", f"intervals {p} {intervals[p].tolist()} "
                     f"and {q} {intervals[q].tolist()} of cluster {int(cluster[k])}")
    return cluster, begin, end


def _check_intervals(what, name, begin, end, n, letter, where):
    bad = np.flatnonzero((begin < 0) | (end < begin) | (end > n))
    if bad.size:
        k = int(bad[0])
        raise _error(what, name, f"must hold intervals [start, end) with 0 <= start <= end <= "
                     f"{letter} = {n}{where}", f"row {k} = {[int(begin[k]), int(end[k])]}")
