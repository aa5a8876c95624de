"""A risk model re-estimated from trailing returns only (no look-ahead), for replays over a path.

:class:`TrailingRisk` is a callable ``risk(t) -> RiskModel``: until ``MIN_RISK_ROWS`` returns with
timestamps <= t exist it returns the fallback model (e.g. a book's); from then on it returns
:func:`models.risk.estimate_risk` on the last ``lookback_days`` of returns up to t, refreshed every
``RISK_REESTIMATE_DAYS`` days of path time, with the estimator's settings in days of path time:
``halflife_days`` (EWMA) is converted to periods (bars) of the path's step, as ``lookback_days``
is to rows, so a 4 h path and a daily one weigh the same span of time. Returns are simple returns
of the spot closes (USD) over one step of the path (its median spacing): a return across a missing
bar spans two steps or more and is left out, not counted as one step's; vols are annualised at the
path's own step (365 days a year).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from models.risk import RiskModel, estimate_risk, returns_from_prices

if TYPE_CHECKING:  # pandas is imported where it runs: off a plain solve's start-up path
    import pandas as pd

#: The re-estimated risk model is refreshed this often (days of path time).
RISK_REESTIMATE_DAYS = 30
#: Fewest trailing returns a re-estimate needs; before that the fallback model is used.
MIN_RISK_ROWS = 30
#: EWMA half-life (days of path time) when none is given: a book's [risk] halflife default.
DEFAULT_HALFLIFE_DAYS = 30.0


@dataclasses.dataclass(frozen=True)
class RiskEstimator:
    """The settings of an estimated risk model (:func:`models.risk.estimate_risk`'s), kept with
    the book so a trailing re-estimate uses the same: ``method``, the window ``lookback_days``
    (days of returns), the EWMA half-life ``halflife_days`` (days; a :class:`TrailingRisk`
    converts both to its path's step) and PCA's ``n_factors`` (None: the default)."""

    method: str
    lookback_days: int
    halflife_days: float = DEFAULT_HALFLIFE_DAYS
    n_factors: int | None = None


def one_step_returns(prices: pd.DataFrame, step: pd.Timedelta | None = None) -> pd.DataFrame:
    """Simple returns p_t / p_{t-1} - 1 of ``prices`` over one step (``step``, else the median
    spacing of its index): a row after a missing bar (spacing above the step) is left out, as its
    return spans two steps or more."""
    import pandas as pd
    returns = returns_from_prices(prices)
    spans = pd.Series(pd.DatetimeIndex(prices.index)).diff().iloc[1:].reset_index(drop=True)
    return pd.DataFrame(returns.loc[(spans <= (spans.median() if step is None else step)).to_numpy()])


class TrailingRisk:
    """risk(t): the fallback model until ``MIN_RISK_ROWS`` trailing returns exist, then
    models.risk.estimate_risk on the spot returns with timestamps <= t (no look-ahead) over the
    last ``lookback_days``, refreshed every ``RISK_REESTIMATE_DAYS`` days, with ``method``,
    ``n_factors`` (PCA's K; None: estimate_risk's default) and the EWMA half-life
    ``halflife_days`` (days; ``halflife`` holds it in periods of the path's step). The basis
    covariance is ``basis(t)`` at each refresh when given (a trailing estimate of its own, the
    contracts' M x M), else the fallback's (if any)."""

    def __init__(self, fallback: RiskModel, spot: pd.DataFrame, symbols: Sequence[str],
                 lookback_days: int, method: str = "ledoit_wolf",
                 basis: Callable[[pd.Timestamp], np.ndarray] | None = None, *,
                 halflife_days: float = DEFAULT_HALFLIFE_DAYS, n_factors: int | None = None) -> None:
        import pandas as pd
        self.fallback = fallback
        self.basis = basis
        self.symbols = list(symbols)
        self.returns = one_step_returns(spot[self.symbols].astype(float))
        idx = pd.DatetimeIndex(spot.index)
        step_days = (float(pd.Series(idx).diff().dropna().median() / pd.Timedelta(days=1))
                     if len(idx) > 1 else 1.0)
        self.periods_per_year = 365.0 / step_days if step_days > 0 else 365.0
        self.rows = max(2, round(lookback_days / step_days)) if step_days > 0 else lookback_days
        self.method = method
        self.halflife = halflife_days / step_days if step_days > 0 else halflife_days
        self.n_factors = n_factors
        self.current: RiskModel = fallback
        self.refreshed: pd.Timestamp | None = None
        self.estimates = 0

    def __call__(self, t: pd.Timestamp) -> RiskModel:
        """The model at ``t`` (estimated from returns with timestamps <= t only)."""
        import pandas as pd
        if self.refreshed is not None and t - self.refreshed < pd.Timedelta(days=RISK_REESTIMATE_DAYS):
            return self.current
        past = self.returns.loc[self.returns.index <= t].tail(self.rows)
        if len(past) < MIN_RISK_ROWS:
            return self.fallback
        est = estimate_risk(past, self.method, periods_per_year=self.periods_per_year,
                            halflife=self.halflife, n_factors=self.n_factors)
        basis, how = ((self.fallback.basis_cov, self.fallback.basis_method) if self.basis is None
                      else (self.basis(t), "estimated"))
        self.current = dataclasses.replace(est.subset(self.symbols), basis_cov=basis, basis_method=how)
        self.refreshed = t
        self.estimates += 1
        return self.current
