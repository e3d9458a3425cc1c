"""tutorials/knn.py: its k-NN labels are scikit-learn's, and its figures are images."""

import pytest
import torch

from tests.tutorials.tutorial_checks import check_figures, load_tutorial


@pytest.fixture(scope="module")
def knn():
    return load_tutorial("knn")


def test_quick_run_matches_sklearn_and_draws(knn, tmp_path):

    r = knn.run(quick=True, out_dir=tmp_path)
    # run() compares with KNeighborsClassifier(algorithm="brute") for every k <= kmax.
    assert sorted(r["mismatches_vs_sklearn"]) == list(range(1, r["kmax"] + 1))
    assert all(n == 0 for n in r["mismatches_vs_sklearn"].values()), r["mismatches_vs_sklearn"]
    assert 0.85 < r["best_accuracy"] <= 1.0   # two moons with noise 0.3: about 0.94
    check_figures(r["figures"], tmp_path, 2)


def test_predict_equals_sklearn_on_fresh_data(knn):
    # An independent check, outside run(): another sample, an odd and an even k.
    from sklearn.neighbors import KNeighborsClassifier

    x, y = knn.moons(700, noise=0.4, seed=1)
    x_train, y_train, x_test = x[:500], y[:500], x[500:]
    for k in (4, 9):
        ours = knn.knn_predict(x_test, x_train, y_train, k, kmax=25, n_classes=2)
        clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(x_train, y_train)
        assert torch.equal(ours, torch.from_numpy(clf.predict(x_test.numpy())))
