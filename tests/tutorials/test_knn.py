"""tutorials/knn.py: its k-NN labels are scikit-learn's, and its figures are images."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def load_tutorial():
    spec = importlib.util.spec_from_file_location("tutorial_knn", ROOT / "tutorials" / "knn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def knn():
    return load_tutorial()


def test_quick_run_matches_sklearn_and_draws(knn, tmp_path):
    import matplotlib.image

    r = knn.run(quick=True, out_dir=tmp_path)
    # run() compares with KNeighborsClassifier(algorithm="brute") for every k <= kmax.
    assert sorted(r["mismatches_vs_sklearn"]) == list(range(1, r["kmax"] + 1))
    assert all(n == 0 for n in r["mismatches_vs_sklearn"].values()), r["mismatches_vs_sklearn"]
    assert 0.85 < r["best_accuracy"] <= 1.0   # two moons with noise 0.3: about 0.94
    assert len(r["figures"]) == 2
    for path in r["figures"]:
        assert Path(path).parent == tmp_path
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and len(np.unique(image)) > 1


def test_predict_equals_sklearn_on_fresh_data(knn):
    # An independent check, outside run(): another sample, an odd and an even k.
    from sklearn.neighbors import KNeighborsClassifier

    x, y = knn.moons(700, noise=0.4, seed=1)
    x_train, y_train, x_test = x[:500], y[:500], x[500:]
    for k in (4, 9):
        ours = knn.knn_predict(x_test, x_train, y_train, k, kmax=25, n_classes=2)
        clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(x_train, y_train)
        assert torch.equal(ours, torch.from_numpy(clf.predict(x_test.numpy())))
