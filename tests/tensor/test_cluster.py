"""lazykeops.torch.cluster and lazykeops.numpy.cluster against brute-force references: Python
loops over points, cells and blocks, float64 sums. Each test runs on both front ends (and on
CUDA tensors where a GPU is available)."""

import ast
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import lazykeops.numpy.cluster as ncl
import lazykeops.torch.cluster as tcl
from lazykeops import LazyKeOpsError

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMES = ["grid_cluster", "cluster_ranges", "cluster_centroids", "cluster_ranges_centroids",
         "sort_clusters", "from_matrix", "swap_axes"]


class Framework:
    """One front end, with conversions from numpy inputs and back."""

    def __init__(self, name):
        self.name, self.cl = name, (ncl if name == "numpy" else tcl)
        self.label_dtype = np.dtype(int) if name == "numpy" else torch.int32
        self.device = "cuda" if name == "cuda" else "cpu"

    def __repr__(self):
        return self.name

    def arr(self, a):
        if self.name == "numpy":
            return np.array(a)
        return torch.as_tensor(np.array(a), device=self.device)

    def np(self, a):
        if self.name == "numpy":
            assert isinstance(a, np.ndarray), type(a)
            return a
        assert isinstance(a, torch.Tensor) and a.device.type == self.device, a
        return a.detach().cpu().numpy()


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])


@pytest.fixture(params=["torch", "numpy", CUDA])
def fw(request):
    return Framework(request.param)


def random_points(m, d, dtype=np.float64, seed=0):
    return (np.random.default_rng(seed).standard_normal((m, d)) * 2.0 - 0.7).astype(dtype)


def cells_by_loops(fw, x, size):
    """Each point's cell, one coordinate at a time with scalars of x's dtype (the same IEEE
    operations as the vectorised code). The torch grid starts at x's minima, numpy's at 0."""
    sizes = [size] * x.shape[1] if np.isscalar(size) else list(size)
    lows = [min(x[:, k]) if fw.name != "numpy" else x.dtype.type(0) for k in range(x.shape[1])]
    return [tuple(math.floor((x[i, k] - lows[k]) / x.dtype.type(sizes[k]))
                  for k in range(x.shape[1])) for i in range(x.shape[0])]


def lexicographic_labels(cells):
    rank = {c: r for r, c in enumerate(sorted(set(cells)))}
    return np.array([rank[c] for c in cells])


