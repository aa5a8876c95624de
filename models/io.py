"""Loaders for market data in the shared layout (``models.data_layout``) or user files in it.

Prices (spot and perpetual mark closes, USD), funding rates (fraction per settlement), dated
futures' quarterly closes and the markets files (contract specs, leverage tiers). Every loaded
frame has a tz-aware UTC ``DatetimeIndex`` named ``timestamp`` and one column per symbol; one file
is read by ``models.data_files``. Every problem is one :class:`models.errors.ValidationError`
naming the file or field and the fix.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from models import data_files
from models.data_files import check_prices, find_file, numeric_column, read_frame, read_table
from models.data_layout import (
    DATA_DIR_ENV,
    FUNDING_FOLDER,
    MARK_FOLDER,
    MARKETS_FOLDER,
    QUARTERLY_FOLDER,
    SUFFIXES,
    spot_folder,
)
from models.errors import ValidationError
from models.instruments import MarginTiers, TierBracket

TIER_COLUMNS = ("symbol", "min_notional", "max_notional", "maintenance_margin_rate",
                "max_leverage", "maint_amount_cum")
_CCXT_RE = re.compile(r"^([^/:\s]+)/([^/:\s]+):([^/:\s-]+)(?:-(\d{6}))?$")
_CCXT_FORMAT = ("use the ccxt form BASE/QUOTE:SETTLE, e.g. 'BTC/USDT:USDT' for the perpetual or "
                "'BTC/USDT:USDT-260626' for the future delivering 2026-06-26")

#: Contract-spec columns (Binance exchangeInfo names) -> keys returned by ``load_contract_spec``.
SPEC_COLUMNS = {
    "lot_stepSize": "lot_step",
    "lot_minQty": "min_qty",
    "lot_maxQty": "max_qty",
    "mkt_stepSize": "market_lot_step",
    "mkt_minQty": "market_min_qty",
    "mkt_maxQty": "market_max_qty",
    "minNotional": "min_notional",
    "tickSize": "tick",
    "minPrice": "min_price",
    "maxPrice": "max_price",
    "pricePrecision": "price_precision",
    "quantityPrecision": "quantity_precision",
    "liquidationFee": "liquidation_fee",
}


def default_data_dir() -> Path | None:
    """``$FBR_DATA_DIR`` if set; else ``<repo>/../shared/data`` if it exists; else None.

    The repository root is the parent of the ``models`` package.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    candidate = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


# ---- spans and one symbol's series -------------------------------------------------------------


def _clip_span(frame: pd.DataFrame, start: str | None, end: str | None) -> pd.DataFrame:
    """Rows with start <= timestamp <= end (both inclusive, UTC when no zone is given)."""
    lo = utc_timestamp(start, "start") if start is not None else None
    hi = utc_timestamp(end, "end") if end is not None else None
    if lo is not None and hi is not None and hi < lo:
        raise ValidationError("end", f"({hi}) is before start ({lo})", "give end >= start")
    mask = np.ones(len(frame), dtype=bool)
    if lo is not None:
        mask &= frame.index >= lo
    if hi is not None:
        mask &= frame.index <= hi
    return frame.loc[mask]


def utc_timestamp(value: str, field: str) -> pd.Timestamp:
    """``value`` (an ISO date or time) as a UTC timestamp (a naive one is read as UTC); a clear
    error naming ``field`` otherwise."""
    try:
        t = pd.Timestamp(value)
    except (ValueError, TypeError):
        t = None
    if t is None or pd.isna(t):
        raise ValidationError(field, f"is {value!r}", "give an ISO date such as '2024-01-01'")
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _load_series(data_dir: Path | str, folder: str, symbol: str, column: str,
                 start: str | None, end: str | None) -> tuple[pd.Series, Path]:
    path = find_file(Path(data_dir), folder, symbol)
    series = numeric_column(_clip_span(read_table(path), start, end), column, path)
    return series.rename(symbol), path


# ---- prices and funding ------------------------------------------------------------------------


def _check_symbols(symbols: Sequence[str]) -> list[str]:
    if isinstance(symbols, str) or len(symbols) == 0:
        raise ValidationError("symbols", f"is {symbols!r}",
                              "give a non-empty list of symbols, e.g. ['BTC', 'ETH']")
    syms = [str(s) for s in symbols]
    dup = sorted({s for k, s in enumerate(syms) if s in syms[:k]})
    if dup:
        raise ValidationError("symbols", f"repeats {dup}", "give each symbol once")
    return syms


