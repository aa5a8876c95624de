"""Real market data for a backtest: the shared data layout (``models.io``) read onto a step grid.

:func:`load_market_data` turns spot / mark / funding files into aligned frames (:class:`MarketData`):
steps every 4 h, 8 h or 1 d at UTC multiples of the step, stamped at bar close; irregular funding
settlements kept as they are; ADV (USD/day) from 30 days of spot quote volume, lagged one step (no
look-ahead). ``scenarios.market_path.path_from_data`` wraps the frames into a ``MarketPath``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.data_files import optional_file, read_frame
from models.data_layout import FUNDING_FOLDER, MARK_FOLDER, spot_folder
from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract
from models.io import load_funding, load_mark_closes, load_spot_closes

#: Step name -> (spot folder interval, bar length, step length). Files stamp bars by open time;
#: a bar's close is known at open + bar length, which is the step timestamp used here.
DATA_STEPS: dict[str, tuple[str, pd.Timedelta, pd.Timedelta]] = {
    "4h": ("4h", pd.Timedelta(hours=4), pd.Timedelta(hours=4)),
    "8h": ("4h", pd.Timedelta(hours=4), pd.Timedelta(hours=8)),
    "1d": ("1d", pd.Timedelta(days=1), pd.Timedelta(days=1)),
}
#: Window of the rolling mean daily quote volume used as ADV.
ADV_WINDOW = pd.Timedelta(days=30)
#: Bar length of the perpetual mark closes (``models.data_layout.MARK_FOLDER``).
MARK_BAR = pd.Timedelta(hours=4)


def _has_file(data_dir: Path, folder: str, symbol: str) -> Path | None:
    return optional_file(data_dir, folder, symbol)


def _on_grid(series: pd.Series, bar: pd.Timedelta, step: pd.Timedelta) -> pd.Series:
    """Re-stamp bars at their close time (open + bar) and keep the closes on the step grid (UTC
    multiples of ``step``): the last close of each step, dropped when that bar is missing."""
    out = series.copy()
    out.index = pd.DatetimeIndex(series.index) + bar
    keep = out.index.floor(step) == out.index
    return out.loc[keep]


def _quote_volume(path: Path) -> pd.Series | None:
    """The ``quote_volume`` column (USD per bar) of a spot file, by bar open time, or None."""
    raw = read_frame(path)
    if path.name.endswith(".parquet") and "timestamp" not in raw.columns:
        raw = raw.reset_index()
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


@dataclass(frozen=True)
class MarketData:
    """Aligned frames read from the shared layout (the fields of a ``MarketPath``).

    ``spot``: closes (USD) per asset on the steps (tz-aware UTC); ``mark``: mark closes (USD) per
    contract with a mark file, on the same index (None: none has one); ``funding``: rate per
    settlement (fraction, positive: longs pay) per perpetual, indexed by settlement time: the union
    of the perpetuals' schedules, 0 where a contract did not settle (None: no funding file);
    ``funding_settled``: on the same index and columns, True where the contract settled (its file
    has that time), so a real rate of exactly 0 (LTC has hundreds in 2020) stays a settlement and a
    row another contract settled alone does not (None with ``funding``); ``adv``: USD/day on the
    steps per contract (its underlying's spot volume), then per asset symbol (the asset's spot
    volume), NaN where unknown (None: no volume).
    """

    spot: pd.DataFrame
    mark: pd.DataFrame | None
    funding: pd.DataFrame | None
    adv: pd.DataFrame | None
    funding_settled: pd.DataFrame | None = None


def load_market_data(data_dir: Path | str, contracts: Sequence[FuturesContract], *,
                     start: str | None = None, end: str | None = None, step: str = "8h",
                     assets: Sequence[str] = ()) -> MarketData:
    """The frames of a market path from files in the shared layout (see ``models.io``).

    - **steps** every ``step`` ("4h", "8h" or "1d") at UTC multiples of it; a step's timestamp is
      the close time of the bar that ends there (files stamp bars by open time);
    - **spot** (assets: the contracts' underlyings, then ``assets``): closes of ``spot_4h``
      (steps "4h"/"8h": the last 4 h close of each step) or ``spot_1d`` (step "1d"); a step whose
      last bar is missing is dropped (never a stale close);
    - **marks**: ``perp_mark_4h/<underlying>`` closes on the same grid where the file and the
      bar exist, else the underlying's spot close (dated contracts also use the perp mark;
      ``scenarios.dated_basis.with_dated_marks`` re-prices them from a basis model);
    - **funding** (perpetuals): every settlement of ``funding/<underlying>`` as it is, irregular
      times kept (the backtest sums those in each step); rate 0 and ``funding_settled`` False
      where another contract settled alone (:func:`_funding_frame`);
    - **ADV** (USD/day, a frame on the steps): mean daily ``quote_volume`` of the spot bars over
      30 days, lagged one step (bars closed by t - step), where the files have it: a column per
      contract (its underlying's) and one per asset symbol (the spot trades' impact).

    Alignment: steps from the latest first close / first settlement to the earliest last one,
    clipped to [start, end] (inclusive, UTC); steps missing for any asset are dropped. A warning
    names the series that limited the span or dropped steps; it is attributed to the caller of
    ``MarketPath.from_data`` (or of ``path_from_data``), two frames above this function.
    """
    if step not in DATA_STEPS:
        raise ValidationError("step", f"is {step!r}", f"give one of {sorted(DATA_STEPS)}")
    interval, bar, step_td = DATA_STEPS[step]
    asset_syms = _asset_symbols(contracts, assets)
    lo = _utc_stamp(start, "start")
    hi = _utc_stamp(end, "end")
    # bars open before the first step's close: load from start - bar - ADV window
    src = _Source(Path(data_dir), str(lo - bar - ADV_WINDOW - step_td) if lo is not None else None,
                  str(hi) if hi is not None else None, step_td)
    spot_cols, spans = _spot_columns(src, asset_syms, interval, bar)
    notes: list[str] = []
    fund_cols = _funding_columns(src, contracts, spans, notes)
    if any(len(v) == 0 for v in spot_cols.values()) or not spans:
        raise ValidationError("data", f"has no {step} closes for {asset_syms} between {start} "
                              f"and {end}", "widen the span or pick other symbols")
    spot = _common_spot(spot_cols, spans, asset_syms, (lo, hi), (start, end), notes)
    index = pd.DatetimeIndex(spot.index, name="timestamp")
    spot.index = index
    mark = _marks(src, contracts, spot, notes)
    funding, settled = _funding_frame(fund_cols, index)
    adv = _adv_frame(src, contracts, asset_syms, interval, bar, index)
    if notes:
        warnings.warn(f"MarketPath.from_data ({step}, {index[0]} .. {index[-1]}, "
                      f"{len(index)} steps): " + "; ".join(notes), stacklevel=4)
    return MarketData(spot=spot.astype(float), mark=mark, funding=funding, adv=adv,
                      funding_settled=settled)


def _funding_frame(fund_cols: Mapping[str, pd.Series], index: pd.DatetimeIndex
                   ) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The perpetuals' settlements within the steps' span [first step, last step] on the union of
    their schedules: the rates (fraction per settlement; 0 where a contract did not settle, so it
    pays nothing there) and the bool mask of where each one settled (its file has the time; the
    files' rows are finite, ``_funding_columns``). (None, None) without a funding file."""
    if not fund_cols:
        return None, None
    frame = pd.concat(list(fund_cols.values()), axis=1, join="outer", sort=True)
    frame = frame.loc[(frame.index >= index[0]) & (frame.index <= index[-1])]
    stamps = pd.DatetimeIndex(frame.index, name="timestamp")
    settled = frame.notna()
    settled.index = stamps
    funding = frame.fillna(0.0).astype(float)
    funding.index = stamps
    return funding, settled