@pytest.mark.parametrize("d", [1, 2, 3, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grid_cluster_labels_cells_in_lexicographic_order(fw, d, dtype):
    x = random_points(200, d, dtype)
    for size in (0.7, np.linspace(0.5, 1.5, d).astype(dtype)):
        lab = fw.cl.grid_cluster(fw.arr(x), size if np.isscalar(size) else fw.arr(size))
        assert lab.dtype == fw.label_dtype and lab.shape == (200,)
        np.testing.assert_array_equal(fw.np(lab), lexicographic_labels(cells_by_loops(fw, x, size)))


def test_grid_cluster_accepts_strided_views(fw):
    wide = random_points(50, 6)
    lab = fw.cl.grid_cluster(fw.arr(wide)[:, ::2], 0.9)
    np.testing.assert_array_equal(
        fw.np(lab), lexicographic_labels(cells_by_loops(fw, wide[:, ::2], 0.9)))


def test_grid_cluster_keeps_far_apart_cells_apart(fw):
    # pykeops's 10-bit-per-axis hash gives cells (0, 1024) and (1, 0) the same label.
    x = np.array([[0.5, 1024.5], [1.5, 0.5], [0.5, 0.5]])
    np.testing.assert_array_equal(fw.np(fw.cl.grid_cluster(fw.arr(x), 1.0)), [1, 2, 0])


def test_grid_cluster_huge_coordinate_spread(fw):
    # Spans beyond 2**53 cells: the axis-by-axis ranking path.
    x = np.array([[1e17, -3e16, 2.0], [-1e17, 5.0, 2.0], [1e17, -3e16, 7.0], [-1e17, 5.0, 3.5],
                  [0.0, 0.0, 0.0]])
    lab = fw.np(fw.cl.grid_cluster(fw.arr(x), 1.0))
    np.testing.assert_array_equal(lab, lexicographic_labels(cells_by_loops(fw, x, 1.0)))
    assert len(set(lab.tolist())) == 5


def test_grid_cluster_without_points(fw):
    lab = fw.cl.grid_cluster(fw.arr(np.zeros((0, 2))), 1.0)
    assert lab.shape == (0,) and lab.dtype == fw.label_dtype


def ranges_by_loops(labels, n_clusters):
    counts = [sum(1 for l in labels if l == k) for k in range(n_clusters)]
    return np.array([[sum(counts[:k]), sum(counts[:k + 1])] for k in range(n_clusters)])


def test_cluster_ranges(fw):
    lab = np.array([3, 0, 3, 1, 3, 0, 5])  # labels 2 and 4 are empty
    expected = ranges_by_loops(lab, 6)
    for ranges in (fw.cl.cluster_ranges(fw.arr(lab.astype(np.int32))),
                   fw.cl.cluster_ranges(None, Nlab=fw.arr(np.bincount(lab))),
                   fw.cl.cluster_ranges(fw.arr(lab), Nlab=fw.arr(np.bincount(lab) * 1.0))):
        assert ranges.dtype == (np.dtype(int) if fw.name == "numpy" else torch.int64)
        np.testing.assert_array_equal(fw.np(ranges), expected)
    assert fw.cl.cluster_ranges(fw.arr(np.zeros(0, np.int64))).shape == (0, 2)


def centroids_by_loops(x, lab, weights, n_clusters):
    weights = np.ones(len(lab)) if weights is None else weights.astype(np.float64)
    out = np.full((n_clusters, x.shape[1]), np.nan)
    for k in range(n_clusters):
        members = [i for i in range(len(lab)) if lab[i] == k]
        if members:
            total = sum(weights[i] for i in members)
            with np.errstate(invalid="ignore"):  # all-zero weights: NaN, as 0 / 0
                out[k] = sum(weights[i] * x[i].astype(np.float64) for i in members) / total
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_cluster_centroids(fw, dtype, weighted):
    x, lab = random_points(60, 3, dtype), np.random.default_rng(1).integers(0, 9, 60)
    lab[lab == 4] = 5  # an empty cluster
    w = np.random.default_rng(2).random(60).astype(dtype) if weighted else None
    expected = centroids_by_loops(x, lab, w, 9)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    got = fw.cl.cluster_centroids(fw.arr(x), fw.arr(lab), weights=None if w is None else fw.arr(w))
    assert got.dtype == fw.arr(x).dtype and got.shape == (9, 3)
    np.testing.assert_allclose(fw.np(got), expected, rtol=tol, atol=tol)
    # A longer Nlab adds empty clusters at the end.
    longer = fw.cl.cluster_centroids(fw.arr(x), fw.arr(lab),
                                     Nlab=fw.arr(np.bincount(lab, minlength=11)),
                                     weights=None if w is None else fw.arr(w))
    np.testing.assert_allclose(fw.np(longer)[:9], expected, rtol=tol, atol=tol)
    assert np.isnan(fw.np(longer)[9:]).all()


def test_cluster_ranges_centroids(fw):
    x, lab = random_points(40, 2), np.random.default_rng(3).integers(0, 6, 40)
    w = np.random.default_rng(4).random(40)
    w[lab == 2] = 0.0  # all-zero cluster: torch raises the weights to min_weight
    ranges, centroids, counts = fw.cl.cluster_ranges_centroids(fw.arr(x), fw.arr(lab))
    np.testing.assert_array_equal(fw.np(ranges), ranges_by_loops(lab, 6))
    np.testing.assert_allclose(fw.np(centroids), centroids_by_loops(x, lab, None, 6), rtol=1e-12)
    assert counts.dtype == (np.float64 if fw.name == "numpy" else torch.float32)
    np.testing.assert_array_equal(fw.np(counts), [sum(lab == k) for k in range(6)])
    ranges, centroids, totals = fw.cl.cluster_ranges_centroids(fw.arr(x), fw.arr(lab),
                                                               weights=fw.arr(w))
    used = np.maximum(w, 1e-9) if fw.name != "numpy" else w
    np.testing.assert_allclose(fw.np(totals), [sum(used[lab == k]) for k in range(6)], rtol=1e-12)
    np.testing.assert_allclose(fw.np(centroids), centroids_by_loops(x, lab, used, 6), rtol=1e-12)
    if fw.name != "numpy":  # the clamped cluster's centroid is its plain mean
        np.testing.assert_allclose(fw.np(centroids)[2], x[lab == 2].mean(0), rtol=1e-12)


def test_centroids_are_differentiable():
    x = torch.rand(7, 2, dtype=torch.float64, requires_grad=True)
    w = torch.rand(7, dtype=torch.float64, requires_grad=True) + 0.5
    lab = torch.tensor([0, 2, 2, 1, 0, 2, 1])
    torch.autograd.gradcheck(lambda x, w: tcl.cluster_centroids(x, lab, weights=w), (x, w))


def test_sort_clusters_is_a_stable_sort(fw):
    lab = np.random.default_rng(5).integers(0, 4, 300)
    x, w = random_points(300, 2), np.arange(300.0)
    order = [i for k in range(4) for i in range(300) if lab[i] == k]
    (xs, ws), labs = fw.cl.sort_clusters((fw.arr(x), fw.arr(w)), fw.arr(lab.astype(np.int32)))
    np.testing.assert_array_equal(fw.np(xs), x[order])
    np.testing.assert_array_equal(fw.np(ws), w[order])
    np.testing.assert_array_equal(fw.np(labs), lab[order])
    assert labs.dtype == fw.arr(lab.astype(np.int32)).dtype
    (ws, _), labs = fw.cl.sort_clusters((fw.arr(w), fw.arr(x)), fw.arr(lab * 70000 + 1))
    np.testing.assert_array_equal(fw.np(ws), w[order])  # labels past 16 bits: numpy's merge sort
    np.testing.assert_array_equal(fw.np(labs), lab[order] * 70000 + 1)
    listed, _ = fw.cl.sort_clusters([fw.arr(x)], fw.arr(lab))
    assert isinstance(listed, list)
    alone, _ = fw.cl.sort_clusters(fw.arr(np.repeat(x, 2, axis=1))[:, ::2], fw.arr(lab))
    np.testing.assert_array_equal(fw.np(alone), x[order])


def test_sort_clusters_keeps_the_graph():
    x = torch.rand(5, 2, requires_grad=True)
    xs, _ = tcl.sort_clusters(x, torch.tensor([1, 0, 1, 0, 2]))
    (xs * torch.arange(5.0)[:, None]).sum().backward()
    np.testing.assert_array_equal(x.grad[:, 0].numpy(), [2, 0, 3, 1, 4])


def from_matrix_by_loops(ranges_i, ranges_j, keep):
    m, n = keep.shape
    red_j = [ranges_j[l] for k in range(m) for l in range(n) if keep[k, l]]
    red_i = [ranges_i[k] for l in range(n) for k in range(m) if keep[k, l]]
    slices_i = [sum(keep[kk, l] for kk in range(k + 1) for l in range(n)) for k in range(m)]
    slices_j = [sum(keep[k, ll] for ll in range(l + 1) for k in range(m)) for l in range(n)]
    as_2 = lambda rows: np.array(rows).reshape(-1, 2)
    return ranges_i, np.array(slices_i), as_2(red_j), ranges_j, np.array(slices_j), as_2(red_i)


@pytest.mark.parametrize("mask_dtype", [bool, np.uint8])
def test_from_matrix(fw, mask_dtype):
    ranges_i = np.array([[0, 3], [3, 4], [4, 9], [9, 9]], dtype=np.int32)
    ranges_j = np.array([[0, 2], [2, 7], [7, 8]])
    keep = np.random.default_rng(6).random((4, 3)) < 0.5
    keep[1] = False  # an i cluster that meets no one
    got = fw.cl.from_matrix(fw.arr(ranges_i), fw.arr(ranges_j), fw.arr(keep.astype(mask_dtype)))
    for g, e in zip(got, from_matrix_by_loops(ranges_i, ranges_j, keep)):
        np.testing.assert_array_equal(fw.np(g), e)
    dtypes = [g.dtype for g in got]
    if fw.name == "numpy":
        assert dtypes == [np.int64] * 6
    else:  # pykeops hands torch ranges back in their own dtype
        i32, i64 = torch.int32, torch.int64
        assert dtypes == [i32, i64, i64, i64, i64, i32]
    assert fw.cl.swap_axes(got) == (*got[3:], *got[:3])
    assert fw.cl.swap_axes(None) is None


def bad_calls(fw):
    """(call, words the message must hold) pairs."""
    a, cl = fw.arr, fw.cl
    x, lab = a(np.zeros((4, 2))), a(np.array([0, 1, 1, 0]))
    r = a(np.array([[0, 2], [2, 4]]))
    return [
        (lambda: cl.grid_cluster(a(np.zeros(4)), 1.0), "'x' must be a 2-D"),
        (lambda: cl.grid_cluster(x, -0.5), "'size' must be positive"),
        (lambda: cl.grid_cluster(x, 0.0), "'size' must be positive"),
        (lambda: cl.grid_cluster(x, a(np.ones(3))), "'size' must be a number or have shape (2,)"),
        (lambda: cl.grid_cluster(x, "big"), "'size' must be a positive number"),
        (lambda: cl.grid_cluster(a(np.array([[0.0, np.nan]])), 1.0), "must be finite"),
        (lambda: cl.cluster_ranges(a(np.array([0.0, 1.0]))), "'lab' must be an array of integer"),
        (lambda: cl.cluster_ranges(a(np.array([0, -1]))), "labels >= 0"),
        (lambda: cl.cluster_ranges(a(np.array([[0, 1]]))), "'lab' must be a 1-D"),
        (lambda: cl.cluster_ranges(None, Nlab=a(np.array([1.5, 2.0]))), "'Nlab' must hold whole"),
        (lambda: cl.cluster_centroids(x, a(np.array([0, 1]))), "one label per point (4)"),
        (lambda: cl.cluster_centroids(x, lab, Nlab=a(np.array([4]))), "'Nlab' must have an entry"),
        (lambda: cl.cluster_centroids(x, lab, weights=a(np.ones(3))),
         "'weights' must have shape (4,)"),
        (lambda: cl.cluster_centroids(x, lab, weights=a(np.ones(4)), weights_c=a(np.ones(3))),
         "'weights_c' must have shape (2,)"),
        (lambda: cl.cluster_ranges_centroids(x, a(np.array([0, 1, 1]))), "one label per point"),
        (lambda: cl.sort_clusters((x, a(np.zeros(3))), lab), "'x[1]' must be"),
        (lambda: cl.sort_clusters(x, a(np.zeros(4))), "'lab' must be an array of integer"),
        (lambda: cl.from_matrix(r, r, a(np.ones((2, 3), bool))), "'keep' must have shape (2, 2)"),
        (lambda: cl.from_matrix(r, r, a(np.full((2, 2), 2))), "'keep' must hold only 0 and 1"),
        (lambda: cl.from_matrix(r, r, a(np.ones((2, 2)))), "'keep' must be a boolean"),
        (lambda: cl.from_matrix(a(np.array([[3, 1]])), r, a(np.ones((1, 2), bool))),
         "0 <= start <= end"),
        (lambda: cl.from_matrix(a(np.array([0, 1])), r, a(np.ones((1, 2), bool))), "shape (n, 2)"),
        (lambda: cl.swap_axes((r, r)), "the 6-tuple returned by from_matrix"),
    ]


def test_bad_arguments_raise_lazykeops_errors(fw):
    for call, words in bad_calls(fw):
        with pytest.raises(LazyKeOpsError) as info:
            call()
        assert words in str(info.value), (words, str(info.value))
        assert str(info.value).split("(")[0] in NAMES, str(info.value)


def test_min_weight_must_be_a_number():
    with pytest.raises(LazyKeOpsError, match="'min_weight' must be a number"):
        tcl.cluster_ranges_centroids(torch.zeros(2, 1), torch.tensor([0, 0]), torch.ones(2), "0")


def test_signatures_and_names_follow_pykeops():
    import inspect
    for module in (tcl, ncl):
        assert sorted(module.__all__) == sorted(NAMES)
    assert str(inspect.signature(tcl.cluster_ranges_centroids)) == \
        "(x, lab, weights=None, min_weight=1e-09)"
    assert str(inspect.signature(ncl.cluster_ranges_centroids)) == "(x, lab, weights=None)"
    for module in (tcl, ncl):
        assert str(inspect.signature(module.cluster_centroids)) == \
            "(x, lab, Nlab=None, weights=None, weights_c=None)"
        assert str(inspect.signature(module.from_matrix)) == "(ranges_i, ranges_j, keep)"


def imported_modules(path):
    tree = ast.parse(pathlib.Path(path).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


def test_cluster_modules_import_little():
    assert imported_modules(ROOT / "lazykeops/torch/cluster.py") == {"torch", "..routines",
                                                                      "..routines.cluster"}
    assert imported_modules(ROOT / "lazykeops/routines/cluster.py") == {"math", "..errors"}
    # The numpy module, loaded without its package's __init__, with torch made unimportable.
    probe = (
        "import sys, types, importlib.util\n"
        "sys.modules['torch'] = None\n"
        "import lazykeops\n"
        "pkg = types.ModuleType('lazykeops.numpy')\n"
        f"pkg.__path__ = [{str(ROOT / 'lazykeops/numpy')!r}]\n"
        "sys.modules['lazykeops.numpy'] = pkg\n"
        "import lazykeops.numpy.cluster as c\n"
        "import numpy as np\n"
        "print(c.grid_cluster(np.array([[0.], [3.], [0.5]]), 1.0).tolist())\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "[0, 1, 0]", out.stderr
