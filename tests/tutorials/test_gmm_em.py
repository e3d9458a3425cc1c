"""The Gaussian-mixture EM tutorial at its quick size: the log-likelihood never decreases,
and from the same start scikit-learn's GaussianMixture reaches the same log-likelihood and
parameters (up to a relabelling of the components)."""

import importlib.util
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def load_tutorial():
    spec = importlib.util.spec_from_file_location("gmm_em_tutorial", ROOT / "tutorials" / "gmm_em.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gmm_em_quick(tmp_path):
    r = load_tutorial().run(quick=True, out_dir=tmp_path)

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

    import matplotlib.image

    assert len(r["figures"]) == 2
    for png in r["figures"]:
        assert Path(png).is_file() and Path(png).parent == tmp_path
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and len(np.unique(image)) > 1
