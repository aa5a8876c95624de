"""A Binance USD-M futures emulator on 127.0.0.1, driven through real ccxt (``binanceusdm``).

The emulator is a real HTTP server (``ThreadingHTTPServer`` in a daemon thread, random free port).
ccxt keeps its real ``https://fapi.binance.com`` (and ``https://api.binance.com``) URLs; the
exchange gets a ``requests.Session`` whose ``https://`` adapter (:class:`LoopbackAdapter`) rewrites
every request to ``http://127.0.0.1:PORT`` with the same path and query (and the original ``Host``
header). So ccxt's URL building, HMAC signing, response parsing and its URL-dependent error table
all run untouched.

What is emulated (one-way position mode, USDT collateral, linear contracts of size 1):

- public: ``/fapi/v1/ping``, ``time``, ``exchangeInfo``, ``premiumIndex``, ``fundingRate``
  (startTime/endTime/limit paging, max 1000), ``klines``, ``markPriceKlines``, ``indexPriceKlines``
  (intervals 1h/4h/8h/1d, paging, max 1500), ``ticker/price``; spot ``/api/v3/ping``, ``time``,
  ``exchangeInfo`` and ``klines`` (max 1000);
- signed (HMAC-SHA256 over the query/body before ``&signature=``, checked with the emulator's secret,
  else -1022; ``X-MBX-APIKEY`` must equal the api key, else -2015; Binance's timestamp rule on the
  emulator's clock, else -1021 before anything is processed: timestamp < server time + 1,000 ms and
  server time - timestamp <= recvWindow, default 5,000, over 60,000 refused with -1131): ``/fapi/v3/account``,
  ``/fapi/v2/account``, ``/fapi/v2/balance``, ``/fapi/v3/positionRisk``, ``/fapi/v2/positionRisk``,
  ``/fapi/v1/leverageBracket``, ``/fapi/v1/order`` (POST/GET/DELETE), ``/fapi/v1/openOrders``,
  ``/fapi/v1/allOrders``, ``/fapi/v1/leverage``, ``/fapi/v1/marginType`` (-4046 when already set,
  -4048 while the contract has a position, -4047 while it has open orders, as Binance),
  ``/fapi/v1/positionSide/dual``, ``/fapi/v1/commissionRate``, ``/fapi/v1/income`` (income
  history: symbol, incomeType, startTime/endTime/limit, default 100 rows, max 1000; neither time
  given: the last 7 days),
  ``/fapi/v1/multiAssetsMargin`` (GET/POST: the Multi-Assets mode flag), and spot
  ``/api/v3/account`` (the spot wallet: ``balances`` rows ``{asset, free, locked}`` of the assets set
  with :meth:`BinanceEmulator.set_spot_balance`, decimal strings, as Binance sends them).

Multi-Assets mode (spot pledged as margin): :meth:`BinanceEmulator.set_wallet_asset` puts a
quantity of a non-stable asset (e.g. BTC) in the futures wallet; the account (``/fapi/v*/account``
``assets``) and balance rows list it with its ``walletBalance``. Public ``GET /fapi/v1/assetIndex``
gives per asset ``<ASSET>USD`` its ``index`` (the ``<ASSET>USDT`` mark / 1.0003, as
``premiumIndex``) and ``bidBuffer`` (:attr:`BinanceEmulator.bid_buffer`). With the mode on
(:meth:`BinanceEmulator.set_multi_assets`) the margin balance counts each wallet asset at
quantity x index x (1 - bidBuffer); off, only USDT counts.

Portfolio Margin collateral rates (signed, ``api.binance.com``): ``GET /sapi/v1/portfolio/collateralRate``
answers one ``{asset, collateralRate}`` row per asset (:attr:`BinanceEmulator.pm_collateral_rate`);
``GET /sapi/v1/margin/crossMarginCollateralRatio`` answers groups ``{collaterals: [{minUsdValue,
maxUsdValue, discountRate}], assetNames}`` (:attr:`BinanceEmulator.collateral_tiers`, set with
:meth:`BinanceEmulator.set_collateral_tiers`; the open-ended last tier has no ``maxUsdValue``, as
Binance sends it). :meth:`BinanceEmulator.portfolio_collateral` values a holding by them (tier rate
capped at the asset's collateralRate).

Clock and funding settlement: by default the emulator's clock is the wall clock and no funding ever
settles (what the order tests rely on). :meth:`BinanceEmulator.set_time` pins the clock to a time of
our choosing (nothing settles on that jump); :meth:`BinanceEmulator.advance` /
:meth:`BinanceEmulator.advance_to` move it forward and settle funding at every settlement time
T with t0 < T <= t1 (every 8 h, 00:00, 08:00, 16:00 UTC, or every ``funding_hours[symbol]``, which
``GET /fapi/v1/fundingInfo`` lists when it is not 8): for each open position q (base units, signed) at the
current mark P and the symbol's current rate r (set with :meth:`BinanceEmulator.set_funding`), the
account receives income = -r x q x P USDT, rounded to 1e-8 (a long pays when r > 0, a short
receives), credited to the wallet and recorded as a ``FUNDING_FEE`` income row. Fills record
``COMMISSION`` (-fee) and, when a position is reduced, ``REALIZED_PNL`` rows.

Order rules: MARKET orders fill at once at the mark; LIMIT orders fill at the mark when marketable
(buy price >= mark, sell price <= mark), else rest NEW. Checks, in Binance's order: client id
(``^[.A-Za-z0-9:/_-]{1,36}$``, -4015; duplicate among open orders -4116), the symbol's status
TRADING (:attr:`BinanceEmulator.status`; else -1122), quantity a multiple of
the LOT_SIZE step (-1111), >= minQty (-4003... Binance answers -1013 ``Filter failure: LOT_SIZE``;
we send -4003 which ccxt maps to BadRequest too), <= maxQty (-4005), price a multiple of the tick
(-4014), a LIMIT price inside PERCENT_PRICE at the current mark M (a BUY above M x multiplierUp:
-4016 "Price is higher than mark price multiplier cap."; a SELL below M x multiplierDown: -4024
"Price is lower than mark price multiplier floor."; ccxt maps both to BadRequest), reduceOnly
that would open or increase (-2022), a position growing past the largest
notionalCap of the brackets whose initialLeverage allows the symbol's leverage (-2027), notional
qty x price (mark for MARKET) below MIN_NOTIONAL unless reduceOnly (-4164), initial margin after
the order above the margin balance (-2019). IM = sum |position| x mark / leverage + sum open-order
qty x price / leverage.
A fill pays the account's taker rate (:attr:`BinanceEmulator.taker_rate`, 0.05% by default) from
the wallet; reducing a position realises its PnL against the
average entry price.

Synthetic history (deterministic, seeded by the symbol name): hourly marks from ``history_start``
for ``history_days`` days (default 2024-01-01, 400 days; a geometric random walk, 60%/yr vol, from
the market's price), aggregated to 4h/8h/1d bars; spot = mark / (1 + basis) with a small smooth
basis (a few bp); funding every 8 h (00/08/16 UTC), rate 0.0001 + N(0, 0.0001^2) clipped.

An outage (:meth:`BinanceEmulator.set_down`) answers every request with HTTP 503 and processes
nothing until a given emulator time: the exchange down for maintenance.

Faults (:class:`Fault`) are one-shot and queued per (method, path) with :meth:`BinanceEmulator.inject`;
:meth:`BinanceEmulator.inject_error` answers any HTTP status and Binance code, before or after the
request is processed (an order accepted and filled, and then the answer is an error).

The unpleasant parts of the real exchange, on an injectable clock (``lag_clock``, seconds; the wall
clock's monotonic time by default, a simulated one in the chaos tests):

- lookup lag: an accepted order (and its trades) stays invisible to ``GET /fapi/v1/order``,
  ``allOrders`` and ``userTrades`` for ``lookup_lag_s`` seconds (-2013 "Order does not exist"),
  while the position already shows it;
- late execution (:meth:`BinanceEmulator.inject_error` with ``execute_after_s``): the order is
  accepted, the answer is an error, and it executes that many seconds later (Binance -1007
  "execution status unknown");
- client ids are unique among *open* orders only (-4116): a filled market order's id can be reused;
- hedge position mode (:meth:`BinanceEmulator.set_hedge_mode`): ``positionRisk`` gives a LONG and
  a SHORT row per symbol, orders without ``positionSide`` are refused (-4061) and reduce-only with
  one is refused (-1106);
- partial fills (:attr:`Fault.PARTIAL_FILL`): a market order fills half (rounded down to the step)
  and expires;
- a market order answered NEW (:meth:`BinanceEmulator.answer_new_next`): accepted, answered with
  status NEW and nothing executed, visible as NEW to lookups, filled some seconds later;
- the fee discount (``commission_asset``, default USDT): ``userTrades`` reports each commission in
  that asset, ``fee x (1 - commission_discount) / price`` (price: the trade's for the symbol's base
  asset, ``asset_prices`` otherwise; BNB 600 USD by default, also its ``assetIndex`` row, as on
  Binance where BNB is a Multi-Assets collateral asset). The wallet is still charged in USDT;
- concurrent callers: the server is threaded; every request runs under one lock, in arrival order;
- rate limits (:attr:`BinanceEmulator.retry_after_s` > 0): a 429 carries ``Retry-After`` (s), and
  any request before that wait is over earns an IP ban of :attr:`BinanceEmulator.ban_s` seconds:
  every request answered HTTP 418 (code -1003, ``Retry-After`` = the time left) until it ends, as
  Binance bans an IP that does not back off.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import re
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import ccxt
import numpy as np
import requests
from requests.adapters import HTTPAdapter

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
INTERVAL_MS = {"1h": HOUR_MS, "4h": 4 * HOUR_MS, "8h": 8 * HOUR_MS, "1d": DAY_MS}
TAKER_FEE = 0.0005
CLIENT_ID_RE = re.compile(r"^[.A-Za-z0-9:/_-]{1,36}$")
DEFAULT_LEVERAGE = 20
#: A signed request's default and largest ``recvWindow`` (ms), as Binance's.
RECV_WINDOW_MS = 5_000
MAX_RECV_WINDOW_MS = 60_000


# ---------------------------------------------------------------------------------------------
# Markets


@dataclass(frozen=True)
class Bracket:
    """One leverage bracket: notional in [floor, cap) USD, max leverage, maintenance rate."""

    floor: float
    cap: float
    max_leverage: int
    mmr: float
    cum: float


def brackets_from(rows: Sequence[tuple[float, int, float]]) -> tuple[Bracket, ...]:
    """Brackets from (cap, max leverage, mmr) rows; ``cum`` makes MM = mmr n - cum continuous:
    cum_k = cum_{k-1} + floor_k (mmr_k - mmr_{k-1})."""
    out: list[Bracket] = []
    floor, cum, prev = 0.0, 0.0, 0.0
    for cap, lev, mmr in rows:
        cum = cum + floor * (mmr - prev) if out else 0.0
        out.append(Bracket(floor, cap, lev, mmr, cum))
        floor, prev = cap, mmr
    return tuple(out)


@dataclass(frozen=True)
class EmuMarket:
    """A USD-M perpetual: Binance id (``BTCUSDT``), base/quote, LOT_SIZE step/min/max (base
    units), tick (USD), min notional (USD), initial mark (USD), leverage brackets, the
    MARKET_LOT_SIZE max for market orders (``max_mkt_qty``; None = the LOT_SIZE max), and the
    PERCENT_PRICE multipliers (fractions of the mark; decimal text, as Binance sends them)."""

    symbol: str
    base: str
    quote: str
    step: str
    min_qty: str
    max_qty: str
    tick: str
    min_notional: float
    price: float
    brackets: tuple[Bracket, ...]
    max_mkt_qty: str | None = None
    multiplier_up: str = "1.0500"
    multiplier_down: str = "0.9500"

    @property
    def market_max_qty(self) -> str:
        """The largest market order (base units)."""
        return self.max_mkt_qty if self.max_mkt_qty is not None else self.max_qty

    @property
    def quantity_precision(self) -> int:
        return _decimals(self.step)

    @property
    def price_precision(self) -> int:
        return _decimals(self.tick)


def _decimals(step: str) -> int:
    exp = Decimal(step).normalize().as_tuple().exponent
    return max(0, -int(exp))


#: Defaults: steps, ticks and min notionals as Binance listed them in 2025 (SOLUSDT trades whole
#: SOL: step 1, tick 0.01, min notional 5; BTCUSDT market orders at most 120 BTC, limit orders
#: 1000); brackets are a realistic shortened tier ladder.
DEFAULT_MARKETS: tuple[EmuMarket, ...] = (
    EmuMarket("BTCUSDT", "BTC", "USDT", "0.001", "0.001", "1000", "0.1", 100.0, 60_000.0,
              brackets_from([(300_000, 125, 0.004), (3_000_000, 50, 0.01), (20_000_000, 20, 0.025),
                             (100_000_000, 5, 0.1), (500_000_000, 1, 0.5)]),
              max_mkt_qty="120"),
    EmuMarket("ETHUSDT", "ETH", "USDT", "0.001", "0.001", "10000", "0.01", 20.0, 3_000.0,
              brackets_from([(300_000, 100, 0.005), (3_000_000, 50, 0.01), (20_000_000, 20, 0.025),
                             (100_000_000, 5, 0.1), (400_000_000, 1, 0.5)])),
    EmuMarket("SOLUSDT", "SOL", "USDT", "1", "1", "1000000", "0.01", 5.0, 150.0,
              brackets_from([(50_000, 75, 0.005), (1_000_000, 25, 0.02), (8_000_000, 10, 0.05),
                             (100_000_000, 2, 0.25), (200_000_000, 1, 0.5)])),
)


# ---------------------------------------------------------------------------------------------
# Records and faults


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: method, path, host it was meant for, params (query + form body,
    ``signature`` removed), headers without ``X-MBX-APIKEY``, arrival time (epoch seconds)."""

    method: str
    path: str
    host: str
    params: dict[str, str]
    headers: dict[str, str]
    time: float


