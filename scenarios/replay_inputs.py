"""A market path read as the per-contract inputs of a replay, in book order.

:func:`resolved_marks` (mark closes, USD; the underlying's spot where the path has none),
:func:`funding_matrix` (settlement times, int64 ns, and rates, fraction per settlement),
:func:`settled_matrix` (where each contract settled: a zero rate is a settlement, a row another
contract settled alone is not),
:func:`impact_vol` (trailing daily volatility of each contract's underlying for the impact term)
and :func:`median_step_days` (the path's typical step, days); :class:`ReplayInputs` holds all of
them as plain arrays read once (:func:`read_inputs`), and :func:`market_at` builds the market
snapshot of step k from them.

Funding forecast (``[costs] funding_forecast = "ewma"``, passed to :func:`read_inputs` as
``costs``): :func:`forecast_matrix` runs ``models.funding_forecast.EwmaShrinkForecaster`` over each
perpetual's settlements once, and :func:`market_at` puts the forecast made from the settlements
at or before step k's time into ``MarketSnapshot.funding_forecast`` (causal: the row it reads is
fixed by how many settlements have happened by then). The default ("last", or no ``costs``)
fills no forecast: the snapshot is exactly what it was before.

Settlement spacing: the replay pays every settlement of the path, and the optimiser's carry
counts ``horizon_days x 24 / h`` settlements in its horizon. Where a perpetual's measured spacing
(causal: the median of its last gaps up to the step) differs from its ``funding_interval_h`` (SOL
settled every 2-4 h in November 2022), :func:`market_at` gives that spacing as the snapshot's
``funding_interval_h`` (``ReplayInputs.interval_h``), so the carry counts the settlements the
replay pays, and :func:`read_inputs` labels the path (``ReplayInputs.interval_notes`` and a
warning). The EWMA forecast counts its horizon in the same settlements (the spacing the snapshot
carries) and scales the long-run level, quoted per 8 h, to that spacing; its half-lives stay
counted in settlements.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.book import Book
from models.costs import impact_coefficient
from models.errors import ValidationError
from models.instruments import MIN_DAYS_TO_EXPIRY, ContractArrays, ContractKind, contract_arrays
from models.margin import MarginModel
from models.market import DEFAULT_HALF_SPREAD, MarketSnapshot
from optimizer.policies import Policy
from optimizer.settings import CostSettings, FundingForecastRule
from scenarios.funding_run import interval_notes, measured_intervals, settlement_hours
from scenarios.market_path import MarketPath
from scenarios.settlement import expiry_ns

#: Trailing window (steps) of the underlying's volatility used by the impact term.
IMPACT_VOL_WINDOW = 30


def resolved_marks(book: Book, path: MarketPath) -> pd.DataFrame:
    """Mark closes per contract in book order (the underlying's spot where the path has none)."""
    cols: dict[str, pd.Series] = {}
    for c in book.contracts:
        if path.mark is not None and c.symbol in path.mark.columns:
            cols[c.symbol] = path.mark[c.symbol].astype(float)
        elif c.underlying in path.spot.columns:
            cols[c.symbol] = path.spot[c.underlying].astype(float)
        else:
            raise ValidationError(f"market_path.mark.{c.symbol}", "is missing and so is the "
                                  f"spot of {c.underlying}", "give a mark or a spot series")
    return pd.DataFrame(cols, index=path.spot.index, columns=book.contract_symbols, dtype=float)


def funding_matrix(book: Book, path: MarketPath) -> tuple[np.ndarray, np.ndarray]:
    """Settlement times (int64 ns) and rates (S x M, fraction per settlement, book contract order;
    0 where a contract did not settle, so summing rows pays nothing there; a 0 can also be a real
    zero rate: :func:`settled_matrix` tells them apart)."""
    if path.funding is None or len(path.funding.index) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(book.contracts)))
    f = path.funding
    rates = np.zeros((len(f.index), len(book.contracts)))
    for j, c in enumerate(book.contracts):
        if c.symbol in f.columns:
            rates[:, j] = f[c.symbol].to_numpy(dtype=float)
    times = pd.DatetimeIndex(f.index).tz_convert("UTC").as_unit("ns").asi8
    return times, rates


def settled_matrix(book: Book, path: MarketPath) -> np.ndarray:
    """S x M bool, rows as :func:`funding_matrix`, book contract order: True where contract j
    settled at settlement time i (``MarketPath.funding_settled``; without it every row of j's
    funding column is a settlement, an exact 0 a zero rate); all False for a contract without a
    funding column."""
    n_rows = 0 if path.funding is None else len(path.funding.index)
    out = np.zeros((n_rows, len(book.contracts)), dtype=bool)
    if path.funding is None:
        return out
    for j, c in enumerate(book.contracts):
        if c.symbol in path.funding.columns:
            out[:, j] = (path.funding_settled[c.symbol].to_numpy(dtype=bool)
                         if path.funding_settled is not None else True)
    return out


