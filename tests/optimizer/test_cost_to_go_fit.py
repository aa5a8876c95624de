"""The cost-to-go shape's fit by simulation (optimizer.cost_to_go): the lasso step against cvxpy,
the simulator against a hand figure, the fit's choice against the single-period shape."""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import pytest

from optimizer.cost_to_go import fit_power, lasso_step, simulate_shape

VOL = np.array([0.55, 0.70, 0.95])
CORR = np.array([[1.0, 0.8, 0.7], [0.8, 1.0, 0.75], [0.7, 0.75, 1.0]])
SIGMA = np.outer(VOL, VOL) * CORR
W = np.array([0.5, 0.3, 0.2])
COST = np.full(3, 6e-4)
STEP = 1.0 / 1095.0


def test_lasso_step_is_the_cvxpy_optimum() -> None:
    rng = np.random.default_rng(11)
    for _ in range(5):
        x = rng.normal(0, 0.03, (1, 3))
        cost = rng.uniform(1e-4, 1e-2, 3)
        y = lasso_step(SIGMA, cost, x)[0]
        v = cp.Variable(3)
        # scaled by 1e4 so the solver's tolerances are far below the answer's size
        cp.Problem(cp.Minimize(1e4 * (cp.quad_form(v, SIGMA) + cost @ cp.abs(v - x[0])))).solve(
            solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        np.testing.assert_allclose(y, v.value, atol=1e-8)


def test_a_shape_with_a_huge_scale_trades_every_step_back_to_target() -> None:
    """theta Q with theta -> inf: y = 0 every step, so the cost is c E|A r|_1 a year
    (E|e_i| = sqrt(2/pi) sd_i) and TE is 0."""
    te, cost = simulate_shape(SIGMA, W, COST, 1e9 * SIGMA, STEP, paths=64, steps=1500, burn=10,
                              seed=1)
    A = np.diag(W) - np.outer(W, W)
    sd = np.sqrt(np.diag(A @ SIGMA @ A.T * STEP))
    assert te < 1e-6
    assert cost == pytest.approx(math.sqrt(2 / math.pi) * float(COST @ sd) / STEP, rel=0.01)


def test_an_isotropic_risk_makes_every_power_alike() -> None:
    """Sigma = s I: Sigma^p rescaled to Sigma's trace is Sigma for every p, so the fit's costs
    are identical (common random numbers)."""
    fit = fit_power(0.5 * np.eye(3), W, COST, STEP, 0.01, powers=(0.3, 1.0), paths=8, steps=300)
    assert fit.cost_at_te[0.3] == fit.cost_at_te[1.0]


def test_the_fit_prefers_a_flatter_shape_than_sigma_on_correlated_assets() -> None:
    """Book 1's shape: Sigma^0.4 trades at least 10% less than Sigma's own shape at TE 1% (the
    optimality benchmark measures 16% against the DP optimum's frontier)."""
    fit = fit_power(SIGMA, W, COST, STEP, 0.01, powers=(0.4, 1.0), paths=16, steps=800)
    assert fit.power == 0.4
    assert fit.cost_at_te[0.4] < 0.9 * fit.cost_at_te[1.0]
