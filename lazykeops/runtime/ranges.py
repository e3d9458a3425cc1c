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
per block. Checks and layout run in torch on the arrays' own device (numpy arrays are
viewed as CPU tensors), so that GPU ranges are never copied to the host: one small
synchronisation per half brings back whether every check passed and the layout's sizes;
only a failed check fetches values, for its message. torch tensors are checked once per
(tensor, version): a later call on the same, unmodified ranges reuses the layout, as
GeomLoss's Sinkhorn loops do.
"""

import weakref

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
    """The six arrays of one `ranges=`, as int64 tensors on the data's device, and their
    layouts per call shape."""

    def __init__(self, ranges, backend, device, what):
        torch = _torch()
        self.backend, self.device, self.what = backend, device, what
        arrays = []
        for name, r in zip(NAMES, ranges):
            if not backend.is_array(r):
                raise _error(what, name, f"must be a {backend.name} integer array",
                             type(r).__name__)
            if backend.device(r) != device:
                raise _error(what, name, f"must be on the data's device {device}",
                             f"an array on {backend.device(r)}")
            dtype = backend.dtype_name(r)
            if not dtype.startswith(("int", "uint")):
                raise _error(what, name, "must be an integer array (int32 or int64, as in "
                             "pykeops)", f"dtype {dtype}")
            # numpy: int64 first, as torch reads few unsigned dtypes, and C order, as it
            # reads no negative strides.
            t = r.detach() if isinstance(r, torch.Tensor) else torch.from_numpy(
                r.astype("int64", order="C", copy=False))
            arrays.append(t.to(torch.int64))
        self.arrays = tuple(arrays)
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
        arrays = _batched(self.what, names, self.arrays[half], batch)
        letters = ("N", "M") if axis == 1 else ("M", "N")
        return RangeLayout(self.backend, self.what, names, arrays, (nout, nred), letters)


class RangeLayout:
    """One call's range sets, checked, as the engines read them (the module docstring's
    layout). `pairs`: the (row, term) pairs kept; `max_cluster_terms`: the most terms a
    cluster reduces over."""

    def __init__(self, backend, what, names, arrays, sizes, letters):
        torch = _torch()
        rows, slices, intervals = arrays
        nsets, nclusters, nintervals = rows.shape[0], rows.shape[1], intervals.shape[1]
        nout, nred = sizes
        (row_begin, row_end), (begin, end) = rows.unbind(-1), intervals.unbind(-1)
        bad = {  # each check's failures, in the order they are reported
            "row bounds": (row_begin < 0) | (row_end < row_begin) | (row_end > nout),
            "row order": rows[:, 1:, 0] < rows[:, :-1, 1],
            "slice order": torch.cat([slices[:, :1] < 0, slices[:, 1:] < slices[:, :-1]], 1),
            "slice end": slices[:, -1:] != nintervals,
            "interval bounds": (begin < 0) | (end < begin) | (end > nred),
        }
        # Interval r belongs to cluster k when slices[k - 1] <= r < slices[k]; with no
        # cluster, no interval is read.
        index = torch.arange(nintervals, device=rows.device).expand(nsets, nintervals)
        cluster = torch.searchsorted(slices, index.contiguous(), right=True)
        nonempty = (end > begin) & (cluster < nclusters)
        # The end of the cluster's previous nonempty interval (-1: none). Checking each
        # nonempty interval against the previous one is enough: if each starts at or after
        # the previous one's end, all are sorted and disjoint. (Positions come from ranks
        # of nonempty intervals by searchsorted: torch.cummax, the obvious running maximum,
        # took 2.6 ms per call on the H200 for one GeomLoss layout.)
        seen = nonempty.to(torch.int64).cumsum(1)
        prev = _last_nonempty(seen, seen - nonempty.to(torch.int64))
        previous_end = torch.where((prev >= 0) & (cluster.gather(1, prev.clamp(min=0)) ==
                                                  cluster), end.gather(1, prev.clamp(min=0)), -1)
        # Within a cluster, nonempty intervals sorted and disjoint (ties keep the smallest
        # j, and an overlap would count its terms twice).
        bad["interval order"] = nonempty & (begin < previous_end)
        # Touching intervals join: from_matrix gives one interval per kept cluster pair and
        # neighbouring grid cells are often consecutive (a GeomLoss multiscale layout at 2e4
        # points has ~440 intervals of ~9 terms per cluster, ~150 once joined, each a tile
        # of its own, and on the GPU two barriers).
        starts = nonempty & (begin != previous_end)
        per_cluster = torch.zeros(nsets, nclusters + 1, dtype=torch.int64, device=rows.device)
        terms = per_cluster.scatter_add(1, cluster, torch.where(nonempty, end - begin, 0))
        joined = per_cluster.scatter_add(1, cluster, starts.to(torch.int64))[:, :nclusters]
        terms = terms[:, :nclusters]
        zero = torch.zeros((), dtype=torch.int64, device=rows.device)
        stats = torch.stack([*(b.any() for b in bad.values()),
                             joined.sum(1).max() if nsets else zero,
                             (terms * (row_end - row_begin)).sum(),
                             terms.max() if terms.numel() else zero]).tolist()
        failed = [name for name, flag in zip(bad, stats) if flag]
        if failed:
            raise _explained(what, names, failed[0], bad[failed[0]], arrays, cluster, nonempty,
                             sizes, letters)
        width, self.pairs, self.max_cluster_terms = stats[len(bad):]
        column = lambda value: torch.full((nsets, 1), value, dtype=torch.int64,
                                          device=rows.device)
        starts_at = torch.cat([column(0), joined.cumsum(1)], 1)
        bounds = torch.cat([column(0), rows.reshape(nsets, 2 * nclusters), column(nout)], 1)
        self.arrays = [_host_or_device(backend, a.contiguous()) for a in (
            bounds, starts_at.repeat_interleave(2, 1),
            _joined_intervals(starts, begin, end, seen, width))]
        self.backend, self.bounds, self.nout = backend, bounds, nout
        self.nsets, self.nclusters = nsets, 2 * nclusters + 1
        self.nintervals = max(width, 1)
        self._blocks = {}

    def fill(self, a):
        """The block-sparse fields of an LkLaunch (runtime/abi.py)."""
        B = self.backend
        a.row_bounds, a.interval_offsets, a.intervals = (B.data_ptr(x) for x in self.arrays)
        a.nclusters, a.nintervals, a.range_sets = self.nclusters, self.nintervals, self.nsets
        a.max_cluster_terms = self.max_cluster_terms

    def fill_cuda(self, a, block_rows):
        """Also the thread blocks of a CUDA kernel of `block_rows` rows per block: each
        cluster's, cumulative, and a grid for the set with the most, bounded without a
        synchronisation (blocks past a set's last do nothing): the ceilings add at most
        block_rows - 1 rows per cluster."""
        blocks = self._blocks.get(block_rows)
        if blocks is None:
            sizes = self.bounds[:, 1:] - self.bounds[:, :-1]
            ends = ((sizes + block_rows - 1) // block_rows).cumsum(1).contiguous()
            grid = (self.nout + self.nclusters * (block_rows - 1)) // block_rows
            blocks = self._blocks[block_rows] = (ends, grid)
        a.block_ends, a.range_blocks = self.backend.data_ptr(blocks[0]), blocks[1]


def _torch():
    import torch  # here, not at import: numpy users pay for torch only with ranges

    return torch


def _host_or_device(backend, t):
    """A layout tensor as the backend's array (numpy's shares the CPU tensor's memory)."""
    return t.numpy() if backend.name == "numpy" else t


def _last_nonempty(seen, ranks):
    """Where the nonempty interval of each rank in `ranks` lies (-1 for rank 0), `seen`
    being the running count of nonempty intervals: the first position it reaches it."""
    torch = _torch()
    return torch.where(ranks > 0, torch.searchsorted(seen, ranks.contiguous()), -1)


def _joined_intervals(starts, begin, end, seen, width):
    """(sets, width, 2): each set's joined intervals, those that start at `starts` and run
    to the end of the last nonempty interval before the next start (`seen`: the running
    count of nonempty intervals), padded with [0, 0)."""
    torch = _torch()
    nsets, nintervals = begin.shape
    if not width:
        return torch.zeros(nsets, 1, 2, dtype=torch.int64, device=begin.device)
    opened = starts.to(torch.int64).cumsum(1)
    rank = torch.arange(1, width + 2, device=begin.device).expand(nsets, width + 1)
    at = torch.searchsorted(opened, rank.contiguous())  # where joined interval g starts
    first, following = at[:, :width].clamp(max=nintervals - 1), at[:, 1:]
    last = _last_nonempty(seen, seen.gather(1, (following - 1).clamp(min=0))).clamp(min=0)
    joined = torch.stack([begin.gather(1, first), end.gather(1, last)], -1)
    real = (rank[:, :width] <= opened[:, -1:]).unsqueeze(-1)  # sets with fewer: padding
    return torch.where(real, joined, 0)


def _error(what, name, expected, got):
    return LazyKeOpsError(f"{name} (in ranges=) for {what} {expected}; got {got}")


def _batched(what, names, arrays, batch):
    """The three tensors of one half as (sets, K, 2), (sets, K), (sets, R, 2)."""
    torch = _torch()
    inner = (2, 1, 2)
    for name, a, n in zip(names, arrays, inner):
        if a.ndim < n or (n == 2 and a.shape[-1] != 2):
            expected = "(..., K, 2)" if name.startswith("ranges") else \
                "(..., K)" if name.startswith("slices") else "(..., R, 2)"
            raise _error(what, name, f"must have shape {expected}", f"shape {tuple(a.shape)}")
    own = [tuple(a.shape[:a.ndim - n]) for a, n in zip(arrays, inner)]
    if arrays[0].shape[-2] != arrays[1].shape[-1]:
        raise _error(what, names[1], f"must have one entry per cluster of {names[0]} "
                     f"({arrays[0].shape[-2]})", f"shape {tuple(arrays[1].shape)}")
    if len(set(own)) > 1:
        shown = ", ".join(f"{n}: {s}" for n, s in zip(names, own))
        raise _error(what, names[0], "and the other arrays of its half must share their batch "
                     "dims", shown)
    own = own[0]
    if not own or all(s == 1 for s in own):
        return tuple(a.reshape(1, *a.shape[a.ndim - n:]) for a, n in zip(arrays, inner))
    try:
        full = tuple(torch.broadcast_shapes(own, batch))
    except RuntimeError:
        full = None
    if full != tuple(batch):
        raise _error(what, names[0], f"must have batch dims that broadcast to the call's "
                     f"{tuple(batch)} (or none)", f"batch dims {own}")
    return tuple(a.expand(*batch, *a.shape[a.ndim - n:]).reshape(-1, *a.shape[a.ndim - n:])
                 for a, n in zip(arrays, inner))


def _explained(what, names, check, bad, arrays, cluster, nonempty, sizes, letters):
    """The error of the first failure of `check` (RangeLayout's names), read from the host."""
    rname, sname, iname = names
    rows, slices, intervals = (a.cpu() for a in arrays)
    s, k = (int(v) for v in bad.nonzero()[0].cpu())
    where = f" (batch element {s})" if rows.shape[0] > 1 else ""
    if check in ("row bounds", "interval bounds"):
        name, n, letter = (rname, sizes[0], letters[0]) if check == "row bounds" else \
            (iname, sizes[1], letters[1])
        pair = (rows if check == "row bounds" else intervals)[s, k].tolist()
        return _error(what, name, f"must hold intervals [start, end) with 0 <= start <= end "
                      f"<= {letter} = {n}{where}", f"row {k} = {pair}")
    if check == "row order":
        return _error(what, rname, f"must list disjoint clusters in increasing order{where}",
                      f"cluster {k} {rows[s, k].tolist()} then {k + 1} "
                      f"{rows[s, k + 1].tolist()}")
    if check == "slice order":
        return _error(what, sname, f"must be nondecreasing from 0{where}",
                      f"slices[{k}] = {int(slices[s, k])}")
    if check == "slice end":
        return _error(what, sname, f"must end at the number of intervals of {iname} "
                      f"({intervals.shape[1]}){where}", f"a last entry {int(slices[s, -1])}")
    c = int(cluster[s, k])
    same = (nonempty[s, :k] & (cluster[s, :k] == c)).nonzero()
    p = int(same[-1, 0]) if same.numel() else k
    return _error(what, iname, f"must list each cluster's intervals disjoint and in "
                  f"increasing order{where}", f"intervals {p} {intervals[s, p].tolist()} "
                  f"and {k} {intervals[s, k].tolist()} of cluster {c}")
