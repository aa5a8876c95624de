"""The cost-to-go term's shape: a quadratic cost of being away from target after the trade.

The single-period problem trades each asset to the edge of its no-trade region, a region whose
shape is set by Sigma alone: minimise y' Sigma y + gamma_trade c'|y - x| over the post-trade
deviation y = e - w* gives {y : |2 (Sigma y)_i| <= gamma_trade c_i}. But a deviation persists and
is paid for later, in risk or in trades, and how long it persists depends on the direction: the
drift of weights moves a long/short spread between correlated assets as much as any other
direction while Sigma barely prices it. Markowitz and van Dijk (2003) and Kritzman, Myrgren and
Page ("Optimal rebalancing: a scalable solution", 2009) price the future by a quadratic cost of y
added to the one-period objective. fbr's term (optimizer.terms.CostToGo) is

    kappa y' Q_p y,      Q_p = Sigma^p trace(Sigma) / trace(Sigma^p),

a one-parameter family of shapes between Sigma (p = 1: the term only rescales gamma_trade) and the
identity (p = 0). Its p and kappa are fitted by simulation: ``benchmarks/optimality.py`` simulates
the policies on the book's Gaussian model and compares them with the dynamic-programming optimum.
On book 1's shape (BTC/ETH/SOL 50/30/20) a quadratic fitted to the optimum's own value function
has eigenvalues spread like Sigma^(1/2) (ratio 4.4 against Sigma's 19), which is why p < 1 helps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _clipped_eigh(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (clipped to >= 0) and eigenvectors of the symmetric part of ``sigma``."""
    s = np.asarray(sigma, dtype=float)
    lam, vec = np.linalg.eigh(0.5 * (s + s.T))
    return np.clip(lam, 0.0, None), vec


def _shape_scale(lam: np.ndarray, p: float) -> float:
    """trace(Sigma) / trace(Sigma^p) from Sigma's clipped eigenvalues (0 when Sigma = 0)."""
    tr_p = float(np.sum(lam**p))
    return float(np.sum(lam)) / tr_p if tr_p > 0 else 0.0


def power_shape(sigma: np.ndarray, p: float) -> np.ndarray:
    """Q_p = Sigma^p trace(Sigma) / trace(Sigma^p) (N x N, symmetric PSD), Sigma (annual covariance,
    weight units) to the power p in [0, 1] by eigendecomposition, negative eigenvalues clipped to 0
    (0^0 = 1: p = 0 gives trace(Sigma) / N x I; traces are the clipped Sigma's).

    The normalisation gives Q_p Sigma's trace, so kappa y' Q_p y is a dimensionless multiple kappa of
    a tracking-error-like variance of the deviation y (annualised, weight units); p = 1 gives
    Q_1 = Sigma. With Sigma = V diag(lam) V', Q_p = V diag(lam^p) V' sum(lam) / sum(lam^p): the
    eigenvalues are compressed towards their mean as p falls, so Q_p penalises deviations in
    low-variance directions (e.g. a long/short spread between highly correlated assets) relatively
    more than Sigma does, and those in the dominant (common-factor) direction relatively less.
    """
    lam, vec = _clipped_eigh(sigma)
    d = lam**p * _shape_scale(lam, p)
    return np.asarray((vec * d) @ vec.T)


def power_shape_root(sigma: np.ndarray, p: float, kappa: float = 1.0) -> np.ndarray:
    """R = sqrt(kappa) Q_p^{1/2} (N x N, the symmetric square root, :func:`power_shape`), so that
    ||R y||^2 = kappa y' Q_p y; one eigendecomposition of Sigma."""
    lam, vec = _clipped_eigh(sigma)
    d = np.sqrt(kappa * _shape_scale(lam, p) * lam**p)
    return np.asarray((vec * d) @ vec.T)


# ------------------------------------------------------------------------------------------------
# Fitting p by simulation
# ------------------------------------------------------------------------------------------------


