"""Policies simulated on common Gaussian paths of the optimality benchmark's model.

Every policy maps the pre-trade deviations x (P paths x 3, fractions of the base) at step k to the
post-trade deviations y; the simulator then applies the step's drift, d_{k+1} = y + A r_k (model
(1) of :mod:`optimality_dp`), on the same seeded returns for every policy. Figures: trading cost
c E|y - x|_1 per year (bp of the base) and TE = sqrt(E[y' Sigma y]) (annual), after a burn-in.

Policies (each a plain function of the state, all parameters explicit):
- band to target: when max_i |x_i| > b, y = 0 (every asset back to target), else y = x;
- band to edge: y_i = clip(x_i, -b_i, b_i) (only assets outside their band trade, to its edge);
  uniform b_i = b, or vol-scaled b_i = b sigma_i / mean(sigma);
- band to edge, self-financing (the spot model): the balance of the clipped assets spread over
  the others by target weight;
- tracking-error trigger: when sqrt(x' Sigma x) > b, y = 0 (to target) or y = x b / sqrt(x' Sigma x)
  (to the edge of the TE ellipsoid);
- calendar: every ``period`` steps y = 0;
- single period (fbr's objective restricted to this model): y = argmin y' Q y + kappa |y - x|_1
  with Q = Sigma (the TE^2 term) and kappa = gamma_trade c, by exact coordinate descent
  (optimizer.cost_to_go.lasso_step); checked against fbr's own optimiser in :mod:`optimality`;
- the DP policy: the grid node nearest to x, traded by the grid policy's move.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from optimality_dp import DPSolution, Model

from optimizer.cost_to_go import lasso_step

PolicyFn = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class SimStats:
    """Long-run figures of a simulated policy: trading cost (bp/yr of the base), TE (annual, a
    fraction), trades per year (steps with a trade, per path) and the standard error of the cost
    (bp/yr, from the spread across paths)."""

    cost_bp: float
    te: float
    trades_per_year: float
    cost_se_bp: float


def simulate(model: Model, policy: PolicyFn, *, paths: int = 256, steps: int = 12000,
             burn: int = 500, seed: int = 12) -> SimStats:
    """Run ``policy`` on ``paths`` seeded Gaussian paths of ``steps`` steps (the first ``burn``
    not counted). The same seed gives the same returns to every policy."""
    rng = np.random.default_rng(seed)
    L = np.linalg.cholesky(model.sigma / model.steps_per_year)
    A = model.drift_map
    S = model.sigma
    d = np.zeros((paths, 3))
    traded = np.zeros(paths)
    risk = np.zeros(paths)
    trades = np.zeros(paths)
    for k in range(steps):
        y = policy(d, k)
        if k >= burn:
            t = np.abs(y - d).sum(axis=1)
            traded += t
            trades += t > 1e-15
            risk += np.einsum("pi,ij,pj->p", y, S, y)
        r = rng.standard_normal((paths, 3)) @ L.T
        d = y + r @ A.T
    n = steps - burn
    per_path = traded / n * model.cost * model.steps_per_year * 1e4
    return SimStats(cost_bp=float(per_path.mean()), te=float(np.sqrt(risk.sum() / (n * paths))),
                    trades_per_year=float(trades.mean() / n * model.steps_per_year),
                    cost_se_bp=float(per_path.std(ddof=1) / np.sqrt(paths)))


def band_to_target(b: float) -> PolicyFn:
    """Every asset back to target when the largest |deviation| exceeds b."""
    def pol(x: np.ndarray, k: int) -> np.ndarray:
        out = (np.abs(x).max(axis=1) > b)[:, None]
        return np.where(out, 0.0, x)
    return pol


def band_to_edge(bands: np.ndarray) -> PolicyFn:
    """Each asset outside its band traded to the band's edge."""
    def pol(x: np.ndarray, k: int) -> np.ndarray:
        return np.clip(x, -bands, bands)
    return pol


