"""tutorials/kernel_smoothing.py: the Nadaraya-Watson fit and its leave-one-out CV error
match a dense float64 computation, mean shift finds the three blob modes (close to
scikit-learn's flat-kernel MeanShift), and the figures are real images."""

import numpy as np
import torch

from tests.tutorials.tutorial_checks import check_figures, load_tutorial


ks = load_tutorial("kernel_smoothing")


def dense_nadaraya_watson(points, x, y, h, leave_one_out=False):
    K = torch.exp(-((points[:, None] - x[None, :]) ** 2) / (2 * h**2))
    if leave_one_out:
        K.fill_diagonal_(0.0)
    return (K @ y) / K.sum(1)


def test_kernel_smoothing_quick(tmp_path):
    res = ks.run(quick=True, out_dir=tmp_path)

    # Nadaraya-Watson at the CV bandwidth against a dense float64 computation.
    x, y = ks.regression_sample(res["n_reg"])
    grid = torch.from_numpy(res["grid"])
    ref = dense_nadaraya_watson(grid, x, y, res["h_cv"])
    np.testing.assert_allclose(res["fit_cv"], ref.numpy(), rtol=1e-10, atol=1e-10)

    # The CV curve has an interior minimum, and the chosen h is its argmin.
    best = int(np.argmin(res["cv"]))
    assert 0 < best < len(res["cv"]) - 1
    assert res["h_cv"] == res["bandwidths"][best]
    for b in (0, best, len(res["cv"]) - 1):
        h = float(res["bandwidths"][b])
        ref_cv = ((y - dense_nadaraya_watson(x, x, y, h, leave_one_out=True)) ** 2).mean()
        assert abs(res["cv"][b] - float(ref_cv)) <= 1e-10 * float(ref_cv)

    # Mean shift: exactly three modes, one near each blob centre (sampling error of the
    # mode of 200 points with sd 0.4 is a few hundredths), and every blob found.
    h = res["mean_shift_h"]
    modes, centres = res["modes"], res["blob_centres"]
    assert len(modes) == 3
    assert np.all(res["mode_to_centre"] < 0.1), res["mode_to_centre"]
    assert np.all(ks.nearest_distances(centres, modes) < 0.1)
    assert res["mode_sizes"].sum() == res["n_blobs"] and res["mode_sizes"].min() > 150
    # scikit-learn only has the flat kernel: same number of modes, positions within h / 5.
    assert len(res["sklearn_modes"]) == 3
    assert np.all(res["mode_to_sklearn"] < h / 5), res["mode_to_sklearn"]
    assert np.all(ks.nearest_distances(res["sklearn_modes"], modes) < h / 5)

    check_figures(res["figures"], tmp_path, 2)


def test_leave_one_out_matches_dense_with_ties():
    x, y = ks.regression_sample(300, seed=3)
    x, y = torch.cat([x, x[:1]]), torch.cat([y, y[:1] + 1.0])  # a tie: x_0 = x_300
    bandwidths = torch.logspace(-2, 0, ks.N_BANDWIDTHS, dtype=torch.float64)  # as run()
    ours = ks.loo_fits(x, y, bandwidths)
    for b, h in enumerate(bandwidths):
        ref = dense_nadaraya_watson(x, x, y, h, leave_one_out=True)
        torch.testing.assert_close(ours[:, b], ref, rtol=1e-10, atol=1e-10)