def _align(series: dict[str, pd.Series], what: str) -> pd.DataFrame:
    """Inner-join price series; warn (naming the limiting symbols) when rows are dropped."""
    frame = pd.concat(series.values(), axis=1, join="inner", sort=True)
    frame.index.name = "timestamp"
    if frame.empty:
        spans = {s: f"{v.index.min()} .. {v.index.max()}" for s, v in series.items()}
        raise ValidationError(f"data.{what}", f"has no timestamp common to all symbols ({spans})",
                              "choose symbols whose histories overlap, or a different span")
    if any(len(v) > len(frame) for v in series.values()):
        warnings.warn(_alignment_note(series, frame, what), stacklevel=4)
    return frame


def _alignment_note(series: dict[str, pd.Series], frame: pd.DataFrame, what: str) -> str:
    """Say which symbols limited the common span (late start, early end, interior gaps)."""
    first, last = frame.index[0], frame.index[-1]
    reasons = []
    starts = {s: v.index.min() for s, v in series.items()}
    ends = {s: v.index.max() for s, v in series.items()}
    if len(set(starts.values())) > 1:
        late = [s for s, t in starts.items() if t == first]
        reasons.append(f"the start is set by {late} (first bar {first})")
    if len(set(ends.values())) > 1:
        early = [s for s, t in ends.items() if t == last]
        reasons.append(f"the end is set by {early} (last bar {last})")
    gaps = [s for s, v in series.items() if ((v.index >= first) & (v.index <= last)).sum()
            > len(frame)]
    if gaps:
        reasons.append(f"bars of {gaps} that other symbols lack were dropped")
    return (f"{what}: aligned on the span common to {list(series)}, {first} .. {last} "
            f"({len(frame)} rows): " + "; ".join(reasons))


def _load_prices(data_dir: Path | str, folder: str, symbols: Sequence[str], start: str | None,
                 end: str | None) -> pd.DataFrame:
    series: dict[str, pd.Series] = {}
    for sym in _check_symbols(symbols):
        s, path = _load_series(data_dir, folder, sym, "close", start, end)
        if s.empty:
            raise ValidationError(f"data.{folder}.{sym}", f"has no rows between {start} and {end}"
                                  f" in {path}", "widen the span or pick another symbol")
        check_prices(s, sym, path)
        data_files.check_bar_spacing(s, f"data.{folder}.{sym}", path, folder.rsplit("_", 1)[-1])
        series[sym] = s
    return _align(series, folder)


def load_spot_closes(data_dir: Path | str, symbols: Sequence[str], *, interval: str = "1d",
                     start: str | None = None, end: str | None = None) -> pd.DataFrame:
    """Spot close prices (USD) from ``<data_dir>/spot_<interval>/<SYM>``, one column per symbol.

    Rows: bar open times (UTC) with start <= t <= end, aligned on the timestamps every symbol has
    (a warning names the symbols that limit the span when that drops rows).
    """
    if not re.fullmatch(r"[0-9]+[a-zA-Z]+", str(interval)):
        raise ValidationError("interval", f"is {interval!r}", "give a bar length such as '1d' "
                              "or '4h' (the folder spot_<interval> must exist)")
    return _load_prices(data_dir, spot_folder(interval), symbols, start, end)


def load_mark_closes(data_dir: Path | str, symbols: Sequence[str], *, start: str | None = None,
                     end: str | None = None) -> pd.DataFrame:
    """Perpetual mark closes (USD, 4 h bars) from ``<data_dir>/perp_mark_4h/<SYM>``, aligned as
    in ``load_spot_closes``."""
    return _load_prices(data_dir, MARK_FOLDER, symbols, start, end)


def load_funding(data_dir: Path | str, symbols: Sequence[str], *, start: str | None = None,
                 end: str | None = None) -> pd.DataFrame:
    """Funding rates (fraction per settlement; > 0: longs pay) from ``<data_dir>/funding/<SYM>``.

    Rows are the union of all symbols' settlement times (no fixed 8 h grid: intervals vary), NaN
    where a symbol did not settle. Sum the settlements inside a period to get its funding.
    """
    series: dict[str, pd.Series] = {}
    for sym in _check_symbols(symbols):
        s, path = _load_series(data_dir, FUNDING_FOLDER, sym, "funding_rate", start, end)
        values = s.to_numpy(dtype=float)
        bad = ~(np.isfinite(values) & (np.abs(values) < 1))
        if bad.any():
            k = int(np.argmax(bad))
            raise ValidationError(f"data.funding.{sym}", f"has rate {values[k]} at {s.index[k]} "
                                  f"in {path}", "give funding as a finite fraction in (-1, 1)")
        data_files.check_funding(sym, s, path)
        series[sym] = s
    frame = pd.concat(series.values(), axis=1, join="outer", sort=True)
    frame.index.name = "timestamp"
    return frame


# ---- dated (quarterly) futures -----------------------------------------------------------------

