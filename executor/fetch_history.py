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
- **Only closed bars** are written: a bar is kept when open + bar length <= now, where now is the
  *exchange's* time (ccxt ``fetch_time``, read once per fetch), never the local clock: a local clock
  running fast would take the still-open candle for a closed one. A ``since`` at or after it is
  refused (nothing has closed), before any data request.
- **Paging**: each series is read from ``since`` forward, ``limit`` rows a call, the cursor moving
  to the last timestamp + 1 ms, until a call returns no new row or the span ends (``until``,
  exclusive, is compared with bar *open* / settlement times). ccxt's rate limiter spaces the calls;
  :func:`executor.ccxt_wiring.retry_read` retries network errors with backoff, waiting at least
  the exchange's Retry-After after a 429 (Binance bans an IP that calls again sooner). An answer
  asking for more than ``MAX_RETRY_AFTER_S`` seconds stops the fetch at once with a
  :class:`FetchSilenceError` naming the seconds and the UTC time the wait ends (``fbr data fetch``
  keeps that time: a fetch started before it is refused without a request).
- **Leverage tiers** are a signed endpoint on Binance: fetched only when the futures exchange has
  API keys, otherwise skipped with a note (the contract specs need no keys).
- **All or nothing**: every series is read into memory first; files are written only when all
  reads succeeded, each under a temporary name then moved into place (``executor.fetch_files``),
  so a failed fetch leaves the folder as it was. Series files are replaced; the markets files
  (named by date) keep the rows of symbols fetched earlier that day (``executor.fetch_markets``).
  gzip headers carry no time stamp, so the same data gives the same bytes.