@dataclass
class EmuOrder:
    """An accepted order (mutable: status and fills change)."""

    orderId: int  # noqa: N815 - Binance field names
    clientOrderId: str  # noqa: N815 - Binance field names
    symbol: str
    side: str
    type: str
    quantity: float
    price: float
    reduceOnly: bool  # noqa: N815 - Binance field names
    status: str
    executedQty: float = 0.0  # noqa: N815 - Binance field names
    avgPrice: float = 0.0  # noqa: N815 - Binance field names
    timeInForce: str = "GTC"  # noqa: N815 - Binance field names
    time_ms: int = 0
    update_ms: int = 0
    quantity_str: str = ""


@dataclass(frozen=True)
class EmuTrade:
    """One fill: trade id, order id, Binance symbol, side, qty (base), price, fee and realised
    PnL (USDT), time (ms)."""

    id: int
    order_id: int
    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    realized_pnl: float
    time_ms: int


@dataclass(frozen=True)
class EmuIncome:
    """One income-history row: Binance symbol, incomeType (FUNDING_FEE, COMMISSION, REALIZED_PNL),
    signed amount (USDT, > 0 = received), time (ms), transaction id, trade id ("" for funding)."""

    symbol: str
    income_type: str
    amount: float
    time_ms: int
    tran_id: int
    trade_id: str = ""


INCOME_TYPES = frozenset({"TRANSFER", "WELCOME_BONUS", "REALIZED_PNL", "FUNDING_FEE", "COMMISSION",
                          "INSURANCE_CLEAR", "REFERRAL_KICKBACK", "COMMISSION_REBATE",
                          "API_REBATE", "CONTEST_REWARD", "INTERNAL_TRANSFER",
                          "AUTO_EXCHANGE", "DELIVERED_SETTELMENT"})


class Fault(enum.Enum):
    """One-shot faults. TIMEOUT_AFTER_ACCEPT processes the request (an order is accepted and
    filled) and then holds the answer ``delay_s`` seconds (past the client's timeout);
    TIMEOUT_BEFORE_ACCEPT holds first and then drops the request without processing it;
    DISCONNECT_AFTER_ACCEPT processes the request and closes the connection without an answer."""

    TIMEOUT_AFTER_ACCEPT = "timeout_after_accept"
    TIMEOUT_BEFORE_ACCEPT = "timeout_before_accept"
    DISCONNECT_AFTER_ACCEPT = "disconnect_after_accept"
    HTTP_429 = "http_429"
    HTTP_503 = "http_503"
    MIN_NOTIONAL = "min_notional"
    INSUFFICIENT_MARGIN = "insufficient_margin"
    PARTIAL_FILL = "partial_fill"
    ERROR_BEFORE_ACCEPT = "error_before_accept"
    ERROR_AFTER_ACCEPT = "error_after_accept"


#: Binance's answers whose execution status is unknown: (HTTP status, code, message).
UNKNOWN_STATUS_ERRORS: dict[int, tuple[int, str]] = {
    -1000: (500, "An unknown error occured while processing the request."),
    -1001: (503, "Internal error; unable to process your request. Please try again."),
    -1006: (500, "An unexpected response was received from the message bus. Execution status "
                 "unknown."),
    -1007: (503, "Timeout waiting for response from backend server. Send status unknown; "
                 "execution status unknown."),
}


@dataclass(frozen=True)
class ArmedFault:
    fault: Fault
    method: str
    path: str
    delay_s: float
    status: int = 0
    code: int | None = None
    msg: str = ""
    execute_after_s: float = 0.0


@dataclass
class FaultPlan:
    """Queues of one-shot faults keyed by (method, path); the first matching request takes one."""

    queue: deque[ArmedFault] = field(default_factory=deque)
    fired: list[ArmedFault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, armed: ArmedFault) -> None:
        with self.lock:
            self.queue.append(armed)

    def take(self, method: str, path: str) -> ArmedFault | None:
        with self.lock:
            for armed in self.queue:
                if armed.path == path and armed.method in (method, "*"):
                    self.queue.remove(armed)
                    self.fired.append(armed)
                    return armed
        return None


class ApiError(Exception):
    """A Binance error answer: HTTP status and ``{"code": code, "msg": msg}``."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _bad(code: int, msg: str) -> ApiError:
    return ApiError(400, code, msg)


# ---------------------------------------------------------------------------------------------
# Synthetic history


@dataclass(frozen=True)
class History:
    """Hourly marks (USD) with open times (ms), spot basis per hour, 8-hourly funding."""

    hour_ms: np.ndarray
    mark: np.ndarray
    basis: np.ndarray
    volume: np.ndarray
    funding_ms: np.ndarray
    funding: np.ndarray


def make_history(market: EmuMarket, start_ms: int, days: int) -> History:
    """Seeded synthetic history (seed = crc32 of the symbol): see the module docstring."""
    rng = np.random.default_rng(zlib.crc32(market.symbol.encode()))
    n = days * 24
    sigma_h = 0.60 / np.sqrt(365 * 24)
    steps = rng.normal(-0.5 * sigma_h**2, sigma_h, n)
    mark = market.price * np.exp(np.cumsum(steps))
    hours = np.arange(n)
    basis = 0.0003 + 0.0002 * np.sin(hours / 97.0)
    volume = (1.0 + rng.random(n)) * 2e6 / market.price
    funding_ms = start_ms + np.arange(days * 3, dtype=np.int64) * 8 * HOUR_MS
    funding = np.clip(0.0001 + rng.normal(0.0, 0.0001, days * 3), -0.003, 0.003)
    return History(start_ms + hours.astype(np.int64) * HOUR_MS, mark, basis, volume,
                   funding_ms, funding)


def _page(times: np.ndarray, params: dict[str, str], default_limit: int, max_limit: int
          ) -> np.ndarray:
    """Indices of rows returned by a Binance history endpoint: from startTime (ascending, up to
    limit); with only endTime the last ``limit`` rows at or before it; with neither the latest."""
    try:
        limit = int(params.get("limit", default_limit))
    except ValueError:
        raise _bad(-1100, "Illegal characters found in parameter 'limit'.") from None
    if limit <= 0 or limit > max_limit:
        raise _bad(-1130, f"Data sent for parameter 'limit' is not valid (max {max_limit}).")
    lo = int(params["startTime"]) if "startTime" in params else None
    hi = int(params["endTime"]) if "endTime" in params else None
    mask = np.ones(len(times), dtype=bool)
    if lo is not None:
        mask &= times >= lo
    if hi is not None:
        mask &= times <= hi
    idx = np.flatnonzero(mask)
    return idx[:limit] if lo is not None else idx[-limit:]


def _page_from_id(rows: Sequence[EmuTrade | EmuOrder], params: dict[str, str], id_param: str,
                  default_limit: int) -> np.ndarray:
    """Indices of ``rows`` (in time order) a Binance account history endpoint returns: from the
    row whose id is ``params[id_param]`` on (never beside startTime/endTime: -1128), else as
    :func:`_page` (max 1000 rows)."""
    if id_param not in params:
        times = np.array([_row_time(r) for r in rows], dtype=np.int64)
        return _page(times, params, default_limit, 1000)
    if "startTime" in params or "endTime" in params:
        raise _bad(-1128, "Combination of optional parameters invalid.")
    limit = int(params.get("limit", default_limit))
    if limit <= 0 or limit > 1000:
        raise _bad(-1130, "Data sent for parameter 'limit' is not valid (max 1000).")
    first = int(params[id_param])
    return np.flatnonzero([_row_id(r) >= first for r in rows]).astype(np.int64)[:limit]


def _row_time(row: EmuTrade | EmuOrder) -> int:
    return row.time_ms


def _row_id(row: EmuTrade | EmuOrder) -> int:
    return row.id if isinstance(row, EmuTrade) else row.orderId


# ---------------------------------------------------------------------------------------------
# Wiring ccxt to the emulator


class LoopbackAdapter(HTTPAdapter):
    """Sends every request to ``http://127.0.0.1:port`` keeping path, query and the Host header."""

    def __init__(self, port: int) -> None:
        super().__init__(max_retries=0)
        self.port = port

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
             ) -> requests.Response:
        parts = urlsplit(str(request.url))
        request.headers["Host"] = parts.netloc
        request.url = urlunsplit(("http", f"127.0.0.1:{self.port}", parts.path, parts.query, ""))
        return super().send(request, *args, **kwargs)


