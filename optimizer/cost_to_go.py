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
