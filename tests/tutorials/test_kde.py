"""tutorials/kde.py: the KDE log-density matches scikit-learn, the leave-one-out sums
match a dense computation, and the figures are real images."""

import math

import numpy as np
import torch

from tests.tutorials.tutorial_checks import check_figures, load_tutorial


kde = load_tutorial("kde")


def test_kde_quick(tmp_path):
    res = kde.run(quick=True, out_dir=tmp_path)
    # float64 throughout: the two log-densities agree to rounding error.
    assert res["max_rel_err"] < 1e-7, res["max_rel_err"]
    np.testing.assert_allclose(res["log_density"], res["sklearn_log_density"], rtol=1e-7)
    # The CV curve has an interior maximum: neither the smallest nor the largest h wins.
    best = int(np.argmax(res["cv"]))
    assert 0 < best < len(res["cv"]) - 1
    assert res["h_cv"] == res["bandwidths"][best]
    check_figures(res["figures"], tmp_path, 2)


def test_leave_one_out_matches_dense():
    x = kde.sample(400)
    x = torch.cat([x, x[:1]])  # a tie: x_0 and x_400 must each see the other
    bandwidths = torch.logspace(-2, 0, 16, dtype=torch.float64)  # same formula as run()
    ours = kde.loo_log_density(x, bandwidths)
    sq_dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    sq_dist.fill_diagonal_(math.inf)  # only j = i is left out
    n = x.shape[0]
    for b, h in enumerate(bandwidths):
        ref = (torch.logsumexp(-sq_dist / (2 * h**2), dim=1)
               - math.log(n - 1) - math.log(2 * math.pi * h**2))
        torch.testing.assert_close(ours[:, b], ref, rtol=1e-10, atol=1e-10)
