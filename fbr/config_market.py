"""Book-file [market]: the market snapshot a rebalance is solved at.

The source is explicit prices, the synthetic generator, or a data folder (spot: the last daily close;
perpetuals: the last 4 h mark close and the last funding settlement at or before the market time,
and the spacing of those settlements where it differs from ``funding_interval_h``, measured as a
backtest does; :func:`data_funding_forecast` adds the EWMA funding forecast); explicit [market.*]
sub-tables are written over the source's values, and marks can be filled from spot (no basis).
Explicit prices must be realistic (config_values.price: finite, at most 1e9 USD).
Units: prices USD, funding per funding interval, half spreads fractions, ADV USD per day.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fbr.config_sources import (
    MARKET_SOURCES,
    ParseContext,
    resolve_data_dir,
    spot_closes,
    synthetic_history,
    synthetic_params,
    until,
)
from fbr.config_values import (
    Table,
    boolean,
    check_keys,
    choice,
    instant,
    join,
    known,
    number,
    positive,
    price,
    sub_table,
    symbol_map,
)
from models.data_files import optional_file
from models.data_layout import FUNDING_FOLDER, MARK_BAR_HOURS, MARK_FOLDER
from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract, SpotAsset
from models.market import MarketSnapshot
from optimizer.settings import CostSettings, FundingForecastRule

if TYPE_CHECKING:  # pandas is imported where it runs: off a plain solve's start-up path
    import pandas as pd

MARKET_KEYS = (
    "source", "time", "seed", "days", "start", "data_dir", "mark_from_spot",
    "spot", "mark", "funding", "half_spread", "adv", "spot_half_spread",
)


def parse_market(table: Table, assets: Sequence[SpotAsset], contracts: Sequence[FuturesContract],
                 ctx: ParseContext) -> MarketSnapshot:
    """[market]: explicit prices, a synthetic snapshot or the last data close; explicit sub-tables
    override the source's values."""
    check_keys(table, MARKET_KEYS, "market")
    source = choice(table.get("source", "explicit"), "market.source", MARKET_SOURCES, str)
    symbols = [a.symbol for a in assets]
    csyms = [c.symbol for c in contracts]
    overrides = _market_overrides(table, symbols, csyms)
    at = instant(table["time"], "market.time") if "time" in table else None
    if source != "synthetic":
        for key in ("seed", "days", "start"):
            if key in table:
                raise ValidationError(join("market", key), f"is {table[key]!r} but the market "
                                      f"source is {source!r}",
                                      'remove it, or set market.source = "synthetic"')
    if source in ("synthetic", "data"):
        import pandas as pd

        ts = None if at is None else pd.Timestamp(at)
        snap = (_synthetic_market(table, symbols, contracts, ts, ctx) if source == "synthetic" else
                _data_market(table, symbols, contracts, ts, ctx, set(overrides["funding"])))
    else:
        snap = _explicit_market(at, ctx)
    snap = _apply_overrides(snap, overrides)
    mark_from_spot = boolean(table.get("mark_from_spot", False), "market.mark_from_spot")
    if source == "data" or mark_from_spot:
        snap = _marks_from_spot(snap, contracts, ctx)
    _check_market_covers(snap, symbols, contracts)
    return snap

_MARKET_SUBTABLES = ("spot", "mark", "funding", "half_spread", "adv", "spot_half_spread")


