"""Book-file sections that describe what is held and wanted.

[targets] weights (fractions of the target base V, sum <= 1, the rest is cash), [spot] quantities
(base units), [spot_usd] values (USD, converted at the spot price), [[assets]], [pledged]
collateral rules (a flat ratio after haircut, a Multi-Assets bid buffer or Portfolio Margin tiers;
``models.collateral``), [[futures]] positions (signed contracts, entry price
in USD), and the checks that tie them together (every symbol known, V > 0). Symbols are ASCII
without whitespace (they are sent to exchanges); holdings and positions are finite and worth at most
MAX_HOLDING_USD each (larger values are typos or overflow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from fbr.config_values import (
    MAX_HOLDING_USD,
    Table,
    check_keys,
    in_range,
    join,
    known,
    nonneg,
    number,
    price,
    string,
    symbol_keys,
    symbol_map,
    symbol_name,
    table_array,
    usd_amount,
)
from models.book import Book, FuturesPosition
from models.collateral import CollateralRule, Pledge, bid_buffer_rule, tiered_rule
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot

ASSET_KEYS = ("symbol", "fee", "lot_step")
POSITION_KEYS = ("symbol", "contracts", "entry_price")
#: Tolerance: target weights may sum to 1 + WEIGHT_TOL.
WEIGHT_TOL = 1e-6


def parse_weights(table: Table, path: str) -> dict[str, float]:
    """[targets]: weights >= 0 summing to at most 1 (the rest is cash)."""
    if not table:
        raise ValidationError(path, "is missing or empty",
                              "add a [targets] table, e.g. BTC = 0.5, ETH = 0.3, SOL = 0.2")
    symbol_keys(table, path)
    weights = symbol_map(table, path, lambda v, p: nonneg(v, p, percent=True))
    total = sum(weights.values())
    if total > 1 + WEIGHT_TOL:
        listed = ", ".join(f"{s} = {table[s]!r}" for s in table)
        raise ValidationError(path, f"weights sum to {total:.6g}, above 1 ({listed})",
                              "make the target weights sum to 1 or less (the rest stays in cash)")
    return weights


def parse_amounts(table: Table, path: str, *, usd: bool = False) -> dict[str, float]:
    """[spot] quantities or (``usd``) [spot_usd] values: finite and >= 0, USD values at most
    MAX_HOLDING_USD (quantities are checked against it once prices are known)."""
    symbol_keys(table, path)
    return symbol_map(table, path, usd_amount if usd else nonneg)


def parse_assets(data: Mapping[str, object], targets: Mapping[str, float], spot_qty: Mapping[str, float],
                 spot_usd: Mapping[str, float]) -> tuple[SpotAsset, ...]:
    """[[assets]] if given, else one default SpotAsset per symbol in targets/spot/spot_usd."""
    rows = table_array(data, "assets", "")
    if not rows:
        symbols = dict.fromkeys([*targets, *spot_qty, *spot_usd])
        return tuple(SpotAsset(s) for s in symbols)
    out: list[SpotAsset] = []
    for k, row in enumerate(rows):
        p = join("assets", k)
        check_keys(row, ASSET_KEYS, p)
        sym = symbol_name(string(row.get("symbol"), join(p, "symbol")), join(p, "symbol"))
        kwargs: dict[str, float] = {}
        if "fee" in row:
            kwargs["fee"] = in_range(row["fee"], join(p, "fee"), 0.0, 0.05)
        if "lot_step" in row:
            kwargs["lot_step"] = nonneg(row["lot_step"], join(p, "lot_step"))
        out.append(SpotAsset(sym, **kwargs))
    syms = [a.symbol for a in out]
    dup = sorted({s for s in syms if syms.count(s) > 1})
    if dup:
        raise ValidationError("assets", f"lists {dup} more than once", "list each asset once")
    return tuple(out)


def check_references(targets: Mapping[str, float], spot_qty: Mapping[str, float],
                     spot_usd: Mapping[str, float], symbols: Sequence[str]) -> None:
    """Every symbol in [targets], [spot], [spot_usd] must be an asset; spot given once."""
    for name, table in (("targets", targets), ("spot", spot_qty), ("spot_usd", spot_usd)):
        for sym, v in table.items():
            known(sym, symbols, join(name, sym), "in [[assets]]", v)
    both = [s for s in spot_qty if s in spot_usd]
    if both:
        raise ValidationError(f"spot_usd.{both[0]}", f"is also given in [spot] "
                              f"({spot_qty[both[0]]!r} units and {spot_usd[both[0]]!r} USD)",
                              "give each holding once, as a quantity or as a USD value")


PLEDGE_KEYS = ("bid_buffer", "tiers", "quantity")


def parse_pledged(table: Table, symbols: Sequence[str]) -> dict[str, Pledge]:
    """[pledged]: per asset, ``SYMBOL = ratio`` (collateral ratio after haircut, a fraction in
    [0, 1]), or ``SYMBOL = { bid_buffer = 0.05 }`` (Binance Multi-Assets mode: ratio 1 - bid_buffer),
    or ``SYMBOL = { tiers = [[0, 1e6, 0.95], [1e6, 5e6, 0.9]] }`` (Portfolio Margin: rows of min
    USD, max USD, rate; contiguous from 0, rates in [0, 1] and non-increasing, the last max may be
    ``inf``); a table may add ``quantity`` (base units pledged; default the whole holding)."""
    out: dict[str, Pledge] = {}
    for sym, v in table.items():
        path = join("pledged", sym)
        known(sym, symbols, path, "an asset of the book", v)
        out[sym] = _pledge_table(v, path) if isinstance(v, dict) else in_range(v, path, 0.0, 1.0)
    return out


def _pledge_table(table: Table, path: str) -> CollateralRule:
    """One ``SYMBOL = { bid_buffer = .. }`` or ``{ tiers = [..] }`` entry (plus ``quantity``)."""
    check_keys(table, PLEDGE_KEYS, path)
    quantity = nonneg(table["quantity"], join(path, "quantity")) if "quantity" in table else None
    if ("bid_buffer" in table) == ("tiers" in table):
        raise ValidationError(path, f"gives {'both' if 'tiers' in table else 'neither'} of "
                              f"bid_buffer and tiers ({table!r})",
                              "give one: { bid_buffer = 0.05 } or "
                              "{ tiers = [[0, 1e6, 0.95], [1e6, 5e6, 0.9]] }")
    if "bid_buffer" in table:
        b = number(table["bid_buffer"], join(path, "bid_buffer"), percent=True)
        return bid_buffer_rule(b, path, quantity)
    return tiered_rule(_tier_rows(table["tiers"], join(path, "tiers")), path, quantity)


def _tier_rows(value: object, path: str) -> list[tuple[float, float, float]]:
    """``[[min_usd, max_usd, rate], ...]`` as numbers (rates may be percent strings, max may be
    inf); ordering and ranges are checked by ``models.collateral.tiered_rule``."""
    if not isinstance(value, list):
        raise ValidationError(path, f"is {value!r}, not a list of tiers",
                              "write tiers = [[0, 1e6, 0.95], [1e6, 5e6, 0.9]] (min USD, max USD, rate)")
    rows: list[tuple[float, float, float]] = []
    for k, row in enumerate(value):
        p = join(path, k)
        if not isinstance(row, list) or len(row) != 3:
            raise ValidationError(p, f"is {row!r}", "give three numbers: [min_usd, max_usd, rate]")
        rows.append((number(row[0], join(p, 0)), number(row[1], join(p, 1), allow_inf=True),
                     number(row[2], join(p, 2), percent=True)))
    return rows


def parse_positions(data: Mapping[str, object],
                    contracts: Sequence[FuturesContract]) -> dict[str, FuturesPosition]:
    """[[futures]]: current positions in contracts (signed) with their entry price (USD)."""
    syms = [c.symbol for c in contracts]
    out: dict[str, FuturesPosition] = {}
    for k, row in enumerate(table_array(data, "futures", "")):
        p = join("futures", k)
        check_keys(row, POSITION_KEYS, p)
        sym = string(row.get("symbol"), join(p, "symbol"))
        known(sym, syms, join(p, "symbol"), "a listed contract")
        if sym in out:
            raise ValidationError(join(p, "symbol"), f"repeats {sym!r}",
                                  "give one [[futures]] entry per contract (net position)")
        qty = number(row.get("contracts", 0.0), join(p, "contracts"))
        if qty != 0 and "entry_price" not in row:
            raise ValidationError(join(p, "entry_price"), "is missing",
                                  "give the position's average entry price (USD)")
        entry = price(row.get("entry_price", 1.0), join(p, "entry_price"))
        if entry <= 0:
            raise ValidationError(join(p, "entry_price"), f"is {row.get('entry_price')!r}",
                                  "give a value > 0")
        out[sym] = FuturesPosition(qty, entry)
    return out


def check_pledged_quantities(pledged: Mapping[str, Pledge], spot: Mapping[str, float]) -> None:
    """A pledge's ``quantity`` (base units) is at most the holding: pledging more than is held is
    most likely a typo (5 for 0.5), and would silently pledge the whole holding. ``spot`` is the
    book's holdings in base units (after [spot_usd])."""
    for sym, rule in pledged.items():
        q = rule.quantity if isinstance(rule, CollateralRule) else None
        held = float(spot.get(sym, 0.0))
        if q is not None and q > held * (1 + 1e-9) + 1e-12:
            raise ValidationError(f"pledged.{sym}.quantity", f"is {q:g} units, more than the "
                                  f"{held:g} units of {sym} held",
                                  "give at most the holding (leave quantity out to pledge all of it)")