#: Delivery time of a quarterly on its suffix date (Binance USD-M: 08:00 UTC).
DELIVERY_HOUR_UTC = 8
_QUARTERLY_RE = re.compile(r"^([A-Z0-9]+)_(\d{6})$")


def quarterly_delivery(code: str) -> pd.Timestamp:
    """The delivery time of a quarterly suffix ``YYMMDD`` (e.g. '240329' -> 2024-03-29 08:00 UTC)."""
    if not re.fullmatch(r"\d{6}", code):
        raise ValidationError("quarterly.suffix", f"is {code!r}", "give the delivery date as YYMMDD")
    day = pd.Timestamp(f"20{code[:2]}-{code[2:4]}-{code[4:]}", tz="UTC")
    return day + pd.Timedelta(hours=DELIVERY_HOUR_UTC)


def quarterly_files(data_dir: Path | str, pair: str) -> dict[pd.Timestamp, Path]:
    """The quarterly files of ``pair`` (e.g. 'BTCUSDT') under ``<data_dir>/quarterly_1d``, by
    delivery time (sorted); {} when the folder or the pair has none."""
    folder = Path(data_dir) / QUARTERLY_FOLDER
    out: dict[pd.Timestamp, Path] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        name = path.name
        for suffix in SUFFIXES:
            if name.endswith(suffix):
                m = _QUARTERLY_RE.match(name[: -len(suffix)])
                if m and m.group(1) == pair:
                    out.setdefault(quarterly_delivery(m.group(2)), path)
                break
    return dict(sorted(out.items()))


def load_quarterly_closes(data_dir: Path | str, pair: str, delivery: pd.Timestamp) -> pd.Series:
    """Daily closes (USD) of ``pair``'s quarterly delivering at ``delivery``, stamped at the time
    each close was known: bar open + 1 day, except the delivery-day bar (00:00 .. 08:00 UTC), whose
    close is the price at delivery and is stamped at ``delivery``. Rows after delivery are refused
    (the shared files have none). Empty when the file does not exist.

    Source: ``<data_dir>/quarterly_1d/<pair>_<YYMMDD>.csv.gz`` (timestamp = bar open, UTC).
    """
    files = quarterly_files(data_dir, pair)
    when = pd.Timestamp(delivery)
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    path = files.get(when)
    if path is None:
        return pd.Series(dtype=float, name=f"{pair}_{when:%y%m%d}",
                         index=pd.DatetimeIndex([], tz="UTC", name="timestamp"))
    close = numeric_column(read_table(path), "close", path)
    check_prices(close, path.stem, path)
    if len(close) and close.index[-1] >= when:
        raise ValidationError(f"data.{path}", f"has a bar opening at {close.index[-1]}, at or after "
                              f"the delivery {when}", "drop the post-delivery rows")
    stamps = pd.DatetimeIndex(close.index) + pd.Timedelta(days=1)
    stamps = stamps.where(stamps <= when, when)
    return pd.Series(close.to_numpy(dtype=float), index=pd.DatetimeIndex(stamps, name="timestamp"),
                     name=f"{pair}_{when:%y%m%d}")


# ---- markets: leverage tiers and contract specs ------------------------------------------------


def _read_markets(path: Path | str, columns: Sequence[str]) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"data.{MARKETS_FOLDER}.{p.name}", f"has no file {p}",
                              "give the path of a markets file, e.g. <data_dir>/markets/"
                              "binance_usdm_leverage_tiers_2026-05-07.csv.gz")
    frame = read_frame(p)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValidationError(f"data.{p}", f"lacks the columns {missing}",
                              "give a file with the columns of the shared markets snapshot")
    return frame


def _unknown_symbol(path: Path | str, symbol: str, known: Sequence[str]) -> ValidationError:
    close = difflib.get_close_matches(symbol, [str(k) for k in known], n=3)
    hint = f"; close matches: {close}" if close else ""
    return ValidationError("ccxt_symbol", f"{symbol!r} is not in {path}", _CCXT_FORMAT + hint)


