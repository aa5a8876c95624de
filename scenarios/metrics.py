"""Metrics of a backtest (``scenarios.backtest_result.BacktestResult``): plain functions, frozen results.

Conventions: a 365-day year; per-step series are annualised with the number of steps per year
implied by the median step length; "per year" cost rates divide by the span in years
(last - first timestamp).

Tracking error compares the book with the ideal frictionless portfolio rebalanced to the targets
continuously: its return over step t is ``w*' r_t`` (r_t the spot simple returns). The book's
return over step t is its PnL per unit of target base, ``(nav_t - nav_{t-1}) / base_{t-1}``
(base: the invested NAV or the NAV, as the book says), so fees, funding and the reserve's
zero return count against it. ``exposure_tracking_error`` is the frictionless part only:
``(e_{t-1} - w*)' r_t`` with e the effective weights held over the step.

Margin utilisation is maintenance / collateral (``margin_ratio``; 1 = liquidation). A step's
utilisation is the larger of the ratio at the margin check and after the step's trades and sweeps;
a **margin call** is a step whose utilisation exceeds ``MARGIN_CALL_THRESHOLD`` (0.8: an exchange
warns well before liquidation, and 80 % leaves one typical bad day of room).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scenarios.backtest_result import BacktestResult
from scenarios.replay_inputs import median_step_days

DAYS_PER_YEAR = 365.0
#: Margin utilisation (maintenance / collateral) above which a step counts as a margin call.
MARGIN_CALL_THRESHOLD = 0.8
#: Default stablecoin yield (fraction per year) forgone on the wallet reserve.
STABLECOIN_YIELD = 0.04


@dataclass(frozen=True)
class BacktestMetrics:
    """Summary of one backtest. Rates are fractions unless the name says bps or ms.

    tracking_error, exposure_tracking_error, volatility: annualised; total_return over the span,
    annual_return its compounded annual rate; active_return: mean per-step (book - ideal) return
    times steps per year (the mean of the series whose std is the tracking error);
    max_drawdown a positive fraction of the peak NAV.

    Costs, in bps of the mean NAV per year (total / mean NAV / years x 1e4):
    exchange_fee_bps (spot + futures exchange fees of the policy's trades), slippage_bps (futures
    half spread + impact), fees_bps = exchange_fee_bps + slippage_bps, funding_bps (paid;
    negative: received), penalty_bps (liquidation penalties the holder paid: per step
    max(liquidation_penalty - insurance_fund, 0), the insurance fund absorbing a deficit's penalty
    first; what it absorbs beyond offsets a trading loss, not a cost), sweep_cost_bps (spot fees
    of collateral sweeps),
    tax_bps (spot and futures tax paid, ``steps.tax``; 0 when the replay charged no taxes;
    negative: a net credit), total_cost_bps (the sum of fees, funding, penalty, sweep costs and
    tax);
    reserve_opportunity_cost_bps: the yield forgone on the wallet,
    sum_t W_{t-1} y dt_t / (mean NAV x years) x 1e4 (W signed: a debt counts negative; y the
    stablecoin yield per year, dt in years). Not a cash flow: not in total_cost_bps.

    Turnover (fraction of the mean NAV per year): spot_turnover (policy spot trades plus sweeps,
    gross), futures_turnover (gross futures notional traded), turnover = their sum.
    Margin: peak_margin_ratio and margin_ratio_p99 (max and 99th percentile, linear
    interpolation, of the per-step utilisation; inf when the collateral was gone with positions
    open), margin_calls (steps above ``MARGIN_CALL_THRESHOLD``, those included), liquidations
    (steps with a liquidation).
    Solver (steps whose policy returned a solution): solves, solve_time_median_ms,
    solve_time_p99_ms (NaN without solves), solver_fallbacks (total failed solver attempts),
    unsolved_steps (steps where the policy had no answer to trade, no solver answering or an
    infeasible one, and the book was held:
    ``BacktestResult.unsolved``).
    years: the span.
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
    active_return: float = math.nan
    exchange_fee_bps: float = math.nan
    sweep_cost_bps: float = math.nan
    total_cost_bps: float = math.nan
    reserve_opportunity_cost_bps: float = math.nan
    spot_turnover: float = math.nan
    futures_turnover: float = math.nan
    margin_ratio_p99: float = math.nan
    margin_calls: int = 0
    solves: int = 0
    solve_time_median_ms: float = math.nan
    solve_time_p99_ms: float = math.nan
    solver_fallbacks: int = 0
    tax_bps: float = 0.0
    unsolved_steps: int = 0


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