@dataclass(frozen=True)
class _Source:
    """Where and what to read: the data folder, the span of bars to load (ISO, UTC; None: all)
    and the step length."""

    root: Path
    start: str | None
    end: str | None
    step: pd.Timedelta


def _asset_symbols(contracts: Sequence[FuturesContract], assets: Sequence[str]) -> list[str]:
    """The contracts' underlyings, then ``assets``, each once (at least one)."""
    asset_syms: list[str] = []
    for a in [c.underlying for c in contracts] + [str(x) for x in assets]:
        if a not in asset_syms:
            asset_syms.append(a)
    if not asset_syms:
        raise ValidationError("contracts", "is empty and no assets are given",
                              "give at least one contract or asset")
    return asset_syms


Spans = dict[str, tuple[pd.Timestamp, pd.Timestamp]]


def _spot_columns(src: _Source, asset_syms: Sequence[str], interval: str, bar: pd.Timedelta
                  ) -> tuple[dict[str, pd.Series], Spans]:
    """Each asset's spot closes on the step grid, and the span of each non-empty one."""
    spot_cols: dict[str, pd.Series] = {}
    spans: Spans = {}
    for a in asset_syms:
        raw = load_spot_closes(src.root, [a], interval=interval, start=src.start, end=src.end)[a]
        grid = _on_grid(raw, bar, src.step)
        spot_cols[a] = grid
        if len(grid):
            spans[f"spot {a}"] = (grid.index[0], grid.index[-1])
    return spot_cols, spans