def asset_vol(path: MarketPath) -> pd.DataFrame:
    """Daily vol per asset of the path: trailing std of log returns over the last
    ``IMPACT_VOL_WINDOW`` steps (data up to and including t), scaled to one day by the median step
    (NaN before two returns)."""
    logret = pd.DataFrame(np.log(path.spot.to_numpy(dtype=float)), index=path.spot.index,
                          columns=path.spot.columns).diff()
    vol = logret.rolling(IMPACT_VOL_WINDOW, min_periods=2).std()
    if len(path.spot.index) > 1:
        step_days = median_step_days(pd.DatetimeIndex(path.spot.index))
        vol = vol / math.sqrt(step_days)
    return vol


def impact_vol(book: Book, path: MarketPath) -> pd.DataFrame:
    """Daily vol per contract's underlying (:func:`asset_vol`), the futures impact's sigma."""
    vol = asset_vol(path)
    return pd.DataFrame({c.symbol: vol[c.underlying] for c in book.contracts},
                        index=path.spot.index, columns=book.contract_symbols, dtype=float)


def median_step_days(index: pd.DatetimeIndex) -> float:
    """Median spacing of ``index`` in days (whatever the index's time unit); needs two stamps."""
    ns = index.as_unit("ns").asi8
    return float(np.median(np.diff(ns))) / 86400e9


@dataclass(frozen=True)
class ReplayInputs:
    """A market path read once for a replay, in book order (row k of each array is step k).

    - ``times`` the step timestamps, ``step_ns`` the same as UTC int64 ns;
    - ``spot`` (T x N) and ``mark`` (T x M) closes, USD;
    - ``settle_t`` / ``settle_r`` the funding settlements (:func:`funding_matrix`), ``settles``
      (S x M bool) where each contract settled (:func:`settled_matrix`), ``settled`` (T) how
      many rows have timestamps at or before each step; ``last_r`` (S x M) each contract's latest
      rate at or before each settlement row (:func:`latest_rates`); ``spacing_h`` (S x M) each
      contract's measured settlement spacing, hours (``scenarios.funding_run.settlement_hours``);
    - ``vol`` the daily impact vol per contract (T x M) and ``spot_vol`` per asset (T x N; both
      None without ADV), ``spot_impact`` each asset's spot impact coefficient (T x N, zeros
      without ADV; :func:`spot_impact_matrix`); ``adv`` (T x len(adv_cols)) or ``adv_static``,
      USD a day, per contract and per asset (the spot trades' impact) where the path has it;
      ``half_spread`` fractions of notional;
    - ``fee_spot`` the spot fee rate per asset, ``spot_half_spread`` its half spread (fraction;
      ``MarketPath.spot_half_spread``, else ``models.market.DEFAULT_HALF_SPREAD``); ``margin`` the
      one margin engine; ``expiries`` the dated contracts' expiries (UTC ns); ``arrays`` per-contract sizes;
    - ``with_impact`` whether the 3/2-power impact is charged (coefficient ``impact_k``);
      ``liquidation_penalty`` a fraction of |notional|;
    - ``near_expiry`` (T x M bool): contract j expires within ``min_days_to_expiry`` days of step
      k (``FuturesContract.near_expiry``, the order planner's rule): it may only be reduced there;
    - ``forecast`` ((S + 1) x M, or None: no forecast): row n is each perpetual's forecast mean
      funding rate per settlement over the cost horizon made from the first n settlements
      (:func:`forecast_matrix`; NaN: no forecast for that contract);
    - ``interval_h`` (T x M, hours, or None): each perpetual's measured settlement spacing at
      each step where it differs from its ``funding_interval_h``, NaN elsewhere
      (``scenarios.funding_run.measured_intervals``; None: it never does);
    - ``interval_notes``: one per perpetual whose measured spacing at some step differs from its
      ``funding_interval_h`` (``scenarios.funding_run.interval_notes``; empty: none does).
    """

    assets: list[str]
    cons: list[str]
    index: pd.Index
    times: list[pd.Timestamp]
    spot: np.ndarray
    mark: np.ndarray
    step_ns: np.ndarray
    settle_t: np.ndarray
    settle_r: np.ndarray
    settles: np.ndarray
    spacing_h: np.ndarray
    last_r: np.ndarray
    settled: np.ndarray
    vol: np.ndarray | None
    spot_vol: np.ndarray | None
    adv: np.ndarray | None
    adv_cols: list[str]
    adv_static: dict[str, float]
    half_spread: dict[str, float]
    fee_spot: np.ndarray
    spot_half_spread: np.ndarray
    margin: MarginModel
    expiries: dict[str, int]
    arrays: ContractArrays
    zero_rate: np.ndarray
    with_impact: bool
    impact_k: float
    liquidation_penalty: float
    synthetic: bool
    near_expiry: np.ndarray
    #: (T x N) each asset's spot impact coefficient per step (:func:`spot_impact_matrix`)
    spot_impact: np.ndarray
    forecast: np.ndarray | None = None
    interval_h: np.ndarray | None = None
    interval_notes: tuple[str, ...] = ()