def opening_nav(result: BacktestResult) -> float:
    """The NAV before the first step's trades (USD): ``result.nav_open``, or the first recorded
    NAV (after those trades) for a result that does not carry it."""
    return result.nav_open if math.isfinite(result.nav_open) else float(result.steps["nav"].iloc[0])


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


def active_return(result: BacktestResult) -> float:
    """Annualised mean of book minus ideal per-step returns: mean(b_t - i_t) x steps per year."""
    diff = book_returns(result) - ideal_returns(result)
    if len(diff) < 1:
        return math.nan
    return float(diff.mean() * steps_per_year(pd.DatetimeIndex(result.steps.index)))


def margin_utilisation(result: BacktestResult) -> pd.Series:
    """Per step max(margin_ratio at the check, margin_ratio_end after trades and sweeps)."""
    s = result.steps
    return pd.Series(np.fmax(s["margin_ratio"].to_numpy(dtype=float),
                             s["margin_ratio_end"].to_numpy(dtype=float)), index=s.index)


def reserve_wallet_years(result: BacktestResult) -> float:
    """Integral of the wallet balance over time, sum_t W_{t-1} dt_t (USD x years)."""
    s = result.steps
    if len(s.index) < 2:
        return 0.0
    dt = np.diff(pd.DatetimeIndex(s.index).as_unit("ns").asi8) / (DAYS_PER_YEAR * 86400e9)
    return float(s["wallet"].to_numpy(dtype=float)[:-1] @ dt)


def _column(s: pd.DataFrame, name: str) -> pd.Series:
    """A step column, zeros when an older result lacks it."""
    return s[name] if name in s.columns else pd.Series(0.0, index=s.index)


def penalty_paid(steps: pd.DataFrame) -> pd.Series:
    """The liquidation penalty the holder paid per step (USD): max(liquidation_penalty -
    insurance_fund, 0), the insurance fund absorbing a deficit's penalty first (what it absorbs
    beyond the penalty offsets a trading loss, not a cost)."""
    return (steps["liquidation_penalty"].astype(float)
            - _column(steps, "insurance_fund").astype(float)).clip(lower=0.0)


def _return_metrics(nav: pd.Series, start: float, index: pd.DatetimeIndex,
                    years: float) -> tuple[float, float, float]:
    """(total return over the span, nav_end / start - 1 with ``start`` the NAV before the first
    step's trades, its compounded annual rate, annualised NAV volatility from step to step)."""
    total_return = float(nav.iloc[-1] / start - 1.0)
    growth = 1.0 + total_return
    annual = growth ** (1.0 / years) - 1.0 if years > 0 and growth > 0 else math.nan
    nav_ret = nav.pct_change().iloc[1:]
    vol = (float(nav_ret.std(ddof=1) * math.sqrt(steps_per_year(index)))
           if len(nav_ret) > 1 else math.nan)
    return total_return, annual, vol


def _utilisation(result: BacktestResult) -> np.ndarray:
    """The per-step margin utilisation (:func:`margin_utilisation`), NaN steps left out; a step
    whose collateral is gone with positions open counts as inf (it is a margin call, and the
    peak is unbounded: JSON null). The old version left those out, so a book liquidated 103
    times reported a peak of 34% and no margin call."""
    util: np.ndarray = margin_utilisation(result).to_numpy(dtype=float)
    kept: np.ndarray = util[~np.isnan(util)]
    return kept