def _market_overrides(table: Table, symbols: Sequence[str],
                      csyms: Sequence[str]) -> dict[str, dict[str, float]]:
    """The explicit [market.*] sub-tables, keyed by asset (spot, spot_half_spread) or contract;
    ``adv`` by either (a contract's volume prices its impact, an asset's the spot leg's)."""
    parsers: dict[str, Callable[[object, str], float]] = {
        "spot": price, "mark": price,  # MarketSnapshot rejects <= 0 with the field name
        "funding": lambda v, p: number(v, p, percent=True),
        "half_spread": lambda v, p: number(v, p, percent=True),
        "spot_half_spread": lambda v, p: number(v, p, percent=True),
        "adv": positive,
    }
    out: dict[str, dict[str, float]] = {}
    for key in _MARKET_SUBTABLES:
        sub = sub_table(table, key, "market")
        by_asset = key in ("spot", "spot_half_spread")
        names, what = (symbols, "an asset of the book") if by_asset else (csyms, "a contract")
        if key == "adv":
            names, what = [*csyms, *symbols], "a contract or an asset of the book"
        for sym, v in sub.items():
            known(sym, names, f"market.{key}.{sym}", what, v)
        out[key] = symbol_map(sub, f"market.{key}", parsers[key])
    return out


def _explicit_market(at: datetime | None, ctx: ParseContext) -> MarketSnapshot:
    """An empty snapshot at market.time (else now, to the second); the file's [market.*] values
    fill it."""
    if at is None:
        at = datetime.now(UTC).replace(microsecond=0)
        ctx.labels.append("market time not given: using the current time")
    ctx.labels.append("market prices given in the book file")
    return MarketSnapshot(time=at, spot={}, mark={})


def _apply_overrides(snap: MarketSnapshot,
                     overrides: Mapping[str, Mapping[str, float]]) -> MarketSnapshot:
    """The snapshot with the file's values written over the source's (its other fields, such as
    a data market's measured ``funding_interval_h``, kept)."""
    if not any(overrides.get(key) for key in _MARKET_SUBTABLES):
        return snap
    given: dict[str, Mapping[str, float]] = {
        "spot": snap.spot, "mark": snap.mark, "funding": snap.funding,
        "half_spread": snap.half_spread, "adv": snap.adv, "spot_half_spread": snap.spot_half_spread}
    m = {key: {**given[key], **overrides.get(key, {})} for key in _MARKET_SUBTABLES}
    return dataclasses.replace(snap, spot=m["spot"], mark=m["mark"], funding=m["funding"],
                               half_spread=m["half_spread"], adv=m["adv"],
                               spot_half_spread=m["spot_half_spread"])


def _marks_from_spot(snap: MarketSnapshot, contracts: Sequence[FuturesContract],
                     ctx: ParseContext) -> MarketSnapshot:
    """Fill missing mark prices with the underlying's spot price (no basis)."""
    filled = {c.symbol: snap.spot[c.underlying] for c in contracts
              if c.symbol not in snap.mark and c.underlying in snap.spot}
    if not filled:
        return snap
    ctx.labels.append(f"mark = spot price (no basis) for {', '.join(filled)}")
    return dataclasses.replace(snap, mark={**snap.mark, **filled})


def _check_market_covers(snap: MarketSnapshot, symbols: Sequence[str],
                         contracts: Sequence[FuturesContract]) -> None:
    """Every asset needs a spot price and every contract a mark price."""
    for sym in symbols:
        if sym not in snap.spot:
            raise ValidationError(f"market.spot.{sym}", f"is missing: asset {sym!r} has no "
                                  "spot price", f"add {sym} = <USD price> under [market.spot]")
    for c in contracts:
        if c.symbol not in snap.mark:
            raise ValidationError(f"market.mark.{c.symbol}", f"is missing: contract {c.symbol!r} "
                                  "has no mark price",
                                  f'add "{c.symbol}" = <USD price> under [market.mark], or set '
                                  "market.mark_from_spot = true to use the underlying's spot price")


