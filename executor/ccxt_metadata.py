"""ccxt markets and leverage tiers as fbr contracts (Binance USD-M, Bybit, OKX metadata paths).

- :func:`contract_from_market`: a ccxt unified market -> the book's :class:`FuturesContract` with
  the exchange's ``contractSize`` (base units per contract; OKX BTC-USDT-SWAP 0.01 BTC), ``inverse``
  (sized in USD: Binance coin-M BTC 100 USD per contract, Bybit BTCUSD 1 USD), amount/price
  precision as lot step (contracts) and tick (USD) (TICK_SIZE or DECIMAL_PLACES precision mode),
  amount limits (contracts) and cost limits (USD; the largest order also capped by the market-order
  maximum, :func:`_max_qty`), fees (fractions of notional), expiry, and the leverage sent to the
  exchange (a whole number: the book's, capped by the brackets);
- :func:`tiers_from_ccxt`: ccxt leverage tiers -> :class:`MarginTiers` (notionals and ``cum`` in
  USD; ``cum`` from the exchange when given, else computed for continuity), checked as the book's
  brackets are (rates that do not fall, continuous maintenance margin) with one ValidationError
  naming "<exchange> leverage tiers of <symbol>: tiers[k].<ccxt field>";
- :func:`percent_price_band`: Binance's PERCENT_PRICE filter (``info.filters``) as the band a
  limit price must lie in, (multiplierDown, multiplierUp) x mark (None where not stated);
- :func:`with_instruments`: a book whose contracts carry that metadata.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

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
    continuous_cum,
    first_margin_jump,
)
from models.market import MarketSnapshot


def _step(value: Any, decimal_places: bool) -> float:
    """A ccxt precision value as a step: itself (TICK_SIZE mode) or 10^-value (DECIMAL_PLACES)."""
    if value is None:
        return 0.0
    v = float(value)
    return 10.0 ** (-v) if decimal_places else v


#: ccxt's name of each bracket field fbr's MarginTiers names (for messages about exchange rows).
_CCXT_FIELD = {"min_notional": "minNotional", "max_notional": "maxNotional",
               "max_leverage": "maxLeverage", "mmr": "maintenanceMarginRate", "cum": "info.cum"}
#: What to do about a bracket table the exchange sent that fbr cannot use.
_EXCHANGE_TIERS_FIX = ("fbr cannot size margin on these brackets: run again later (the exchange may "
                       "be updating them); if it persists, report the rows ccxt's "
                       "fetch_leverage_tiers returns for this symbol")


class _TierRow(NamedTuple):
    """One ccxt leverage-tier row's numbers: notionals (USD), max leverage (x), maintenance rate
    (fraction), the exchange's cum (USD, None when not given) and the row's index in the answer."""

    lo: float
    hi: float
    lev: float
    mmr: float
    cum: float | None
    k: int


def _tier_number(value: object, field: str, *, allow_inf: bool = False) -> float:
    """A ccxt tier value as a float: a number or a decimal text (Binance sends some as text); else
    one ValidationError naming ``field``."""
    if value is None or value == "":
        raise ValidationError(field, "is missing", _EXCHANGE_TIERS_FIX)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError(field, f"is {value!r}, not a number", _EXCHANGE_TIERS_FIX)
    try:
        v = float(value)
    except ValueError:
        raise ValidationError(field, f"is {value!r}, not a number", _EXCHANGE_TIERS_FIX) from None
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValidationError(field, f"is {value!r}, not a finite number", _EXCHANGE_TIERS_FIX)
    return v


def _tier_row(row: object, k: int, where: str) -> _TierRow:
    """Row ``k`` of a ccxt answer, its fields checked (maxNotional None: open-ended, inf; info.cum
    None: not given)."""
    at = f"{where}: tiers[{k}]"
    if not isinstance(row, Mapping):
        raise ValidationError(at, f"is {row!r}, not a bracket", _EXCHANGE_TIERS_FIX)
    info = row.get("info")
    cum = info.get("cum") if isinstance(info, Mapping) else None
    hi = row.get("maxNotional")
    return _TierRow(lo=_tier_number(row.get("minNotional"), f"{at}.minNotional"),
                    hi=math.inf if hi is None else _tier_number(hi, f"{at}.maxNotional",
                                                                allow_inf=True),
                    lev=_tier_number(row.get("maxLeverage"), f"{at}.maxLeverage"),
                    mmr=_tier_number(row.get("maintenanceMarginRate"),
                                     f"{at}.maintenanceMarginRate"),
                    cum=None if cum is None else _tier_number(cum, f"{at}.info.cum"), k=k)


def tiers_from_ccxt(rows: Sequence[Mapping[str, Any]], *, venue: str = "exchange",
                    symbol: str | None = None) -> MarginTiers:
    """ccxt leverage tiers (minNotional, maxNotional, maintenanceMarginRate, maxLeverage, info.cum)
    -> :class:`MarginTiers`, sorted by minNotional. Bracket k covers [lo_k, maxNotional_k) with
    lo_k = maxNotional_(k-1) (OKX-style rows leave a gap of one unit between them; the first keeps
    its minNotional); ``cum`` (USD) is the exchange's when given, else the continuous value at that
    lower bound: cum_k = cum_(k-1) + (mmr_k - mmr_(k-1)) x lo_k. The table is then checked as the
    book's is (:class:`MarginTiers`, then :func:`models.instruments.first_margin_jump`: a given
    cum that makes maintenance margin jump would make max_k (mmr_k n - cum_k) differ from the
    exchange's lookup). Errors name "<venue> leverage tiers of <symbol>: tiers[k].<ccxt field>",
    k the row's index in ``rows``; ``symbol`` defaults to the rows' own ccxt ``symbol``."""
    if symbol is None:
        symbol = next((str(r["symbol"]) for r in rows if isinstance(r, Mapping) and r.get("symbol")),
                      "(symbol not given)")
    where = f"{venue} leverage tiers of {symbol}"
    parsed = sorted((_tier_row(row, k, where) for k, row in enumerate(rows)), key=lambda r: r.lo)
    brackets: list[TierBracket] = []
    for j, r in enumerate(parsed):
        prev = brackets[-1] if brackets else None
        if prev is not None and math.isinf(prev.max_notional):
            raise ValidationError(f"{where}: tiers[{parsed[j - 1].k}].maxNotional", "is missing "
                                  f"(open-ended), but tiers[{r.k}] starts at {r.lo:,.10g} USD",
                                  _EXCHANGE_TIERS_FIX)
        lo = r.lo if prev is None else prev.max_notional
        continuous = 0.0 if prev is None else continuous_cum(prev, r.mmr, lo)
        brackets.append(TierBracket(lo, r.hi, r.lev, r.mmr, continuous if r.cum is None else r.cum))
    try:
        tiers = MarginTiers(tuple(brackets))
    except ValidationError as exc:  # the model names fields tiers[j].<name>, j in sorted order
        j_text, _, name = exc.field.removeprefix("tiers[").partition("].")
        k = parsed[int(j_text)].k if j_text.isdigit() else None
        field = where if k is None else f"{where}: tiers[{k}].{_CCXT_FIELD.get(name, name)}"
        raise ValidationError(field, exc.problem, _EXCHANGE_TIERS_FIX) from exc
    jump = first_margin_jump(tiers.brackets)
    if jump is not None:
        b = tiers.brackets[jump.k]
        raise ValidationError(f"{where}: tiers[{parsed[jump.k].k}].info.cum",
                              f"is {b.cum:,.10g} USD, which makes maintenance margin jump from "
                              f"{jump.below:,.2f} USD just below {b.min_notional:,.10g} USD to "
                              f"{jump.at:,.2f} USD at it (continuous: cum = {jump.continuous:,.10g}"
                              f" = cum_k-1 + (mmr_k - mmr_k-1) x minNotional_k)",
                              _EXCHANGE_TIERS_FIX)
    return tiers


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
    """``base`` (the book's contract) with the exchange's metadata from a ccxt unified market. Its
    leverage is the book's, capped at the brackets' largest max leverage and rounded down to a
    whole number: L = floor(min(L_book, max_k max_leverage_k)), the number sent to the exchange
    (whole steps only), so initial margin |n| / L (USD) is the exchange's."""
    limits = market.get("limits") or {}
    amount = limits.get("amount") or {}
    cost = limits.get("cost") or {}
    precision = market.get("precision") or {}
    settlement = Settlement.INVERSE if market.get("inverse") else Settlement.LINEAR
    expiry = market.get("expiry")
    kind = ContractKind.DATED if expiry and not market.get("swap") else ContractKind.PERPETUAL
    use_tiers = tiers if tiers is not None else base.tiers
    top = max(b.max_leverage for b in use_tiers.brackets)
    leverage = math.floor(min(base.leverage, top))
    if leverage < 1:
        raise ValidationError(f"contracts.{base.symbol}.leverage", f"would be {leverage}x: the "
                              f"book gives {base.leverage:g}x and the exchange's brackets allow "
                              f"at most {top:g}x, below the 1x an exchange can be set to",
                              "give a whole leverage >= 1 on a contract whose brackets allow it")
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
        "leverage": float(leverage),
    }
    if market.get("taker") is not None:
        fields["taker_fee"] = float(market["taker"])
    if market.get("maker") is not None:
        fields["maker_fee"] = float(market["maker"])
    return dataclasses.replace(base, **fields)


def percent_price_band(market: Mapping[str, Any]) -> tuple[float, float] | None:
    """(multiplierDown, multiplierUp) of the market's PERCENT_PRICE filter (Binance USD-M
    ``info.filters``, e.g. 0.95 / 1.05): a LIMIT BUY above mark x multiplierUp is refused (-4016),
    a SELL below mark x multiplierDown too (-4024). Fractions of the mark price. None when the
    market states no such filter (Bybit, OKX) or one fbr cannot read (not finite numbers with
    0 < multiplierDown < multiplierUp): the limit price is then the slippage guard's alone."""
    info = market.get("info")
    filters = info.get("filters") if isinstance(info, Mapping) else None
    if not isinstance(filters, Sequence):
        return None
    for f in filters:
        if isinstance(f, Mapping) and f.get("filterType") == "PERCENT_PRICE":
            try:
                down, up = float(f["multiplierDown"]), float(f["multiplierUp"])
            except (KeyError, TypeError, ValueError):
                return None
            ok = math.isfinite(down) and math.isfinite(up) and 0 < down < up
            return (down, up) if ok else None
    return None


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
