"""The LDDMM tutorial at its quick size: the lazykeops shooting is the dense one, L-BFGS
lowers the matching energy at every iteration and the data term by orders of magnitude,
Hamilton's equations conserve H, the deformation is invertible, and its figures are images."""

import numpy as np

from tests.tutorials.tutorial_checks import check_figures, load_tutorial


def test_lddmm_quick(tmp_path):
    r = load_tutorial("lddmm").run(quick=True, out_dir=tmp_path)

    # E(p0) and dE/dp0 (derivatives of derivatives of the reduction) are the dense ones.
    assert r["energy_rel_err"] < 1e-12
    assert r["grad_rel_err"] < 1e-10

    # The matching loss decreases at every iteration, and the shot curve reaches the target.
    energies, data = np.array(r["energies"]), np.array(r["data_terms"])
    assert len(energies) == r["iters"] + 1
    assert np.all(np.diff(energies) < 0)
    assert data[-1] < 0.01 * data[0]

    # H(q(t), p(t)) is constant along the geodesic, up to Heun's method's error.
    h = np.array(r["hamiltonians"])
    assert h.min() > 0 and (h.max() - h.min()) < 1e-2 * h.mean()
    # No cell of the deformed grid is flipped: the map is a diffeomorphism.
    assert r["min_cell_area"] > 0

    check_figures(r["figures"], tmp_path, 2)
