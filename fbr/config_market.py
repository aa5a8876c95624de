"""Book-file [market]: the market snapshot a rebalance is solved at.

The source is explicit prices, the synthetic generator, or the last daily close of a data folder;
explicit [market.*] sub-tables are written over the source's values, and marks can be filled from
spot (no basis). Explicit prices must be realistic (config_values.price: finite, at most 1e9 USD).
Units: prices USD, funding per funding interval, half spreads fractions, ADV USD per day.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

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
    join,
    known,
    number,
    positive,
    price,
    sub_table,
    symbol_map,
    timestamp,
)
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot

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
    at = timestamp(table["time"], "market.time") if "time" in table else None
    if source != "synthetic":
        for key in ("seed", "days", "start"):
            if key in table:
                raise ValidationError(join("market", key), f"is {table[key]!r} but the market "
                                      f"source is {source!r}",
                                      'remove it, or set market.source = "synthetic"')
    if source == "synthetic":
        snap = _synthetic_market(table, symbols, contracts, at, ctx)
    elif source == "data":
        snap = _data_market(table, symbols, at, ctx)
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
    """The explicit [market.*] sub-tables, keyed by asset (spot, spot_half_spread) or contract."""
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
        for sym, v in sub.items():
            known(sym, names, f"market.{key}.{sym}", what, v)
        out[key] = symbol_map(sub, f"market.{key}", parsers[key])
    return out


def _explicit_market(at: pd.Timestamp | None, ctx: ParseContext) -> MarketSnapshot:
    """An empty snapshot at market.time (else now); the file's [market.*] values fill it."""
    if at is None:
        at = pd.Timestamp.now(tz="UTC").floor("s")
        ctx.labels.append("market time not given: using the current time")
    ctx.labels.append("market prices given in the book file")
    return MarketSnapshot(time=at, spot={}, mark={})


def _apply_overrides(snap: MarketSnapshot,
                     overrides: Mapping[str, Mapping[str, float]]) -> MarketSnapshot:
    """The snapshot with the file's values written over the source's."""
    if not any(overrides.get(key) for key in _MARKET_SUBTABLES):
        return snap
    given: dict[str, Mapping[str, float]] = {
        "spot": snap.spot, "mark": snap.mark, "funding": snap.funding,
        "half_spread": snap.half_spread, "adv": snap.adv, "spot_half_spread": snap.spot_half_spread}
    m = {key: {**given[key], **overrides.get(key, {})} for key in _MARKET_SUBTABLES}
    return MarketSnapshot(time=snap.time, spot=m["spot"], mark=m["mark"], funding=m["funding"],
                          half_spread=m["half_spread"], adv=m["adv"],
                          spot_half_spread=m["spot_half_spread"], synthetic=snap.synthetic)


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


def _data_market(table: Table, symbols: Sequence[str], at: pd.Timestamp | None,
                 ctx: ParseContext) -> MarketSnapshot:
    """Spot = the last daily close at or before ``at`` (the last one when not given); marks are set
    to spot by the caller (the data folder's perp marks are 4-hourly and cover fewer symbols)."""
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
    return MarketSnapshot(time=when, spot={s: float(row[s]) for s in symbols}, mark={})
