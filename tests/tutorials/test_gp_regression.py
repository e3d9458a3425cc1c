"""The GP regression tutorial at its quick size: the posterior mean by conjugate gradient
on the lazy kernel matches a dense float64 Cholesky solve, the fitted hyperparameters
raise the marginal likelihood, and the credible band widens in the data gap."""

from tests.tutorials.tutorial_checks import check_figures, load_tutorial


def test_gp_regression_quick(tmp_path):
    tutorial = load_tutorial("gp_regression")
    r = tutorial.run(quick=True, out_dir=tmp_path)

    assert r["n_check"] == r["n"]  # quick: the check is on the data of the run itself
    gap = (r["var_points"] > tutorial.GAP[0]) & (r["var_points"] < tutorial.GAP[1])
    assert gap.any() and (~gap).any()
    for name, c in r["checks"].items():
        assert c["mean_rel_diff"] < 1e-8, name
        assert c["coef_rel_diff"] < 1e-8, name
        assert c["fitted_lml"] >= c["initial_lml"], name
        lengthscale, signal, noise = c["params"]
        assert 0.05 < noise < 0.2, name  # data simulated with noise variance 0.09
        assert r["rmse_vs_truth"][name] < 0.3, name
        v = r["variances"][name]
        assert (v >= 0).all()
        assert v[gap].max() > 2 * v[~gap].median(), name  # less known where no data

    check_figures(r["figures"], tmp_path, 2)