def percentile(values: np.ndarray, q: float) -> float:
    """The q-th percentile (linear interpolation between the two nearest ranks, numpy's default)
    of ``values`` (no NaN; +inf allowed: a rank at or next to inf gives inf); 0 when empty."""
    if not len(values):
        return 0.0
    v = np.sort(values)
    rank = q / 100.0 * (len(v) - 1)
    lo, frac = math.floor(rank), rank - math.floor(rank)
    if frac == 0.0:
        return float(v[lo])
    return float(v[lo] + frac * (v[lo + 1] - v[lo])) if math.isfinite(v[lo + 1]) else math.inf


def _solve_times(s: pd.DataFrame) -> np.ndarray:
    """The finite per-step solve times (ms; empty when the result has no such column)."""
    solve = (s["solve_time_ms"].to_numpy(dtype=float) if "solve_time_ms" in s.columns
             else np.zeros(0))
    return solve[np.isfinite(solve)]


def compute_metrics(result: BacktestResult, *,
                    stablecoin_yield: float = STABLECOIN_YIELD) -> BacktestMetrics:
    """Every metric of ``result`` (see :class:`BacktestMetrics`); ``stablecoin_yield`` (fraction
    per year) prices the wallet reserve's opportunity cost."""
    s = result.steps
    index = pd.DatetimeIndex(s.index)
    nav = s["nav"]
    years = span_years(index)
    mean_nav = float(nav.mean())
    scale = mean_nav * years if years > 0 and mean_nav != 0 else math.nan

    def per_year_bps(total: float) -> float:
        return total / scale * 1e4

    def per_year(total: float) -> float:
        return total / scale

    total_return, annual, vol = _return_metrics(nav, opening_nav(result), index, years)
    exch = float(s["fee_spot"].sum() + s["fee_futures"].sum())
    slip = float(s["slippage_spot"].sum() + s["slippage_futures"].sum())
    funding = float(s["funding"].sum())
    penalty = float(penalty_paid(s).sum())
    sweep_fees = float(_column(s, "sweep_fees").sum())
    tax = float(_column(s, "tax").sum())
    spot_traded = float(s["traded_spot"].sum() + _column(s, "sweep_in").sum()
                        + _column(s, "sweep_out").sum())
    fut_traded = float(s["traded_futures"].sum())
    util = _utilisation(result)
    solve = _solve_times(s)
    return BacktestMetrics(
        tracking_error=tracking_error(result),
        exposure_tracking_error=exposure_tracking_error(result),
        total_return=total_return,
        annual_return=annual,
        volatility=vol,
        max_drawdown=max_drawdown(nav),
        fees_bps=per_year_bps(exch + slip),
        slippage_bps=per_year_bps(slip),
        funding_bps=per_year_bps(funding),
        penalty_bps=per_year_bps(penalty),
        turnover=per_year(spot_traded + fut_traded),
        peak_margin_ratio=float(util.max()) if len(util) else 0.0,
        liquidations=int(s["liquidated"].sum()),
        years=years,
        active_return=active_return(result),
        exchange_fee_bps=per_year_bps(exch),
        sweep_cost_bps=per_year_bps(sweep_fees),
        total_cost_bps=per_year_bps(exch + slip + funding + penalty + sweep_fees + tax),
        reserve_opportunity_cost_bps=per_year_bps(stablecoin_yield * reserve_wallet_years(result)),
        spot_turnover=per_year(spot_traded),
        futures_turnover=per_year(fut_traded),
        margin_ratio_p99=percentile(util, 99.0),
        margin_calls=int((util > MARGIN_CALL_THRESHOLD).sum()),
        solves=len(solve),
        solve_time_median_ms=float(np.median(solve)) if len(solve) else math.nan,
        solve_time_p99_ms=float(np.percentile(solve, 99)) if len(solve) else math.nan,
        solver_fallbacks=int(_column(s, "solver_fallbacks").sum()),
        tax_bps=per_year_bps(tax),
        unsolved_steps=len(result.unsolved),
    )