def band_to_edge_sf(bands: np.ndarray, weights: np.ndarray) -> PolicyFn:
    """Band to edge for a self-financing book (trades sum to zero): each asset outside its band
    traded to the edge, the balance spread over the assets inside their bands in proportion to
    their target weights (repeated while that pushes one out)."""
    w = np.asarray(weights, dtype=float)

    def pol(x: np.ndarray, k: int) -> np.ndarray:
        y = x.copy()
        for _ in range(len(w) + 1):
            y = np.clip(y, -bands, bands)
            rest = y.sum(axis=1, keepdims=True)
            if float(np.abs(rest).max(initial=0.0)) <= 1e-15:
                break
            share = np.where(np.abs(y) < bands - 1e-15, w, 0.0)
            total = share.sum(axis=1, keepdims=True)
            y = y - rest * share / np.where(total > 0, total, 1.0)
        return y
    return pol


def te_band_to_target(sigma: np.ndarray, b: float) -> PolicyFn:
    """A tracking-error trigger: every asset back to target when sqrt(x' Sigma x) > b (annual)."""
    def pol(x: np.ndarray, k: int) -> np.ndarray:
        te = np.sqrt(np.einsum("pi,ij,pj->p", x, sigma, x))
        return np.where((te > b)[:, None], 0.0, x)
    return pol


def te_band_to_edge(sigma: np.ndarray, b: float) -> PolicyFn:
    """A tracking-error trigger traded to its edge: x scaled by b / sqrt(x' Sigma x) when that is
    above b (a trade along -x, so self-financing when x sums to zero)."""
    def pol(x: np.ndarray, k: int) -> np.ndarray:
        te = np.sqrt(np.einsum("pi,ij,pj->p", x, sigma, x))
        return x * np.where(te > b, b / np.maximum(te, 1e-300), 1.0)[:, None]
    return pol


def vol_bands(model: Model, b: float) -> np.ndarray:
    """b_i = b sigma_i / mean(sigma): wider bands for more volatile assets."""
    v = np.asarray(model.vols)
    return b * v / v.mean()


def calendar(period: int) -> PolicyFn:
    """Back to target every ``period`` steps."""
    def pol(x: np.ndarray, k: int) -> np.ndarray:
        return np.zeros_like(x) if k % period == 0 else x
    return pol


def single_period(Q: np.ndarray, kappa: float) -> PolicyFn:
    """The single-period objective's answer y = argmin y'Qy + kappa |y - x|_1."""
    def pol(x: np.ndarray, k: int) -> np.ndarray:
        return lasso_step(Q, kappa, x)
    return pol


def dp_policy(sol: DPSolution) -> PolicyFn:
    """The grid policy applied to continuous states: the nearest node's move (off-grid states are
    clamped to the grid's edge before the look-up)."""
    g = sol.grid
    D = g.deviations().reshape(-1, 3)
    move = D[sol.policy.ravel()] - D
    c = np.array([g.n1 // 2, g.n2 // 2, g.ns // 2])
    hi = np.array(g.shape) - 1

    def pol(x: np.ndarray, k: int) -> np.ndarray:
        q = np.stack([x[:, 0], x[:, 1], x.sum(axis=1)], axis=1)
        idx = np.clip(np.rint(q / g.eta).astype(int) + c, 0, hi)
        flat = np.ravel_multi_index((idx[:, 0], idx[:, 1], idx[:, 2]), g.shape)
        return x + move[flat]
    return pol


def at_te(points: list[tuple[float, float]], te: float) -> float | None:
    """Cost at TE ``te`` on a family's frontier, interpolated log-log between the two nearest
    points around it (None when ``te`` is outside the family's range)."""
    pts = sorted(points)
    for (t0, c0), (t1, c1) in itertools.pairwise(pts):
        if t0 <= te <= t1 and c0 > 0 and c1 > 0:
            f = (np.log(te) - np.log(t0)) / (np.log(t1) - np.log(t0)) if t1 > t0 else 0.0
            return float(np.exp(np.log(c0) + f * (np.log(c1) - np.log(c0))))
    return None


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto-efficient points (lower TE or lower cost than every other), sorted by TE."""
    out: list[tuple[float, float]] = []
    for te, cost in sorted(points):
        if not out or cost < out[-1][1]:
            out.append((te, cost))
    return out
