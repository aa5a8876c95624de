"""ccxt markets and leverage tiers as fbr contracts (Binance USD-M, Bybit, OKX metadata paths).

- :func:`contract_from_market`: a ccxt unified market -> the book's :class:`FuturesContract` with
  the exchange's ``contractSize`` (base units per contract; OKX BTC-USDT-SWAP 0.01 BTC), ``inverse``
  (sized in USD: Binance coin-M BTC 100 USD per contract, Bybit BTCUSD 1 USD), amount/price
  precision as lot step (contracts) and tick (USD) (TICK_SIZE or DECIMAL_PLACES precision mode),
  amount limits (contracts) and cost limits (USD; the largest order also capped by the market-order
  maximum, :func:`_max_qty`), fees (fractions of notional) and expiry;
- :func:`tiers_from_ccxt`: ccxt leverage tiers -> :class:`MarginTiers` (notionals and ``cum`` in
  USD; ``cum`` from the exchange when given, else computed for continuity);
- :func:`with_instruments`: a book whose contracts carry that metadata.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from executor.plan import Instrument
from models.book import Book
from models.errors import ValidationError
from models.instruments import (
    ContractKind,
    FuturesContract,
    MarginTiers,
    Settlement,
    TierBracket,
)
from models.market import MarketSnapshot


def _step(value: Any, decimal_places: bool) -> float:
    """A ccxt precision value as a step: itself (TICK_SIZE mode) or 10^-value (DECIMAL_PLACES)."""
    if value is None:
        return 0.0
    v = float(value)
    return 10.0 ** (-v) if decimal_places else v


def tiers_from_ccxt(rows: list[dict[str, Any]]) -> MarginTiers:
    """ccxt leverage tiers (minNotional, maxNotional, maintenanceMarginRate, maxLeverage, info.cum)
    -> :class:`MarginTiers`; ``cum`` computed for continuity when the exchange does not give it:
    cum_k = cum_(k-1) + (mmr_k - mmr_(k-1)) x min_notional_k."""
    brackets: list[TierBracket] = []
    prev: TierBracket | None = None
    for row in sorted(rows, key=lambda r: float(r.get("minNotional") or 0.0)):
        lo = float(row.get("minNotional") or 0.0)
        hi = float(row["maxNotional"]) if row.get("maxNotional") is not None else math.inf
        mmr = float(row["maintenanceMarginRate"])
        info = row.get("info") or {}
        cum_raw = info.get("cum") if isinstance(info, dict) else None
        if cum_raw is not None:
            cum = float(cum_raw)
        else:
            cum = 0.0 if prev is None else prev.cum + (mmr - prev.mmr) * lo
        b = TierBracket(lo if prev is None else prev.max_notional, hi, float(row["maxLeverage"]), mmr, cum)
        brackets.append(b)
        prev = b
    return MarginTiers(tuple(brackets))


def _max_qty(market: Mapping[str, Any]) -> float:
    """Largest order in contracts: ccxt's ``limits.amount.max``, lowered to the exchange's
    market-order cap when it states one (Binance ``MARKET_LOT_SIZE``, which ccxt gives as
    ``limits.market.max``; Bybit v5 ``lotSizeFilter.maxMktOrderQty``, e.g. BTCUSDT 119 BTC against
    1190 for limit orders); one cap serves both order types, so larger orders are split rather than
    rejected. inf when none is given."""
    limits = market.get("limits") or {}
    amount = limits.get("amount") or {}
    cap = float(amount["max"]) if amount.get("max") is not None else math.inf
    market_max = (limits.get("market") or {}).get("max")
    if market_max is not None and float(market_max) > 0:
        cap = min(cap, float(market_max))
    info = market.get("info")
    lot = info.get("lotSizeFilter") if isinstance(info, Mapping) else None
    mkt = lot.get("maxMktOrderQty") if isinstance(lot, Mapping) else None
    if mkt not in (None, "") and float(mkt) > 0:
        cap = min(cap, float(mkt))
    return cap


def contract_from_market(market: Mapping[str, Any], base: FuturesContract, *,
                         decimal_places: bool = False,
                         tiers: MarginTiers | None = None) -> FuturesContract:
    """``base`` (the book's contract) with the exchange's metadata from a ccxt unified market."""
    limits = market.get("limits") or {}
    amount = limits.get("amount") or {}
    cost = limits.get("cost") or {}
    precision = market.get("precision") or {}
    settlement = Settlement.INVERSE if market.get("inverse") else Settlement.LINEAR
    expiry = market.get("expiry")
    kind = ContractKind.DATED if expiry and not market.get("swap") else ContractKind.PERPETUAL
    use_tiers = tiers if tiers is not None else base.tiers
    top = max(b.max_leverage for b in use_tiers.brackets)
    fields: dict[str, Any] = {
        "contract_size": float(market.get("contractSize") or 1.0),
        "settlement": settlement,
        "kind": kind,
        "expiry": (pd.Timestamp(int(expiry or 0), unit="ms", tz="UTC").to_pydatetime()
                   if kind == ContractKind.DATED else base.expiry),
        "lot_step": _step(precision.get("amount"), decimal_places) or base.lot_step,
        "tick": _step(precision.get("price"), decimal_places) or base.tick,
        "min_qty": float(amount.get("min") or 0.0),
        "max_qty": _max_qty(market),
        "min_notional": float(cost.get("min") or 0.0),
        "tiers": use_tiers,
        "leverage": min(base.leverage, top),
    }
    if market.get("taker") is not None:
        fields["taker_fee"] = float(market["taker"])
    if market.get("maker") is not None:
        fields["maker_fee"] = float(market["maker"])
    return dataclasses.replace(base, **fields)


def with_instruments(book: Book, instruments: Mapping[str, Instrument]) -> Book:
    """``book`` whose contracts carry the exchange's metadata (positions then count in its units)."""
    return dataclasses.replace(book, contracts=tuple(instruments[c.symbol].contract
                                                     for c in book.contracts))


def with_status(market: MarketSnapshot, instruments: Mapping[str, Instrument]) -> MarketSnapshot:
    """``market`` naming the contracts the exchange does not trade now (``MarketSnapshot.halted``,
    with their status): the optimiser holds those positions and hedges with the others."""
    halted = {s: i.halted for s, i in instruments.items() if i.halted}
    return dataclasses.replace(market, halted=halted) if halted else market


def check_symbol_map(book: Book, wanted: Mapping[str, str], markets: Mapping[str, Any],
                     venue: str) -> None:
    """Refuse, naming the contract and the fix, a book contract mapped to a ccxt symbol ``venue``
    does not list, two book contracts on one exchange contract (their positions would be read
    and traded as one), or a dated contract on a perpetual market or the reverse (it would be
    read, marked and traded as the other)."""
    seen: dict[str, str] = {}
    for c in book.contracts:
        sym = wanted[c.symbol]
        if sym not in markets:
            raise ValidationError(f"contracts.{c.symbol}", f"maps to {sym!r}, which {venue} "
                                  f"does not list", "map it to a listed ccxt symbol")
        if sym in seen:
            raise ValidationError(f"contracts.{c.symbol}", f"maps to {sym!r}, as {seen[sym]} does",
                                  "give each book contract its own exchange contract")
        seen[sym] = c.symbol
        swap = markets[sym].get("swap")
        if swap is not None and bool(swap) != (c.kind == ContractKind.PERPETUAL):
            listed = "a perpetual" if swap else "a dated future"
            raise ValidationError(f"contracts.{c.symbol}.kind", f"is {c.kind.value}, but {sym!r} "
                                  f"is {listed} on {venue}", "map it to a contract of its kind")
