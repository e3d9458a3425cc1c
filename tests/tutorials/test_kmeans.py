"""The k-means tutorial at its quick size: Lloyd's inertia never increases, and from the
same initial centres scikit-learn's Lloyd reaches the same inertia and labels."""

import numpy as np
import pytest

from tests.tutorials.tutorial_checks import check_figures, load_tutorial


def test_kmeans_quick(tmp_path):
    r = load_tutorial("kmeans").run(quick=True, out_dir=tmp_path)

    inertia = np.array(r["inertia"])
    assert r["inertia_non_increasing"]
    assert np.all(np.diff(inertia) <= 1e-12 * inertia[:-1])
    assert inertia[-1] < 0.5 * inertia[0]  # the iteration did something
    assert r["n_empty"] == 0

    # Against scikit-learn's KMeans(algorithm="lloyd", n_init=1, tol=0), same start.
    assert r["inertia_rel_diff"] < 1e-4
    assert abs(r["check_inertia"] - r["sklearn_inertia"]) <= 1e-4 * r["sklearn_inertia"]
    assert r["label_agreement"] == 1.0
    assert r["check_inertia"] == pytest.approx(inertia[-1], rel=1e-12)  # quick: same data

    check_figures(r["figures"], tmp_path, 2)