def _funding_columns(src: _Source, contracts: Sequence[FuturesContract], spans: Spans,
                     notes: list[str]) -> dict[str, pd.Series]:
    """Every settlement of each perpetual's funding file (a note for a perpetual without one);
    the spans of the non-empty ones are added to ``spans``."""
    fund_cols: dict[str, pd.Series] = {}
    for c in contracts:
        if c.kind != ContractKind.PERPETUAL:
            continue
        if _has_file(src.root, FUNDING_FOLDER, c.underlying) is None:
            notes.append(f"no funding file for {c.underlying}: {c.symbol} pays no funding")
            continue
        f = load_funding(src.root, [c.underlying], start=src.start, end=src.end)[c.underlying].dropna()
        fund_cols[c.symbol] = f.rename(c.symbol)
        if len(f):
            spans[f"funding {c.underlying}"] = (f.index[0], f.index[-1])
    return fund_cols


def _common_spot(spot_cols: Mapping[str, pd.Series], spans: Spans, asset_syms: Sequence[str],
                 bounds: tuple[pd.Timestamp | None, pd.Timestamp | None],
                 asked: tuple[str | None, str | None], notes: list[str]) -> pd.DataFrame:
    """Spot closes on the steps every series covers, within ``bounds`` (UTC); steps where an
    asset lacks a close are dropped (a note says so; the span note goes first)."""
    lo, hi = bounds
    first = max(a for a, _b in spans.values())
    last = min(b for _a, b in spans.values())
    span_note = _span_note(spans, lo, hi)
    if lo is not None:
        first = max(first, lo)
    if hi is not None:
        last = min(last, hi)
    if last < first:
        raise ValidationError("data", f"has no span common to {sorted(spans)} within "
                              f"[{asked[0]}, {asked[1]}]", "choose symbols whose histories overlap")
    spot = pd.concat([v.loc[(v.index >= first) & (v.index <= last)].rename(k)
                      for k, v in spot_cols.items()], axis=1, join="outer", sort=True)
    complete = spot.notna().all(axis=1)
    if not complete.all():
        short = [a for a in asset_syms if spot[a].isna().any()]
        notes.append(f"{int((~complete).sum())} steps dropped where {short} lack a close")
        spot = spot.loc[complete]
    if spot.empty:
        raise ValidationError("data", f"has no step common to {list(asset_syms)}",
                              "choose symbols whose histories overlap")
    if span_note:
        notes.insert(0, span_note)
    return spot


def _marks(src: _Source, contracts: Sequence[FuturesContract], spot: pd.DataFrame,
           notes: list[str]) -> pd.DataFrame | None:
    """Mark closes per contract with a mark file, on the steps; spot where a bar is missing."""
    index = pd.DatetimeIndex(spot.index)
    marks: dict[str, pd.Series] = {}
    for c in contracts:
        spot_c = spot[c.underlying]
        if _has_file(src.root, MARK_FOLDER, c.underlying) is None:
            continue
        raw = load_mark_closes(src.root, [c.underlying], start=src.start, end=src.end)[c.underlying]
        m = _on_grid(raw, MARK_BAR, src.step).reindex(index)
        missing = int(m.isna().sum())
        if missing:
            notes.append(f"{c.symbol}: {missing} of {len(index)} steps marked at spot (no mark bar)")
        marks[c.symbol] = m.fillna(spot_c)
    return pd.DataFrame(marks, index=index, columns=list(marks), dtype=float) if marks else None


def _adv_frame(src: _Source, contracts: Sequence[FuturesContract], asset_syms: Sequence[str],
               interval: str, bar: pd.Timedelta, index: pd.DatetimeIndex) -> pd.DataFrame | None:
    """ADV (USD/day) on the steps from each asset's spot quote volume: a column per contract
    (its underlying's volume, for the futures impact), then one per asset symbol (for the spot
    trades' impact)."""
    per_asset: dict[str, pd.Series] = {}
    for a in asset_syms:
        path = _has_file(src.root, spot_folder(interval), a)
        qv = _quote_volume(path) if path is not None else None
        if qv is not None:
            per_asset[a] = _adv(qv, bar, index, src.step)
    advs = {c.symbol: per_asset[c.underlying] for c in contracts if c.underlying in per_asset}
    advs.update(per_asset)
    return pd.DataFrame(advs, index=index, columns=list(advs), dtype=float) if advs else None