"""

from __future__ import annotations

import difflib
import enum
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd

from executor.ccxt_wiring import ExchangeFactory
from executor.fetch_files import (
    Staged,
    WrittenFile,
    funding_frame,
    klines_frame,
    marks_frame,
    write_staged,
)
from executor.fetch_markets import (
    MARKETS_PREFIX,
    SPEC_FILE_COLUMNS,
    TIER_FILE_COLUMNS,
    contract_spec_row,
    merged_rows,
    tier_rows,
)
from executor.fetch_silence import FetchSilenceError, read_or_silence, silence_message
from models.data_layout import FUNDING_FOLDER, MARK_FOLDER, MARKETS_FOLDER, spot_folder
from models.errors import ValidationError

__all__ = ["MARKETS_PREFIX", "TIER_FILE_COLUMNS", "FetchRequest", "FetchSilenceError",
           "FetchSummary", "SpotSource", "WrittenFile", "contract_spec_row", "exchanges_of",
           "fetch_market_data", "silence_message", "tier_rows"]

#: Folder of the perpetual mark closes (the backtester reads 4 h marks).
MARK_INTERVAL = "4h"
#: Rows per call: Binance caps spot and mark klines at 1000 (ccxt too), funding history at 1000.
PAGE_LIMIT = 1000
#: Spot exchange that holds the spot markets of a derivatives-only ccxt exchange.
SPOT_EXCHANGE = {"binanceusdm": "binance", "binancecoinm": "binance"}
TIMEFRAME_MS = {"1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000,
                "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000}
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
        self._check_intervals()
        if self.since.tzinfo is None or (self.until is not None and self.until.tzinfo is None):
            raise ValidationError("since", "is not time-zone aware", "give UTC timestamps")
        if self.until is not None and self.until <= self.since:
            raise ValidationError("until", f"({self.until}) is not after since ({self.since})",
                                  "give until > since, or leave it out (up to now)")

    def _check_intervals(self) -> None:
        """At least one spot interval (the backtester reads ``spot_<interval>``), each known and
        given once."""
        choices = f"{sorted(TIMEFRAME_MS, key=TIMEFRAME_MS.__getitem__)}"
        if not self.intervals:
            raise ValidationError("interval", "lists no spot bar interval (--interval is empty), "
                                  "so no spot_<interval> file would be fetched",
                                  f"give --interval one or more of {choices}, comma separated")
        for iv in self.intervals:
            if iv not in TIMEFRAME_MS:
                raise ValidationError("interval", f"is {iv!r}",
                                      f"give one or more of {sorted(TIMEFRAME_MS)}, comma separated")
        if len(set(self.intervals)) != len(self.intervals):
            raise ValidationError("interval", f"repeats an interval: {list(self.intervals)}",
                                  "give each --interval once, e.g. 1d,4h")


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


def exchanges_of(request: FetchRequest) -> tuple[str, ...]:
    """The ccxt exchanges whose IP-level silence refuses a fetch of ``request``: the futures
    exchange and its spot exchange (an index fetch calls only the first, but a silence of either
    is one operator's limit on this IP: refused to be safe)."""
    spot_id = SPOT_EXCHANGE.get(request.exchange_id, request.exchange_id)
    return tuple(dict.fromkeys((request.exchange_id, spot_id)))


#: Progress callback: (label of the series, rows so far, expected rows or None).
Progress = Callable[[str, int, int | None], None]


@dataclass
class _FetchRun:
    request: FetchRequest
    progress: Progress | None
    sleep: Callable[[float], None]
    now_ms: int = 0
    staged: list[Staged] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def since_ms(self) -> int:
        return int(self.request.since.timestamp() * 1000)

    @property
    def until_ms(self) -> int:
        u = self.request.until
        return min(self.now_ms, int(u.timestamp() * 1000)) if u is not None else self.now_ms

    def stage(self, path: Path, kind: str, symbol: str, frame: pd.DataFrame | None,
              empty: str) -> None:
        """Keep ``frame`` to write at ``path`` once every read is done; None: note ``empty``."""
        if frame is None:
            self.notes.append(f"{kind} {symbol}: {empty}; no file written")
        else:
            self.staged.append(Staged(path, frame, kind, symbol))


def fetch_market_data(request: FetchRequest, factory: ExchangeFactory, *,
                      now: pd.Timestamp | None = None, progress: Progress | None = None,
                      sleep: Callable[[float], None] | None = None) -> FetchSummary:
    """Fetch spot klines, perp marks, funding, contract specs and (with keys) leverage tiers for
    ``request.symbols`` and write them in the shared layout under ``request.out_dir``: all of
    them once every read has succeeded, none when one fails (see the module doc).

    ``factory(exchange_id)`` gives ccxt instances (the futures exchange and, for
    ``SpotSource.EXCHANGE``, its spot exchange). Closed bars are those closed by the futures
    exchange's time (``fetch_time``), or by ``now`` when that is earlier (tests pin it);
    ``sleep`` is the retry backoff's sleep (tests pass a no-op). Raises ValidationError for a
    ``since`` at or after that time (before any data request), FetchSilenceError when the
    exchange asks for a long silence.
    """
    ctx = _FetchRun(request, progress, sleep or time.sleep)
    futures = factory(request.exchange_id)
    ctx.now_ms = _exchange_now_ms(ctx, futures, now)
    _check_since(ctx, str(futures.id))
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
    for sym in request.symbols:
        spot = (spot_ex, spot_markets[sym]) if spot_ex is not None else None
        _stage_series(ctx, futures, perps[sym], spot, sym)
    _stage_markets(ctx, futures, list(perps.values()))
    return FetchSummary(tuple(write_staged(ctx.staged)), tuple(ctx.notes))


def _stage_series(ctx: _FetchRun, futures: Any, perp: str, spot: tuple[Any, str] | None,
                  sym: str) -> None:
    """Read ``sym``'s spot bars (each interval), 4 h marks and funding; stage their files."""
    out = ctx.request.out_dir
    none = "no closed bars in the span"
    for iv in ctx.request.intervals:
        if spot is not None:
            rows = _ohlcv(ctx, spot[0], spot[1], iv, {}, f"spot {iv} {sym}")
        else:
            rows = _ohlcv(ctx, futures, perp, iv, {"price": "index"}, f"index {iv} {sym}")
        ctx.stage(out / spot_folder(iv) / f"{sym}.csv.gz", spot_folder(iv), sym,
                  klines_frame(rows) if rows else None, none)
    marks = _ohlcv(ctx, futures, perp, MARK_INTERVAL, {"price": "mark"},
                   f"mark {MARK_INTERVAL} {sym}")
    ctx.stage(out / MARK_FOLDER / f"{sym}.csv.gz", "perp_mark_4h", sym,
              marks_frame(marks) if marks else None, none)
    funding = _funding(ctx, futures, perp, f"funding {sym}")
    ctx.stage(out / FUNDING_FOLDER / f"{sym}.csv.gz", "funding", sym,
              funding_frame(funding) if funding else None, "no settlements in the span")


def _stage_markets(ctx: _FetchRun, exchange: Any, symbols: list[str]) -> None:
    """Stage the contracts file and (with keys) the tiers file of the fetch's date, merged with
    the same-date files already in ``markets/`` (``executor.fetch_markets.merged_rows``)."""
    req = ctx.request
    prefix = MARKETS_PREFIX.get(req.exchange_id, req.exchange_id)
    date = pd.Timestamp(ctx.now_ms, unit="ms", tz="UTC").strftime("%Y-%m-%d")
    folder = req.out_dir / MARKETS_FOLDER
    names = ",".join(req.symbols)
    specs = [contract_spec_row(exchange.market(s)) for s in symbols]
    tiers = _tiers(ctx, exchange, symbols)  # read before anything is merged or written
    path = folder / f"{prefix}_contracts_{date}.csv.gz"
    frame = merged_rows(path, SPEC_FILE_COLUMNS, specs, [str(r["symbol"]) for r in specs])
    ctx.staged.append(Staged(path, frame, "contracts", names, index=False))
    if tiers is not None:
        path = folder / f"{prefix}_leverage_tiers_{date}.csv.gz"
        frame = merged_rows(path, TIER_FILE_COLUMNS, tiers, symbols)
        ctx.staged.append(Staged(path, frame, "tiers", names, index=False))


def _tiers(ctx: _FetchRun, exchange: Any, symbols: list[str]) -> list[dict[str, object]] | None:
    """The leverage-tier rows of ``symbols``; None (with a note) when not asked for, or the
    signed endpoint cannot be read (no keys, keys refused)."""
    if not ctx.request.tiers:
        return None
    if not exchange.apiKey:
        ctx.notes.append("leverage tiers skipped: the endpoint is signed and no API key is set "
                         "(set FBR_<EXCHANGE>_API_KEY and FBR_<EXCHANGE>_SECRET, e.g. "
                         "FBR_BINANCEUSDM_API_KEY)")
        return None
    try:
        tiers = _read(ctx, lambda: exchange.fetch_leverage_tiers(symbols), exchange)
    except ccxt.AuthenticationError as exc:
        ctx.notes.append(f"leverage tiers skipped: the exchange refused the keys "
                         f"({type(exc).__name__})")
        return None
    return [r for s in symbols for r in tier_rows(s, tiers.get(s, []))]


def _exchange_now_ms(ctx: _FetchRun, exchange: Any, now: pd.Timestamp | None) -> int:
    """The exchange's time (ms): ``fetch_time`` when it has one, else the local clock less ccxt's
    measured offset (``timeDifference``); capped at ``now`` when given."""
    if exchange.has.get("fetchTime"):
        server = int(_read(ctx, exchange.fetch_time, exchange))
    else:
        server = int(time.time() * 1000) - int(exchange.options.get("timeDifference") or 0)
    return server if now is None else min(server, int(now.timestamp() * 1000))


def _check_since(ctx: _FetchRun, exchange_id: str) -> None:
    """Refuse a ``since`` at or after the exchange's time: no bar of the span has closed."""
    if ctx.since_ms >= ctx.now_ms:
        now = pd.Timestamp(ctx.now_ms, unit="ms", tz="UTC")
        raise ValidationError("since", f"(--since {ctx.request.since.isoformat()}) is at or after "
                              f"{exchange_id}'s time now ({now:%Y-%m-%d %H:%M:%S} UTC): no bar "
                              f"of the span has closed", "give a --since in the past (only closed "
                              "bars are fetched)")


# ---------------------------------------------------------------------------------------------
# Reading through ccxt


def _read(ctx: _FetchRun, fn: Callable[[], Any], exchange: Any) -> Any:
    """``fn()`` retried on network errors, waiting at least ``exchange``'s Retry-After; a wait
    asked for longer than ``MAX_RETRY_AFTER_S`` raises FetchSilenceError at once."""
    return read_or_silence(fn, exchange, ctx.sleep)


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
