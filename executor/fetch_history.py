"""Fetch market history through ccxt into the data layout ``models.io`` and the backtester read.

Files written under the output directory (gzip CSV, ``timestamp`` first, ISO 8601 UTC with ``Z``,
bars stamped by their open time; see ``models/io.py``):

==========================================  ================================================
``spot_<interval>/<SYM>.csv.gz``            open, high, low, close, volume (base), quote_volume
``perp_mark_4h/<SYM>.csv.gz``               close (perpetual mark price, 4 h bars)
``funding/<SYM>.csv.gz``                    funding_rate (fraction per settlement, > 0: longs pay)
``markets/<ex>_contracts_<date>.csv.gz``    contract specs (Binance exchangeInfo column names)
``markets/<ex>_leverage_tiers_<date>.csv.gz``  leverage tiers (ccxt symbols), needs API keys
==========================================  ================================================

Choices (documented here because they change what the numbers mean):

- **Spot closes** come from the exchange's *spot* market: for ``binanceusdm`` that is ccxt
  ``binance`` (``BTC/USDT``), which has the real spot klines. With ``SpotSource.INDEX`` they come
  from the perpetual's *index price* klines instead (Binance's index is a weighted average of spot
  venues; use it where the spot exchange is unreachable). ``volume`` is 0 for index bars.
- **quote_volume** is ``volume x close``: ccxt's unified OHLCV drops the exchange's exact quote
  volume. It feeds only the backtester's 30-day ADV, where the difference is small.
- **Only closed bars** are written: a bar is kept when open + bar length <= now.
- **Paging**: each series is read from ``since`` forward, ``limit`` rows a call, the cursor moving
  to the last timestamp + 1 ms, until a call returns no new row or the span ends (``until``,
  exclusive, is compared with bar *open* / settlement times). ccxt's rate limiter spaces the calls;
  :func:`executor.ccxt_wiring.retry_read` retries network errors with backoff, waiting at least
  the exchange's Retry-After after a 429 (Binance bans an IP that calls again sooner).
- **Leverage tiers** are a signed endpoint on Binance: fetched only when the futures exchange has
  API keys, otherwise skipped with a note (the contract specs need no keys).
- Files are overwritten; gzip headers carry no time stamp, so the same data gives the same bytes.
"""

from __future__ import annotations

import difflib
import enum
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd

from executor.ccxt_wiring import ExchangeFactory, retry_read
from models.data_layout import FUNDING_FOLDER, MARK_FOLDER, MARKETS_FOLDER, spot_folder
from models.errors import ValidationError

#: Folder of the perpetual mark closes (the backtester reads 4 h marks).
MARK_INTERVAL = "4h"
#: Rows per call: Binance caps spot and mark klines at 1000 (ccxt too), funding history at 1000.
PAGE_LIMIT = 1000
#: Spot exchange that holds the spot markets of a derivatives-only ccxt exchange.
SPOT_EXCHANGE = {"binanceusdm": "binance", "binancecoinm": "binance"}
#: Prefix of the markets files per exchange (the shared snapshot's names for Binance USD-M).
MARKETS_PREFIX = {"binanceusdm": "binance_usdm"}
TIMEFRAME_MS = {"1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000,
                "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000}
TIER_FILE_COLUMNS = ("symbol", "tier", "currency", "min_notional", "max_notional",
                     "maintenance_margin_rate", "max_leverage", "maint_amount_cum")
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}$")


class SpotSource(enum.Enum):
    """Where spot closes come from: the spot exchange's klines, or the perp's index klines."""

    EXCHANGE = "exchange"
    INDEX = "index"