def _synthetic_market(table: Table, symbols: Sequence[str],
                      contracts: Sequence[FuturesContract], at: pd.Timestamp | None,
                      ctx: ParseContext) -> MarketSnapshot:
    """The generator's snapshot at ``at`` (its last day when not given)."""
    seed, days, start = synthetic_params(table, "market")
    hist = synthetic_history(symbols, seed, days, start, ctx, "market")
    try:
        snap = hist.snapshot(tuple(contracts), at=at)
    except ValidationError as exc:
        if not exc.field.startswith("snapshot"):
            raise
        raise ValidationError("market.time", exc.problem, exc.fix) from exc
    ctx.labels.append(f"synthetic market data (seed {seed}, {days} days from {start}, "
                      f"snapshot {snap.time:%Y-%m-%d})")
    return snap


def _data_market(table: Table, symbols: Sequence[str], contracts: Sequence[FuturesContract],
                 at: pd.Timestamp | None, ctx: ParseContext, pinned: set[str]) -> MarketSnapshot:
    """Spot = the last daily close at or before ``at`` (the last one when not given); the market
    time is that close's time. Perpetuals: mark, funding and measured settlement spacing from the
    folder (:func:`_perp_data`; ``pinned``: contracts whose rate [market.funding] gives, whose
    spacing stays their ``funding_interval_h``); contracts left without a mark (no mark file,
    dated contracts) are set to spot by the caller."""
    import pandas as pd
    d = resolve_data_dir(table, "market", ctx)
    closes = until(spot_closes(d, symbols, "market"), at)
    if closes.empty:
        raise ValidationError("market.time", f"is {at}, before the first close in {d}",
                              "give a later market.time")
    row = closes.iloc[-1]
    missing = [s for s in symbols if s not in row.index or not math.isfinite(float(row[s]))]
    if missing:
        raise ValidationError("market.time", f"has no close for {missing} on {closes.index[-1]}",
                              "give a later market.time (the series start on different dates)")
    when = pd.Timestamp(closes.index[-1])
    when = when.tz_localize("UTC") if when.tzinfo is None else when
    ctx.labels.append(f"market data: daily spot closes from {d} at {when:%Y-%m-%d}")
    mark, funding, hours = _perp_data(d, contracts, when, ctx, pinned)
    return MarketSnapshot(time=when, spot={s: float(row[s]) for s in symbols}, mark=mark,
                          funding=funding, funding_interval_h=hours)


# ---------------------------------------------------------------------------------------------
# perpetuals from a data folder: marks, funding, funding forecast

#: A mark close or funding settlement older than this before the market time gets a label.
STALE_AFTER = timedelta(days=1)
#: Bar length of the perpetual mark closes (a bar stamped by its open time closes this later).
MARK_BAR = timedelta(hours=MARK_BAR_HOURS)


def _perpetual_underlyings(contracts: Sequence[FuturesContract]) -> dict[str, list[str]]:
    """Perpetual contract symbols by underlying asset (dated contracts are left out)."""
    out: dict[str, list[str]] = {}
    for c in contracts:
        if c.kind == ContractKind.PERPETUAL:
            out.setdefault(c.underlying, []).append(c.symbol)
    return out


def mark_closes(data_dir: Path, asset: str) -> pd.Series | None:
    """Perpetual mark closes of ``asset`` (USD) indexed by close time (bar open + 4 h); None when
    the folder has no mark file for it."""
    import pandas as pd

    from models.io import load_mark_closes

    if optional_file(data_dir, MARK_FOLDER, asset) is None:
        return None
    closes = load_mark_closes(data_dir, [asset])[asset]
    closes.index = pd.DatetimeIndex(closes.index) + MARK_BAR
    return closes


def _mark_closes(data_dir: Path, asset: str, when: pd.Timestamp) -> pd.Series | None:
    """:func:`mark_closes` at or before ``when`` only."""
    closes = mark_closes(data_dir, asset)
    return None if closes is None else closes.loc[closes.index <= when]


def _settlements(data_dir: Path, asset: str, when: pd.Timestamp) -> pd.Series | None:
    """Funding settlements of ``asset``'s perpetual (fraction per settlement, > 0: longs pay)
    indexed by settlement time, those at or before ``when`` only; None when the folder has no
    funding file for it."""
    import pandas as pd

    from models.io import load_funding

    if optional_file(data_dir, FUNDING_FOLDER, asset) is None:
        return None
    rates = load_funding(data_dir, [asset])[asset].dropna()
    return rates.loc[pd.DatetimeIndex(rates.index) <= when]


