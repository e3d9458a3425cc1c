"""Shared by the block-sparse tests (tests/runtime/test_ranges_*.py, tests/gpu): block
structures, pykeops's six ranges arrays built from them by plain loops (not by
lazykeops's cluster utilities, which are tested against these), the dense mask they
stand for, and dense masked references of every reduction in float64.

A block structure: row clusters (start, end) of i, column clusters of j, and keep[a][b]
saying whether row cluster a meets column cluster b. Rows and columns outside every
cluster meet nothing.
"""

import torch

from lazykeops.formula.reductions import lookup
from tests.engine.test_reductions import CASES, _ids  # noqa: F401  (re-exported)

INF = float("inf")


def structure(n, m, seed=0, largest=None):
    """A structure with everything the engines must get right: a one-row cluster, a
    cluster meeting nothing, rows and columns in no cluster (gaps, at both ends), columns
    at the array ends, clusters of many rows (several row blocks of the CPU engine),
    clusters meeting several non-adjacent column clusters. Cluster sizes go up to
    `largest` (n / 4 by default)."""
    g = torch.Generator().manual_seed(seed)
    rows = _cut(n, g, first=1, largest=largest)
    cols = _cut(m, g, first=0, largest=largest)
    keep = (torch.rand(len(rows), len(cols), generator=g) < 0.45).tolist()
    keep[0] = [False] * len(cols)       # a cluster that meets nothing
    keep[1][0] = keep[1][-1] = True     # columns 0 and m-1: the ends of the arrays
    keep[-1][len(cols) // 2] = True
    return rows, cols, keep


def _cut(n, g, first, largest=None):
    """Clusters of [first, n - 1) (gaps around), sizes 1 .. largest, a gap now and then."""
    clusters, start = [], first
    largest = largest or max(2, n // 4)
    sizes = [1] + torch.randint(1, largest + 1, (n,), generator=g).tolist()
    for size in sizes:
        end = min(start + size, n - 1)
        if end <= start:
            break
        clusters.append((start, end))
        start = end + (1 if len(clusters) % 3 == 0 else 0)  # a gap every third cluster
    return clusters


def full_structure(n, m):
    """One cluster of every row meeting one cluster of every column."""
    return [(0, n)], [(0, m)], [[True]]


def half(clusters, others, keep, dtype):
    """(ranges, slices, redranges) of `clusters`, each reducing over the `others` it meets."""
    redranges, slices = [], []
    for a in range(len(clusters)):
        redranges += [others[b] for b in range(len(others)) if keep[a][b]]
        slices.append(len(redranges))
    return (torch.tensor(clusters, dtype=dtype).reshape(-1, 2),
            torch.tensor(slices, dtype=dtype),
            torch.tensor(redranges, dtype=dtype).reshape(-1, 2))


def six(struct, dtype=torch.int64):
    """pykeops's (ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i)."""
    rows, cols, keep = struct
    transposed = [[keep[a][b] for a in range(len(rows))] for b in range(len(cols))]
    return (*half(rows, cols, keep, dtype), *half(cols, rows, transposed, dtype))


def stacked(structs, n, m):
    """One set of ranges per batch element, as runtime/ranges.py lays them out: every
    element padded to the most clusters and intervals, with empty clusters [N, N) (or
    [M, M)) at the end, their slices repeating the last value, and empty intervals
    [0, 0) at the end, counted in the last cluster's slice."""
    halves = [six(s) for s in structs]
    arrays = []
    for p in range(6):
        size = max(h[p].shape[0] for h in halves)
        parts = []
        for h in halves:
            a, pad = h[p], size - h[p].shape[0]
            if pad and p in (0, 3):    # clusters
                a = torch.cat([a, torch.full((pad, 2), n if p == 0 else m)])
            elif pad and p in (1, 4):  # slices
                a = torch.cat([a, a[-1:].expand(pad)])
            elif pad:                  # intervals
                a = torch.cat([a, torch.zeros(pad, 2, dtype=a.dtype)])
            parts.append(a)
        arrays.append(torch.stack(parts))
    for s, r in ((1, 2), (4, 5)):  # the slices end at the padded number of intervals
        arrays[s][:, -1] = arrays[r].shape[1]
    return tuple(arrays)


def mask_of(struct, n, m):
    """The (n, m) boolean matrix of the pairs the structure keeps."""
    rows, cols, keep = struct
    mask = torch.zeros(n, m, dtype=torch.bool)
    for a, (r0, r1) in enumerate(rows):
        for b, (c0, c1) in enumerate(cols):
            if keep[a][b]:
                mask[r0:r1, c0:c1] = True
    return mask


# What a pair outside the mask becomes in the dense reference, per reduction: nothing to
# a sum, -inf to a log-sum-exp, a value no selection picks.
def _sentinel(red):
    if red == "Sum":
        return 0.0
    if red.startswith(("Max", "ArgMax")) or red in ("LogSumExp", "SumSoftMaxWeight"):
        return -INF
    return INF


def masked_reference(red, F, W, k, mask):
    """lookup(red).reference on F (N, M, D) with the pairs outside `mask` (N, M) turned
    into the sentinel; selections of a sentinel report index -1, as the engines do."""
    F = F.masked_fill(~mask[..., None], _sentinel(red))
    outs = list(lookup(red).reference(F, W, k))
    values = outs[0]
    if outs[1] is not None and values is None:  # indices only: find the selected values
        values = torch.gather(F, 1, outs[1].reshape(F.shape[0], -1, F.shape[2])).reshape(
            outs[1].shape)
    if outs[1] is not None:
        outs[1] = outs[1].masked_fill(values.reshape(outs[1].shape).isinf(), -1)
    return [r for r in outs if r is not None]


def case_inputs(n, m, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, generator=g, dtype=dtype), torch.randn(m, 3, generator=g, dtype=dtype),
            torch.rand(m, 2, generator=g, dtype=dtype) + 0.5, torch.tensor([0.7], dtype=dtype))


def expected(case, axis, inputs, mask):
    """The dense masked reference outputs of a CASES entry over `axis`."""
    red, _, _, k, dense_f, dense_w = case
    x, y, b, g = inputs
    F = dense_f(x[:, None], y[None], b[None], g)
    W = dense_w(x[:, None], y[None], b[None], g).expand(*F.shape[:2], -1) if dense_w else None
    if axis == 0:
        F, W, mask = F.transpose(0, 1), (W.transpose(0, 1) if W is not None else None), mask.T
    return masked_reference(red, F, W, k, mask)


def assert_outputs(got, want, rtol=1e-12, atol=1e-12):
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = g.cpu(), w.reshape(g.shape)
        if w.dtype == torch.int64:
            assert g.dtype == torch.int64
            assert torch.equal(g, w), (g, w)
        else:
            torch.testing.assert_close(g.to(w.dtype), w, rtol=rtol, atol=atol, equal_nan=True)
