"""The k-means tutorial at its quick size: Lloyd's inertia never increases, and from the
same initial centres scikit-learn's Lloyd reaches the same inertia and labels."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_tutorial():
    spec = importlib.util.spec_from_file_location("kmeans_tutorial", ROOT / "tutorials" / "kmeans.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kmeans_quick(tmp_path):
    r = load_tutorial().run(quick=True, out_dir=tmp_path)

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

    import matplotlib.image

    assert len(r["figures"]) == 2
    for png in r["figures"]:
        assert Path(png).is_file() and Path(png).parent == tmp_path
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and len(np.unique(image)) > 1
