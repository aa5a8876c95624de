"""The backtester: replay a market path under a policy and record what the book does.

Per step t (UTC timestamps of ``MarketPath.spot``), see DESIGN.md "Backtest semantics":

1. **mark to market**: spot value at the new closes; futures unrealised PnL at the new marks (it
   lands in the futures wallet: wallet = cash + unrealised PnL);
2. **funding**: every settlement with timestamp in (t_prev, t] pays ``rate x notional`` at this
   step's mark: ``cash -= rate * notional`` for signed notional (longs pay when rate > 0). All the
   settlements in the interval are summed; nothing assumes three a day;
2b. **settlement** of dated futures (``ContractKind.DATED``): on the first step at or after a
   contract's expiry its position is closed at the underlying's spot S (not the mark): the PnL
   realised into cash, ``q x size x (S - mark)`` (linear) added to ``futures_pnl`` on top of the
   mark-to-market, and a settlement fee ``taker_fee x |notional at S|`` in ``fee_futures``; trade
   kind "settle". From its expiry on, a contract's policy target is taken as 0 (it cannot be held);
3. **margin check** (``models.margin.MarginModel.maintenance`` on |notional| against the collateral
   cash + unrealised PnL + haircut x pledged spot): below maintenance every futures position is
   closed at mark (PnL realised into cash) and ``liquidation_penalty x |notional|`` is taken from cash;
4. **policy** -> target holdings; trades fill at the close (spot) and at mark (futures). Spot fee:
   ``spot_fee`` (or each asset's ``SpotAsset.fee``) x |notional|; futures cost: the linear part of
   ``models.costs.CostModel`` (taker fee + half spread) plus its 3/2-power impact when an ADV is
   given. Futures trades go through ``Book.with_futures``; every cost is paid from cash;
5. **collateral sweeps** (``CollateralPolicy``, on by default for a book that lists futures
   contracts): while positions are open, a wallet balance outside its band around the reserve
   target ``tau x NAV`` is brought back to the target by selling spot pro rata to spot values
   (top-up) or buying spot pro rata to the target weights (excess), at the close, spot fee paid.
   The default target is the book's initial wallet / NAV, so a book that starts with no reserve
   keeps none: give it a ``CollateralPolicy(target_fraction=...)``.

The first timestamp only runs steps 4 and 5 (no t_prev: settlements at or before it are ignored).

Cash: spot sales credit cash, purchases debit it, and fees, funding and penalties are paid from it,
so cash may go negative: a negative balance is a stablecoin debt (no interest), counted as such in
NAV, the wallet and the collateral (``Book`` allows it; a book file's cash must be >= 0).

Market paths come from the embedded generator (``MarketPath.from_synthetic``) or from real data in
the shared layout (``MarketPath.from_data``: 4 h / 8 h / 1 d steps, irregular funding kept, ADV
lagged one step). No lot rounding, no spot spread or impact.
Same inputs -> identical results: everything iterates in book order, nothing is random (only the
recorded wall-clock solve times of an optimising policy differ between runs).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from models.book import Book, FuturesPosition, TargetsBase
from models.costs import CostModel
from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract, contract_arrays
from models.io import SUFFIXES, load_funding, load_mark_closes, load_spot_closes
from models.margin import LIQUIDATION_PENALTY, MarginModel, margin_state
from models.market import MarketSnapshot
from models.synthetic import SyntheticHistory
from optimizer.policies import Policy, TargetHoldings

#: Trailing window (steps) of the underlying's volatility used by the impact term.
IMPACT_VOL_WINDOW = 30
#: Two contract quantities closer than this (relative) are the same position: no trade.
QTY_RTOL = 1e-9

# ---------------------------------------------------------------------------------------------
# Market path


def _check_index(name: str, index: pd.Index) -> None:
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ValidationError(f"market_path.{name}", "is not indexed by tz-aware timestamps",
                              "index it by a UTC pandas DatetimeIndex")
    if not index.is_monotonic_increasing or not index.is_unique:
        raise ValidationError(f"market_path.{name}", "has an unsorted or repeated index",
                              "sort the index and drop duplicate timestamps")


def _check_finite(name: str, frame: pd.DataFrame) -> None:
    if not np.all(np.isfinite(frame.to_numpy(dtype=float))):
        raise ValidationError(f"market_path.{name}", "has missing or non-finite values",
                              "align the series on their common span and drop or fill the gaps")


@dataclass(frozen=True)
class MarketPath:
    """Aligned market history for a backtest.

    ``spot``: closes (USD), index = the steps (tz-aware UTC), one column per asset symbol.
    ``mark``: mark closes per contract symbol on the same index; a contract without a column is
    marked at its underlying's spot. ``funding``: rate per settlement (fraction, positive: longs pay)
    per contract symbol, indexed by settlement timestamps (irregular allowed; a contract without a
    column pays none). ``half_spread`` (fraction) and ``adv`` (USD/day) per contract symbol; a missing
    half spread defaults to 1 bp, no ADV means no impact. ``adv`` is either one value per contract
    (a Series) or a frame on the spot index (a value per step; NaN: no impact at that step).
    ``synthetic`` labels generated data.
    """

    spot: pd.DataFrame
    mark: pd.DataFrame | None = None
    funding: pd.DataFrame | None = None
    half_spread: pd.Series | None = None
    adv: pd.Series | pd.DataFrame | None = None
    synthetic: bool = False

    def __post_init__(self) -> None:
        _check_index("spot", self.spot.index)
        if len(self.spot.index) < 1:
            raise ValidationError("market_path.spot", "is empty", "give at least one close")
        _check_finite("spot", self.spot)
        if self.mark is not None:
            if not self.mark.index.equals(self.spot.index):
                raise ValidationError("market_path.mark", "is not on the spot index",
                                      "align marks to the spot closes (reindex them)")
            _check_finite("mark", self.mark)
        if self.funding is not None:
            _check_index("funding", self.funding.index)
            _check_finite("funding", self.funding)
        if isinstance(self.adv, pd.DataFrame):
            if not self.adv.index.equals(self.spot.index):
                raise ValidationError("market_path.adv", "is a frame not on the spot index",
                                      "align the ADV frame to the spot closes, or give a Series")
            values = self.adv.to_numpy(dtype=float)
            if np.any(~np.isnan(values) & ~(np.isfinite(values) & (values > 0))):
                raise ValidationError("market_path.adv", "has values <= 0 or infinite",
                                      "give ADV in USD/day (> 0), NaN where unknown")

    @staticmethod
    def from_data(data_dir: Path | str, contracts: Sequence[FuturesContract], *,
                  start: str | None = None, end: str | None = None, step: str = "8h",
                  assets: Sequence[str] = ()) -> MarketPath:
        """A path from real data in the shared layout (``models.io``; e.g. ``default_data_dir()``).

        See :func:`path_from_data` for the sources, alignment and the no-look-ahead ADV.
        """
        return path_from_data(data_dir, contracts, start=start, end=end, step=step, assets=assets)

    @staticmethod
    def from_synthetic(hist: SyntheticHistory, contracts: Sequence[FuturesContract],
                       *, with_adv: bool = True) -> MarketPath:
        """A path from the embedded generator: daily spot; per contract the synthetic perp mark
        (the dated-future carry of ``SyntheticHistory.snapshot`` is not modelled: dated futures are
        marked at the perp mark and pay no funding; ``scenarios.rolls.with_dated_marks`` re-prices
        them from a basis model); perps pay the 8 h funding of their underlying at its 8 h
        settlement times; half spread and (``with_adv``) ADV of the underlying."""
        for c in contracts:
            if c.underlying not in hist.spot.columns:
                raise ValidationError(f"contracts.{c.symbol}.underlying",
                                      f"is {c.underlying!r}, not in the synthetic history",
                                      f"use one of {list(hist.symbols)[:10]}")
        syms = [c.symbol for c in contracts]
        mark = pd.DataFrame({c.symbol: hist.mark[c.underlying] for c in contracts},
                            index=hist.spot.index, columns=syms, dtype=float)
        perps = [c for c in contracts if c.kind == ContractKind.PERPETUAL]
        funding = pd.DataFrame({c.symbol: hist.funding[c.underlying] for c in perps},
                               index=hist.funding.index, columns=[c.symbol for c in perps], dtype=float)
        half = pd.Series({c.symbol: hist.half_spread[c.underlying] for c in contracts}, dtype=float)
        adv = (pd.Series({c.symbol: hist.adv_usd[c.underlying] for c in contracts}, dtype=float)
               if with_adv else None)
        return MarketPath(spot=hist.spot.astype(float), mark=mark, funding=funding, half_spread=half,
                          adv=adv, synthetic=True)


# ---------------------------------------------------------------------------------------------
# Real data

#: Step name -> (spot folder interval, bar length, step length). Files stamp bars by open time;
#: a bar's close is known at open + bar length, which is the step timestamp used here.
DATA_STEPS: dict[str, tuple[str, pd.Timedelta, pd.Timedelta]] = {
    "4h": ("4h", pd.Timedelta(hours=4), pd.Timedelta(hours=4)),
    "8h": ("4h", pd.Timedelta(hours=4), pd.Timedelta(hours=8)),
    "1d": ("1d", pd.Timedelta(days=1), pd.Timedelta(days=1)),
}
#: Window of the rolling mean daily quote volume used as ADV.
ADV_WINDOW = pd.Timedelta(days=30)
MARK_FOLDER = "perp_mark_4h"
MARK_BAR = pd.Timedelta(hours=4)


def _has_file(data_dir: Path, folder: str, symbol: str) -> Path | None:
    for suffix in SUFFIXES:
        path = data_dir / folder / f"{symbol}{suffix}"
        if path.is_file():
            return path
    return None


def _on_grid(series: pd.Series, bar: pd.Timedelta, step: pd.Timedelta) -> pd.Series:
    """Re-stamp bars at their close time (open + bar) and keep the closes on the step grid (UTC
    multiples of ``step``): the last close of each step, dropped when that bar is missing."""
    out = series.copy()
    out.index = pd.DatetimeIndex(series.index) + bar
    keep = out.index.floor(step) == out.index
    return out.loc[keep]


def _quote_volume(path: Path) -> pd.Series | None:
    """The ``quote_volume`` column (USD per bar) of a spot file, by bar open time, or None."""
    if path.name.endswith(".parquet"):
        raw = pd.read_parquet(path)
        if "timestamp" not in raw.columns:
            raw = raw.reset_index()
    else:
        raw = pd.read_csv(path)
    if "quote_volume" not in raw.columns or "timestamp" not in raw.columns:
        return None
    index = pd.DatetimeIndex(pd.to_datetime(raw["timestamp"], utc=True), name="timestamp")
    qv = pd.Series(pd.to_numeric(raw["quote_volume"], errors="coerce").to_numpy(dtype=float),
                   index=index)
    return qv[~qv.index.duplicated()].sort_index()


def _adv(qv_open: pd.Series, bar: pd.Timedelta, index: pd.DatetimeIndex,
         step: pd.Timedelta) -> pd.Series:
    """ADV (USD/day) at each step t: the mean quote volume per bar over the bars that closed in
    (t - step - 30 d, t - step], times bars per day: lagged one step, so no look-ahead. NaN before
    any bar has closed."""
    qv = qv_open.copy()
    qv.index = pd.DatetimeIndex(qv_open.index) + bar
    qv = qv.dropna()
    per_day = pd.Timedelta(days=1) / bar
    mean = qv.rolling(ADV_WINDOW).mean() * per_day
    lagged = mean.reindex(index - step, method="ffill")
    values = np.array(lagged.to_numpy(dtype=float), dtype=float)
    values[~(values > 0)] = np.nan
    return pd.Series(values, index=index)


def _span_note(spans: Mapping[str, tuple[pd.Timestamp, pd.Timestamp]],
               lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> str:
    """Which series set the common start and end, where they cut into [lo, hi]."""
    first = max(a for a, _b in spans.values())
    last = min(b for _a, b in spans.values())
    parts = []
    if (lo is None or first > lo) and len({a for a, _b in spans.values()}) > 1:
        parts.append(f"the start {first} is set by {[k for k, (a, _b) in spans.items() if a == first]}")
    if (hi is None or last < hi) and len({b for _a, b in spans.values()}) > 1:
        parts.append(f"the end {last} is set by {[k for k, (_a, b) in spans.items() if b == last]}")
    return "; ".join(parts)


def _utc_stamp(value: str | None, field: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        t = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ValidationError(field, f"is {value!r}", "give an ISO date such as '2024-01-01'") from None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def path_from_data(data_dir: Path | str, contracts: Sequence[FuturesContract], *,
                   start: str | None = None, end: str | None = None, step: str = "8h",
                   assets: Sequence[str] = ()) -> MarketPath:
    """A market path from files in the shared layout (see ``models.io``).

    - **steps** every ``step`` ("4h", "8h" or "1d") at UTC multiples of it; a step's timestamp is
      the close time of the bar that ends there (files stamp bars by open time);
    - **spot** (assets: the contracts' underlyings, then ``assets``): closes of ``spot_4h``
      (steps "4h"/"8h": the last 4 h close of each step) or ``spot_1d`` (step "1d"); a step whose
      last bar is missing is dropped (never a stale close);
    - **marks**: ``perp_mark_4h/<underlying>`` closes on the same grid where the file and the
      bar exist, else the underlying's spot close (dated contracts also use the perp mark;
      ``scenarios.rolls.with_dated_marks`` re-prices them from a basis model);
    - **funding** (perpetuals): every settlement of ``funding/<underlying>`` as it is, irregular
      times kept (the backtest sums those in each step); 0 where another contract settled alone;
    - **ADV** (USD/day, a frame on the steps): mean daily ``quote_volume`` of the underlying's spot
      bars over 30 days, lagged one step (bars closed by t - step), where the files have it.

    Alignment: steps from the latest first close / first settlement to the earliest last one,
    clipped to [start, end] (inclusive, UTC); steps missing for any asset are dropped. A warning
    names the series that limited the span or dropped steps.
    """
    if step not in DATA_STEPS:
        raise ValidationError("step", f"is {step!r}", f"give one of {sorted(DATA_STEPS)}")
    interval, bar, step_td = DATA_STEPS[step]
    root = Path(data_dir)
    asset_syms: list[str] = []
    for a in [c.underlying for c in contracts] + [str(x) for x in assets]:
        if a not in asset_syms:
            asset_syms.append(a)
    if not asset_syms:
        raise ValidationError("contracts", "is empty and no assets are given",
                              "give at least one contract or asset")
    lo = _utc_stamp(start, "start")
    hi = _utc_stamp(end, "end")
    # bars open before the first step's close: load from start - bar - ADV window
    load_from = str(lo - bar - ADV_WINDOW - step_td) if lo is not None else None
    load_to = str(hi) if hi is not None else None

    spot_cols: dict[str, pd.Series] = {}
    spans: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = {}
    for a in asset_syms:
        raw = load_spot_closes(root, [a], interval=interval, start=load_from, end=load_to)[a]
        grid = _on_grid(raw, bar, step_td)
        spot_cols[a] = grid
        if len(grid):
            spans[f"spot {a}"] = (grid.index[0], grid.index[-1])
    perps = [c for c in contracts if c.kind == ContractKind.PERPETUAL]
    fund_cols: dict[str, pd.Series] = {}
    notes: list[str] = []
    for c in perps:
        if _has_file(root, "funding", c.underlying) is None:
            notes.append(f"no funding file for {c.underlying}: {c.symbol} pays no funding")
            continue
        f = load_funding(root, [c.underlying], start=load_from, end=load_to)[c.underlying].dropna()
        fund_cols[c.symbol] = f.rename(c.symbol)
        if len(f):
            spans[f"funding {c.underlying}"] = (f.index[0], f.index[-1])

    if any(len(v) == 0 for v in spot_cols.values()) or not spans:
        raise ValidationError("data", f"has no {step} closes for {asset_syms} between {start} "
                              f"and {end}", "widen the span or pick other symbols")
    first = max(a for a, _b in spans.values())
    last = min(b for _a, b in spans.values())
    span_note = _span_note(spans, lo, hi)
    if lo is not None:
        first = max(first, lo)
    if hi is not None:
        last = min(last, hi)
    if last < first:
        raise ValidationError("data", f"has no span common to {sorted(spans)} within "
                              f"[{start}, {end}]", "choose symbols whose histories overlap")
    spot = pd.concat([v.loc[(v.index >= first) & (v.index <= last)].rename(k)
                      for k, v in spot_cols.items()], axis=1, join="outer", sort=True)
    complete = spot.notna().all(axis=1)
    if not complete.all():
        short = [a for a in asset_syms if spot[a].isna().any()]
        notes.append(f"{int((~complete).sum())} steps dropped where {short} lack a close")
        spot = spot.loc[complete]
    if spot.empty:
        raise ValidationError("data", f"has no step common to {asset_syms}",
                              "choose symbols whose histories overlap")
    index = pd.DatetimeIndex(spot.index, name="timestamp")
    spot.index = index
    if span_note:
        notes.insert(0, span_note)

    marks: dict[str, pd.Series] = {}
    for c in contracts:
        spot_c = spot[c.underlying]
        if _has_file(root, MARK_FOLDER, c.underlying) is None:
            continue
        raw = load_mark_closes(root, [c.underlying], start=load_from, end=load_to)[c.underlying]
        m = _on_grid(raw, MARK_BAR, step_td).reindex(index)
        missing = int(m.isna().sum())
        if missing:
            notes.append(f"{c.symbol}: {missing} of {len(index)} steps marked at spot (no mark bar)")
        marks[c.symbol] = m.fillna(spot_c)
    mark = (pd.DataFrame(marks, index=index, columns=list(marks), dtype=float)
            if marks else None)

    funding = None
    if fund_cols:
        frame = pd.concat(list(fund_cols.values()), axis=1, join="outer", sort=True)
        frame = frame.loc[(frame.index >= index[0]) & (frame.index <= index[-1])]
        funding = frame.fillna(0.0).astype(float)
        funding.index = pd.DatetimeIndex(funding.index, name="timestamp")

    advs: dict[str, pd.Series] = {}
    for c in contracts:
        path = _has_file(root, f"spot_{interval}", c.underlying)
        qv = _quote_volume(path) if path is not None else None
        if qv is not None:
            advs[c.symbol] = _adv(qv, bar, index, step_td)
    adv = pd.DataFrame(advs, index=index, columns=list(advs), dtype=float) if advs else None

    if notes:
        warnings.warn(f"MarketPath.from_data ({step}, {index[0]} .. {index[-1]}, "
                      f"{len(index)} steps): " + "; ".join(notes), stacklevel=3)
    return MarketPath(spot=spot.astype(float), mark=mark, funding=funding, adv=adv)


# ---------------------------------------------------------------------------------------------
# Collateral management


@dataclass(frozen=True)
class CollateralPolicy:
    """Keep the futures wallet's margin balance in a band around a reserve target (DESIGN.md).

    Wallet balance ``W = cash + unrealised PnL`` (USD; pledged spot is not counted), NAV ``V``.
    ``target_fraction`` tau (fraction of NAV; None: the book's initial ``W / V`` at the first
    step's prices, before any trade) and ``band`` b (relative, >= 0): after the policy's trades,
    while futures positions are open, a wallet outside ``[tau (1 - b) V, tau (1 + b) V]`` is moved
    back to exactly ``tau V'`` (V' the NAV after the sweep's fees):

    - **top-up** (W too low): sell spot pro rata to spot values v_i, gross
      ``G = (tau V - W) / (1 - f + tau f)`` with f = sum_i v_i f_i / sum_i v_i (spot fee rates), capped
      at all the spot held; the wallet receives G (1 - f);
    - **sweep-out** (W too high): buy spot pro rata to the target weights w*_i, gross
      ``B = (W - tau V) / (1 + f - tau f)`` with f = sum_i w*_i f_i / sum_i w*_i; the wallet pays
      B (1 + f).

    Spot trades at the close and pays the spot fee only (no spread/impact, as for policy trades).
    ``enabled=False`` switches sweeps off (see ``NO_SWEEPS``).
    """

    target_fraction: float | None = None
    band: float = 0.5
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.target_fraction is not None and not (
                math.isfinite(self.target_fraction) and 0 <= self.target_fraction < 1):
            raise ValidationError("collateral.target_fraction", f"is {self.target_fraction}",
                                  "give the wallet reserve as a fraction of NAV in [0, 1)")
        if not (math.isfinite(self.band) and self.band >= 0):
            raise ValidationError("collateral.band", f"is {self.band}",
                                  "give the relative band around the target as a number >= 0")


#: Collateral management switched off (the wallet drifts with futures PnL, as without sweeps).
NO_SWEEPS = CollateralPolicy(enabled=False)


# ---------------------------------------------------------------------------------------------
# Result


#: Columns of ``BacktestResult.rolls``.
ROLL_COLUMNS = ["time", "step", "from", "to", "from_price", "to_price", "notional", "opened",
                "fee", "slippage", "basis"]


@dataclass(frozen=True)
class BacktestResult:
    """What a backtest recorded (all USD unless said otherwise; one row per step, end of step).

    ``steps`` columns: nav, base (the target base V), cash, wallet (cash + unrealised PnL),
    collateral, spot_pnl, futures_pnl (mark-to-market of held positions), fee_spot, fee_futures
    (exchange fee), slippage_futures (half spread + impact), funding (paid, > 0 is a cost),
    liquidation_penalty, margin_ratio (maintenance / collateral at the margin check, before the
    policy), margin_ratio_end (after the trades and sweeps), liquidated (bool), traded_spot and
    traded_futures (gross |notional| traded by the policy), sweep_in (gross spot sold to top up
    the wallet), sweep_out (gross spot bought with the wallet's excess) and sweep_fees (their
    spot fees; not in fee_spot), solve_time_ms and solver_fallbacks (from the policy's
    ``TargetHoldings`` when it gives them: solver time in ms and solvers that failed
    before the one that served; NaN and 0 otherwise). solve_time_ms is wall-clock, the one
    recorded value that differs between two runs of the same inputs.
    Identity per step: nav_t - nav_{t-1} = spot_pnl + futures_pnl - fee_spot - fee_futures
    - slippage_futures - funding - liquidation_penalty - sweep_fees.
    ``spot_value`` (per asset), ``futures_notional`` (signed, per contract) and ``weights``
    (effective weights per asset) are frames on the same index. ``trades`` and ``liquidations``
    list events (one row each; trade kinds: spot, futures, settle (a dated future closed at spot
    at expiry; its fee is in fee_futures, its spot-vs-mark PnL in futures_pnl), sweep_in,
    sweep_out). ``targets``: w* per asset; ``policy``: the policy's name.
    ``rolls``: one row per roll a policy declared (``RollTargets``) with a leg traded: time, step
    (position in the index), from / to (contracts), from_price / to_price (marks, USD), notional
    (USD, signed: the position closed in ``from``, at its mark), opened (USD, signed: the ``to``
    leg's trade), fee and slippage (both legs; already in fee_futures / slippage_futures) and
    basis = opened x (to_price - from_price) / to_price (USD; > 0 a cost: a long rolled into
    contango, a short into backwardation): the price
    gap between the legs, paid later through futures_pnl as the new contract converges, not a
    separate cash flow (exact for linear contracts when the old leg was at spot).
    """

    steps: pd.DataFrame
    spot_value: pd.DataFrame
    futures_notional: pd.DataFrame
    weights: pd.DataFrame
    trades: pd.DataFrame
    liquidations: pd.DataFrame
    targets: pd.Series
    spot_returns: pd.DataFrame
    policy: str
    rolls: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ROLL_COLUMNS))

    def frames(self) -> dict[str, pd.DataFrame]:
        """Every recorded frame by name (for comparisons and export)."""
        return {"steps": self.steps, "spot_value": self.spot_value,
                "futures_notional": self.futures_notional, "weights": self.weights,
                "trades": self.trades, "liquidations": self.liquidations,
                "spot_returns": self.spot_returns, "rolls": self.rolls}


TRADE_COLUMNS = ["time", "kind", "symbol", "quantity", "price", "notional", "fee", "slippage"]
LIQUIDATION_COLUMNS = ["time", "contract", "contracts", "mark", "notional", "penalty"]


@dataclass(frozen=True)
class RollTargets(TargetHoldings):
    """Target holdings that say which of their trades are rolls: ``rolls`` lists (from, to)
    contract pairs whose position moves from the first into the second at this step (e.g.
    ``scenarios.rolls.RollingPolicy``). The backtest trades them like any target and records one
    row per pair in ``BacktestResult.rolls`` (see there)."""

    rolls: tuple[tuple[str, str], ...] = ()

# ---------------------------------------------------------------------------------------------
# Engine


def _resolved_marks(book: Book, path: MarketPath) -> pd.DataFrame:
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


def _funding_matrix(book: Book, path: MarketPath) -> tuple[np.ndarray, np.ndarray]:
    """Settlement times (int64 ns) and rates (S x M, book contract order; 0 where none)."""
    if path.funding is None or len(path.funding.index) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(book.contracts)))
    f = path.funding
    rates = np.zeros((len(f.index), len(book.contracts)))
    for j, c in enumerate(book.contracts):
        if c.symbol in f.columns:
            rates[:, j] = f[c.symbol].to_numpy(dtype=float)
    times = pd.DatetimeIndex(f.index).tz_convert("UTC").as_unit("ns").asi8
    return times, rates


def _impact_vol(book: Book, path: MarketPath) -> pd.DataFrame:
    """Daily vol per contract's underlying: trailing std of log returns over the last
    ``IMPACT_VOL_WINDOW`` steps (data up to and including t), scaled to one day by the median step."""
    logret = pd.DataFrame(np.log(path.spot.to_numpy(dtype=float)), index=path.spot.index,
                          columns=path.spot.columns).diff()
    vol = logret.rolling(IMPACT_VOL_WINDOW, min_periods=2).std()
    if len(path.spot.index) > 1:
        step_days = median_step_days(pd.DatetimeIndex(path.spot.index))
        vol = vol / math.sqrt(step_days)
    return pd.DataFrame({c.symbol: vol[c.underlying] for c in book.contracts},
                        index=path.spot.index, columns=book.contract_symbols, dtype=float)


def median_step_days(index: pd.DatetimeIndex) -> float:
    """Median spacing of ``index`` in days (whatever the index's time unit); needs two stamps."""
    ns = index.as_unit("ns").asi8
    return float(np.median(np.diff(ns))) / 86400e9


@dataclass
class _State:
    """Mutable accounting state: spot quantities, open positions and the signed wallet cash."""

    spot: dict[str, float]
    futures: dict[str, FuturesPosition]
    cash: float


def _view(book: Book, state: _State) -> Book:
    """The book as it stands: its spot, positions and signed wallet cash."""
    if not math.isfinite(state.cash):  # holdings are checked where they change; cash sums inputs
        raise ValidationError("market_path", f"drove the wallet cash to {state.cash}",
                              "check the path's prices and funding rates for NaN or inf")
    return book.evolve(spot=state.spot, futures=state.futures, cash=state.cash, validate=False)


@dataclass(frozen=True)
class _Valuation:
    """The book valued at one market (USD)."""

    spot_values: np.ndarray
    notional: np.ndarray
    weights: np.ndarray
    upnl: float
    wallet: float
    nav: float
    collateral: float
    base: float
    nav_base: bool = False

    def with_cash(self, delta: float) -> _Valuation:
        """The same valuation after ``delta`` USD of cash moved into the wallet (funding): wallet,
        NAV and collateral move by ``delta``; so does the base V when targets apply to the NAV."""
        if delta == 0:
            return self
        base = self.base + delta if self.nav_base else self.base
        exposure = self.weights * self.base
        weights = exposure / base if base != 0 else np.full(len(self.spot_values), np.nan)
        return replace(self, weights=weights, wallet=self.wallet + delta, nav=self.nav + delta,
                       collateral=self.collateral + delta, base=base)


def _value(book: Book, state: _State, market: MarketSnapshot) -> _Valuation:
    """Valuation in one pass (``Book.valuation``: each price read once) plus the effective
    weights ``e = (spot + B x) / V`` (NaN when the base V is 0)."""
    view = _view(book, state)
    v = view.valuation(market)
    exposure = v.spot_values + view.exposure_matrix() @ v.notional
    weights = exposure / v.base if v.base != 0 else np.full(len(v.spot_values), np.nan)
    return _Valuation(spot_values=v.spot_values, notional=v.notional, weights=weights, upnl=v.upnl,
                      wallet=v.wallet, nav=v.nav, collateral=v.collateral, base=v.base,
                      nav_base=book.targets_base == TargetsBase.NAV)


def _rebalance_futures(book: Book, state: _State, market: MarketSnapshot,
                       contracts: Mapping[str, float]) -> None:
    """Move positions to ``contracts`` through ``Book.with_futures``: changed positions are re-struck
    at mark and their PnL realised into cash."""
    moved = _view(book, state).with_futures(contracts, market)
    state.cash = moved.cash
    state.futures = dict(moved.futures)


def expiry_ns(contract: FuturesContract) -> int | None:
    """A dated contract's expiry as UTC int64 ns (a naive expiry is read as UTC); None for a
    perpetual."""
    if contract.kind != ContractKind.DATED or contract.expiry is None:
        return None
    t = pd.Timestamp(contract.expiry)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return int(t.as_unit("ns").value)


def _settle_expired(book: Book, state: _State, market: MarketSnapshot, t_ns: int,
                    expiries: Mapping[str, int], trades: list[dict[str, object]]
                    ) -> tuple[float, float]:
    """Close every open dated position with expiry <= t at its underlying's spot S (step 2b).

    The PnL is realised into cash at S; returns (PnL of S against the mark, USD: the NAV change of
    re-marking the settled positions from mark to S; fees, USD: ``taker_fee x |q x size x S|``
    for linear, ``taker_fee x |q x size|`` for inverse, paid from cash). Appends "settle" trades.
    """
    due = [c for c in book.contract_symbols if c in expiries and t_ns >= expiries[c]
           and c in state.futures and state.futures[c].contracts != 0]
    if not due:
        return 0.0, 0.0
    cons = {c.symbol: c for c in book.contracts}
    at_spot = replace(market, mark={**market.mark,
                                    **{c: market.spot_price(cons[c].underlying) for c in due}})
    pnl = _value(book, state, at_spot).nav - _value(book, state, market).nav
    fees = 0.0
    for c in due:
        q = state.futures[c].contracts
        px = at_spot.mark_price(c)
        notional = q * cons[c].notional_per_contract(px)
        fee = cons[c].taker_fee * abs(notional)
        fees += fee
        trades.append({"time": market.time, "kind": "settle", "symbol": c, "quantity": -q,
                       "price": px, "notional": -notional, "fee": fee, "slippage": 0.0})
    _rebalance_futures(book, state, at_spot, dict.fromkeys(due, 0.0))
    state.cash -= fees
    return pnl, fees


@dataclass(frozen=True)
class _Sweep:
    """One collateral sweep (USD): gross spot sold into the wallet, gross spot bought from it, fees."""

    sweep_in: float = 0.0
    sweep_out: float = 0.0
    fees: float = 0.0


def _sweep(book: Book, state: _State, market: MarketSnapshot, tau: float, band: float,
           fee_rate: np.ndarray, trades: list[dict[str, object]],
           val: _Valuation | None = None) -> _Sweep:
    """Move value between spot and the wallet when W leaves [tau (1-b) V, tau (1+b) V]
    (``CollateralPolicy``); returns what moved. Mutates ``state`` and appends to ``trades``.
    ``val``: the state's valuation at ``market`` when the caller already has it."""
    if val is None:
        val = _value(book, state, market)
    nav, wallet = val.nav, val.wallet
    if not (nav > 0) or not np.any(val.notional != 0):
        return _Sweep()
    lo, hi = tau * (1.0 - band) * nav, tau * (1.0 + band) * nav
    assets = book.asset_symbols
    ts = market.time
    if wallet < lo:
        v = val.spot_values
        total = float(v.sum())
        if total <= 0:
            return _Sweep()
        fbar = float(v @ fee_rate) / total
        gross = min((tau * nav - wallet) / (1.0 - fbar + tau * fbar), total)
        sell_all = gross >= total
        fees = 0.0
        for i, a in enumerate(assets):
            if v[i] <= 0:
                continue
            g = float(v[i]) if sell_all else gross * float(v[i]) / total
            px = market.spot_price(a)
            dq = -state.spot[a] if sell_all else -g / px
            fee = float(fee_rate[i]) * g
            state.spot[a] = 0.0 if sell_all else state.spot[a] + dq
            state.cash += g - fee
            fees += fee
            trades.append({"time": ts, "kind": "sweep_in", "symbol": a, "quantity": dq,
                           "price": px, "notional": -g, "fee": fee, "slippage": 0.0})
        return _Sweep(sweep_in=float(v.sum()) if sell_all else gross, fees=fees)
    if wallet > hi:
        w = book.target_vector()
        wsum = float(w.sum())
        if wsum <= 0:
            return _Sweep()
        fbar = float(w @ fee_rate) / wsum
        gross = (wallet - tau * nav) / (1.0 + fbar - tau * fbar)
        fees = 0.0
        for i, a in enumerate(assets):
            if w[i] <= 0:
                continue
            b = gross * float(w[i]) / wsum
            px = market.spot_price(a)
            fee = float(fee_rate[i]) * b
            state.spot[a] += b / px
            state.cash -= b + fee
            fees += fee
            trades.append({"time": ts, "kind": "sweep_out", "symbol": a, "quantity": b / px,
                           "price": px, "notional": b, "fee": fee, "slippage": 0.0})
        return _Sweep(sweep_out=gross, fees=fees)
    return _Sweep()


def _roll_rows(target: RollTargets, cons: Sequence[str], market: MarketSnapshot, k: int,
               trade_usd: np.ndarray, fee_j: np.ndarray, slip_j: np.ndarray
               ) -> list[dict[str, object]]:
    """``BacktestResult.rolls`` rows for the declared (from, to) pairs with a leg traded."""
    out: list[dict[str, object]] = []
    for a, b in target.rolls:
        for sym in (a, b):
            if sym not in cons:
                raise ValidationError(f"policy.rolls.{sym}", f"is not a contract of the book at "
                                      f"{market.time}", f"roll between {list(cons)}")
        ja, jb = cons.index(a), cons.index(b)
        if trade_usd[ja] == 0 and trade_usd[jb] == 0:
            continue
        pa, pb = market.mark_price(a), market.mark_price(b)
        opened = float(trade_usd[jb])
        out.append({"time": market.time, "step": k, "from": a, "to": b, "from_price": pa,
                    "to_price": pb, "notional": -float(trade_usd[ja]), "opened": opened,
                    "fee": float(fee_j[ja] + fee_j[jb]), "slippage": float(slip_j[ja] + slip_j[jb]),
                    "basis": opened * (pb - pa) / pb})
    return out


def run_backtest(book: Book, history: MarketPath, policy: Policy, *,
                 liquidation_penalty: float = LIQUIDATION_PENALTY, spot_fee: float | None = None,
                 collateral: CollateralPolicy | None = None,
                 impact_k: float = 1.0) -> BacktestResult:
    """Replay ``history`` from ``book`` under ``policy`` (see the module docstring for the steps).

    ``liquidation_penalty``: fraction of |notional| charged when positions are liquidated;
    ``impact_k``: coefficient k of the square-root impact charged on futures fills (when ADV is
    known), as in models.costs.CostModel;
    ``spot_fee``: spot fee as a fraction of notional for every asset (default: each asset's
    ``SpotAsset.fee``, 0.001 unless set). Policies with state (calendar triggers) should be fresh.
    ``collateral``: the wallet's reserve band (step 5); None means ``CollateralPolicy()`` (target =
    the initial wallet / NAV, band 0.5) for a book that lists futures contracts, and no sweeps for
    a spot-only book; ``NO_SWEEPS`` switches them off.
    """
    if not (math.isfinite(liquidation_penalty) and 0 <= liquidation_penalty < 1):
        raise ValidationError("liquidation_penalty", f"is {liquidation_penalty}",
                              "give a fraction of notional in [0, 1)")
    if spot_fee is not None and not (math.isfinite(spot_fee) and 0 <= spot_fee < 1):
        raise ValidationError("spot_fee", f"is {spot_fee}", "give a fraction of notional in [0, 1)")
    if not (math.isfinite(impact_k) and impact_k >= 0):
        raise ValidationError("impact_k", f"is {impact_k}", "give the impact coefficient k >= 0")
    missing = [a for a in book.asset_symbols if a not in history.spot.columns]
    if missing:
        raise ValidationError("market_path.spot", f"has no prices for {missing}",
                              "give a spot column for every asset of the book")

    assets = book.asset_symbols
    cons = book.contract_symbols
    index = history.spot.index
    spot_px = history.spot[assets].astype(float)
    marks = _resolved_marks(book, history)
    settle_t, settle_r = _funding_matrix(book, history)
    step_ns = pd.DatetimeIndex(index).tz_convert("UTC").as_unit("ns").asi8
    with_impact = history.adv is not None
    vol = _impact_vol(book, history) if with_impact else None
    half = {c: float(history.half_spread[c]) for c in cons
            if history.half_spread is not None and c in history.half_spread.index}
    adv_static: dict[str, float] = {}
    adv_frame: pd.DataFrame | None = None
    if isinstance(history.adv, pd.DataFrame):
        adv_frame = history.adv[[c for c in cons if c in history.adv.columns]].astype(float)
    elif history.adv is not None:
        adv_static = {c: float(history.adv[c]) for c in cons if c in history.adv.index}
    margin = MarginModel.from_contracts(book.contracts)
    fee_spot_rate = np.array([spot_fee if spot_fee is not None else a.fee for a in book.assets])
    expiries = {c.symbol: e for c in book.contracts if (e := expiry_ns(c)) is not None}

    if collateral is None:
        collateral = CollateralPolicy() if book.contracts else NO_SWEEPS
    tau: float | None = collateral.target_fraction

    state = _State(spot={a: float(book.spot.get(a, 0.0)) for a in assets},
                   futures={s: p for s, p in book.futures.items() if p.contracts != 0},
                   cash=float(book.cash))

    # plain arrays and symbol lists, read once: a step reads row k of each
    spot_arr = spot_px.to_numpy(dtype=float)
    mark_arr = marks.to_numpy(dtype=float)
    vol_arr = vol.to_numpy(dtype=float) if vol is not None else None
    adv_cols = [str(c) for c in adv_frame.columns] if adv_frame is not None else []
    adv_arr = adv_frame.to_numpy(dtype=float) if adv_frame is not None else None
    zero_rate = np.zeros(len(cons))
    arrays = contract_arrays(book.contracts)

    rows: list[dict[str, float | bool]] = []
    spot_rows: list[np.ndarray] = []
    fut_rows: list[np.ndarray] = []
    w_rows: list[np.ndarray] = []
    trades: list[dict[str, object]] = []
    liqs: list[dict[str, object]] = []
    roll_rows: list[dict[str, object]] = []
    prev_market: MarketSnapshot | None = None
    prev_end: _Valuation | None = None

    for k, t in enumerate(index):
        ts = pd.Timestamp(t)
        # the latest funding rate at or before t: the policy's view of carry
        n_settled = int(np.searchsorted(settle_t, step_ns[k], side="right"))
        last_rate = settle_r[n_settled - 1] if n_settled > 0 else zero_rate
        adv = adv_static if adv_arr is None else {
            c: v for c, v in zip(adv_cols, adv_arr[k].tolist(), strict=True) if math.isfinite(v)}
        market = MarketSnapshot(time=ts, spot=dict(zip(assets, spot_arr[k].tolist(), strict=True)),
                                mark=dict(zip(cons, mark_arr[k].tolist(), strict=True)),
                                funding=dict(zip(cons, last_rate.tolist(), strict=True)),
                                half_spread=half, adv=adv, synthetic=history.synthetic)
        row: dict[str, float | bool] = dict.fromkeys(
            ("spot_pnl", "futures_pnl", "fee_spot", "fee_futures", "slippage_futures", "funding",
             "liquidation_penalty", "traded_spot", "traded_futures", "sweep_in", "sweep_out",
             "sweep_fees"), 0.0)
        row["liquidated"] = False
        row["solve_time_ms"] = math.nan
        row["solver_fallbacks"] = 0.0
        if prev_market is None:
            # (2b) positions already expired at the start settle at spot
            pnl_s, fee_s = _settle_expired(book, state, market, int(step_ns[k]), expiries, trades)
            row["futures_pnl"], row["fee_futures"] = pnl_s, fee_s
            first = _value(book, state, market)
            now = first
            row["margin_ratio"] = margin_state(margin, first.notional, first.collateral).margin_ratio
            if tau is None:
                tau = first.wallet / first.nav if first.nav > 0 else 0.0
                tau = min(max(tau, 0.0), 1.0)
        else:
            # (1) mark to market (positions and quantities as held since t_prev; nothing changed
            # the state since the previous step's end valuation)
            before = prev_end if prev_end is not None else _value(book, state, prev_market)
            now = _value(book, state, market)
            row["spot_pnl"] = float(now.spot_values.sum() - before.spot_values.sum())
            row["futures_pnl"] = now.upnl - before.upnl
            # (2) funding: every settlement in (t_prev, t], at this step's mark
            lo = int(np.searchsorted(settle_t, step_ns[k - 1], side="right"))
            if n_settled > lo:
                paid = float(settle_r[lo:n_settled].sum(axis=0) @ now.notional)
                state.cash -= paid
                row["funding"] = paid
                now = now.with_cash(-paid)
            # (2b) dated futures at or past expiry settle at spot
            n_trades = len(trades)
            pnl_s, fee_s = _settle_expired(book, state, market, int(step_ns[k]), expiries, trades)
            row["futures_pnl"] = float(row["futures_pnl"]) + pnl_s
            row["fee_futures"] = fee_s
            if len(trades) != n_trades:
                now = _value(book, state, market)
            # (3) margin check against maintenance (the one margin engine)
            ms = margin_state(margin, now.notional, now.collateral)
            row["margin_ratio"] = ms.margin_ratio
            if ms.liquidated:
                per = liquidation_penalty * np.abs(now.notional)
                for j, c in enumerate(cons):
                    pos = state.futures.get(c)
                    if pos is not None and pos.contracts != 0:
                        liqs.append({"time": ts, "contract": c, "contracts": pos.contracts,
                                     "mark": market.mark_price(c),
                                     "notional": float(now.notional[j]), "penalty": float(per[j])})
                _rebalance_futures(book, state, market, dict.fromkeys(cons, 0.0))
                penalty = float(per.sum())
                state.cash -= penalty
                row["liquidation_penalty"] = penalty
                row["liquidated"] = True
                now = _value(book, state, market)

        # (4) policy, then trades at the close (spot) and at mark (futures); ``current`` stays the
        # state's valuation at ``market`` until a trade changes the state
        current: _Valuation | None = now
        target = policy(_view(book, state), market, ts)
        if target.solve_time_ms is not None:
            row["solve_time_ms"] = float(target.solve_time_ms)
            row["solver_fallbacks"] = float(target.solver_fallbacks)
        for i, a in enumerate(assets):
            q_new = float(target.spot.get(a, state.spot[a]))
            if not (math.isfinite(q_new) and q_new >= 0):
                raise ValidationError(f"policy.spot.{a}", f"is {q_new} at {ts}",
                                      "a policy must target finite spot quantities >= 0")
            dq = q_new - state.spot[a]
            if dq == 0:
                continue
            px = market.spot_price(a)
            fee = float(fee_spot_rate[i]) * abs(dq) * px
            state.cash -= dq * px + fee
            state.spot[a] = q_new
            current = None
            row["fee_spot"] = float(row["fee_spot"]) + fee
            row["traded_spot"] = float(row["traded_spot"]) + abs(dq) * px
            trades.append({"time": ts, "kind": "spot", "symbol": a, "quantity": dq, "price": px,
                           "notional": dq * px, "fee": fee, "slippage": 0.0})

        new_q: dict[str, float] = {}
        dq_f = np.zeros(len(cons))
        trade_usd = np.zeros(len(cons))
        npc = arrays.notional_per_contract(mark_arr[k])
        for j, c in enumerate(cons):
            pos = state.futures.get(c)
            q_old = pos.contracts if pos is not None else 0.0
            x_new = float(target.futures.get(c, q_old * npc[j]))
            if c in expiries and step_ns[k] >= expiries[c]:
                x_new = 0.0  # an expired dated contract cannot be held
            if not math.isfinite(x_new):
                raise ValidationError(f"policy.futures.{c}", f"is {x_new} at {ts}",
                                      "a policy must target finite futures notional (USD)")
            q_new = x_new / float(npc[j])
            if math.isclose(q_new, q_old, rel_tol=QTY_RTOL, abs_tol=0.0):
                continue  # the same position (notional round trip): no trade, no re-strike
            new_q[c] = q_new
            dq_f[j] = q_new - q_old
            trade_usd[j] = dq_f[j] * npc[j]
        fee_j = np.zeros(len(cons))
        slip_j = np.zeros(len(cons))
        if new_q:
            daily_vol = vol_arr[k] if vol_arr is not None else np.zeros(len(cons))
            cost = CostModel.build(book.contracts, market, daily_vol, impact_k)
            fee_j = cost.fee * np.abs(trade_usd)
            slip_j = cost.half_spread * np.abs(trade_usd)
            if with_impact:
                slip_j = slip_j + cost.impact * np.abs(trade_usd) ** 1.5
            _rebalance_futures(book, state, market, new_q)
            state.cash -= float(fee_j.sum()) + float(slip_j.sum())
            current = None
            row["fee_futures"] = float(row["fee_futures"]) + float(fee_j.sum())
            row["slippage_futures"] = float(slip_j.sum())
            row["traded_futures"] = float(np.abs(trade_usd).sum())
            for j, c in enumerate(cons):
                if c in new_q:
                    trades.append({"time": ts, "kind": "futures", "symbol": c,
                                   "quantity": float(dq_f[j]), "price": market.mark_price(c),
                                   "notional": float(trade_usd[j]), "fee": float(fee_j[j]),
                                   "slippage": float(slip_j[j])})
        if isinstance(target, RollTargets):
            roll_rows.extend(_roll_rows(target, cons, market, k, trade_usd, fee_j, slip_j))

        # (5) collateral sweeps between spot and the wallet
        if collateral.enabled and tau is not None:
            if current is None:
                current = _value(book, state, market)
            n_trades = len(trades)
            sw = _sweep(book, state, market, tau, collateral.band, fee_spot_rate, trades, current)
            row.update(sweep_in=sw.sweep_in, sweep_out=sw.sweep_out, sweep_fees=sw.fees)
            if len(trades) != n_trades:
                current = None

        end = current if current is not None else _value(book, state, market)
        row["margin_ratio_end"] = margin_state(margin, end.notional, end.collateral).margin_ratio
        row.update(nav=end.nav, base=end.base, cash=state.cash, wallet=end.wallet,
                   collateral=end.collateral)
        rows.append(row)
        spot_rows.append(end.spot_values.astype(float))
        fut_rows.append(end.notional.astype(float))
        w_rows.append(end.weights.astype(float))
        prev_market = market
        prev_end = end

    order = ["nav", "base", "cash", "wallet", "collateral", "spot_pnl", "futures_pnl", "fee_spot",
             "fee_futures", "slippage_futures", "funding", "liquidation_penalty", "margin_ratio",
             "margin_ratio_end", "liquidated", "traded_spot", "traded_futures", "sweep_in",
             "sweep_out", "sweep_fees", "solve_time_ms", "solver_fallbacks"]
    steps = pd.DataFrame(rows, index=index, columns=order)
    steps["liquidated"] = steps["liquidated"].astype(bool)
    return BacktestResult(
        steps=steps,
        spot_value=pd.DataFrame(np.array(spot_rows), index=index, columns=assets),
        futures_notional=pd.DataFrame(np.array(fut_rows).reshape(len(index), len(cons)),
                                      index=index, columns=cons),
        weights=pd.DataFrame(np.array(w_rows), index=index, columns=assets),
        trades=pd.DataFrame(trades, columns=TRADE_COLUMNS),
        liquidations=pd.DataFrame(liqs, columns=LIQUIDATION_COLUMNS),
        targets=pd.Series(book.target_vector(), index=assets, dtype=float),
        spot_returns=spot_px / spot_px.shift(1) - 1.0,
        policy=str(getattr(policy, "name", type(policy).__name__)),
        rolls=pd.DataFrame(roll_rows, columns=ROLL_COLUMNS),
    )
