"""Metrics of a backtest (``scenarios.backtest.BacktestResult``): plain functions, frozen results.

Conventions: a 365-day year; per-step series are annualised with the number of steps per year
implied by the median step length; "per year" cost rates divide by the span in years
(last - first timestamp).

Tracking error compares the book with the ideal frictionless portfolio rebalanced to the targets
continuously: its return over step t is ``w*' r_t`` (r_t the spot simple returns). The book's
return over step t is its PnL per unit of target base, ``(nav_t - nav_{t-1}) / base_{t-1}``
(base: the invested NAV or the NAV, as the book says), so fees, funding and the reserve's
zero return count against it. ``exposure_tracking_error`` is the frictionless part only:
``(e_{t-1} - w*)' r_t`` with e the effective weights held over the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scenarios.backtest import BacktestResult, median_step_days

DAYS_PER_YEAR = 365.0


@dataclass(frozen=True)
class BacktestMetrics:
    """Summary of one backtest. Rates are fractions unless the name says bps.

    tracking_error, exposure_tracking_error, volatility: annualised; total_return over the span,
    annual_return its compounded annual rate; max_drawdown a positive fraction of the peak NAV;
    fees_bps (spot + futures fees and slippage), slippage_bps, funding_bps (paid; negative:
    received) and penalty_bps: bps of the mean NAV per year; turnover: gross traded notional
    over the mean NAV, per year; peak_margin_ratio: max maintenance / collateral seen;
    liquidations: number of liquidation events (steps); years: the span.
    """

    tracking_error: float
    exposure_tracking_error: float
    total_return: float
    annual_return: float
    volatility: float
    max_drawdown: float
    fees_bps: float
    slippage_bps: float
    funding_bps: float
    penalty_bps: float
    turnover: float
    peak_margin_ratio: float
    liquidations: int
    years: float


def steps_per_year(index: pd.DatetimeIndex) -> float:
    """Steps per 365-day year from the median step length (nan with fewer than two steps)."""
    if len(index) < 2:
        return math.nan
    return DAYS_PER_YEAR / median_step_days(index)


def span_years(index: pd.DatetimeIndex) -> float:
    """Last minus first timestamp, in 365-day years."""
    if len(index) < 2:
        return 0.0
    return float((index[-1] - index[0]) / pd.Timedelta(days=DAYS_PER_YEAR))


def ideal_returns(result: BacktestResult) -> pd.Series:
    """Per-step return of the ideal continuously rebalanced target portfolio, w*' r_t."""
    r = result.spot_returns[list(result.targets.index)].iloc[1:]
    return pd.Series(r.to_numpy(dtype=float) @ result.targets.to_numpy(dtype=float), index=r.index)


def book_returns(result: BacktestResult) -> pd.Series:
    """Per-step book PnL per unit of the previous step's target base."""
    s = result.steps
    return (s["nav"].diff() / s["base"].shift(1)).iloc[1:]


def tracking_error(result: BacktestResult) -> float:
    """Annualised std of book return minus ideal return (sample std, ddof=1)."""
    diff = book_returns(result) - ideal_returns(result)
    if len(diff) < 2:
        return math.nan
    return float(diff.std(ddof=1) * math.sqrt(steps_per_year(pd.DatetimeIndex(result.steps.index))))


def exposure_tracking_error(result: BacktestResult) -> float:
    """Annualised std of (e_{t-1} - w*)' r_t: the drift of effective weights, frictionless."""
    gap = (result.weights - result.targets).shift(1).iloc[1:]
    r = result.spot_returns[list(result.targets.index)].iloc[1:]
    active = pd.Series((gap.to_numpy(dtype=float) * r.to_numpy(dtype=float)).sum(axis=1), index=r.index)
    if len(active) < 2:
        return math.nan
    return float(active.std(ddof=1) * math.sqrt(steps_per_year(pd.DatetimeIndex(result.steps.index))))


def max_drawdown(nav: pd.Series) -> float:
    """Largest fall from a running peak, as a positive fraction of that peak."""
    values = nav.to_numpy(dtype=float)
    if len(values) == 0:
        return 0.0
    peak = np.maximum.accumulate(values)
    return float(np.max(1.0 - values / peak))


def compute_metrics(result: BacktestResult) -> BacktestMetrics:
    """Every metric of ``result`` (see :class:`BacktestMetrics`)."""
    s = result.steps
    index = pd.DatetimeIndex(s.index)
    nav = s["nav"]
    years = span_years(index)
    mean_nav = float(nav.mean())

    def per_year_bps(total: float) -> float:
        return total / mean_nav / years * 1e4 if years > 0 and mean_nav != 0 else math.nan

    total_return = float(nav.iloc[-1] / nav.iloc[0] - 1.0)
    growth = 1.0 + total_return
    annual = growth ** (1.0 / years) - 1.0 if years > 0 and growth > 0 else math.nan
    nav_ret = nav.pct_change().iloc[1:]
    vol = (float(nav_ret.std(ddof=1) * math.sqrt(steps_per_year(index)))
           if len(nav_ret) > 1 else math.nan)
    fees = float(s["fee_spot"].sum() + s["fee_futures"].sum() + s["slippage_futures"].sum())
    traded = float(s["traded_spot"].sum() + s["traded_futures"].sum())
    ratios = np.concatenate([s["margin_ratio"].to_numpy(dtype=float),
                             s["margin_ratio_end"].to_numpy(dtype=float)])
    return BacktestMetrics(
        tracking_error=tracking_error(result),
        exposure_tracking_error=exposure_tracking_error(result),
        total_return=total_return,
        annual_return=annual,
        volatility=vol,
        max_drawdown=max_drawdown(nav),
        fees_bps=per_year_bps(fees),
        slippage_bps=per_year_bps(float(s["slippage_futures"].sum())),
        funding_bps=per_year_bps(float(s["funding"].sum())),
        penalty_bps=per_year_bps(float(s["liquidation_penalty"].sum())),
        turnover=traded / mean_nav / years if years > 0 and mean_nav != 0 else math.nan,
        peak_margin_ratio=float(np.nanmax(ratios)) if len(ratios) else 0.0,
        liquidations=int(s["liquidated"].sum()),
        years=years,
    )
