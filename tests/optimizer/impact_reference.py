"""The hand solution of a two-step plan under the 3/2-power impact cost (issue 12's planner test):
one asset ``gap`` over target, closed by a hedge y (weights, y >= 0) through futures or spot sales.

With c = k sigma_daily sqrt(V / ADV) the plan minimises
    f(y1, y2) = sigma^2 [(gap - y1)^2 + (gap - y2)^2] + c [y1^1.5 + (y2 - y1)^1.5]
(y_h the hedge at the end of step h), the single-period problem g(y) = sigma^2 (gap - y)^2 + c y^1.5.
Solved by scipy on the first-order conditions, independent of cvxpy and fbr.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq, minimize, root

from models.risk import DAYS_PER_YEAR


@dataclass(frozen=True)
class ImpactCase:
    """sigma (annual vol), k (impact coefficient), gap (weights), V (USD), ADV (USD/day)."""

    sigma: float
    k: float
    gap: float
    V: float
    adv: float

    @property
    def c(self) -> float:
        """k sigma_daily sqrt(V / ADV): the impact of a trade of t weights is c |t|^1.5 of V."""
        return self.k * self.sigma / math.sqrt(DAYS_PER_YEAR) * math.sqrt(self.V / self.adv)


def _sqrt(t: float) -> float:
    """sign(t) sqrt(|t|): d/dt |t|^1.5 = 1.5 sign(t) sqrt(|t|)."""
    return math.copysign(math.sqrt(abs(t)), t)


def two_step_reference(case: ImpactCase) -> tuple[np.ndarray, float]:
    """((y1, y2), y_single): the plan's hedge after each step and the single-period hedge."""
    s2, c, gap = case.sigma**2, case.c, case.gap

    def grad(y: np.ndarray) -> np.ndarray:
        y1, t2 = float(y[0]), float(y[1]) - float(y[0])
        return np.array([-2 * s2 * (gap - y1) + 1.5 * c * (_sqrt(y1) - _sqrt(t2)),
                         -2 * s2 * (gap - y1 - t2) + 1.5 * c * _sqrt(t2)])

    def f(y: np.ndarray) -> float:
        y1, y2 = float(y[0]), float(y[1])
        # float ** float is typed Any (a negative base gives a complex): the bases here are >= 0
        value: float = s2 * ((gap - y1) ** 2 + (gap - y2) ** 2) + c * (abs(y1) ** 1.5
                                                                       + abs(y2 - y1) ** 1.5)
        return value

    start = minimize(f, np.array([0.5 * gap, 0.9 * gap]), method="Nelder-Mead",
                     options={"xatol": 1e-12, "fatol": 1e-16, "maxiter": 20_000}).x
    sol = root(grad, start, method="hybr", tol=1e-14)
    assert float(np.max(np.abs(grad(sol.x)))) < 1e-13  # first-order conditions hold
    y_single = brentq(lambda y: -2 * s2 * (gap - y) + 1.5 * c * math.sqrt(y), 1e-12, gap,
                      xtol=1e-16)
    return np.asarray(sol.x), float(y_single)