@dataclass(frozen=True)
class FetchRequest:
    """What to fetch: base assets (``BTC``), quote/settle asset, span [since, until) (UTC),
    spot bar intervals, output directory, spot source and whether to try leverage tiers."""

    exchange_id: str
    symbols: tuple[str, ...]
    since: pd.Timestamp
    until: pd.Timestamp | None = None
    intervals: tuple[str, ...] = ("1d",)
    out_dir: Path = Path("data")
    quote: str = "USDT"
    spot_source: SpotSource = SpotSource.EXCHANGE
    tiers: bool = True

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValidationError("symbols", "is empty", "give base assets, e.g. BTC,ETH,SOL")
        for s in self.symbols:
            if not _SYMBOL_RE.match(s):
                raise ValidationError("symbols", f"contains {s!r}",
                                      "give base assets in capitals, e.g. BTC,ETH,SOL")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValidationError("symbols", f"repeats a symbol: {list(self.symbols)}",
                                  "give each symbol once")
        for iv in self.intervals:
            if iv not in TIMEFRAME_MS:
                raise ValidationError("interval", f"is {iv!r}",
                                      f"give one or more of {sorted(TIMEFRAME_MS)}, comma separated")
        if self.since.tzinfo is None or (self.until is not None and self.until.tzinfo is None):
            raise ValidationError("since", "is not time-zone aware", "give UTC timestamps")
        if self.until is not None and self.until <= self.since:
            raise ValidationError("until", f"({self.until}) is not after since ({self.since})",
                                  "give until > since, or leave it out (up to now)")


@dataclass(frozen=True)
class WrittenFile:
    """One file written: kind (spot_1d, perp_mark_4h, funding, contracts, tiers), symbol, rows,
    first and last timestamp (ISO, None for market files)."""

    path: Path
    kind: str
    symbol: str
    rows: int
    first: str | None
    last: str | None


@dataclass(frozen=True)
class FetchSummary:
    """Everything a fetch wrote, plus notes (skipped parts, empty series)."""

    files: tuple[WrittenFile, ...]
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"files": [{"path": str(f.path), "kind": f.kind, "symbol": f.symbol,
                           "rows": f.rows, "first": f.first, "last": f.last}
                          for f in self.files],
                "notes": list(self.notes)}


#: Progress callback: (label of the series, rows so far, expected rows or None).
Progress = Callable[[str, int, int | None], None]


