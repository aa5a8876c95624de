"""Book-file sections of the spot leg with tax lots: [tax], [[lots]] and [solver] spot_leg.

    [solver]
    spot_leg = true          # the optimiser may also trade spot (default false: overlay only)
    spot_cash_usd = 0        # wallet cash net spot buys may use (default 0: buys paid by sales)

    [tax]
    short_term = "30%"       # rate on gains of lots held long_term_days or less
    long_term = "15%"        # rate on gains of lots held longer
    long_term_days = 365
    futures = "30%"          # realised futures PnL (default: the short-term rate)
    lot_method = "hifo"      # hifo | fifo | specific: which lots the books' sales consume
    harvest_losses = false   # credit loss lots in the optimiser (else their tax is taken as 0)
    gamma = 1.0              # weight of the tax in the objective
    price_futures = false    # also price the tax of realising futures gains (reductions of a
                             # position with unrealised gain, at the futures rate)

    [[lots]]                 # one row per purchase still held
    asset = "BTC"
    quantity = 0.5           # units
    cost_basis = 42000       # USD per unit
    acquired = 2023-11-28    # date or UTC time

With a [tax] section, the lots of every asset must add up to its spot quantity (within 1e-9
relative; an asset held without lots is such a mismatch). [[lots]] without [tax] is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from fbr.config_values import (
    Table,
    boolean,
    check_keys,
    choice,
    in_range,
    join,
    known,
    nonneg,
    number,
    positive,
    price,
    string,
    sub_table,
    table_array,
    timestamp,
    usd_amount,
    weight,
)
from models.book import Book
from models.errors import ValidationError
from models.tax import MAX_LONG_TERM_DAYS, LotMethod, TaxLot, TaxRates
from optimizer.settings import SpotLegSettings
from optimizer.spot_data import check_lots

if TYPE_CHECKING:  # pandas is imported where it runs: off a plain solve's start-up path
    import pandas as pd

TAX_KEYS = ("short_term", "long_term", "long_term_days", "futures", "lot_method", "harvest_losses",
            "gamma", "price_futures")
LOT_KEYS = ("asset", "quantity", "cost_basis", "acquired")
#: [solver] keys of the spot leg
SPOT_SOLVER_KEYS = ("spot_leg", "spot_cash_usd")


def parse_spot_leg(data: Mapping[str, object], solver: Table, book: Book) -> SpotLegSettings:
    """[solver] spot_leg / spot_cash_usd, [tax] and [[lots]] as SpotLegSettings."""
    enabled = boolean(solver["spot_leg"], "solver.spot_leg") if "spot_leg" in solver else False
    cash = usd_amount(solver["spot_cash_usd"], "solver.spot_cash_usd") \
        if "spot_cash_usd" in solver else 0.0
    tax = sub_table(data, "tax", "")
    check_keys(tax, TAX_KEYS, "tax")
    lots = parse_lots(data, book)
    if not tax:
        if lots:
            raise ValidationError("lots", "are given without a [tax] section",
                                  'add [tax] with short_term and long_term rates, e.g. '
                                  'short_term = "30%", long_term = "15%"')
        return SpotLegSettings(enabled=enabled, cash_usd=cash)
    check_lots(lots, book.spot, book.asset_symbols, "lots")
    for key in ("short_term", "long_term"):
        if key not in tax:
            raise ValidationError(f"tax.{key}", "is missing", f'give the {key} rate, e.g. "25%"')
    days = number(tax.get("long_term_days", 365), "tax.long_term_days")
    if not 0 <= days <= MAX_LONG_TERM_DAYS or days != int(days):
        raise ValidationError("tax.long_term_days", f"is {tax['long_term_days']!r}",
                              f"give a whole number of days in [0, {MAX_LONG_TERM_DAYS}], e.g. 365")
    rates = TaxRates(short_term=in_range(tax["short_term"], "tax.short_term", 0.0, 1.0),
                     long_term=in_range(tax["long_term"], "tax.long_term", 0.0, 1.0),
                     long_term_days=int(days),
                     futures=(in_range(tax["futures"], "tax.futures", 0.0, 1.0)
                              if "futures" in tax else None))
    method = choice(tax.get("lot_method", "hifo"), "tax.lot_method",
                    [m.value for m in LotMethod], LotMethod)
    harvest = boolean(tax["harvest_losses"], "tax.harvest_losses") \
        if "harvest_losses" in tax else False
    gamma = weight(tax.get("gamma", 1.0), "tax.gamma")
    futures_tax = boolean(tax["price_futures"], "tax.price_futures") \
        if "price_futures" in tax else False
    return SpotLegSettings(enabled=enabled, rates=rates, lots=lots, lot_method=method,
                           harvest_losses=harvest, gamma_tax=gamma, cash_usd=cash,
                           futures_tax=futures_tax)


def parse_lots(data: Mapping[str, object], book: Book) -> dict[str, tuple[TaxLot, ...]]:
    """[[lots]]: asset, quantity (units > 0), cost_basis (USD/unit: 0 or a realistic price in
    [MIN_PRICE_USD, MAX_PRICE_USD], fbr.config_values.price), acquired (UTC; :func:`acquired`),
    grouped by asset in file order."""
    out: dict[str, list[TaxLot]] = {}
    for k, row in enumerate(table_array(data, "lots", "")):
        p = join("lots", k)
        check_keys(row, LOT_KEYS, p)
        for key in LOT_KEYS:
            if key not in row:
                raise ValidationError(join(p, key), "is missing",
                                      "give asset, quantity, cost_basis and acquired for each lot")
        asset = string(row["asset"], join(p, "asset"))
        known(asset, book.asset_symbols, join(p, "asset"), "an asset of the book", asset)
        basis = price(nonneg(row["cost_basis"], join(p, "cost_basis")), join(p, "cost_basis"))
        lot = TaxLot(quantity=positive(row["quantity"], join(p, "quantity")), cost_basis=basis,
                     acquired=acquired(row["acquired"], join(p, "acquired")).to_pydatetime())
        out.setdefault(asset, []).append(lot)
    return {a: tuple(ls) for a, ls in out.items()}


def check_lot_dates(data: Mapping[str, object], at: datetime) -> None:
    """Every [[lots]] row was acquired on or before the market time ``at`` (a sale then cannot
    date its holding period); else one ValidationError naming the row."""
    for k, row in enumerate(table_array(data, "lots", "")):
        p = join(join("lots", k), "acquired")
        when = acquired(row["acquired"], p)
        if when > at:
            raise ValidationError(p, f"is {when.isoformat()}, after the market time "
                                  f"{at.isoformat()}",
                                  "give the date the lot was bought, on or before market.time")


#: the ISO 8601 texts an ``acquired`` string may be: YYYY-MM-DD, optionally THH:MM[:SS[.fff]] and
#: then Z or +hh:mm / -hh:mm
ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?")


def acquired(value: object, path: str) -> pd.Timestamp:
    """A lot's acquisition time as a UTC timestamp: a TOML date / datetime (naive: UTC) or a
    strict ISO text ``YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|+hh:mm]``. Any other text (01/06/2023, whose
    day and month a lenient parser guesses; 2023-06 or 2023, a partial date) is one
    ValidationError naming ``path``: the date fixes the holding period, so the tax rate."""
    if isinstance(value, str) and ISO_TIME.fullmatch(value) is None:
        raise ValidationError(path, f"is {value!r}, not an ISO date",
                              "give the date as YYYY-MM-DD (or a TOML date, acquired = 2023-11-28)")
    return timestamp(value, path)
