"""The optimality benchmark's machinery against brute force, hand formulas and cvxpy."""

from __future__ import annotations

import numpy as np
import pytest
from optimality_dp import (
    Grid,
    Model,
    bellman_min,
    bellman_min_sf,
    evaluate,
    expect,
    kernel,
    solve_dp,
    spread,
)
from optimality_sim import (
    at_te,
    band_to_edge,
    band_to_edge_sf,
    band_to_target,
    frontier,
    simulate,
    te_band_to_edge,
    te_band_to_target,
)

MODEL = Model()


def test_bellman_min_is_the_brute_force_minimum() -> None:
    """Sweeps trade asset 3, then 2, then 1 through grid nodes: exact for every target whose path
    stays on the grid. With |s_x|, |s_y| <= 3 eta and |t1| <= 4 eta, |t2| <= 3 eta, the nodes
    passed, s_x + t3 = s_y - t1 - t2 and s_y - t1, lie within the s axis' +-10 eta."""
    rng = np.random.default_rng(3)
    g = Grid(0.01, 5, 4, 21)
    W = rng.uniform(0.0, 0.05, g.shape)
    V, P = bellman_min(W, MODEL.cost, g.eta)
    D = g.deviations().reshape(-1, 3)
    flat = W.ravel()
    near = np.abs(D.sum(axis=1)) <= 3 * g.eta + 1e-12
    checked = 0
    for x in np.flatnonzero(near):
        costs = MODEL.cost * np.abs(D - D[x]).sum(axis=1) + flat
        v = V.ravel()[x]
        assert costs.min() - 1e-15 <= v <= costs[near].min() + 1e-15
        assert costs[P.ravel()[x]] == pytest.approx(v, abs=1e-15)
        checked += 1
    assert checked > 100


@pytest.mark.parametrize("eta", [0.001, 0.006])
def test_kernel_has_the_noise_covariance(eta: float) -> None:
    k = kernel(MODEL, eta)
    m1, m2 = k.shape[0] // 2, k.shape[1] // 2
    o1, o2 = np.meshgrid(np.arange(-m1, m1 + 1) * eta, np.arange(-m2, m2 + 1) * eta, indexing="ij")
    cov = np.array([[(k * o1 * o1).sum(), (k * o1 * o2).sum()],
                    [(k * o1 * o2).sum(), (k * o2 * o2).sum()]])
    assert k.sum() == pytest.approx(1.0)
    assert k.min() >= 0
    np.testing.assert_allclose(cov, MODEL.noise_cov[:2, :2], rtol=1e-3)


def test_noise_moves_weight_between_assets_only() -> None:
    assert np.abs(MODEL.noise_cov.sum(axis=0)).max() < 1e-18


def test_spread_is_the_adjoint_of_expect() -> None:
    rng = np.random.default_rng(5)
    g = Grid(0.002, 11, 9, 3)
    ker = kernel(MODEL, g.eta)
    h, mu = rng.normal(size=g.shape), rng.uniform(size=g.shape)
    assert (expect(h, ker) * mu).sum() == pytest.approx((h * spread(mu, ker)).sum(), rel=1e-10)
    assert spread(mu, ker).sum() == pytest.approx(mu.sum(), rel=1e-12)


def test_trading_back_every_step_costs_the_mean_absolute_drift() -> None:
    """Policy "every node to target": per step the trade is |A r|_1, E|eps_i| = sqrt(2/pi) sd_i."""
    g = Grid(0.0005, 65, 65, 3)
    to_zero = np.full(g.shape, np.ravel_multi_index((32, 32, 1), g.shape))
    st = evaluate(MODEL, g, to_zero)
    sd = np.sqrt(np.diag(MODEL.noise_cov))
    hand = np.sqrt(2 / np.pi) * sd.sum() * MODEL.cost * MODEL.steps_per_year * 1e4
    assert st.cost_bp == pytest.approx(hand, rel=3e-3)
    assert st.te == pytest.approx(0.0, abs=1e-12)