def spot_impact_matrix(impact_k: float, assets: list[str], n_steps: int,
                       spot_vol: np.ndarray | None, adv: np.ndarray | None, adv_cols: list[str],
                       adv_static: dict[str, float]) -> np.ndarray:
    """T x N: each asset's spot impact coefficient at each step, k sigma_i / sqrt(ADV_i)
    (USD^-1/2; ``models.costs.impact_coefficient``, with the ADV the step's snapshot carries:
    :func:`market_at`): a spot trade of n USD pays c_i |n|^{3/2}. A row of zeros per step without
    ADV on the path (``spot_vol`` None); 0 for an asset whose ADV is unknown or not finite."""
    if spot_vol is None:
        return np.zeros((n_steps, len(assets)))
    col = {c: j for j, c in enumerate(adv_cols)}
    volume = np.full(spot_vol.shape, math.inf)
    for i, a in enumerate(assets):
        if adv is not None and a in col:
            volume[:, i] = np.where(np.isfinite(adv[:, col[a]]), adv[:, col[a]], math.inf)
        elif a in adv_static:
            volume[:, i] = adv_static[a]
    return impact_coefficient(impact_k, spot_vol, volume)


def _adv_inputs(book: Book, path: MarketPath) -> tuple[np.ndarray | None, list[str], dict[str, float]]:
    """ADV per contract, then per asset (USD a day): a (T x K) array with its K columns, or a
    static mapping."""
    syms = [*book.contract_symbols, *book.asset_symbols]
    if isinstance(path.adv, pd.DataFrame):
        frame = path.adv[[c for c in syms if c in path.adv.columns]].astype(float)
        return frame.to_numpy(dtype=float), [str(c) for c in frame.columns], {}
    if path.adv is not None:
        return None, [], {c: float(path.adv[c]) for c in syms if c in path.adv.index}
    return None, [], {}


def forecast_matrix(book: Book, path: MarketPath, settle_r: np.ndarray, settles: np.ndarray,
                    costs: CostSettings, spacing_h: np.ndarray) -> np.ndarray:
    """Forecast mean funding rate per settlement over the cost horizon, (S + 1) x M, book order.

    Row n is the forecast made after the first n settlements of ``settle_r`` (:func:`funding_matrix`)
    and reads nothing later: for each perpetual j with a funding column in ``path`` and at least
    one settlement, the EWMA shrunk forecast of ``models.funding_forecast`` (half-lives
    ``costs.funding_half_life`` L and ``costs.funding_reversion_half_life`` T, settlements)
    ``rbar = mu_j + (m - mu_j) w(H_j)``, m the EWMA of j's settlements so far, with
    - h_j (hours) the spacing the snapshot after those n settlements carries (:func:`market_at`):
      j's measured spacing at row n - 1 (``spacing_h``) where it differs from its
      ``funding_interval_h`` (``scenarios.funding_run.measured_intervals``), else that;
    - H_j = horizon_days x 24 / h_j settlements (the carry's count, optimizer.carry);
    - mu_j = ``costs.funding_long_run_rate`` x h_j / 8 (that level is per 8 h settlement,
      ``models.funding_forecast.long_run_rate_per_settlement``); ``mu_j`` before j's first
      settlement.
    j's settlements are the rows where ``settles`` (:func:`settled_matrix`) says it settled: a
    real rate of 0 is one (it pulls the EWMA to 0), a row of the union schedule another contract
    settled alone is not. Other contracts (dated, or no funding data) get NaN: no forecast, their
    carry stays on the current rate. ``spacing_h`` (S x M, hours): ``ReplayInputs.spacing_h``.
    """
    from models.funding_forecast import (  # scipy.signal: only when asked for
        EwmaShrinkForecaster,
        horizon_weights,
        long_run_rate_per_settlement,
    )

    fc = EwmaShrinkForecaster(half_life=costs.funding_half_life,
                              reversion_half_life=costs.funding_reversion_half_life,
                              long_run_rate=costs.funding_long_run_rate)
    # row n: j's spacing at row n - 1 where it differs from funding_interval_h (read_inputs' rule)
    hours = measured_intervals(book.contracts, np.arange(settle_r.shape[0] + 1), spacing_h)
    out = np.full((settle_r.shape[0] + 1, len(book.contracts)), np.nan)
    columns = set(path.funding.columns) if path.funding is not None else set()
    for j, c in enumerate(book.contracts):
        if c.kind != ContractKind.PERPETUAL or c.symbol not in columns or not settles[:, j].any():
            continue
        h = np.full(out.shape[0], c.funding_interval_h)
        if hours is not None:
            h = np.where(np.isfinite(hours[:, j]), hours[:, j], h)
        mu = long_run_rate_per_settlement(fc.long_run_rate, h)
        level = fc.level_path(settle_r[settles[:, j], j])
        seen = np.concatenate([[0], np.cumsum(settles[:, j])])  # settlements of j among the first n
        m = np.where(seen > 0, level[np.maximum(seen - 1, 0)], mu)
        out[:, j] = mu + (m - mu) * horizon_weights(fc.phi, costs.horizon_days * 24.0 / h)
    return out