def lasso_step(Q: np.ndarray, cost: np.ndarray | float, x: np.ndarray, *, sweeps: int = 200,
               tol: float = 1e-14) -> np.ndarray:
    """argmin_y y' Q y + sum_i cost_i |y_i - x_i| for each row of ``x`` (P x N), Q positive
    definite, by coordinate descent: coordinate i with the others fixed minimises
    Q_ii y_i^2 + 2 y_i m_i + cost_i |y_i - x_i| (m_i = sum_{j != i} Q_ij y_j), whose answer is
    y_i = x_i + soft(-m_i / Q_ii - x_i, cost_i / (2 Q_ii)), soft(a, k) = sign(a) max(|a| - k, 0).
    Exact at convergence; this is the single-period objective's post-trade deviation."""
    y = np.array(x, dtype=float, copy=True)
    c = np.broadcast_to(np.asarray(cost, dtype=float), (Q.shape[0],))
    diag = np.diag(Q)
    for _ in range(sweeps):
        change = 0.0
        for i in range(Q.shape[0]):
            m = y @ Q[i] - diag[i] * y[:, i]
            g = -m / diag[i] - x[:, i]
            new = x[:, i] + np.sign(g) * np.maximum(np.abs(g) - c[i] / (2.0 * diag[i]), 0.0)
            change = max(change, float(np.abs(new - y[:, i]).max(initial=0.0)))
            y[:, i] = new
        if change < tol:
            break
    return y


@dataclass(frozen=True)
class PowerFit:
    """The fitted shape: ``power`` p, and per candidate p the simulated trading cost (fraction of
    the base a year) at the target TE."""

    power: float
    cost_at_te: dict[float, float]


def simulate_shape(sigma: np.ndarray, weights: np.ndarray, cost: np.ndarray, Q: np.ndarray,
                   step_years: float, *, paths: int, steps: int, burn: int,
                   seed: int) -> tuple[float, float]:
    """(TE annual, trading cost a year) of the policy y = argmin y'Qy + cost'|y - x| on seeded
    Gaussian paths: x_{k+1} = y_k + A r_k, A = diag(w) - w w', r ~ N(0, sigma step_years)."""
    rng = np.random.default_rng(seed)
    n = len(weights)
    L = np.linalg.cholesky(sigma * step_years + 1e-18 * np.eye(n))
    A = np.diag(weights) - np.outer(weights, weights)
    x = np.zeros((paths, n))
    traded = risk = 0.0
    for k in range(steps):
        y = lasso_step(Q, cost, x)
        if k >= burn:
            traded += float((np.abs(y - x) @ cost).sum())
            risk += float(np.einsum("pi,ij,pj->", y, sigma, y))
        x = y + (rng.standard_normal((paths, n)) @ L.T) @ A.T
    count = (steps - burn) * paths
    return float(np.sqrt(risk / count)), traded / count / step_years


def fit_power(sigma: np.ndarray, weights: np.ndarray, cost: np.ndarray, step_years: float,
              te: float, *, powers: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
              paths: int = 32, steps: int = 2000, seed: int = 0) -> PowerFit:
    """The p whose shape Q_p trades least at tracking error ``te`` (annual) on simulated paths of
    the book's own model (covariance ``sigma``, target ``weights``, per-unit ``cost`` per asset,
    rebalancing every ``step_years``). For each p the scale theta of theta Q_p is bracketed by
    bisection on log10 theta so that the simulated TE straddles ``te`` (TE falls as theta grows),
    and the cost at ``te`` is interpolated log-log between the two bracketing runs; every run uses
    the same seeded paths (common random numbers), so the candidates differ by their shape only."""
    sigma = np.asarray(sigma, dtype=float)
    w = np.asarray(weights, dtype=float)
    c = np.asarray(cost, dtype=float)
    burn = min(300, steps // 5)
    out: dict[float, float] = {}
    for p in powers:
        shape = power_shape(sigma, p)
        lo, hi = (-6.0, math.nan, math.nan), (6.0, math.nan, math.nan)  # (log10 theta, TE, cost)
        for _ in range(10):
            mid = 0.5 * (lo[0] + hi[0])
            got, spent = simulate_shape(sigma, w, c, 10.0**mid * shape, step_years, paths=paths,
                                        steps=steps, burn=burn, seed=seed)
            if got > te:
                lo = (mid, got, spent)
            else:
                hi = (mid, got, spent)
        out[p] = _log_interp(te, lo[1:], hi[1:])
    best = min(out, key=lambda q: out[q])
    return PowerFit(power=best, cost_at_te=out)


def _log_interp(te: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    """Cost at ``te`` between (TE, cost) points a (TE above ``te``) and b (below), log-log; the
    nearer point when one side is missing."""
    if math.isnan(a[0]) or math.isnan(b[0]) or a[0] == b[0] or min(a[1], b[1]) <= 0:
        return b[1] if math.isnan(a[0]) else a[1]
    f = math.log(te / b[0]) / math.log(a[0] / b[0])
    return math.exp((1 - f) * math.log(b[1]) + f * math.log(a[1]))