def loopback_session(port: int) -> requests.Session:
    """A requests session whose https:// (and http://) traffic goes to the loopback emulator."""
    session = requests.Session()
    session.trust_env = False  # never a proxy from the environment
    adapter = LoopbackAdapter(port)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


# ---------------------------------------------------------------------------------------------
# The emulator


Route = Callable[[dict[str, str]], object]


class BinanceEmulator:
    """Binance USD-M futures (plus spot klines) on 127.0.0.1; see the module docstring."""

    def __init__(self, api_key: str = "test-key", secret: str = "test-secret", *,
                 markets: Sequence[EmuMarket] | None = None, balance_usdt: float = 100_000.0,
                 history_start: str = "2024-01-01", history_days: int = 400,
                 lag_clock: Callable[[], float] = time.monotonic) -> None:
        self.api_key = api_key
        self._secret = secret
        self.markets: dict[str, EmuMarket] = {m.symbol: m for m in (markets or DEFAULT_MARKETS)}
        self.balance = float(balance_usdt)
        self.positions: dict[str, float] = {s: 0.0 for s in self.markets}
        self.entry_price: dict[str, float] = {s: 0.0 for s in self.markets}
        self.leverage: dict[str, int] = {s: DEFAULT_LEVERAGE for s in self.markets}
        #: exchangeInfo's status per symbol: TRADING, or SETTLING / DELIVERING / CLOSE (no orders)
        self.status: dict[str, str] = dict.fromkeys(self.markets, "TRADING")
        self.margin_type: dict[str, str] = {s: "CROSSED" for s in self.markets}
        self.marks: dict[str, float] = {s: m.price for s, m in self.markets.items()}
        self.funding_rate: dict[str, float] = {s: 0.0001 for s in self.markets}
        #: hours between a symbol's funding settlements (Binance: 8, or 4 / 1 for symbols listed in
        #: ``GET /fapi/v1/fundingInfo``); settlements fall on multiples of it since the epoch
        self.funding_hours: dict[str, int] = dict.fromkeys(self.markets, 8)
        self.requests: list[RecordedRequest] = []
        self.orders: list[EmuOrder] = []
        self.trades: list[EmuTrade] = []
        self.income: list[EmuIncome] = []
        self.faults = FaultPlan()
        self.lag_clock = lag_clock
        #: a 429's Retry-After (s of ``lag_clock``; 0: none sent and no ban) and the ban (s) a
        #: request inside that wait earns (HTTP 418, every request refused until it ends)
        self.retry_after_s = 0
        self.ban_s = 120
        self.bans = 0  # IP bans earned
        #: an IP ban on the emulator's own clock (:meth:`set_banned`), ms; and the requests it refused
        self.banned_until_ms: int | None = None
        self.banned_answers = 0
        self._quiet_until: float | None = None
        self._banned_until: float | None = None
        self._partial_next = False
        #: seconds an accepted order stays invisible to lookups (a number, or a callable per order)
        self.lookup_lag_s: float | Callable[[], float] = 0.0
        #: the asset userTrades reports commissions in, its discount (fraction) and USD prices
        #: the account's commission rates (fractions; ``GET /fapi/v1/commissionRate``): a fill pays
        #: the taker rate; VIP tiers lower them below the listed 0.02% / 0.05%
        self.taker_rate, self.maker_rate = TAKER_FEE, 0.0002
        self.commission_asset = "USDT"
        self.commission_discount = 0.10
        self.asset_prices: dict[str, float] = {"BNB": 600.0}
        self.hedge_mode = False
        self.hedge_rows: dict[str, tuple[float, float]] = {}
        #: Multi-Assets mode: non-stable assets in the futures wallet (base units) and bid buffers
        self.multi_assets = False
        self.wallet_assets: dict[str, float] = {}
        self.bid_buffer: dict[str, float] = {"BTC": 0.05, "ETH": 0.05, "SOL": 0.1, "BNB": 0.1}
        #: Portfolio Margin: collateralRate per asset, and cross-margin tier groups (asset names,
        #: tiers (min USD, max USD or None = open-ended, discount rate))
        self.pm_collateral_rate: dict[str, float] = {"BTC": 0.95, "ETH": 0.95, "BNB": 0.95,
                                                     "SOL": 0.9, "USDT": 1.0, "USDC": 1.0}
        self.collateral_tiers: list[tuple[tuple[str, ...],
                                          tuple[tuple[float, float | None, float], ...]]] = [
            (("SOL",), ((0.0, 1_000_000.0, 1.0), (1_000_000.0, 5_000_000.0, 0.975),
                        (5_000_000.0, None, 0.0))),
            (("BTC", "ETH", "USDT", "USDC"), ((0.0, None, 1.0),)),
        ]
        #: the spot wallet (``GET /api/v3/account``): asset -> (free, locked), base units
        self.spot_balances: dict[str, tuple[float, float]] = {}
        self._visible_at: dict[int, float] = {}
        self._entry_before: dict[int, float] = {}
        self._pending: list[tuple[float, EmuOrder, float]] = []
        #: orders answered NEW that fill later (lag clock time, order), and the next one's delay
        self._pending_new: list[tuple[float, EmuOrder]] = []
        self._answer_new_after: float | None = None
        self._clock_ms: int | None = None
        #: an outage (:meth:`set_down`): requests answer 503 until this emulator time (ms)
        self.down_until_ms: int | None = None
        self._next_tran = 9_000_000_001
        start = int(np.datetime64(history_start, "ms").astype(np.int64))
        self.history: dict[str, History] = {s: make_history(m, start, history_days)
                                            for s, m in self.markets.items()}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._next_id = 1_000_001
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.base_url = ""
        self._routes = self._build_routes()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> BinanceEmulator:
        handler = type("EmuHandler", (_Handler,), {"emulator": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="binance-emulator",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> BinanceEmulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- clients ------------------------------------------------------------------------------

    def session(self) -> requests.Session:
        """A requests session routed to this emulator."""
        if not self.port:
            raise RuntimeError("start the emulator first")
        return loopback_session(self.port)

    def exchange(self, *, api_key: str | None = None, secret: str | None = None,
                 **options: object) -> ccxt.binanceusdm:
        """A real ``ccxt.binanceusdm`` wired to this emulator (keys default to the emulator's).
        ``options`` are extra ccxt constructor options (e.g. ``timeout=500``); an ``options``
        dict is merged into the default ``{"fetchCurrencies": False}``."""
        config: dict[str, object] = {
            "apiKey": self.api_key if api_key is None else api_key,
            "secret": self._secret if secret is None else secret,
            "session": self.session(),
            "enableRateLimit": False,
        }
        config.update(options)
        config["options"] = {"fetchCurrencies": False, **_as_dict(options.get("options"))}
        return ccxt.binanceusdm(config)

    def spot_exchange(self, **options: object) -> ccxt.binance:
        """A public (keyless) ``ccxt.binance`` spot client wired to this emulator."""
        config: dict[str, object] = {"session": self.session(), "enableRateLimit": False}
        config.update(options)
        config["options"] = {"fetchCurrencies": False, "fetchMarkets": {"types": ["spot"]},
                             "defaultType": "spot", **_as_dict(options.get("options"))}
        return ccxt.binance(config)

    # -- state controls ------------------------------------------------------------------------

    def set_mark(self, symbol: str, price: float) -> None:
        """Set the mark (USD) of a Binance symbol, e.g. ``set_mark("BTCUSDT", 61000.0)``."""
        with self._lock:
            self._market(symbol)
            self.marks[symbol] = float(price)
            self._fill_marketable(symbol)

    def set_funding(self, symbol: str, rate: float) -> None:
        """Set the current (last) funding rate of a symbol (fraction per settlement)."""
        with self._lock:
            self._market(symbol)
            self.funding_rate[symbol] = float(rate)

    def set_position(self, symbol: str, contracts: float, entry_price: float | None = None
                     ) -> None:
        """Set a signed position (contracts = base units) directly, at ``entry_price`` (mark)."""
        with self._lock:
            self._market(symbol)
            self.positions[symbol] = float(contracts)
            self.entry_price[symbol] = float(entry_price or self.marks[symbol])

    def set_multi_assets(self, on: bool = True) -> None:
        """Switch Multi-Assets mode (non-stable wallet assets count as margin when on)."""
        with self._lock:
            self.multi_assets = bool(on)

    def set_wallet_asset(self, asset: str, quantity: float, bid_buffer: float | None = None) -> None:
        """Hold ``quantity`` base units of ``asset`` (e.g. "BTC") in the futures wallet (0 removes
        it), optionally with its ``bidBuffer``."""
        with self._lock:
            self._market(f"{asset}USDT")
            if quantity:
                self.wallet_assets[asset] = float(quantity)
            else:
                self.wallet_assets.pop(asset, None)
            if bid_buffer is not None:
                self.bid_buffer[asset] = float(bid_buffer)

    def asset_index(self, asset: str) -> float:
        """The asset's index price (USD): its USDT perpetual's mark / 1.0003 (as premiumIndex), or
        its ``asset_prices`` entry (BNB) when the emulator lists no perpetual for it."""
        symbol = f"{asset}USDT"
        if symbol in self.marks:
            return self.marks[symbol] / 1.0003
        return self.asset_prices[asset]

    def pledged_margin(self) -> float:
        """Margin value of the wallet's non-stable assets (USD): sum quantity x index x
        (1 - bidBuffer) in Multi-Assets mode, else 0."""
        if not self.multi_assets:
            return 0.0
        return sum(q * self.asset_index(a) * (1.0 - self.bid_buffer.get(a, 0.0))
                   for a, q in self.wallet_assets.items())

    def set_collateral_tiers(self, assets: Sequence[str],
                             tiers: Sequence[tuple[float, float | None, float]]) -> None:
        """Give ``assets`` their own cross-margin collateral tiers (min USD, max USD or None for
        open-ended, discount rate), taking them out of any other group."""
        with self._lock:
            names = set(assets)
            groups = [(tuple(a for a in g if a not in names), t) for g, t in self.collateral_tiers]
            self.collateral_tiers = [(g, t) for g, t in groups if g]
            self.collateral_tiers.append((tuple(assets), tuple(tiers)))

    def portfolio_collateral(self, asset: str, usd: float) -> float:
        """The exchange's collateral value (USD) of ``usd`` of ``asset``: sum over its tiers of
        min(discountRate_k, collateralRate) x the part of ``usd`` inside tier k."""
        cap = self.pm_collateral_rate.get(asset, 1.0)
        tiers = next((t for g, t in self.collateral_tiers if asset in g), ((0.0, None, cap),))
        return sum(min(rate, cap) * min(max(usd - lo, 0.0), (math.inf if hi is None else hi) - lo)
                   for lo, hi, rate in tiers)

    def set_spot_balance(self, asset: str, free: float, locked: float = 0.0) -> None:
        """Hold ``free`` + ``locked`` base units of ``asset`` in the spot wallet (both 0 removes
        it); ``GET /api/v3/account`` lists it."""
        with self._lock:
            if free or locked:
                self.spot_balances[asset] = (float(free), float(locked))
            else:
                self.spot_balances.pop(asset, None)

    def set_hedge_mode(self, on: bool = True) -> None:
        """Switch the account's position mode (hedge = separate LONG and SHORT positions)."""
        with self._lock:
            self.hedge_mode = bool(on)

    def set_hedge_position(self, symbol: str, long: float, short: float,
                           entry_price: float | None = None) -> None:
        """Hedge mode: a LONG row of ``long`` and a SHORT row of ``short`` contracts (both >= 0);
        the net position is long - short."""
        with self._lock:
            self._market(symbol)
            self.hedge_rows[symbol] = (float(long), float(short))
            self.positions[symbol] = float(long) - float(short)
            self.entry_price[symbol] = float(entry_price or self.marks[symbol])

    def inject_error(self, *, path: str, method: str = "*", status: int, code: int | None = None,
                     msg: str = "", after_accept: bool = False, execute_after_s: float = 0.0
                     ) -> None:
        """Arm a one-shot error answer: HTTP ``status`` with ``{"code": code, "msg": msg}`` (a
        plain-text body when ``code`` is None). ``after_accept`` processes the request first (an
        order is accepted); ``execute_after_s`` > 0 also defers the order's execution by that
        many seconds of ``lag_clock``."""
        fault = Fault.ERROR_AFTER_ACCEPT if after_accept else Fault.ERROR_BEFORE_ACCEPT
        self.faults.add(ArmedFault(fault, method.upper(), path, 0.0, status, code, msg,
                                   float(execute_after_s)))

    def inject_unknown_status(self, code: int, *, path: str = "/fapi/v1/order",
                              method: str = "POST", after_accept: bool = True,
                              execute_after_s: float = 0.0) -> None:
        """One of Binance's execution-status-unknown answers (-1000, -1001, -1006, -1007)."""
        status, msg = UNKNOWN_STATUS_ERRORS[code]
        self.inject_error(path=path, method=method, status=status, code=code, msg=msg,
                          after_accept=after_accept, execute_after_s=execute_after_s)

    def accepted_orders(self) -> list[EmuOrder]:
        """Every order the exchange accepted (whatever its answer said), in order."""
        with self._lock:
            return list(self.orders)

    # -- clock and funding settlement --------------------------------------------------------

    def now_ms(self) -> int:
        """The emulator's time (ms since the epoch): the pinned clock, else the wall clock."""
        with self._lock:
            return self._clock_ms if self._clock_ms is not None else _now_ms()

    def set_time(self, time_ms: int) -> None:
        """Pin the clock at ``time_ms`` (ms since the epoch). Nothing settles on this jump."""
        with self._lock:
            self._clock_ms = int(time_ms)

    def next_funding_ms(self, symbol: str | None = None) -> int:
        """The next settlement time strictly after now (of ``symbol``, else of any symbol): a
        multiple of the funding interval since the epoch."""
        period = (self.funding_hours[symbol] if symbol else self._funding_step_h()) * HOUR_MS
        return (self.now_ms() // period + 1) * period

    def _funding_step_h(self) -> int:
        """Hours between two settlement times of any symbol (the intervals' greatest divisor)."""
        return math.gcd(*self.funding_hours.values()) if self.funding_hours else 8

    def advance(self, *, hours: float = 0.0, ms: int = 0) -> list[EmuIncome]:
        """Move the clock forward by ``hours`` + ``ms`` and settle funding on the way (see the
        module docstring); returns the funding rows written."""
        step = round(hours * HOUR_MS) + int(ms)
        return self.advance_to(self.now_ms() + step)

    def advance_to(self, time_ms: int) -> list[EmuIncome]:
        """Move the clock to ``time_ms`` (not backwards), settling every symbol's settlement T
        (each ``funding_hours``) with now < T <= time_ms at the then current marks and rates;
        returns the funding rows written."""
        with self._lock:
            t0 = self.now_ms()
            if time_ms < t0:
                raise ValueError(f"the emulator's clock only moves forward ({time_ms} < {t0})")
            rows: list[EmuIncome] = []
            step = self._funding_step_h() * HOUR_MS
            t = (t0 // step + 1) * step
            while t <= time_ms:
                self._clock_ms = t
                rows.extend(self._settle_funding(t))
                t += step
            self._clock_ms = int(time_ms)
            return rows

    def _settle_funding(self, t: int) -> list[EmuIncome]:
        """One settlement at ``t`` of the symbols whose interval it ends: income = -rate x q x mark
        per open position (USDT, 1e-8)."""
        rows: list[EmuIncome] = []
        for s, q in self.positions.items():
            if q == 0 or t % (self.funding_hours[s] * HOUR_MS) != 0:
                continue
            amount = round(-self.funding_rate[s] * q * self.marks[s], 8)
            self.balance += amount
            rows.append(self._add_income(s, "FUNDING_FEE", amount, t))
        return rows

    def _add_income(self, symbol: str, income_type: str, amount: float, t: int,
                    trade_id: str = "") -> EmuIncome:
        row = EmuIncome(symbol, income_type, amount, t, self._next_tran, trade_id)
        self._next_tran += 1
        self.income.append(row)
        return row

    def inject(self, fault: Fault, *, path: str, method: str = "*", delay_s: float = 2.0
               ) -> None:
        """Arm a one-shot fault for the next request to ``path`` (``method`` or any).

        The TIMEOUT_* faults hold the answer ``delay_s`` seconds: give the ccxt client a shorter
        ``timeout`` (ms), e.g. ``emulator.exchange(timeout=250)``, so it gives up first."""
        self.faults.add(ArmedFault(fault, method.upper(), path, float(delay_s)))

    def set_down(self, until_ms: int | None) -> None:
        """An outage: every request answers HTTP 503 (nothing is processed) while the emulator's
        clock is before ``until_ms`` (None ends it)."""
        self.down_until_ms = until_ms

    def is_down(self) -> bool:
        """True during an outage (:meth:`set_down`)."""
        return self.down_until_ms is not None and self.now_ms() < self.down_until_ms

    def orders_for(self, client_order_id: str) -> list[EmuOrder]:
        with self._lock:
            return [o for o in self.orders if o.clientOrderId == client_order_id]

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in list(self.requests)
                if r.path == path and (method is None or r.method == method)]

    # -- request handling (called by the handler thread) --------------------------------------

    def handle(self, method: str, path: str, host: str, query: str, body: str,
               headers: dict[str, str]) -> tuple[int, object, Fault | None, float]:
        """Process one request -> (HTTP status, JSON body, fault to apply, its delay)."""
        params = dict(parse_qsl(query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        params.pop("signature", None)
        clean = {k: v for k, v in headers.items() if k.lower() != "x-mbx-apikey"}
        with self._lock:
            self.requests.append(RecordedRequest(method, path, host, params, clean, time.time()))
            self._run_pending()
        if self.is_down():
            return 503, "Service Unavailable", None, 0.0
        banned = self._ban_answer()
        if banned is not None:
            return 418, banned, None, 0.0
        armed = self.faults.take(method, path)
        if armed is not None:
            early = self._early_fault(armed)
            if early is not None:
                return early[0], early[1], armed.fault, armed.delay_s
        if armed is not None and armed.fault is Fault.PARTIAL_FILL:
            self._partial_next = True
            armed = None
        key = (method, path)
        if key not in self._routes:
            status = 404
            payload: object = {"code": -1000, "msg": f"emulator: no route {method} {path}"}
        else:
            signed, route = self._routes[key]
            try:
                if signed:
                    self._authenticate(headers, query, body)
                with self._lock:
                    status, payload = 200, route(params)
            except ApiError as e:
                status, payload = e.status, {"code": e.code, "msg": e.msg}
        if armed is not None and armed.fault is Fault.ERROR_AFTER_ACCEPT:
            return self._error_after(armed, status, payload)
        if armed is not None:
            return status, payload, armed.fault, armed.delay_s
        return status, payload, None, 0.0

    def _error_answer(self, armed: ArmedFault) -> tuple[int, object]:
        if armed.code is None:
            return armed.status, armed.msg or "Internal Server Error"
        return armed.status, {"code": armed.code, "msg": armed.msg}

    def _error_after(self, armed: ArmedFault, status: int, payload: object
                     ) -> tuple[int, object, Fault | None, float]:
        """The request was processed; the answer is the armed error. With ``execute_after_s``, a
        just-filled order is rolled back and queued to execute later instead."""
        if armed.execute_after_s > 0 and status == 200 and isinstance(payload, dict):
            with self._lock:
                self._defer(int(str(payload.get("orderId"))), armed.execute_after_s)
        st, body = self._error_answer(armed)
        return st, body, None, 0.0

    def _defer(self, order_id: int, after_s: float) -> None:
        """Undo an order's fill and queue its execution ``after_s`` seconds from now."""
        o = next(o for o in self.orders if o.orderId == order_id)
        if o.status != "FILLED":
            return
        trade = next(t for t in reversed(self.trades) if t.order_id == order_id)
        self.trades.remove(trade)
        self.income = [r for r in self.income if r.trade_id != str(trade.id)]
        signed = o.quantity if o.side == "BUY" else -o.quantity
        s = o.symbol
        self.balance -= trade.realized_pnl - trade.fee
        self.positions[s] = round(self.positions[s] - signed, 12)
        self.entry_price[s] = self._entry_before.pop(order_id, self.entry_price[s])
        self.orders.remove(o)
        o.status, o.executedQty, o.avgPrice = "NEW", 0.0, 0.0
        self._pending.append((self.lag_clock() + after_s, o, trade.price))

    def _run_pending(self) -> None:
        """Execute the deferred orders whose time has come (lag clock)."""
        now = self.lag_clock()
        due = [p for p in self._pending if p[0] <= now]
        for item in due:
            self._pending.remove(item)
            _, o, price = item
            self.orders.append(o)
            self._fill(o, price)
        for held in [p for p in self._pending_new if p[0] <= now]:
            self._pending_new.remove(held)
            self._fill(held[1], self.marks[held[1].symbol])

    def set_banned(self, until_ms: int | None) -> None:
        """An IP ban on the emulator's clock (as :meth:`set_down`): every request answers HTTP 418
        (-1003) with a Retry-After of the seconds left until ``until_ms`` (None ends it)."""
        self.banned_until_ms = until_ms

    def _clock_ban_left_s(self) -> int | None:
        """Seconds left of a :meth:`set_banned` ban (rounded up), None when there is none."""
        if self.banned_until_ms is None or self.now_ms() >= self.banned_until_ms:
            return None
        return max(1, math.ceil((self.banned_until_ms - self.now_ms()) / 1000))

    def _ban_answer(self) -> object | None:
        """The 418 body when the IP is banned, or earns a ban now by calling inside a 429's
        Retry-After; None otherwise."""
        if self._clock_ban_left_s() is not None:
            self.banned_answers += 1
            return {"code": -1003, "msg": f"Way too many requests; IP banned until "
                    f"{self.banned_until_ms}. Please use the websocket for live updates to avoid "
                    "bans."}
        with self._lock:
            now = self.lag_clock()
            if self._quiet_until is not None and now < self._quiet_until:
                self._quiet_until, self._banned_until = None, now + self.ban_s
                self.bans += 1
            if self._banned_until is None or now >= self._banned_until:
                return None
            until_ms = self.now_ms() + int(1000 * (self._banned_until - now))
        return {"code": -1003, "msg": f"Way too many requests; IP banned until {until_ms}. Please "
                "use the websocket for live updates to avoid bans."}

    def retry_after(self, status: int) -> int | None:
        """The Retry-After header (s) of an answer: a 429's wait, or what is left of a ban."""
        left = self._clock_ban_left_s()
        if status == 418 and left is not None:
            return left
        with self._lock:
            if status == 429 and self.retry_after_s > 0:
                return int(self.retry_after_s)
            if status == 418 and self._banned_until is not None:
                return max(1, math.ceil(self._banned_until - self.lag_clock()))
        return None

    def _early_fault(self, armed: ArmedFault) -> tuple[int, object] | None:
        if armed.fault is Fault.HTTP_429:
            if self.retry_after_s > 0:
                with self._lock:
                    self._quiet_until = self.lag_clock() + self.retry_after_s
            return 429, {"code": -1003, "msg": "Too many requests; current limit exceeded."}
        if armed.fault is Fault.HTTP_503:
            return 503, "Service Unavailable"
        if armed.fault is Fault.MIN_NOTIONAL:
            return 400, {"code": -4164, "msg": "Order's notional must be no smaller than 100 "
                         "(unless you choose reduce only)."}
        if armed.fault is Fault.INSUFFICIENT_MARGIN:
            return 400, {"code": -2019, "msg": "Margin is insufficient."}
        if armed.fault is Fault.TIMEOUT_BEFORE_ACCEPT:
            return 0, None
        if armed.fault is Fault.ERROR_BEFORE_ACCEPT:
            return self._error_answer(armed)
        return None

    def hold(self, delay_s: float) -> None:
        """Wait ``delay_s`` (returns early when the emulator stops)."""
        self._stop.wait(delay_s)

    def _authenticate(self, headers: dict[str, str], query: str, body: str) -> None:
        key = next((v for k, v in headers.items() if k.lower() == "x-mbx-apikey"), None)
        if key != self.api_key:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        signed = body if body else query
        payload, sep, signature = signed.rpartition("&signature=")
        if not sep:
            raise _bad(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, "
                       "or malformed.")
        expected = hmac.new(self._secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise _bad(-1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(payload))
        if "timestamp" not in params:
            raise _bad(-1102, "Mandatory parameter 'timestamp' was not sent.")
        self._check_timestamp(int(params["timestamp"]), int(params.get("recvWindow", RECV_WINDOW_MS)))

    def _check_timestamp(self, timestamp: int, recv_window: int) -> None:
        """Binance's rule, on the emulator's clock: processed only when timestamp < server time +
        1,000 ms and server time - timestamp <= recvWindow (default 5,000, at most 60,000 ms);
        else -1021, before anything is processed."""
        if recv_window > MAX_RECV_WINDOW_MS:
            raise _bad(-1131, "recvWindow must be less than 60000")
        now = self.now_ms()
        if not (timestamp < now + 1000 and now - timestamp <= recv_window):
            raise _bad(-1021, "Timestamp for this request is outside of the recvWindow.")

    # -- routes -------------------------------------------------------------------------------

    def _build_routes(self) -> dict[tuple[str, str], tuple[bool, Route]]:
        public: dict[tuple[str, str], Route] = {
            ("GET", "/fapi/v1/ping"): lambda p: {},
            ("GET", "/fapi/v1/time"): lambda p: {"serverTime": self.now_ms()},
            ("GET", "/fapi/v1/exchangeInfo"): self._exchange_info,
            ("GET", "/fapi/v1/premiumIndex"): self._premium_index,
            ("GET", "/fapi/v1/fundingInfo"): self._funding_info,
            ("GET", "/fapi/v1/fundingRate"): self._funding_history,
            ("GET", "/fapi/v1/klines"): lambda p: self._klines(p, "last", 1500),
            ("GET", "/fapi/v1/markPriceKlines"): lambda p: self._klines(p, "mark", 1500),
            ("GET", "/fapi/v1/indexPriceKlines"): lambda p: self._klines(p, "index", 1500),
            ("GET", "/fapi/v1/ticker/price"): self._ticker_price,
            ("GET", "/fapi/v1/ticker/24hr"): self._ticker_24h,
            ("GET", "/fapi/v1/ticker/bookTicker"): self._book_ticker,
            ("GET", "/fapi/v1/depth"): self._depth,
            ("GET", "/fapi/v1/assetIndex"): self._asset_index,
            ("GET", "/api/v3/ping"): lambda p: {},
            ("GET", "/api/v3/time"): lambda p: {"serverTime": self.now_ms()},
            ("GET", "/api/v3/exchangeInfo"): self._spot_exchange_info,
            ("GET", "/api/v3/klines"): lambda p: self._klines(p, "spot", 1000),
        }
        signed: dict[tuple[str, str], Route] = {
            ("GET", "/fapi/v3/account"): self._account,
            ("GET", "/fapi/v2/account"): self._account,
            ("GET", "/fapi/v2/balance"): self._balance,
            ("GET", "/fapi/v3/balance"): self._balance,
            ("GET", "/fapi/v3/positionRisk"): self._position_risk,
            ("GET", "/fapi/v2/positionRisk"): self._position_risk,
            ("GET", "/fapi/v1/leverageBracket"): self._leverage_bracket,
            ("POST", "/fapi/v1/order"): self._new_order,
            ("GET", "/fapi/v1/order"): self._get_order,
            ("DELETE", "/fapi/v1/order"): self._cancel_order,
            ("GET", "/fapi/v1/openOrders"): self._open_orders,
            ("GET", "/fapi/v1/allOrders"): self._all_orders,
            ("GET", "/fapi/v1/userTrades"): self._user_trades,
            ("POST", "/fapi/v1/leverage"): self._set_leverage,
            ("POST", "/fapi/v1/marginType"): self._set_margin_type,
            ("GET", "/fapi/v1/positionSide/dual"): lambda p: {"dualSidePosition": self.hedge_mode},
            ("GET", "/fapi/v1/income"): self._income,
            ("GET", "/fapi/v1/commissionRate"): self._commission_rate,
            ("GET", "/fapi/v1/multiAssetsMargin"): lambda p: {"multiAssetsMargin": self.multi_assets},
            ("POST", "/fapi/v1/multiAssetsMargin"): self._set_multi_assets,
            ("GET", "/sapi/v1/portfolio/collateralRate"): lambda p: [
                {"asset": a, "collateralRate": f"{r:.4f}"} for a, r in self.pm_collateral_rate.items()],
            ("GET", "/sapi/v1/margin/crossMarginCollateralRatio"): self._collateral_ratio,
            ("GET", "/api/v3/account"): self._spot_account,
        }
        routes: dict[tuple[str, str], tuple[bool, Route]] = {k: (False, v)
                                                             for k, v in public.items()}
        routes.update({k: (True, v) for k, v in signed.items()})
        return routes

    def _market(self, symbol: str | None) -> EmuMarket:
        if symbol is None:
            raise _bad(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or "
                       "malformed.")
        if symbol not in self.markets:
            raise _bad(-1121, "Invalid symbol.")
        return self.markets[symbol]

    # public --------------------------------------------------------------------------------

    def _exchange_info(self, p: dict[str, str]) -> object:
        symbols = []
        for m in self.markets.values():
            symbols.append({
                "symbol": m.symbol, "pair": m.symbol, "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000, "onboardDate": 1569398400000,
                "status": self.status[m.symbol],
                "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
                "baseAsset": m.base, "quoteAsset": m.quote, "marginAsset": m.quote,
                "pricePrecision": m.price_precision, "quantityPrecision": m.quantity_precision,
                "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN",
                "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
                "liquidationFee": "0.020000", "marketTakeBound": "0.30",
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": m.tick, "maxPrice": "1000000",
                     "tickSize": m.tick},
                    {"filterType": "LOT_SIZE", "stepSize": m.step, "minQty": m.min_qty,
                     "maxQty": m.max_qty},
                    {"filterType": "MARKET_LOT_SIZE", "stepSize": m.step, "minQty": m.min_qty,
                     "maxQty": m.market_max_qty},
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MIN_NOTIONAL", "notional": _num(m.min_notional)},
                    {"filterType": "PERCENT_PRICE", "multiplierUp": m.multiplier_up,
                     "multiplierDown": m.multiplier_down, "multiplierDecimal": "4"},
                ],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                               "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            })
        return {"timezone": "UTC", "serverTime": self.now_ms(), "futuresType": "U_MARGINED",
                "rateLimits": [], "exchangeFilters": [],
                "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "0"}],
                "symbols": symbols}

    def _spot_exchange_info(self, p: dict[str, str]) -> object:
        symbols = []
        for m in self.markets.values():
            symbols.append({
                "symbol": m.symbol, "status": "TRADING", "baseAsset": m.base,
                "baseAssetPrecision": 8, "quoteAsset": m.quote, "quotePrecision": 8,
                "quoteAssetPrecision": 8, "orderTypes": ["LIMIT", "MARKET"],
                "icebergAllowed": True, "ocoAllowed": True, "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False, "permissions": ["SPOT"], "permissionSets": [],
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000",
                     "tickSize": "0.01"},
                    {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000",
                     "stepSize": "0.00001"},
                    {"filterType": "NOTIONAL", "minNotional": "5"},
                ],
            })
        return {"timezone": "UTC", "serverTime": self.now_ms(), "rateLimits": [],
                "exchangeFilters": [], "symbols": symbols}

    def _premium_index_row(self, s: str) -> dict[str, object]:
        now = self.now_ms()
        return {"symbol": s, "markPrice": _num(self.marks[s]),
                "indexPrice": _num(self.marks[s] / 1.0003),
                "estimatedSettlePrice": _num(self.marks[s]),
                "lastFundingRate": _num(self.funding_rate[s]), "interestRate": "0.00010000",
                "nextFundingTime": self.next_funding_ms(s), "time": now}

    def _commission_rate(self, p: dict[str, str]) -> object:
        s = self._market(p.get("symbol")).symbol
        return {"symbol": s, "makerCommissionRate": _num(self.maker_rate),
                "takerCommissionRate": _num(self.taker_rate)}

    def _funding_info(self, p: dict[str, str]) -> object:
        """Binance lists only the symbols whose funding settings differ from the default (8 h)."""
        return [{"symbol": s, "adjustedFundingRateCap": "0.02000000",
                 "adjustedFundingRateFloor": "-0.02000000", "fundingIntervalHours": h,
                 "disclaimer": False} for s, h in self.funding_hours.items() if h != 8]

    def _premium_index(self, p: dict[str, str]) -> object:
        if "symbol" in p:
            return self._premium_index_row(self._market(p["symbol"]).symbol)
        return [self._premium_index_row(s) for s in self.markets]

    def _ticker_price(self, p: dict[str, str]) -> object:
        rows = [{"symbol": s, "price": _num(self.marks[s]), "time": self.now_ms()}
                for s in ([self._market(p["symbol"]).symbol] if "symbol" in p else self.markets)]
        return rows[0] if "symbol" in p else rows

    def _bid_ask(self, s: str) -> tuple[float, float]:
        """Best bid and ask: the mark -/+ 1 bp, on the tick grid (at least one tick apart)."""
        tick = float(self.markets[s].tick)
        mark = self.marks[s]
        bid = math.floor(mark * (1 - 1e-4) / tick) * tick
        ask = max(math.ceil(mark * (1 + 1e-4) / tick) * tick, bid + tick)
        d = self.markets[s].price_precision
        return round(bid, d), round(ask, d)

    def _ticker_24h(self, p: dict[str, str]) -> object:
        def row(s: str) -> dict[str, object]:
            mark = self.marks[s]
            now = self.now_ms()
            return {"symbol": s, "priceChange": "0", "priceChangePercent": "0",
                    "weightedAvgPrice": _num(mark), "lastPrice": _num(mark), "lastQty": "1",
                    "openPrice": _num(mark), "highPrice": _num(mark), "lowPrice": _num(mark),
                    "volume": "1000", "quoteVolume": _num(1000 * mark), "openTime": now - DAY_MS,
                    "closeTime": now, "firstId": 1, "lastId": 2, "count": 2}
        if "symbol" in p:
            return row(self._market(p["symbol"]).symbol)
        return [row(s) for s in self.markets]

    def _book_ticker(self, p: dict[str, str]) -> object:
        def row(s: str) -> dict[str, object]:
            bid, ask = self._bid_ask(s)
            return {"symbol": s, "bidPrice": _num(bid), "bidQty": "10", "askPrice": _num(ask),
                    "askQty": "10", "time": self.now_ms()}
        if "symbol" in p:
            return row(self._market(p["symbol"]).symbol)
        return [row(s) for s in self.markets]

    def _depth(self, p: dict[str, str]) -> object:
        s = self._market(p.get("symbol")).symbol
        bid, ask = self._bid_ask(s)
        tick = float(self.markets[s].tick)
        d = self.markets[s].price_precision
        now = self.now_ms()
        levels = range(min(int(p.get("limit", "5")), 20))
        return {"lastUpdateId": now, "E": now, "T": now,
                "bids": [[_num(round(bid - k * tick, d)), "10"] for k in levels],
                "asks": [[_num(round(ask + k * tick, d)), "10"] for k in levels]}

    def _funding_history(self, p: dict[str, str]) -> object:
        if "symbol" not in p:
            raise _bad(-1102, "Mandatory parameter 'symbol' was not sent.")
        s = self._market(p["symbol"]).symbol
        h = self.history[s]
        idx = _page(h.funding_ms, p, 100, 1000)
        return [{"symbol": s, "fundingTime": int(h.funding_ms[i]),
                 "fundingRate": f"{h.funding[i]:.8f}",
                 "markPrice": _num(float(h.mark[min(int(i) * 8, len(h.mark) - 1)]))}
                for i in idx]

    def _klines(self, p: dict[str, str], kind: str, max_limit: int) -> object:
        symbol = p.get("pair", p.get("symbol"))
        s = self._market(symbol).symbol
        interval = p.get("interval")
        if interval not in INTERVAL_MS:
            raise _bad(-1120, "Invalid interval.")
        h = self.history[s]
        k = INTERVAL_MS[interval] // HOUR_MS
        n = len(h.mark) // k
        mark = h.mark[: n * k].reshape(n, k)
        scale = {"last": 1.0, "mark": 1.0}.get(kind)
        prices = mark * scale if scale is not None else mark / (1.0 + h.basis[: n * k].reshape(n, k))
        opens_ms = h.hour_ms[: n * k: k]
        idx = _page(opens_ms, p, 500, max_limit)
        rows: list[list[object]] = []
        vol = h.volume[: n * k].reshape(n, k).sum(axis=1)
        for i in idx:
            bar = prices[i]
            first = float(bar[0]) if i == 0 else float(prices[i - 1][-1])
            o, hi_, lo_, c = first, float(max(bar.max(), first)), float(min(bar.min(), first)), \
                float(bar[-1])
            v = 0.0 if kind in ("mark", "index") else float(vol[i])
            t0 = int(opens_ms[i])
            rows.append([t0, _num(o), _num(hi_), _num(lo_), _num(c), _num(v),
                         t0 + INTERVAL_MS[interval] - 1, _num(v * c), 100, _num(v / 2),
                         _num(v * c / 2), "0"])
        return rows

    # signed: account ------------------------------------------------------------------------

    def _im_mm(self) -> tuple[float, float, float, float]:
        """(position IM, open-order IM, maintenance margin, unrealised PnL), USD."""
        pos_im = mm = upnl = 0.0
        for s, q in self.positions.items():
            if q == 0:
                continue
            notional = abs(q) * self.marks[s]
            pos_im += notional / self.leverage[s]
            mm += self._maintenance(s, notional)
            upnl += q * (self.marks[s] - self.entry_price[s])
        ord_im = sum(o.quantity * o.price / self.leverage[o.symbol]
                     for o in self.orders if o.status == "NEW")
        return pos_im, ord_im, mm, upnl

    def _maintenance(self, s: str, notional: float) -> float:
        for b in self.markets[s].brackets:
            if notional < b.cap:
                return notional * b.mmr - b.cum
        b = self.markets[s].brackets[-1]
        return notional * b.mmr - b.cum

    def _asset_index(self, p: dict[str, str]) -> object:
        """GET /fapi/v1/assetIndex: per asset ``<ASSET>USD`` its index and bid/ask buffers."""
        now = self.now_ms()

        def row(a: str) -> dict[str, object]:
            b = self.bid_buffer[a]
            idx = self.asset_index(a)
            return {"symbol": f"{a}USD", "time": now, "index": _num(idx), "bidBuffer": _num(b),
                    "askBuffer": _num(b), "bidRate": _num(idx * (1 - b)),
                    "askRate": _num(idx * (1 + b)), "autoExchangeBidBuffer": _num(b / 2),
                    "autoExchangeAskBuffer": _num(b / 2), "autoExchangeBidRate": _num(idx * (1 - b / 2)),
                    "autoExchangeAskRate": _num(idx * (1 + b / 2))}

        known = [a for a in self.bid_buffer if f"{a}USDT" in self.markets or a in self.asset_prices]
        if "symbol" in p:
            a = p["symbol"].removesuffix("USD")
            if a not in known:
                raise _bad(-1121, "Invalid symbol.")
            return row(a)
        return [row(a) for a in known]

    def _collateral_ratio(self, p: dict[str, str]) -> object:
        """GET /sapi/v1/margin/crossMarginCollateralRatio: tier groups (no maxUsdValue when open)."""
        def tier(lo: float, hi: float | None, rate: float) -> dict[str, str]:
            row = {"minUsdValue": _num(lo), "discountRate": _num(rate)}
            if hi is not None:
                row["maxUsdValue"] = _num(hi)
            return row

        return [{"collaterals": [tier(*t) for t in tiers], "assetNames": list(names)}
                for names, tiers in self.collateral_tiers]

    def _set_multi_assets(self, p: dict[str, str]) -> object:
        on = p.get("multiAssetsMargin", "").lower()
        if on not in ("true", "false"):
            raise _bad(-1102, "Mandatory parameter 'multiAssetsMargin' was not sent, was empty/null, "
                              "or malformed.")
        self.multi_assets = on == "true"
        return {"code": 200, "msg": "success"}

    def _wallet_asset_rows(self) -> list[dict[str, object]]:
        """Account ``assets`` rows of the wallet's non-stable assets (their walletBalance)."""
        now = self.now_ms()
        return [{"asset": a, "walletBalance": _num(q), "unrealizedProfit": "0",
                 "marginBalance": _num(q), "maintMargin": "0", "initialMargin": "0",
                 "positionInitialMargin": "0", "openOrderInitialMargin": "0",
                 "crossWalletBalance": _num(q), "crossUnPnl": "0",
                 "availableBalance": _num(q if self.multi_assets else 0.0),
                 "maxWithdrawAmount": _num(q), "marginAvailable": self.multi_assets,
                 "updateTime": now} for a, q in self.wallet_assets.items()]

    def _account(self, p: dict[str, str]) -> object:
        pos_im, ord_im, mm, upnl = self._im_mm()
        margin_balance = self.balance + upnl + self.pledged_margin()
        available = max(0.0, margin_balance - pos_im - ord_im)
        now = self.now_ms()
        asset = {"asset": "USDT", "walletBalance": _num(self.balance),
                 "unrealizedProfit": _num(upnl), "marginBalance": _num(self.balance + upnl),
                 "maintMargin": _num(mm), "initialMargin": _num(pos_im + ord_im),
                 "positionInitialMargin": _num(pos_im), "openOrderInitialMargin": _num(ord_im),
                 "crossWalletBalance": _num(self.balance), "crossUnPnl": _num(upnl),
                 "availableBalance": _num(available), "maxWithdrawAmount": _num(available),
                 "marginAvailable": True, "updateTime": now}
        positions = [self._position_row(s, account=True) for s, q in self.positions.items()
                     if q != 0]
        return {"totalInitialMargin": _num(pos_im + ord_im), "totalMaintMargin": _num(mm),
                "totalWalletBalance": _num(self.balance), "totalUnrealizedProfit": _num(upnl),
                "totalMarginBalance": _num(margin_balance),
                "totalPositionInitialMargin": _num(pos_im),
                "totalOpenOrderInitialMargin": _num(ord_im),
                "totalCrossWalletBalance": _num(self.balance), "totalCrossUnPnl": _num(upnl),
                "availableBalance": _num(available), "maxWithdrawAmount": _num(available),
                "assets": [asset, *self._wallet_asset_rows()], "positions": positions}

    def _spot_account(self, p: dict[str, str]) -> object:
        """GET /api/v3/account: the spot wallet in Binance's shape (8-decimal strings)."""
        return {"makerCommission": 10, "takerCommission": 10, "buyerCommission": 0,
                "sellerCommission": 0, "canTrade": True, "canWithdraw": True, "canDeposit": True,
                "brokered": False, "requireSelfTradePrevention": False, "preventSor": False,
                "updateTime": self.now_ms(), "accountType": "SPOT",
                "balances": [{"asset": a, "free": _fmt(f, 8), "locked": _fmt(lk, 8)}
                             for a, (f, lk) in self.spot_balances.items()],
                "permissions": ["SPOT"], "uid": 354937868}

    def _balance(self, p: dict[str, str]) -> object:
        pos_im, ord_im, _mm, upnl = self._im_mm()
        available = max(0.0, self.balance + upnl - pos_im - ord_im)
        return [{"accountAlias": "emu", "asset": "USDT", "balance": _num(self.balance),
                 "crossWalletBalance": _num(self.balance), "crossUnPnl": _num(upnl),
                 "availableBalance": _num(available), "maxWithdrawAmount": _num(available),
                 "marginAvailable": True, "updateTime": self.now_ms()}]

    def _position_row(self, s: str, *, account: bool = False) -> dict[str, object]:
        q = self.positions[s]
        mark = self.marks[s]
        notional = q * mark
        entry = self.entry_price[s] if q != 0 else 0.0
        im = abs(notional) / self.leverage[s]
        row: dict[str, object] = {
            "symbol": s, "positionSide": "BOTH", "positionAmt": _num(q),
            "unrealizedProfit": _num(q * (mark - entry)) if q else "0",
            "isolatedMargin": "0", "notional": _num(notional), "isolatedWallet": "0",
            "initialMargin": _num(im), "maintMargin": _num(self._maintenance(s, abs(notional))),
            "positionInitialMargin": _num(im), "openOrderInitialMargin": "0",
            "updateTime": self.now_ms(),
        }
        if not account:
            row.update({"entryPrice": _num(entry), "breakEvenPrice": _num(entry),
                        "markPrice": _num(mark),
                        "unRealizedProfit": _num(q * (mark - entry)) if q else "0",
                        "liquidationPrice": "0", "marginAsset": "USDT", "adl": 0,
                        "bidNotional": "0", "askNotional": "0",
                        "leverage": str(self.leverage[s]),
                        "marginType": "cross" if self.margin_type[s] == "CROSSED" else "isolated",
                        "maxNotionalValue": _num(self._max_notional(s, self.leverage[s]))})
        return row

    def _position_risk(self, p: dict[str, str]) -> object:
        syms = [self._market(p["symbol"]).symbol] if "symbol" in p else list(self.markets)
        if self.hedge_mode:
            return [row for s in syms for row in self._hedge_rows(s)]
        return [self._position_row(s) for s in syms]

    def _hedge_rows(self, s: str) -> list[dict[str, object]]:
        """Hedge mode: a LONG row (+long) and a SHORT row (-short) for the symbol."""
        long, short = self.hedge_rows.get(s, (max(self.positions[s], 0.0),
                                               max(-self.positions[s], 0.0)))
        rows = []
        for side, amt in (("LONG", long), ("SHORT", -short)):
            row = self._position_row(s)
            mark, entry = self.marks[s], self.entry_price[s] if amt else 0.0
            row.update({"positionSide": side, "positionAmt": _num(amt),
                        "notional": _num(amt * mark), "entryPrice": _num(entry),
                        "unRealizedProfit": _num(amt * (mark - entry)) if amt else "0",
                        "unrealizedProfit": _num(amt * (mark - entry)) if amt else "0"})
            rows.append(row)
        return rows

    def _leverage_bracket(self, p: dict[str, str]) -> object:
        syms = [self._market(p["symbol"]).symbol] if "symbol" in p else list(self.markets)
        return [{"symbol": s, "brackets": [
            {"bracket": k + 1, "initialLeverage": b.max_leverage, "notionalCap": _num(b.cap),
             "notionalFloor": _num(b.floor), "maintMarginRatio": b.mmr, "cum": b.cum}
            for k, b in enumerate(self.markets[s].brackets)]} for s in syms]

    def _set_leverage(self, p: dict[str, str]) -> object:
        s = self._market(p.get("symbol")).symbol
        try:
            lev = int(p.get("leverage", ""))
        except ValueError:
            raise _bad(-4028, "Leverage is not valid.") from None
        max_lev = self.markets[s].brackets[0].max_leverage
        if lev < 1 or lev > max_lev:
            raise _bad(-4028, f"Leverage {lev} is not valid")
        self.leverage[s] = lev
        return {"symbol": s, "leverage": lev,
                "maxNotionalValue": _num(self._max_notional(s, lev))}

    def _max_notional(self, s: str, lev: int) -> float:
        caps = [b.cap for b in self.markets[s].brackets if b.max_leverage >= lev]
        return caps[-1] if caps else self.markets[s].brackets[0].cap

    def _set_margin_type(self, p: dict[str, str]) -> object:
        s = self._market(p.get("symbol")).symbol
        mode = p.get("marginType", "").upper()
        if mode not in ("ISOLATED", "CROSSED"):
            raise _bad(-1102, "Mandatory parameter 'marginType' was not sent or is invalid.")
        if self.margin_type[s] == mode:
            raise _bad(-4046, "No need to change margin type.")
        if self.positions.get(s, 0.0) != 0.0 or any(
                h != 0.0 for h in self.hedge_rows.get(s, (0.0, 0.0))):
            raise _bad(-4048, "Margin type cannot be changed if there exists position.")
        if any(o.symbol == s and o.status in ("NEW", "PARTIALLY_FILLED") for o in self.orders):
            raise _bad(-4047, "Margin type cannot be changed if there exists open orders.")
        self.margin_type[s] = mode
        return {"code": 200, "msg": "success"}

    # signed: orders -------------------------------------------------------------------------

    def _order_json(self, o: EmuOrder) -> dict[str, object]:
        m = self.markets[o.symbol]
        return {"orderId": o.orderId, "symbol": o.symbol, "status": o.status,
                "clientOrderId": o.clientOrderId, "price": _fmt(o.price, m.price_precision),
                "avgPrice": _num(o.avgPrice),
                "origQty": _fmt(o.quantity, m.quantity_precision),
                "executedQty": _fmt(o.executedQty, m.quantity_precision),
                "cumQty": _fmt(o.executedQty, m.quantity_precision),
                "cumQuote": _num(o.executedQty * o.avgPrice), "timeInForce": o.timeInForce,
                "type": o.type, "reduceOnly": o.reduceOnly, "closePosition": False,
                "side": o.side, "positionSide": "BOTH", "stopPrice": "0", "workingType":
                "CONTRACT_PRICE", "priceProtect": False, "origType": o.type,
                "priceMatch": "NONE", "selfTradePreventionMode": "NONE", "goodTillDate": 0,
                "time": o.time_ms, "updateTime": o.update_ms}

    def _new_order(self, p: dict[str, str]) -> object:
        m = self._market(p.get("symbol"))
        side = p.get("side", "")
        if side not in ("BUY", "SELL"):
            raise _bad(-1102, "Mandatory parameter 'side' was not sent or is invalid.")
        otype = p.get("type", "")
        if otype not in ("MARKET", "LIMIT"):
            raise _bad(-1116, "Invalid orderType.")
        reduce_only = p.get("reduceOnly", "false").lower() == "true"
        if reduce_only and p.get("positionSide", "BOTH") != "BOTH":
            raise _bad(-1106, "Parameter 'reduceonly' sent when not required.")
        if self.hedge_mode and p.get("positionSide", "BOTH") not in ("LONG", "SHORT"):
            raise _bad(-4061, "Order's position side does not match user's setting.")
        cid = p.get("newClientOrderId") or f"emu-{self._next_id}"
        if not CLIENT_ID_RE.match(cid):
            raise _bad(-4015, "Client order id is not valid.")
        if any(o.clientOrderId == cid and o.status == "NEW" for o in self.orders):
            raise _bad(-4116, "ClientOrderId is duplicated.")
        if self.status[m.symbol] != "TRADING":
            raise _bad(-1122, "Invalid symbol status.")
        qty = _decimal(p.get("quantity"), "quantity")
        if qty <= 0:
            raise _bad(-4003, "Quantity less than or equal to zero.")
        if qty % Decimal(m.step) != 0:
            raise _bad(-1111, "Precision is over the maximum defined for this asset.")
        if qty < Decimal(m.min_qty):
            raise _bad(-4003, f"Quantity less than minimum quantity {m.min_qty}.")
        if qty > Decimal(m.max_qty) or (otype == "MARKET" and qty > Decimal(m.market_max_qty)):
            raise _bad(-4005, "Quantity greater than max quantity.")
        mark = self.marks[m.symbol]
        price = mark
        tif = "GTC"
        if otype == "LIMIT":
            price_d = _decimal(p.get("price"), "price")
            if price_d <= 0 or price_d % Decimal(m.tick) != 0:
                raise _bad(-4014, "Price not increased by tick size.")
            self._check_percent_price(m, side, price_d)
            price = float(price_d)
            tif = p.get("timeInForce", "GTC")
        signed_qty = float(qty) if side == "BUY" else -float(qty)
        pos = self.positions[m.symbol]
        if reduce_only and (pos == 0 or pos * signed_qty > 0 or abs(signed_qty) > abs(pos) + 1e-12):
            raise _bad(-2022, "ReduceOnly Order is rejected.")
        if not reduce_only and float(qty) * price < m.min_notional:
            raise _bad(-4164, f"Order's notional must be no smaller than {m.min_notional:g} "
                       "(unless you choose reduce only).")
        increases = abs(pos + signed_qty) > abs(pos)
        cap = self._max_notional(m.symbol, self.leverage[m.symbol])
        if increases and not reduce_only and abs(pos + signed_qty) * max(price, mark) > cap:
            raise _bad(-2027, "Exceeded the maximum allowable position at current leverage.")
        if increases and not reduce_only:
            self._check_margin(m.symbol, signed_qty, price)
        now = self.now_ms()
        order = EmuOrder(self._next_id, cid, m.symbol, side, otype, float(qty), price if
                         otype == "LIMIT" else 0.0, reduce_only, "NEW", timeInForce=tif,
                         time_ms=now, update_ms=now, quantity_str=str(qty))
        self._next_id += 1
        self.orders.append(order)
        lag = self.lookup_lag_s() if callable(self.lookup_lag_s) else self.lookup_lag_s
        if lag > 0:
            self._visible_at[order.orderId] = self.lag_clock() + float(lag)
        marketable = otype == "MARKET" or (side == "BUY" and price >= mark) or (
            side == "SELL" and price <= mark)
        if otype == "MARKET" and self._answer_new_after is not None:
            self._pending_new.append((self.lag_clock() + self._answer_new_after, order))
            self._answer_new_after = None
            return self._order_json(order)
        if marketable:
            self._fill(order, mark)
        elif tif in ("IOC", "FOK"):  # not marketable: Binance expires it at once, nothing filled
            order.status = "EXPIRED"
        return self._order_json(order)

    def _check_percent_price(self, m: EmuMarket, side: str, price: Decimal) -> None:
        """Binance's PERCENT_PRICE on a LIMIT order at the current mark M (USD, decimal): a BUY
        priced above M x multiplierUp is refused (-4016), a SELL below M x multiplierDown
        (-4024), with Binance's messages (ccxt: BadRequest)."""
        mark = Decimal(repr(float(self.marks[m.symbol])))
        if side == "BUY" and price > mark * Decimal(m.multiplier_up):
            raise _bad(-4016, "Price is higher than mark price multiplier cap.")
        if side == "SELL" and price < mark * Decimal(m.multiplier_down):
            raise _bad(-4024, "Price is lower than mark price multiplier floor.")

    def _listed(self, o: EmuOrder) -> bool:
        """Found by Query Order and All Orders: visible (:meth:`_visible`) and not archived:
        Binance stops listing an order that ended CANCELED or EXPIRED with no fill once "created
        time + 3 days < current time"."""
        archived = (o.status in ("CANCELED", "EXPIRED") and o.executedQty == 0
                    and o.time_ms + 3 * DAY_MS < self.now_ms())
        return self._visible(o.orderId) and not archived

    def _visible(self, order_id: int) -> bool:
        """False while the order's lookup lag lasts."""
        return self._visible_at.get(order_id, -math.inf) <= self.lag_clock()

    def answer_new_next(self, execute_after_s: float) -> None:
        """The next market order is accepted and answered NEW (executedQty 0), as Binance can
        under load even with ``newOrderRespType=RESULT``; it stays NEW on the book (visible to
        lookups) and fills at the mark of ``execute_after_s`` seconds of ``lag_clock`` later."""
        with self._lock:
            self._answer_new_after = float(execute_after_s)

    def partial_fill_next(self, path: str = "/fapi/v1/order") -> None:
        """The next order fills half its quantity (rounded down to the step) and expires."""
        self.faults.add(ArmedFault(Fault.PARTIAL_FILL, "POST", path, 0.0))

    def _check_margin(self, s: str, signed_qty: float, price: float) -> None:
        pos_im, ord_im, _mm, upnl = self._im_mm()
        new_pos = self.positions[s] + signed_qty
        extra = (abs(new_pos) - abs(self.positions[s])) * max(price, self.marks[s]) / self.leverage[s]
        if pos_im + ord_im + extra > self.balance + upnl + self.pledged_margin():
            raise _bad(-2019, "Margin is insufficient.")

    def _fill(self, o: EmuOrder, px: float) -> None:
        qty = o.quantity
        if self._partial_next and o.type == "MARKET":
            self._partial_next = False
            step = Decimal(self.markets[o.symbol].step)
            qty = float((Decimal(repr(o.quantity)) / 2 // step) * step)
            if qty <= 0:
                o.status, o.update_ms = "EXPIRED", self.now_ms()
                return
        self._fill_qty(o, px, qty)
        if qty < o.quantity:
            o.status = "EXPIRED"

    def _fill_qty(self, o: EmuOrder, px: float, qty: float) -> None:
        self._entry_before[o.orderId] = self.entry_price[o.symbol]
        signed = qty if o.side == "BUY" else -qty
        s = o.symbol
        pos, entry = self.positions[s], self.entry_price[s]
        new = pos + signed
        realized = 0.0
        if pos == 0 or pos * signed > 0:
            entry = (abs(pos) * entry + abs(signed) * px) / abs(new)
        else:
            closed = min(abs(signed), abs(pos))
            realized = closed * (px - entry) * (1 if pos > 0 else -1)
            if abs(signed) > abs(pos):
                entry = px
            elif new == 0:
                entry = 0.0
        fee = abs(signed) * px * self.taker_rate
        self.balance += realized - fee
        now = self.now_ms()
        trade = EmuTrade(self._next_trade_id(), o.orderId, s, o.side, qty, px, fee, realized, now)
        self.trades.append(trade)
        self._add_income(s, "COMMISSION", -fee, now, str(trade.id))
        if realized != 0:
            self._add_income(s, "REALIZED_PNL", realized, now, str(trade.id))
        self.positions[s] = round(new, 12)
        self.entry_price[s] = entry
        o.status, o.executedQty, o.avgPrice, o.update_ms = "FILLED", qty, px, self.now_ms()

    def _next_trade_id(self) -> int:
        return max((t.id for t in self.trades), default=0) + 1

    def _fill_marketable(self, s: str) -> None:
        mark = self.marks[s]
        for o in self.orders:
            if o.symbol == s and o.status == "NEW" and (
                    (o.side == "BUY" and o.price >= mark) or (o.side == "SELL" and o.price <= mark)):
                self._fill(o, mark)

    def _find_order(self, p: dict[str, str]) -> EmuOrder:
        s = self._market(p.get("symbol")).symbol
        if "orderId" in p:
            hits = [o for o in self.orders if str(o.orderId) == p["orderId"] and o.symbol == s]
        elif "origClientOrderId" in p:
            hits = [o for o in self.orders
                    if o.clientOrderId == p["origClientOrderId"] and o.symbol == s]
        else:
            raise _bad(-1102, "Param 'orderId' or 'origClientOrderId' must be sent, but both "
                       "were empty/null!")
        hits = [o for o in hits if self._listed(o)]
        if not hits:
            raise _bad(-2013, "Order does not exist.")
        return hits[-1]

    def _get_order(self, p: dict[str, str]) -> object:
        return self._order_json(self._find_order(p))

    def _cancel_order(self, p: dict[str, str]) -> object:
        try:
            o = self._find_order(p)
        except ApiError as e:
            if e.code == -2013:
                raise _bad(-2011, "Unknown order sent.") from None
            raise
        if o.status != "NEW":
            raise _bad(-2011, "Unknown order sent.")
        o.status, o.update_ms = "CANCELED", self.now_ms()
        return self._order_json(o)

    def _open_orders(self, p: dict[str, str]) -> object:
        s = self._market(p["symbol"]).symbol if "symbol" in p else None
        return [self._order_json(o) for o in self.orders
                if o.status == "NEW" and (s is None or o.symbol == s)]

    def _user_trades(self, p: dict[str, str]) -> object:
        """GET /fapi/v1/userTrades: in time order, at most ``limit`` rows (default 500, max 1000):
        from ``fromId`` (never with a start or end time: -1128), else the first from startTime,
        else the last up to endTime, else the last."""
        s = self._market(p.get("symbol")).symbol
        visible = [t for t in self.trades if t.symbol == s and self._visible(t.order_id)]
        rows = [visible[i] for i in _page_from_id(visible, p, "fromId", 500)]
        m = self.markets[s]
        return [{"symbol": t.symbol, "id": t.id, "orderId": t.order_id, "side": t.side,
                 "price": _num(t.price), "qty": _fmt(t.qty, m.quantity_precision),
                 "realizedPnl": _num(t.realized_pnl), "quoteQty": _num(t.qty * t.price),
                 "commission": self._commission(t), "commissionAsset": self.commission_asset,
                 "time": t.time_ms, "positionSide": "BOTH", "buyer": t.side == "BUY",
                 "maker": False}
                for t in rows]

    def _commission(self, t: EmuTrade) -> str:
        """The trade's fee in ``commission_asset`` (units of that asset; see the module doc)."""
        asset = self.commission_asset
        if asset == "USDT":
            return _num(t.fee)
        price = t.price if asset == self.markets[t.symbol].base else self.asset_prices[asset]
        return _num(t.fee * (1.0 - self.commission_discount) / price)

    def _income(self, p: dict[str, str]) -> object:
        """GET /fapi/v1/income: rows in time order; from startTime the first ``limit``, else the
        last ``limit`` up to endTime; neither time given: the last 7 days."""
        s = self._market(p["symbol"]).symbol if "symbol" in p else None
        kind = p.get("incomeType")
        if kind is not None and kind not in INCOME_TYPES:
            raise _bad(-1102, "Parameter 'incomeType' was invalid.")
        params = dict(p)
        if "startTime" not in p and "endTime" not in p:
            params["startTime"] = str(self.now_ms() - 7 * DAY_MS)
        rows = [r for r in self.income
                if (s is None or r.symbol == s) and (kind is None or r.income_type == kind)]
        times = np.array([r.time_ms for r in rows], dtype=np.int64)
        idx = _page(times, params, 100, 1000)
        return [{"symbol": rows[i].symbol, "incomeType": rows[i].income_type,
                 "income": f"{rows[i].amount:.8f}", "asset": "USDT", "info": rows[i].income_type,
                 "time": rows[i].time_ms, "tranId": rows[i].tran_id, "tradeId": rows[i].trade_id}
                for i in idx]

    def _all_orders(self, p: dict[str, str]) -> object:
        """GET /fapi/v1/allOrders: as userTrades, paged by ``orderId`` (orders from that id)."""
        s = self._market(p.get("symbol")).symbol
        visible = [o for o in self.orders if o.symbol == s and self._listed(o)]
        return [self._order_json(visible[i]) for i in _page_from_id(visible, p, "orderId", 500)]


def _as_dict(value: object) -> dict[str, object]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _num(x: float) -> str:
    """A float as Binance sends it: a decimal string without exponent."""
    return format(Decimal(repr(float(x))).normalize(), "f")


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def _decimal(value: str | None, name: str) -> Decimal:
    if value is None or value == "":
        raise _bad(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or "
                   "malformed.")
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise _bad(-1100, f"Illegal characters found in parameter '{name}'.") from None
    if not d.is_finite():
        raise _bad(-1100, f"Illegal characters found in parameter '{name}'.")
    return d


class _Handler(BaseHTTPRequestHandler):
    """HTTP front of the emulator: parse, delegate to ``BinanceEmulator.handle``, answer JSON."""

    emulator: BinanceEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def setup(self) -> None:
        """No Nagle delay: headers and body go out in separate writes, and with delayed ACKs on
        the client each answer would otherwise wait ~40 ms."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        headers = {k: v for k, v in self.headers.items()}
        host = headers.get("Host", "")
        emu = self.emulator
        status, payload, fault, delay = emu.handle(method, parts.path, host, parts.query, body,
                                                   headers)
        if fault is Fault.DISCONNECT_AFTER_ACCEPT:
            self.close_connection = True
            return
        if fault in (Fault.TIMEOUT_AFTER_ACCEPT, Fault.TIMEOUT_BEFORE_ACCEPT):
            emu.hold(delay)
            if fault is Fault.TIMEOUT_BEFORE_ACCEPT:
                self.close_connection = True
                return
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        try:
            self.send_response(status)
            ctype = "text/plain" if isinstance(payload, str) else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            wait = emu.retry_after(status)
            if wait is not None:
                self.send_header("Retry-After", str(wait))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")
