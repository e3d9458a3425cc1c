"""The optimal-transport tutorial at its quick size: log-domain Sinkhorn converges, its
transport cost <P, C> is POT's sinkhorn2 (sinkhorn_log), the gradient flow lowers the
cost, and its figures are images."""

import numpy as np

from tests.tutorials.tutorial_checks import check_figures, load_tutorial


def test_optimal_transport_quick(tmp_path):
    r = load_tutorial("optimal_transport").run(quick=True, out_dir=tmp_path)

    # Sinkhorn converged: rows of the plan sum to a (the columns are exact by construction).
    assert r["marginal_err"] < 1e-6
    assert r["check_marginal_err"] < 1e-11
    assert r["plan_marginal_err"] < 1e-10  # the dense plan, recomputed from (f, g)
    # Against ot.sinkhorn2(..., method="sinkhorn_log"): both return <P, C>.
    assert r["cost_rel_diff"] < 1e-6
    assert abs(r["check_cost"] - r["pot_cost"]) <= 1e-6 * r["pot_cost"]
    # <P, C> <= dual objective = <P, C> + eps KL(P | a b^T) (KL >= 0).
    assert r["cost"] <= r["dual"] * (1 + 1e-12)

    # The gradient flow moves the source towards the target: OT_eps decreases every step.
    costs = np.array(r["flow_costs"])
    assert np.all(np.diff(costs) < 0)
    assert costs[-1] < 0.2 * costs[0]

    check_figures(r["figures"], tmp_path, 2)
