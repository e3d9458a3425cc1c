"""tutorials/mmd_test.py: the MMD^2 estimate matches a dense float64 computation, null
p-values are uniform, power grows with n, and the figures are real images."""

import numpy as np
import pytest
import torch

from tests.tutorials.tutorial_checks import check_figures, load_tutorial


mmd = load_tutorial("mmd_test")


@pytest.fixture
def one_thread():
    # The quick run is some 200 tiny tests: on a busy machine, torch's intra-op threads
    # cost more in synchronisation than they save (about 10x here). Restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_mmd_quick(tmp_path, one_thread):
    r = mmd.run(quick=True, out_dir=tmp_path)
    # Block sums and the K @ A permutation trick both agree with dense float64.
    assert r["mmd2_abs_err"] < 1e-10, r["mmd2_abs_err"]
    assert abs(r["mmd2_block_sums"] - r["mmd2_dense"]) < 1e-10
    assert abs(r["mmd2_perm_trick"] - r["mmd2_dense"]) < 1e-10
    # Under H0 the p-values are uniform on {1/(B+1), ..., 1} (fixed seed, loose level).
    p = r["null_p_values"]
    assert r["ks_pvalue"] > 0.01, r["ks_pvalue"]
    assert np.all((p >= 1 / (r["n_perm"] + 1)) & (p <= 1))
    # Against the mean shift, power at the largest n beats power at the smallest.
    assert r["power"][-1] > r["power"][0], r["power"]
    assert r["power"][-1] > 0.5
    check_figures(r["figures"], tmp_path, 2)


def test_permutation_statistics_match_dense():
    # Every relabelling's statistic, not only the observed one, equals the dense U-statistic.
    gen = torch.Generator().manual_seed(3)
    x, y = mmd.draw(30, 0.3, gen, "cpu")
    y = y[:20]  # unequal sample sizes exercise the n(n-1) and m(m-1) normalisations
    h = mmd.median_bandwidth(torch.cat([x, y]), gen)
    t_obs, t_perm = mmd.permutation_statistics(x, y, h, 99, torch.Generator().manual_seed(5))
    assert abs(float(t_obs) - mmd.mmd2_dense(x, y, h)) < 1e-10
    A = mmd.label_matrix(30, 20, 99, torch.Generator().manual_seed(5), "cpu")
    z = torch.cat([x, y])
    for b in range(0, 99, 11):
        is_x = A[:, 2 + b].bool()
        assert int(is_x.sum()) == 30
        ref = mmd.mmd2_dense(z[is_x], z[~is_x], h)
        assert abs(float(t_perm[b]) - ref) < 1e-10
