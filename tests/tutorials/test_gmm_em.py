"""The Gaussian-mixture EM tutorial at its quick size: the log-likelihood never decreases,
and from the same start scikit-learn's GaussianMixture reaches the same log-likelihood and
parameters (up to a relabelling of the components)."""

import numpy as np
import torch

from tests.tutorials.tutorial_checks import check_figures, load_tutorial


def test_gmm_em_quick(tmp_path):
    r = load_tutorial("gmm_em").run(quick=True, out_dir=tmp_path)

    loglik = np.array(r["loglik"])
    assert len(loglik) == r["max_iter"] + 1
    assert r["loglik_non_decreasing"]
    assert np.all(np.diff(loglik) >= -1e-12 * np.abs(loglik[:-1]))
    assert loglik[-1] > loglik[0] + 0.1  # the iteration did something

    # A proper mixture: weights on the simplex, covariances symmetric positive definite.
    assert torch.all(r["weights"] > 0) and abs(r["weights"].sum().item() - 1) < 1e-12
    assert torch.equal(r["covs"], r["covs"].transpose(-1, -2))
    assert torch.all(torch.linalg.eigvalsh(r["covs"]) > 0)

    # Against GaussianMixture(covariance_type="full", tol=0, reg_covar=0), same start and
    # the same number of steps: in float64 the gaps are ~1e-15 (log-likelihood) and
    # ~1e-13 (parameters); the bounds leave room for other BLAS orderings.
    assert r["check_n_iter"] == r["sklearn_n_iter"] == r["max_iter"]
    assert r["check_loglik"] == loglik[-1]  # quick: the check ran on the same data
    assert r["loglik_abs_diff"] < 1e-9
    assert r["lower_bound_abs_diff"] < 1e-9
    assert sorted(r["permutation"]) == list(range(r["k"]))
    assert r["weights_max_diff"] < 1e-8
    assert r["means_max_diff"] < 1e-8
    assert r["covs_max_diff"] < 1e-8

    check_figures(r["figures"], tmp_path, 2)
