"""The engines' layout of block-sparse ranges (runtime/ranges.py), built in torch ops on the
arrays' device, against a plain-Python reading of pykeops's layout: random clusterings with
empty clusters, empty intervals anywhere and touching intervals (which join)."""

import random

import pytest
import torch

from lazykeops.runtime.backends import get_backend
from lazykeops.runtime.ranges import RangeLayout, block_sparse


def reference(rows, slices, intervals, nout):
    """Row bounds, interval offsets, joined intervals and pairs, one set, in plain Python."""
    bounds, offsets, joined, pairs, most = [0], [0, 0], [], 0, 0
    for k, (b, e) in enumerate(rows):
        bounds += [b, e]
        mine = [iv for iv in intervals[(slices[k - 1] if k else 0):slices[k]] if iv[1] > iv[0]]
        for iv in mine:
            if joined and len(joined) > offsets[-1] and joined[-1][1] == iv[0]:
                joined[-1][1] = iv[1]
            else:
                joined.append(list(iv))
        offsets += [len(joined)] * 2
        terms = sum(e1 - b1 for b1, e1 in mine)
        pairs, most = pairs + terms * (e - b), max(most, terms)
    return bounds + [nout], offsets, joined, pairs, most


def random_half(rng, nout, nred):
    cuts = sorted(rng.sample(range(nout + 1), min(2 * rng.randint(0, 4), nout + 1) // 2 * 2))
    rows = [cuts[i:i + 2] for i in range(0, len(cuts), 2)]
    slices, intervals = [], []
    for _ in rows:
        edges = sorted(rng.choices(range(nred + 1), k=2 * rng.randint(0, 4)))
        for i in range(0, len(edges), 2):
            if rng.random() < 0.3:
                intervals.append([edges[i], edges[i]])  # empty, anywhere
            intervals.append(edges[i:i + 2])  # edges sorted: touching ones join
        slices.append(len(intervals))
    return rows, slices, intervals


@pytest.mark.parametrize("seed", range(40))
def test_layout_matches_the_plain_reading(seed):
    rng = random.Random(seed)
    nout, nred = rng.randint(1, 12), rng.randint(1, 12)
    rows, slices, intervals = random_half(rng, nout, nred)
    as_tensor = lambda a, shape: torch.tensor(a, dtype=torch.int64).reshape(shape)
    half = (as_tensor(rows, (-1, 2)), as_tensor(slices, (-1,)), as_tensor(intervals, (-1, 2)))
    # One half alone (block_sparse would also check a transposed half against it)
    layout = RangeLayout(get_backend("torch"), "a test", ("ranges_i", "slices_i", "redranges_j"),
                         tuple(a.unsqueeze(0) for a in half), (nout, nred), ("N", "M"))
    bounds, offsets, joined, pairs, most = reference(rows, slices, intervals, nout)
    got_bounds, got_offsets, got_intervals = (a[0].tolist() for a in layout.arrays)
    assert got_bounds == bounds and got_offsets == offsets
    assert got_intervals[:len(joined)] == joined
    assert layout.nintervals == max(len(joined), 1)
    assert layout.pairs == pairs and layout.max_cluster_terms == most


def test_sets_of_a_batch_pad_to_the_widest():
    rng = random.Random(7)
    halves = [random_half(rng, 9, 9) for _ in range(2)]
    while len(halves[0][0]) != len(halves[1][0]) or not halves[0][0]:
        halves = [random_half(rng, 9, 9) for _ in range(2)]
    width = max(len(h[2]) for h in halves)
    padded = [(r, s, iv + [[0, 0]] * (width - len(iv))) for r, s, iv in halves]
    padded = [(r, s[:-1] + [width], iv) for r, s, iv in padded]  # padding: the last slice
    stacked = [torch.tensor([p[i] for p in padded], dtype=torch.int64).reshape(2, -1, *shape)
               for i, shape in enumerate([(2,), (), (2,)])]
    ranges = block_sparse(tuple(stacked) * 2, get_backend("torch"), "cpu", "a test")
    layout = ranges.layout(1, 9, 9, (2,))
    for s, (r, sl, iv) in enumerate(padded):
        bounds, offsets, joined, _, _ = reference(r, sl, iv, 9)
        assert layout.arrays[0][s].tolist() == bounds
        assert layout.arrays[1][s].tolist() == offsets
        assert layout.arrays[2][s, :len(joined)].tolist() == joined
        assert (layout.arrays[2][s, len(joined):] == 0).all()
