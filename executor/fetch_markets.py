"""The markets files of ``fbr data fetch``: contract-spec and leverage-tier rows, merged into the
same-date files already in the output folder.

``markets/<prefix>_contracts_<date>.csv.gz`` and ``markets/<prefix>_leverage_tiers_<date>.csv.gz``
are named by the date of the fetch, not by its symbols, so a second fetch on the same day (adding a
symbol to a data folder) must not drop the rows of the symbols fetched earlier:
:func:`merged_rows` keeps the existing file's rows of every symbol not fetched now and replaces
those fetched now. Rows are sorted by symbol (tiers then by tier number), so the file depends only
on the symbols and the data, not on the order or the runs they were fetched in. Every cell is
written as its own text (a float by Python's ``repr``, None as empty), whatever the other rows
hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from models.errors import ValidationError

#: Prefix of the markets files per exchange (the shared snapshot's names for Binance USD-M).
MARKETS_PREFIX = {"binanceusdm": "binance_usdm"}
#: Columns of the leverage-tiers file (ccxt symbols).
TIER_FILE_COLUMNS = ("symbol", "tier", "currency", "min_notional", "max_notional",
                     "maintenance_margin_rate", "max_leverage", "maint_amount_cum")

#: One file row: column -> cell text.
Row = dict[str, str]


def contract_spec_row(market: Mapping[str, Any]) -> dict[str, object]:
    """One contract-spec row in Binance exchangeInfo column names (``models.io.SPEC_COLUMNS``).

    From the raw Binance filters when present, else from ccxt's unified precision and limits."""
    info = market.get("info") or {}
    filters = {f.get("filterType"): f for f in info.get("filters", []) if isinstance(f, dict)}
    lot, mkt = filters.get("LOT_SIZE", {}), filters.get("MARKET_LOT_SIZE", {})
    price, notional = filters.get("PRICE_FILTER", {}), filters.get("MIN_NOTIONAL", {})
    limits, precision = market.get("limits", {}), market.get("precision", {})
    amount, cost = limits.get("amount", {}), limits.get("cost", {})
    return {
        "symbol": market.get("id"), "pair": info.get("pair", market.get("id")),
        "contractType": info.get("contractType", "PERPETUAL" if market.get("swap") else None),
        "status": info.get("status"), "baseAsset": market.get("baseId"),
        "quoteAsset": market.get("quoteId"), "marginAsset": market.get("settleId"),
        "pricePrecision": info.get("pricePrecision"),
        "quantityPrecision": info.get("quantityPrecision"),
        "tickSize": price.get("tickSize", precision.get("price")),
        "minPrice": price.get("minPrice"), "maxPrice": price.get("maxPrice"),
        "lot_stepSize": lot.get("stepSize", precision.get("amount")),
        "lot_minQty": lot.get("minQty", amount.get("min")),
        "lot_maxQty": lot.get("maxQty", amount.get("max")),
        "mkt_stepSize": mkt.get("stepSize"), "mkt_minQty": mkt.get("minQty"),
        "mkt_maxQty": mkt.get("maxQty"),
        "minNotional": notional.get("notional", cost.get("min")),
        "maintMarginPercent": info.get("maintMarginPercent"),
        "requiredMarginPercent": info.get("requiredMarginPercent"),
        "liquidationFee": info.get("liquidationFee"),
    }


def tier_rows(symbol: str, tiers: Sequence[Mapping[str, Any]]) -> list[dict[str, object]]:
    """Leverage-tier rows of one ccxt symbol. ``maint_amount_cum`` is Binance's ``cum`` when
    given, else built so MM = mmr n - cum is continuous: cum_k = cum_{k-1} + floor_k (mmr_k -
    mmr_{k-1})."""
    rows: list[dict[str, object]] = []
    cum_prev, mmr_prev = 0.0, 0.0
    for k, t in enumerate(sorted(tiers, key=lambda t: float(t.get("minNotional") or 0.0))):
        lo = float(t.get("minNotional") or 0.0)
        mmr = float(t["maintenanceMarginRate"])
        raw = (t.get("info") or {}).get("cum")
        cum = float(raw) if raw is not None else (cum_prev + lo * (mmr - mmr_prev) if k else 0.0)
        rows.append({"symbol": symbol, "tier": float(t.get("tier") or k + 1),
                     "currency": t.get("currency"), "min_notional": lo,
                     "max_notional": float(t["maxNotional"]), "maintenance_margin_rate": mmr,
                     "max_leverage": float(t["maxLeverage"]), "maint_amount_cum": cum})
        cum_prev, mmr_prev = cum, mmr
    return rows


#: Columns of the contracts file (Binance exchangeInfo names, ``models.io.SPEC_COLUMNS``).
SPEC_FILE_COLUMNS = tuple(contract_spec_row({}))


def cell(value: object) -> str:
    """The text of one cell: empty for None / NaN, ``repr`` for a float (as pandas writes a float
    column), ``str`` otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def _tier_number(row: Row) -> float:
    try:
        return float(row.get("tier") or "inf")
    except ValueError:
        return math.inf


def _read_rows(path: Path) -> tuple[list[str], list[Row]]:
    """The columns and rows (cell texts) of an existing markets file."""
    try:
        old = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValidationError("--out", f"holds {path}, which cannot be read ({exc}), and this "
                              f"fetch would merge its rows", "move that file away, then fetch "
                              "again") from None
    if "symbol" not in old.columns:
        raise ValidationError("--out", f"holds {path}, which has no 'symbol' column, and this "
                              f"fetch would merge its rows", "move that file away, then fetch "
                              "again")
    return list(old.columns), [{str(k): str(v) for k, v in r.items()}
                               for r in old.to_dict("records")]


def merged_rows(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, object]],
                fetched: Iterable[str]) -> pd.DataFrame:
    """The markets file to write at ``path``: ``rows`` (this fetch's) plus the rows of the file
    already there of every symbol not in ``fetched`` (this fetch's symbols, in the file's
    ``symbol`` spelling), all as cell texts, sorted by symbol then tier (stable). Columns: ``columns``
    then any other column the existing file has (empty in this fetch's rows)."""
    new: list[Row] = [{c: cell(r.get(c)) for c in columns} for r in rows]
    cols = list(columns)
    if path.exists():
        old_cols, old_rows = _read_rows(path)
        cols += [c for c in old_cols if c not in cols]
        replaced = set(fetched)
        new += [r for r in old_rows if r.get("symbol", "") not in replaced]
    new.sort(key=lambda r: (r.get("symbol", ""), _tier_number(r)))
    return pd.DataFrame([[r.get(c, "") for c in cols] for r in new], columns=cols, dtype=str)
