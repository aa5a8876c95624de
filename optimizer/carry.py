"""The carry of the futures contracts, as fractions of notional a long pays (a short receives).

:func:`_carry_per_horizon`: over the cost horizon (``costs.horizon_days``), the single-period
problem's carry; :func:`carry_path`: per step of the multi-period planner. Perpetuals pay funding
settlement by settlement (rates per settlement, ``funding_interval_h`` hours apart); dated futures
pay the decay of their basis to expiry (days of 86,400 s).
"""

from __future__ import annotations

import numpy as np

from models.book import Book
from models.funding_forecast import decay_from_half_life, long_run_rate_per_settlement
from models.instruments import ContractKind
from models.market import MarketSnapshot
from optimizer.settings import CostSettings, FundingForecastRule

HOURS_PER_DAY = 24.0


def carry_path(book: Book, market: MarketSnapshot, costs: CostSettings, first: np.ndarray,
               horizon: int) -> np.ndarray:
    """The carry of each of the planner's H steps (H x M, fractions of notional, step 1 = ``first``,
    today's :func:`_carry_per_horizon`).

    Perpetual j with the ``ewma`` rule and a market forecast: the forecast's premium over the
    long-run level mu_j decays by phi = 2^(-1/T) per settlement (T the reversion half-life,
    ``funding_reversion_half_life``, settlements), so with n_j = horizon_days x 24 / h_j
    settlements per step (h_j hours apart, as :func:`_carry_per_horizon`) and rbar_1 = first_j / n_j
    the mean rate of step h is mu_j + (rbar_1 - mu_j) phi^(n_j (h - 1)) and its carry n_j times that
    (models.funding_forecast: the same shrinkage as the forecast itself). mu_j =
    ``funding_long_run_rate`` x h_j / 8 per settlement (that level is per 8 h settlement:
    ``models.funding_forecast.long_run_rate_per_settlement``), so every interval tends to the same
    3 mu a day. Otherwise (the ``last`` rule, no forecast): today's rate persists. Dated j:
    :func:`dated_carry_steps` (the basis decays linearly to expiry: each whole step before expiry
    pays ``first_j``, the step holding the expiry its share, every later step 0).
    """
    out = np.tile(np.asarray(first, dtype=float), (horizon, 1))
    for j, c in enumerate(book.contracts):
        days = c.days_to_expiry(market.time) if c.kind == ContractKind.DATED else None
        if days is not None:
            out[:, j] = dated_carry_steps(float(first[j]), days, costs.horizon_days, horizon)
    if costs.funding_forecast != FundingForecastRule.EWMA:
        return out
    phi = decay_from_half_life(costs.funding_reversion_half_life)
    for j, c in enumerate(book.contracts):
        if c.kind != ContractKind.PERPETUAL or c.symbol not in market.funding_forecast:
            continue
        hours = market.funding_hours(c.symbol, c.funding_interval_h)
        n = costs.horizon_days * HOURS_PER_DAY / hours
        mu = long_run_rate_per_settlement(costs.funding_long_run_rate, hours)
        rbar = first[j] / n
        out[:, j] = n * (mu + (rbar - mu) * phi ** (n * np.arange(horizon)))
    return out


def dated_carry_steps(first: float, days: float, step_days: float, horizon: int) -> np.ndarray:
    """A dated contract's carry per planner step (H, fractions of notional a long pays).

    The basis b decays linearly to 0 over the D = ``days`` days to expiry, at b / D a day; step h
    covers days [(h - 1) dt, h dt] (dt = ``step_days``) and pays that rate over its overlap with
    [0, D]: ``b / D x clip(D - (h - 1) dt, 0, dt)`` -- the full rate before expiry, prorated in the
    step holding it, 0 after (the contract no longer exists). With ``first`` = today's
    :func:`_carry_per_horizon` = b dt / max(D, dt), b / D = first / min(D, dt). Step 1 is always
    ``first`` (the single-period carry); an expired contract (D <= 0) carries 0 after it.
    """
    out = np.zeros(horizon)
    if horizon > 0:
        out[0] = first
    if days <= 0 or horizon <= 1:
        return out
    h = np.arange(1, horizon)
    overlap = np.clip(days - h * step_days, 0.0, step_days)
    out[1:] = first * overlap / min(days, step_days)
    return out


def _carry_per_horizon(book: Book, market: MarketSnapshot, horizon_days: float) -> np.ndarray:
    """Carry paid by a long per unit notional over the cost horizon (fraction of notional).

    ``carry_j`` is dimensionless: USD paid over ``horizon_days`` per USD of long notional (a short
    receives it). In the objective it multiplies z_j = x_j / V, so ``gamma_fund carry' z`` is the
    expected carry in weight units (USD / V) and ``carry_j x_j`` is USD.

    Perpetual j: ``carry_j = H_j rbar_j`` with ``H_j = horizon_days x 24 / h_j`` (h_j the hours
    between settlements: ``market.funding_interval_h[j]`` when the market measured them (a replay
    at each step, a ``source = "data"`` market at its time), else the
    contract's ``funding_interval_h``) settlements in the horizon and ``rbar_j`` the mean rate per
    settlement assumed over them:
    ``market.funding_forecast[j]`` when the market gives one (e.g. the replay's causal EWMA
    forecast, ``[costs] funding_forecast = "ewma"``), else the current rate
    ``market.funding[j]`` (0 when missing; the default "last" rule). Only the carry Parameter's
    *values* change with the rule, so the compiled (DPP) problem is the same.

    Dated j: the basis b = mark / spot - 1 (DESIGN.md's basis, as the risk model's) decays
    linearly to expiry, so a long pays ``b x horizon / max(days to expiry, horizon)`` per unit of
    notional (all of b when it expires within the horizon; 0 once expired). A long of q contracts
    held to expiry loses exactly q (M - S) = (1 - S / M) of its notional q M, b / (1 + b): the
    design's b overstates it by b^2 / (1 + b) of the notional (1e-4 at a 1% basis).

    Issue 11, item 5 (funding-aware instruments): with this carry the optimiser already holds each
    exposure through the instrument with the lowest fee + carry over the horizon (perpetual, dated
    future, or spot with the spot leg on: spot has no carry term, i.e. 0), as long as the carry
    spread between two contracts stays below a long/short pair's trading cost (beyond that only a
    bound such as the margin row or basis risk limits a carry trade); tests/optimizer/
    test_rebalance_instruments.py. Dated carry is this linear decay of today's basis (the replay's marks may
    come from real quarterlies or a fitted term structure: scenarios.quarterly_basis.with_quarterly_marks).
    ``min_days_to_expiry`` is enforced by the order planner (executor.plan), and as a row of the
    optimiser (optimizer.constraints.ExpiryGuard) with ``constraints.expiry_row`` or whenever a
    contract is inside it (optimizer.prepare).
    """
    out = np.zeros(len(book.contracts))
    for j, c in enumerate(book.contracts):
        if c.kind == ContractKind.PERPETUAL:
            hours = market.funding_hours(c.symbol, c.funding_interval_h)
            out[j] = market.carry_rate(c.symbol) * horizon_days * HOURS_PER_DAY / hours
        else:
            left = c.days_to_expiry(market.time)  # naive times read as UTC
            if left is None or left <= 0:  # settled: no carry (optimizer.prepare refuses one still held)
                continue
            basis = market.mark_price(c.symbol) / market.spot_price(c.underlying) - 1.0
            out[j] = basis * horizon_days / max(left, horizon_days)
    return out