@dataclass
class _FetchRun:
    request: FetchRequest
    now_ms: int
    progress: Progress | None
    sleep: Callable[[float], None]
    written: list[WrittenFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def since_ms(self) -> int:
        return int(self.request.since.timestamp() * 1000)

    @property
    def until_ms(self) -> int:
        u = self.request.until
        return min(self.now_ms, int(u.timestamp() * 1000)) if u is not None else self.now_ms


def fetch_market_data(request: FetchRequest, factory: ExchangeFactory, *,
                      now: pd.Timestamp | None = None, progress: Progress | None = None,
                      sleep: Callable[[float], None] | None = None) -> FetchSummary:
    """Fetch spot klines, perp marks, funding, contract specs and (with keys) leverage tiers for
    ``request.symbols`` and write them in the shared layout under ``request.out_dir``.

    ``factory(exchange_id)`` gives ccxt instances (the futures exchange and, for
    ``SpotSource.EXCHANGE``, its spot exchange); ``now`` (default: the wall clock) bounds the
    closed bars; ``sleep`` is the retry backoff's sleep (tests pass a no-op).
    """
    now_ts = pd.Timestamp.now(tz="UTC") if now is None else now
    ctx = _FetchRun(request, int(now_ts.timestamp() * 1000), progress, sleep or time.sleep)
    futures = factory(request.exchange_id)
    _read(ctx, futures.load_markets, futures)
    perps = {s: _market(futures, f"{s}/{request.quote}:{request.quote}", "symbols")
             for s in request.symbols}
    spot_ex = None
    spot_markets: dict[str, str] = {}
    if request.spot_source is SpotSource.EXCHANGE:
        spot_id = SPOT_EXCHANGE.get(request.exchange_id, request.exchange_id)
        spot_ex = futures if spot_id == request.exchange_id else factory(spot_id)
        _read(ctx, spot_ex.load_markets, spot_ex)
        spot_markets = {s: _market(spot_ex, f"{s}/{request.quote}", "symbols")
                        for s in request.symbols}
    out = request.out_dir
    for sym in request.symbols:
        for iv in request.intervals:
            if spot_ex is not None:
                rows = _ohlcv(ctx, spot_ex, spot_markets[sym], iv, {}, f"spot {iv} {sym}")
            else:
                rows = _ohlcv(ctx, futures, perps[sym], iv, {"price": "index"},
                              f"index {iv} {sym}")
            _write_klines(ctx, out / spot_folder(iv) / f"{sym}.csv.gz", spot_folder(iv), sym, rows)
        marks = _ohlcv(ctx, futures, perps[sym], MARK_INTERVAL, {"price": "mark"},
                       f"mark {MARK_INTERVAL} {sym}")
        _write_marks(ctx, out / MARK_FOLDER / f"{sym}.csv.gz", sym, marks)
        funding = _funding(ctx, futures, perps[sym], f"funding {sym}")
        _write_funding(ctx, out / FUNDING_FOLDER / f"{sym}.csv.gz", sym, funding)
    _write_markets(ctx, futures, list(perps.values()))
    return FetchSummary(tuple(ctx.written), tuple(ctx.notes))


# ---------------------------------------------------------------------------------------------
# Reading through ccxt


def _read(ctx: _FetchRun, fn: Callable[[], Any], exchange: Any) -> Any:
    """``fn()`` retried on network errors, waiting at least ``exchange``'s Retry-After."""
    return retry_read(fn, sleep=ctx.sleep, exchange=exchange)


def _market(exchange: Any, symbol: str, field_name: str) -> str:
    if symbol not in exchange.markets:
        close = difflib.get_close_matches(symbol, list(exchange.markets), n=3)
        hint = f" (close: {close})" if close else ""
        raise ValidationError(field_name, f"{symbol!r} is not a market of {exchange.id}{hint}",
                              "give base assets the exchange lists against the quote asset, "
                              "e.g. BTC,ETH,SOL")
    return symbol


def _expected(ctx: _FetchRun, step_ms: int | None) -> int | None:
    if step_ms is None:
        return None
    return max(0, math.ceil((ctx.until_ms - ctx.since_ms) / step_ms))


def _ohlcv(ctx: _FetchRun, exchange: Any, symbol: str, timeframe: str,
           params: Mapping[str, str], label: str) -> list[list[float]]:
    """All closed bars of ``symbol`` opening in [since, until), paged forward."""
    step = TIMEFRAME_MS[timeframe]
    rows: dict[int, list[float]] = {}
    cursor = ctx.since_ms
    expected = _expected(ctx, step)
    while cursor < ctx.until_ms:
        page = _read(ctx, partial(exchange.fetch_ohlcv, symbol, timeframe, since=cursor,
                                  limit=PAGE_LIMIT, params=dict(params)), exchange)
        fresh = [r for r in page if int(r[0]) >= cursor]
        if not fresh:
            break
        for r in fresh:
            t = int(r[0])
            if t < ctx.until_ms and t + step <= ctx.now_ms:
                rows[t] = [float(x) if x is not None else math.nan for x in r[:6]]
        cursor = max(int(r[0]) for r in fresh) + 1
        if ctx.progress is not None:
            ctx.progress(label, len(rows), expected)
    return [rows[t] for t in sorted(rows)]


def _funding(ctx: _FetchRun, exchange: Any, symbol: str, label: str) -> list[tuple[int, float]]:
    """All funding settlements of ``symbol`` in [since, until), paged forward."""
    rows: dict[int, float] = {}
    cursor = ctx.since_ms
    expected = _expected(ctx, 8 * 3_600_000)
    while cursor < ctx.until_ms:
        page = _read(ctx, partial(exchange.fetch_funding_rate_history, symbol, since=cursor,
                                  limit=PAGE_LIMIT), exchange)
        fresh = [r for r in page if r.get("timestamp") is not None and int(r["timestamp"]) >= cursor]
        if not fresh:
            break
        for r in fresh:
            t = int(r["timestamp"])
            if t < ctx.until_ms and r.get("fundingRate") is not None:
                rows[t] = float(r["fundingRate"])
        cursor = max(int(r["timestamp"]) for r in fresh) + 1
        if ctx.progress is not None:
            ctx.progress(label, len(rows), expected)
    return sorted(rows.items())


# ---------------------------------------------------------------------------------------------
# Writing


def _stamps(ms: Sequence[int]) -> pd.Index:
    """ISO 8601 UTC labels of epoch-ms timestamps (the data files' ``timestamp`` column)."""
    stamps: pd.Index = pd.Index(pd.to_datetime(list(ms), unit="ms", utc=True)
                                .strftime("%Y-%m-%dT%H:%M:%SZ"), name="timestamp")
    return stamps


def _save(ctx: _FetchRun, frame: pd.DataFrame, path: Path, kind: str, symbol: str,
          index: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=index, compression={"method": "gzip", "mtime": 0})
    first = str(frame.index[0]) if index and len(frame) else None
    last = str(frame.index[-1]) if index and len(frame) else None
    ctx.written.append(WrittenFile(path, kind, symbol, len(frame), first, last))


def _write_klines(ctx: _FetchRun, path: Path, kind: str, symbol: str,
                  rows: list[list[float]]) -> None:
    if not rows:
        ctx.notes.append(f"{kind} {symbol}: no closed bars in the span; no file written")
        return
    frame = pd.DataFrame([r[1:6] for r in rows], index=_stamps([int(r[0]) for r in rows]),
                         columns=["open", "high", "low", "close", "volume"])
    frame["volume"] = frame["volume"].fillna(0.0)
    frame["quote_volume"] = frame["volume"] * frame["close"]
    _save(ctx, frame, path, kind, symbol)


def _write_marks(ctx: _FetchRun, path: Path, symbol: str, rows: list[list[float]]) -> None:
    if not rows:
        ctx.notes.append(f"perp_mark_4h {symbol}: no closed bars in the span; no file written")
        return
    frame = pd.DataFrame({"close": [r[4] for r in rows]},
                         index=_stamps([int(r[0]) for r in rows]))
    _save(ctx, frame, path, "perp_mark_4h", symbol)


def _write_funding(ctx: _FetchRun, path: Path, symbol: str, rows: list[tuple[int, float]]) -> None:
    if not rows:
        ctx.notes.append(f"funding {symbol}: no settlements in the span; no file written")
        return
    frame = pd.DataFrame({"funding_rate": [r for _t, r in rows]},
                         index=_stamps([t for t, _r in rows]))
    _save(ctx, frame, path, "funding", symbol)


def _write_markets(ctx: _FetchRun, exchange: Any, symbols: list[str]) -> None:
    req = ctx.request
    prefix = MARKETS_PREFIX.get(req.exchange_id, req.exchange_id)
    date = pd.Timestamp(ctx.now_ms, unit="ms", tz="UTC").strftime("%Y-%m-%d")
    specs = pd.DataFrame([contract_spec_row(exchange.market(s)) for s in symbols])
    _save(ctx, specs, req.out_dir / MARKETS_FOLDER / f"{prefix}_contracts_{date}.csv.gz",
          "contracts", ",".join(req.symbols), index=False)
    if not req.tiers:
        return
    if not exchange.apiKey:
        ctx.notes.append("leverage tiers skipped: the endpoint is signed and no API key is set "
                         "(set FBR_<EXCHANGE>_API_KEY and FBR_<EXCHANGE>_SECRET, e.g. "
                         "FBR_BINANCEUSDM_API_KEY)")
        return
    try:
        tiers = _read(ctx, lambda: exchange.fetch_leverage_tiers(symbols), exchange)
    except ccxt.AuthenticationError as exc:
        ctx.notes.append(f"leverage tiers skipped: the exchange refused the keys "
                         f"({type(exc).__name__})")
        return
    rows = [r for s in symbols for r in tier_rows(s, tiers.get(s, []))]
    _save(ctx, pd.DataFrame(rows, columns=list(TIER_FILE_COLUMNS)),
          req.out_dir / MARKETS_FOLDER / f"{prefix}_leverage_tiers_{date}.csv.gz", "tiers",
          ",".join(req.symbols), index=False)


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