def load_leverage_tiers(path: Path | str, ccxt_symbol: str, *,
                        as_of: str | None = None) -> MarginTiers:
    """Margin tiers of ``ccxt_symbol`` (e.g. 'BTC/USDT:USDT') from a leverage-tier file.

    Each row is one bracket [min_notional, max_notional) (USD) with maintenance_margin_rate
    (fraction), max_leverage and maint_amount_cum (USD), so MM(n) = mmr n - cum in the bracket of n.
    Files holding several snapshots (``snapshot_commit_date``) give the latest one, or the latest
    at or before ``as_of``.
    """
    frame = _read_markets(path, TIER_COLUMNS)
    if not _CCXT_RE.match(str(ccxt_symbol)):
        raise ValidationError("ccxt_symbol", f"is {ccxt_symbol!r}", _CCXT_FORMAT)
    rows = frame.loc[frame["symbol"] == ccxt_symbol]
    if rows.empty:
        raise _unknown_symbol(path, ccxt_symbol, frame["symbol"].unique().tolist())
    rows = _latest_snapshot(rows, as_of, path)
    rows = rows.sort_values("min_notional")
    cols = ["min_notional", "max_notional", "max_leverage", "maintenance_margin_rate",
            "maint_amount_cum"]
    values = rows[cols].to_numpy(dtype=float)
    brackets = tuple(TierBracket(min_notional=float(lo), max_notional=float(hi),
                                 max_leverage=float(lev), mmr=float(mmr), cum=float(cum))
                     for lo, hi, lev, mmr, cum in values)
    return MarginTiers(brackets)


def _latest_snapshot(rows: pd.DataFrame, as_of: str | None, path: Path | str) -> pd.DataFrame:
    if "snapshot_commit_date" not in rows.columns:
        return rows
    dates = pd.to_datetime(rows["snapshot_commit_date"], utc=True)
    if as_of is not None:
        cutoff = utc_timestamp(as_of, "as_of")
        keep = dates <= cutoff
        if not keep.any():
            raise ValidationError("as_of", f"({cutoff}) is before the first snapshot in {path} "
                                  f"({dates.min()})", "give a later date or no as_of")
        rows, dates = rows.loc[keep], dates.loc[keep]
    return rows.loc[dates == dates.max()]


def _binance_id(ccxt_symbol: str) -> tuple[str, str]:
    """ccxt 'BTC/USDT:USDT[-YYMMDD]' -> (Binance id 'BTCUSDT[_YYMMDD]', settle asset)."""
    m = _CCXT_RE.match(str(ccxt_symbol))
    if m is None:
        raise ValidationError("ccxt_symbol", f"is {ccxt_symbol!r}", _CCXT_FORMAT)
    base, quote, settle, expiry = m.groups()
    return base + quote + (f"_{expiry}" if expiry else ""), settle


def load_contract_spec(path: Path | str, ccxt_symbol: str) -> dict[str, float]:
    """Trading rules of ``ccxt_symbol`` from a contract-spec file (Binance exchangeInfo columns).

    Returns lot_step, min_qty, max_qty (base units; limit orders), market_lot_step, market_min_qty,
    market_max_qty, min_notional (USD), tick, min_price, max_price (USD), price_precision,
    quantity_precision, liquidation_fee, maint_margin_rate and required_margin_rate (fractions),
    contract_size (1 base unit: USD-M contracts are linear) and, for dated futures,
    delivery_epoch_s (UTC seconds). Keys whose column the file lacks are left out; a cell that is
    empty, NaN or not a finite number is refused (``data_files.cell_number``), never defaulted.
    """
    frame = _read_markets(path, ("symbol",))
    binance_id, settle = _binance_id(ccxt_symbol)
    rows = frame.loc[frame["symbol"] == binance_id]
    if "marginAsset" in rows.columns:
        rows = rows.loc[rows["marginAsset"] == settle]
    if rows.empty:
        known = [_ccxt_name(r) for r in frame.itertuples(index=False)]
        raise _unknown_symbol(path, ccxt_symbol, known)
    row: dict[str, object] = {str(k): v for k, v in rows.iloc[-1].to_dict().items()}
    spec: dict[str, float] = {key: data_files.cell_number(row[col], col, binance_id, path)
                              for col, key in SPEC_COLUMNS.items() if col in row}
    for col, key in (("maintMarginPercent", "maint_margin_rate"),
                     ("requiredMarginPercent", "required_margin_rate")):
        if col in row:
            spec[key] = data_files.cell_number(row[col], col, binance_id, path) / 100.0
    spec["contract_size"] = 1.0
    if "_" in binance_id and row.get("deliveryDate_utc") is not None:
        delivery = utc_timestamp(str(row["deliveryDate_utc"]), "deliveryDate_utc")
        spec["delivery_epoch_s"] = delivery.timestamp()
    return spec


def _ccxt_name(row: object) -> str:
    """Best-effort ccxt name of a contract-spec row (for suggestions only)."""
    base = str(getattr(row, "baseAsset", ""))
    quote = str(getattr(row, "quoteAsset", ""))
    settle = str(getattr(row, "marginAsset", quote))
    symbol = str(getattr(row, "symbol", ""))
    suffix = f"-{symbol.split('_', 1)[1]}" if "_" in symbol else ""
    return f"{base}/{quote}:{settle}{suffix}" if base and quote else symbol