def check_holding_values(spot_qty: Mapping[str, float], futures: Mapping[str, FuturesPosition],
                         contracts: Sequence[FuturesContract], market: MarketSnapshot) -> None:
    """Each spot holding (quantity x spot price) and each futures position (|contracts| x notional
    per contract at mark) must be finite and at most MAX_HOLDING_USD, so sums and weights stay
    finite; the error names the [spot] entry or the [[futures]] row."""
    for sym, q in spot_qty.items():
        px = market.spot_price(sym)
        _check_value(f"spot.{sym}", q, "units", q * px, f"the spot price {px:,.6g} USD",
                     f"give a finite quantity of realistic size in base units (e.g. {sym} = 0.5), "
                     "or its USD value under [spot_usd]")
    by_symbol = {c.symbol: c for c in contracts}
    for k, (sym, pos) in enumerate(futures.items()):
        mark = market.mark_price(sym)
        value = abs(pos.contracts) * by_symbol[sym].notional_per_contract(mark)
        _check_value(f"futures[{k}].contracts", pos.contracts, "contracts", value,
                     f"the mark price {mark:,.6g} USD", "give a finite position of realistic "
                     "size in contracts (signed), as the exchange shows it")


def _check_value(path: str, amount: float, unit: str, value: float, at: str, fix: str) -> None:
    """Raise unless ``value`` (USD) is finite and at most MAX_HOLDING_USD."""
    if math.isfinite(value) and value <= MAX_HOLDING_USD:
        return
    raise ValidationError(path, f"is {amount!r} {unit}, worth {value:,.6g} USD at {at}: not a "
                          f"realistic holding (at most {MAX_HOLDING_USD:.0e} USD)",
                          fix)


def spot_quantities(spot_qty: Mapping[str, float], spot_usd: Mapping[str, float],
                    market: MarketSnapshot) -> dict[str, float]:
    """Spot in base units; [spot_usd] values are converted at the market's spot price."""
    out = dict(spot_qty)
    for sym, usd in spot_usd.items():
        out[sym] = usd / market.spot_price(sym)
    return out


def check_base(book: Book, market: MarketSnapshot) -> None:
    """The target base V must be positive (else weights are undefined)."""
    if book.base(market) <= 0:
        raise ValidationError("spot", f"holds no value, so the target base "
                              f"({book.targets_base.value}) is {book.base(market):.6g} USD",
                              "give spot holdings ([spot] or [spot_usd]) or set "
                              'book.targets_base = "nav" with book.cash > 0')