def latest_rates(settle_r: np.ndarray, settles: np.ndarray) -> np.ndarray:
    """Row i, contract j: j's latest settlement rate in rows 0..i (0 before its first). Rows
    are the union of every contract's schedule; ``settles`` (:func:`settled_matrix`) says where j
    settled, so a row where another contract settled alone keeps j's previous rate while a real
    settlement at 0 sets it to 0: the funding rate a snapshot shows is the contract's own last one."""
    out = np.where(settles, settle_r, 0.0)
    for i in range(1, out.shape[0]):
        out[i] = np.where(settles[i], settle_r[i], out[i - 1])
    return out


def near_expiry_matrix(book: Book, times: list[pd.Timestamp], min_days: float) -> np.ndarray:
    """T x M bool, book order: ``FuturesContract.near_expiry(t_k, min_days)`` (the contract
    expires within ``min_days`` days of step k, or has expired)."""
    if not (math.isfinite(min_days) and min_days >= 0):
        raise ValidationError("min_days_to_expiry", f"is {min_days}",
                              "give the days before expiry (>= 0) within which a dated contract is "
                              "not opened or increased")
    return np.array([[c.near_expiry(t.to_pydatetime(), min_days) for c in book.contracts]
                     for t in times], dtype=bool).reshape(len(times), len(book.contracts))


def policy_min_days(policy: Policy) -> float:
    """Days before expiry within which the replay only reduces a dated contract: an optimising
    policy's ``constraints.min_days_to_expiry`` (also through a wrapper), else the order planner's
    default ``MIN_DAYS_TO_EXPIRY`` (the executor reads the same setting of the book file)."""
    opt = policy.optimiser()
    return opt.settings.constraints.min_days_to_expiry if opt is not None else MIN_DAYS_TO_EXPIRY