def test_dp_beats_the_bands_on_its_own_chain() -> None:
    """The optimum's long-run cost (trading + lambda TE^2) is below every band policy's."""
    lam = 20.0
    g = Grid.around(0.001, 0.03, 0.03, 0.008)
    sol = solve_dp(MODEL, g, lam)
    st = evaluate(MODEL, g, sol.policy)
    dp = st.cost_bp / 1e4 + lam * st.te**2
    assert dp == pytest.approx(sol.gain * MODEL.steps_per_year, rel=1e-4)
    D = g.deviations().reshape(-1, 3)
    c = np.array([g.n1 // 2, g.n2 // 2, g.ns // 2])
    for b in (0.004, 0.008, 0.012):
        y = np.clip(D, -b, b)
        q = np.stack([y[:, 0], y[:, 1], y.sum(axis=1)], axis=1)
        idx = np.clip(np.rint(q / g.eta).astype(int) + c, 0, np.array(g.shape) - 1)
        pol = np.ravel_multi_index((idx[:, 0], idx[:, 1], idx[:, 2]), g.shape).reshape(g.shape)
        band = evaluate(MODEL, g, pol)
        assert dp < band.cost_bp / 1e4 + lam * band.te**2


def test_band_policies_by_hand() -> None:
    x = np.array([[0.03, -0.01, -0.02], [0.005, 0.0, -0.005]])
    np.testing.assert_allclose(band_to_target(0.02)(x, 0), [[0.0, 0.0, 0.0], [0.005, 0.0, -0.005]])
    np.testing.assert_allclose(band_to_edge(np.full(3, 0.015))(x, 0),
                               [[0.015, -0.01, -0.015], [0.005, 0.0, -0.005]])


def test_simulation_of_trading_every_step_matches_the_hand_figure() -> None:
    sd = np.sqrt(np.diag(MODEL.noise_cov))
    hand = np.sqrt(2 / np.pi) * sd.sum() * MODEL.cost * MODEL.steps_per_year * 1e4
    st = simulate(MODEL, band_to_target(0.0), paths=64, steps=1500, burn=10)
    assert st.cost_bp == pytest.approx(hand, rel=0.01)


def test_at_te_interpolates_log_log_on_the_frontier() -> None:
    pts = frontier([(0.01, 4.0), (0.02, 1.0), (0.015, 9.0)])
    assert pts == [(0.01, 4.0), (0.02, 1.0)]
    assert at_te(pts, 0.01 * np.sqrt(2)) == pytest.approx(2.0)
    assert at_te(pts, 0.05) is None


def test_self_financing_bellman_min_is_the_brute_force_minimum_over_swaps() -> None:
    """On the plane s = 0 a swap trade t (sum 0) costs c |t|_1: the sweeps along (1, 0), (0, 1)
    and (1, -1) give min over every node y of c |y - x|_1 + W(y) (no path leaves a 9 x 9 grid
    whose targets all lie on it), and the argmin attains it."""
    rng = np.random.default_rng(11)
    g = Grid(0.01, 9, 9, 1)
    W = rng.uniform(0.0, 0.05, g.shape)
    V, P = bellman_min_sf(W, MODEL.cost, g.eta)
    D = g.deviations().reshape(-1, 3)
    assert np.abs(D.sum(axis=1)).max() < 1e-15
    flat = W.ravel()
    for x in range(D.shape[0]):
        costs = MODEL.cost * np.abs(D - D[x]).sum(axis=1) + flat
        assert V.ravel()[x] == pytest.approx(costs.min(), abs=1e-15)
        assert costs[P.ravel()[x]] == pytest.approx(costs.min(), abs=1e-15)


def test_the_self_financing_optimum_beats_swap_bands_and_trades_only_swaps() -> None:
    """Under the spot model the DP's long-run cost (trading + lambda TE^2, its gain) is below every
    box band traded back to target on the same chain, and every move it makes sums to zero."""
    model = Model(self_financing=True)
    lam = 20.0
    g = Grid.around(0.001, 0.03, 0.03, 0.0)
    sol = solve_dp(model, g, lam)
    st = evaluate(model, g, sol.policy)
    dp = st.cost_bp / 1e4 + lam * st.te**2
    assert dp == pytest.approx(sol.gain * model.steps_per_year, rel=1e-4)
    D = g.deviations().reshape(-1, 3)
    assert np.abs(D[sol.policy.ravel()].sum(axis=1)).max() < 1e-15
    centre = np.ravel_multi_index((g.n1 // 2, g.n2 // 2, 0), g.shape)
    for b in (0.004, 0.008, 0.012):
        pol = np.where(np.abs(D).max(axis=1) > b, centre, np.arange(D.shape[0])).reshape(g.shape)
        band = evaluate(model, g, pol)
        assert dp < band.cost_bp / 1e4 + lam * band.te**2


def test_swap_and_tracking_error_bands_by_hand() -> None:
    """Box to edge, self-financing: x = (0.03, -0.01, -0.02), b = 0.015: the clip gives
    (0.015, -0.01, -0.015), sum -0.01; ETH, the only asset inside its band, takes the +0.01:
    (0.015, 0, -0.015). TE trigger: Sigma = I, x = (0.03, -0.04, 0.01), TE = sqrt(0.0026) =
    0.05099; b = 0.02 scales x by 0.02 / 0.05099 (to the edge) or sends it to 0 (to target);
    b = 0.06 leaves it."""
    x = np.array([[0.03, -0.01, -0.02]])
    w = np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(band_to_edge_sf(np.full(3, 0.015), w)(x, 0), [[0.015, 0.0, -0.015]])
    inside = np.array([[0.01, -0.004, -0.006]])
    np.testing.assert_allclose(band_to_edge_sf(np.full(3, 0.015), w)(inside, 0), inside)
    y = np.array([[0.03, -0.04, 0.01]])
    eye = np.eye(3)
    te = np.sqrt(0.0026)
    np.testing.assert_allclose(te_band_to_edge(eye, 0.02)(y, 0), y * 0.02 / te)
    np.testing.assert_allclose(te_band_to_target(eye, 0.02)(y, 0), np.zeros((1, 3)))
    np.testing.assert_allclose(te_band_to_edge(eye, 0.06)(y, 0), y)
    np.testing.assert_allclose(te_band_to_target(eye, 0.06)(y, 0), y)