def _last_value(series: pd.Series | None, what: str, path: str, when: pd.Timestamp,
                notes: list[str]) -> float | None:
    """The last value of ``series`` (None when there is none, with a note naming ``path``); a note
    when it is more than ``STALE_AFTER`` older than ``when``."""
    import pandas as pd
    if series is None:
        notes.append(f"no {what} file {path}")
        return None
    if series.empty:
        notes.append(f"no {what} at or before {when:%Y-%m-%d %H:%M} in {path}")
        return None
    last = pd.Timestamp(series.index[-1])
    if when - last > STALE_AFTER:
        notes.append(f"the last {what} in {path} is from {last:%Y-%m-%d %H:%M}, "
                     f"{(when - last) / pd.Timedelta(hours=1):.0f} h before the market time")
    return float(series.iloc[-1])


def _perp_data(data_dir: Path, contracts: Sequence[FuturesContract], when: pd.Timestamp,
               ctx: ParseContext, pinned: set[str]
               ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(marks USD, funding rates per settlement, measured settlement spacings h) of the perpetuals
    at ``when`` (UTC): the last 4 h mark close (``perp_mark_4h/<SYM>``) and the last funding
    settlement (``funding/<SYM>``) at or before it, and the spacing of those settlements where it
    differs from the contract's ``funding_interval_h`` (:func:`_measured_spacing`, labelled; the
    carry then counts horizon_days x 24 / h settlements, as a backtest at that time does; not for
    a contract in ``pinned``). A missing file leaves the contract out, with a label naming the
    file (its mark then falls back to spot, its funding to 0)."""
    mark: dict[str, float] = {}
    funding: dict[str, float] = {}
    hours: dict[str, float] = {}
    notes: list[str] = []
    by_symbol = {c.symbol: c for c in contracts}
    for asset, symbols in _perpetual_underlyings(contracts).items():
        m = _last_value(_mark_closes(data_dir, asset, when), "perpetual mark",
                        str(data_dir / MARK_FOLDER / f"{asset}.csv.gz"), when, notes)
        settled = _settlements(data_dir, asset, when)
        r = _last_value(settled, "funding", str(data_dir / FUNDING_FOLDER / f"{asset}.csv.gz"),
                        when, notes)
        for sym in symbols:
            if m is not None:
                mark[sym] = m
            if r is not None:
                funding[sym] = r
            h = (_measured_spacing(by_symbol[sym], settled)
                 if settled is not None and sym not in pinned else None)
            if h is not None:
                hours[sym] = h
                notes.append(_spacing_note(by_symbol[sym], h, when))
    if mark or funding:
        ctx.labels.append(f"market data: perpetual marks (last 4 h close) and funding (last "
                          f"settlement) at or before {when:%Y-%m-%d %H:%M} from {data_dir}")
    ctx.labels.extend(f"market data: {note}" for note in dict.fromkeys(notes))
    return mark, funding, hours


def _measured_spacing(contract: FuturesContract, settled: pd.Series) -> float | None:
    """Hours between ``contract``'s settlements ``settled`` (those at or before the market time)
    measured as a backtest measures them at that time (``scenarios.funding_run.settlement_hours``:
    the median of the last ``SPACING_WINDOW`` = 5 gaps, hours) when that differs from its
    ``funding_interval_h`` by more than ``SPACING_TOL_H`` (``measured_intervals``); None when it
    does not, or before two settlements."""
    import pandas as pd

    from scenarios.funding_run import measured_intervals, settlement_hours

    times = pd.DatetimeIndex(settled.index).as_unit("ns").asi8
    spacing = settlement_hours(times, np.ones((times.size, 1), dtype=bool))
    measured = measured_intervals([contract], np.array([times.size]), spacing)
    return None if measured is None else float(measured[0, 0])


def _spacing_note(contract: FuturesContract, hours: float, when: pd.Timestamp) -> str:
    """The label of a perpetual whose measured settlement spacing ``hours`` differs from its
    ``funding_interval_h`` at the market time ``when``."""
    from scenarios.funding_run import SPACING_WINDOW

    return (f"{contract.symbol} settled every {hours:g} h (median of its last {SPACING_WINDOW} "
            f"spacings up to {when:%Y-%m-%d %H:%M}), not every {contract.funding_interval_h:g} h "
            f"(funding_interval_h): the carry counts {24.0 / hours:g} settlements a day there, as "
            "a backtest does")


def data_funding_forecast(table: Table, market: MarketSnapshot,
                          contracts: Sequence[FuturesContract], costs: CostSettings,
                          ctx: ParseContext) -> MarketSnapshot:
    """``market`` with ``funding_forecast`` set for a [market] taken from a data folder when
    ``[costs] funding_forecast = "ewma"``: per perpetual with a funding file and no rate pinned in
    [market.funding], ``models.funding_forecast.EwmaShrinkForecaster`` (the costs' half-lives, in
    settlements) from the settlements at or before the market time, over H = horizon_days x 24 / h
    settlements with h the hours between them the carry counts (``market.funding_hours``: the
    measured spacing where it differs, else ``funding_interval_h``) and the long-run level
    ``funding_long_run_rate`` x h / 8 per settlement (that level is per 8 h settlement,
    ``models.funding_forecast.long_run_rate_per_settlement``). Fraction per settlement; what the
    optimiser's carry reads, ``MarketSnapshot.carry_rate``. Any other source or rule: ``market``
    unchanged (the carry then assumes the last settlement, ``market.funding``)."""
    source = choice(table.get("source", "explicit"), "market.source", MARKET_SOURCES, str)
    if source != "data" or costs.funding_forecast != FundingForecastRule.EWMA:
        return market
    import pandas as pd

    from models.funding_forecast import (  # scipy.signal: only when asked for
        EwmaShrinkForecaster,
        long_run_rate_per_settlement,
    )

    pinned = set(sub_table(table, "funding", "market"))
    data_dir = resolve_data_dir(table, "market", ctx)
    forecast: dict[str, float] = {}
    unsettled: list[str] = []
    for c in contracts:
        if c.kind != ContractKind.PERPETUAL or c.symbol in pinned:
            continue
        rates = _settlements(data_dir, c.underlying, pd.Timestamp(market.time))
        if rates is None:
            continue
        if rates.empty:
            unsettled.append(c.symbol)
        hours = market.funding_hours(c.symbol, c.funding_interval_h)
        fc = EwmaShrinkForecaster(
            half_life=costs.funding_half_life, reversion_half_life=costs.funding_reversion_half_life,
            long_run_rate=long_run_rate_per_settlement(costs.funding_long_run_rate, hours))
        forecast[c.symbol] = fc.forecast(rates, pd.Timestamp(market.time),
                                         costs.horizon_days * 24.0 / hours).mean_rate
    if not forecast:
        return market
    ctx.labels.append(f"funding forecast: EWMA of the settlements up to {market.time:%Y-%m-%d %H:%M} "
                      f"(half-life {costs.funding_half_life:g}, reversion "
                      f"{costs.funding_reversion_half_life:g} settlements) for {', '.join(forecast)}"
                      + (f"; no settlement yet for {', '.join(unsettled)}: the long-run level "
                         f"{costs.funding_long_run_rate:g} per 8 h settlement (h / 8 of it "
                         "per settlement h hours apart)"
                         if unsettled else ""))
    return dataclasses.replace(market, funding_forecast={**market.funding_forecast, **forecast})