def read_inputs(book: Book, path: MarketPath, *, spot_fee: float | None, impact_k: float,
                liquidation_penalty: float, costs: CostSettings | None = None,
                min_days_to_expiry: float = MIN_DAYS_TO_EXPIRY) -> ReplayInputs:
    """``path`` read as :class:`ReplayInputs` for ``book`` (spot fee: ``spot_fee`` for every asset,
    else each asset's ``SpotAsset.fee``). ``costs``: the policy's cost settings; with
    ``funding_forecast = "ewma"`` the snapshots carry the causal funding forecast
    (:func:`forecast_matrix`), otherwise (or None) none. ``min_days_to_expiry`` (days): within
    it of expiry a dated contract is only reduced (:func:`near_expiry_matrix`). A perpetual whose
    measured settlement spacing differs from its ``funding_interval_h`` is carried at that
    spacing (``interval_h``) and labelled (``interval_notes``, and a warning naming it)."""
    cons = book.contract_symbols
    spot = path.spot[book.asset_symbols].astype(float).to_numpy(dtype=float)
    mark = resolved_marks(book, path).to_numpy(dtype=float)
    settle_t, settle_r = funding_matrix(book, path)
    settles = settled_matrix(book, path)
    spacing_h = settlement_hours(settle_t, settles)
    with_impact = path.adv is not None
    vol = impact_vol(book, path).to_numpy(dtype=float) if with_impact else None
    spot_vol = (asset_vol(path)[list(book.asset_symbols)].to_numpy(dtype=float) if with_impact
                else None)
    half = {c: float(path.half_spread[c]) for c in cons
            if path.half_spread is not None and c in path.half_spread.index}
    adv, adv_cols, adv_static = _adv_inputs(book, path)
    step_ns = pd.DatetimeIndex(path.spot.index).tz_convert("UTC").as_unit("ns").asi8
    times = [pd.Timestamp(t) for t in path.spot.index]
    settled = np.searchsorted(settle_t, step_ns, side="right")
    measured = measured_intervals(book.contracts, settled, spacing_h)
    notes = interval_notes(book.contracts, measured, times)
    if notes:
        warnings.warn("the settlement spacing differs from funding_interval_h: " + "; ".join(notes),
                      stacklevel=2)
    return ReplayInputs(
        assets=list(book.asset_symbols), cons=list(cons), index=path.spot.index,
        times=times, spot=spot, mark=mark, step_ns=step_ns, settle_t=settle_t, settle_r=settle_r,
        settles=settles, spacing_h=spacing_h, last_r=latest_rates(settle_r, settles),
        settled=settled, vol=vol, spot_vol=spot_vol, adv=adv, adv_cols=adv_cols,
        adv_static=adv_static, half_spread=half,
        fee_spot=np.array([spot_fee if spot_fee is not None else a.fee for a in book.assets]),
        spot_half_spread=np.array([float(path.spot_half_spread.get(a, DEFAULT_HALF_SPREAD))
                                   if path.spot_half_spread is not None else DEFAULT_HALF_SPREAD
                                   for a in book.asset_symbols]),
        margin=MarginModel.from_contracts(book.contracts),
        expiries={c.symbol: e for c in book.contracts if (e := expiry_ns(c)) is not None},
        arrays=contract_arrays(book.contracts), zero_rate=np.zeros(len(cons)),
        with_impact=with_impact, impact_k=impact_k, liquidation_penalty=liquidation_penalty,
        synthetic=path.synthetic,
        near_expiry=near_expiry_matrix(book, times, min_days_to_expiry),
        spot_impact=spot_impact_matrix(impact_k, list(book.asset_symbols), len(times), spot_vol,
                                       adv, adv_cols, adv_static),
        forecast=(forecast_matrix(book, path, settle_r, settles, costs, spacing_h)
                  if costs is not None and costs.funding_forecast == FundingForecastRule.EWMA
                  else None),
        interval_h=measured, interval_notes=notes)


def market_at(inputs: ReplayInputs, k: int) -> MarketSnapshot:
    """The market at step k: closes, marks, each contract's latest funding rate at or before t
    (the policy's view of carry, per settlement interval; 0 before its first settlement;
    :func:`latest_rates`), half spreads, the
    ADV known at t (finite values only) and, with a forecast, each perpetual's forecast funding
    made from the settlements at or before t (``ReplayInputs.forecast``)."""
    n_settled = int(inputs.settled[k])
    last_rate = inputs.last_r[n_settled - 1] if n_settled > 0 else inputs.zero_rate
    adv = inputs.adv_static if inputs.adv is None else {
        c: v for c, v in zip(inputs.adv_cols, inputs.adv[k].tolist(), strict=True) if math.isfinite(v)}
    return MarketSnapshot(time=inputs.times[k],
                          spot=dict(zip(inputs.assets, inputs.spot[k].tolist(), strict=True)),
                          mark=dict(zip(inputs.cons, inputs.mark[k].tolist(), strict=True)),
                          funding=dict(zip(inputs.cons, last_rate.tolist(), strict=True)),
                          half_spread=inputs.half_spread, adv=adv, synthetic=inputs.synthetic,
                          spot_half_spread=dict(zip(inputs.assets, inputs.spot_half_spread.tolist(),
                                                    strict=True)),
                          funding_forecast=_forecast_at(inputs, n_settled),
                          funding_interval_h=_interval_at(inputs, k))


def _interval_at(inputs: ReplayInputs, k: int) -> dict[str, float]:
    """The measured settlement spacing (hours) at step k of each perpetual whose spacing differs
    from its ``funding_interval_h`` ({} where none does)."""
    if inputs.interval_h is None:
        return {}
    row = inputs.interval_h[k].tolist()
    return {c: v for c, v in zip(inputs.cons, row, strict=True) if math.isfinite(v)}


def _forecast_at(inputs: ReplayInputs, n_settled: int) -> dict[str, float]:
    """The forecast row after ``n_settled`` settlements by contract symbol ({} without one)."""
    if inputs.forecast is None:
        return {}
    row = inputs.forecast[n_settled].tolist()
    return {c: v for c, v in zip(inputs.cons, row, strict=True) if math.isfinite(v)}

