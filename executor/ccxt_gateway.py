"""A ccxt exchange as an :class:`~executor.base.ExchangeGateway` (Binance USD-M first; Bybit and OKX
metadata paths too).

- markets -> :class:`FuturesContract`: ``contractSize`` (OKX BTC-USDT-SWAP: 0.01 BTC), ``inverse``
  (sized in USD: Binance coin-M BTC 100 USD per contract, Bybit BTCUSD 1 USD), amount/price
  precision as lot step and tick (TICK_SIZE or DECIMAL_PLACES precision mode), amount and cost
  limits (the largest order also capped by Bybit's market-order maximum), fees; leverage tiers
  -> :class:`MarginTiers` (``cum`` from the exchange when given, else computed for continuity);
- balances and positions -> the book (futures positions and the wallet's stablecoin cash);
- spot pledged as margin (Binance USD-M Multi-Assets mode): when the futures wallet holds a book
  asset other than the quote (account ``assets`` rows with ``walletBalance`` > 0), the mode is read
  (``GET /fapi/v1/multiAssetsMargin``, ccxt ``fapiPrivateGetMultiAssetsMargin``) and, when on, each
  such asset's ``bidBuffer`` (``GET /fapi/v1/assetIndex``, ccxt ``fapiPublicGetAssetIndex``): the
  book's ``pledged`` becomes exactly those holdings, the wallet quantity at index x (1 - bidBuffer)
  (``models.collateral.bid_buffer_rule``; the index is the market's spot price, which
  :meth:`CcxtGateway.market` sets to the index), and spot is raised to at least the wallet quantity.
  With the mode off only the quote counts as margin on USD-M, so nothing is pledged;
- spot pledged in a Binance **Portfolio Margin** account (``CcxtGateway(..., pledge_source=
  "portfolio_margin")``; the default stays Multi-Assets): tiered collateral rules for the book's
  ``[pledged]`` assets and the futures wallet's assets, from ``GET /sapi/v1/margin/
  crossMarginCollateralRatio`` (ccxt ``sapiGetMarginCrossMarginCollateralRatio``: per group of
  ``assetNames`` tiers ``minUsdValue``, ``maxUsdValue`` (absent: open-ended), ``discountRate``)
  and ``GET /sapi/v1/portfolio/collateralRate`` (ccxt ``sapiGetPortfolioCollateralRate``: one
  ``collateralRate`` per asset). Tier k of asset a gets rate c_k = min(discountRate_k,
  collateralRate_a) (the lower of the two, conservative; an asset in only one answer takes that
  one's rates, a flat rate being one open tier), so C(u) = sum_k c_k clip(u - m_k, 0, M_k - m_k)
  (``models.collateral.tiered_rule``). An asset in neither answer, or whose tiers do not validate,
  is not counted as margin (warned);
- leverage and margin mode set before trading;
- orders carry the leg's client id; ccxt's own resend is switched off (``maxRetriesOnFailure`` = 0).
  Every answer that leaves an order's fate open becomes :class:`AmbiguousOrderError` for the
  executor to reconcile against the account: any ``ccxt.OperationFailed`` (timeouts, 5xx, 429,
  unparseable answers) and, whatever class ccxt maps them to, Binance's "status unknown" codes
  -1000, -1001, -1006, -1007; -4116 (the client id is taken by an open order) proves the order
  exists (``exists=True``). Everything else is a definite rejection;
- positions: rows of one symbol are summed (hedge mode gives a LONG and a SHORT row: net = long -
  short), never overwritten; trading is refused in hedge mode (orders there need ``positionSide``
  and reject reduce-only), with a message saying how to switch;
- reads retry transient failures (:func:`transient`: ccxt's OperationFailed family, which holds
  every NetworkError, and Binance's status-unknown codes) with exponential backoff; other
  ``ExchangeError`` subclasses (InsufficientFunds, InvalidOrder, BadRequest, AuthenticationError)
  are never retried;
- funding paid and received: the account's income history (Binance ``GET /fapi/v1/income``,
  incomeType FUNDING_FEE, through ccxt ``fetch_funding_history``), paged forward from ``since``
  (1000 rows a call) and de-duplicated by transaction id, as :class:`~executor.base.FundingPayment` rows
  (USD, > 0 received, < 0 paid).

Every message that leaves this module goes through :func:`executor.safety.redact`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import ccxt
import pandas as pd

from executor.base import (
    AmbiguousOrderError,
    FundingPayment,
    OrderRejectedError,
    OrderState,
    OrderStatus,
    ReadFailedError,
    Trade,
)
from executor.ccxt_wiring import retry_read
from executor.plan import Instrument, OrderLeg, OrderType, default_exchange_symbol
from executor.safety import redact
from models.book import Book, FuturesPosition
from models.collateral import CollateralRule, as_rule, bid_buffer_rule, tiered_rule
from models.errors import FbrError, ValidationError
from models.instruments import (
    ContractKind,
    FuturesContract,
    MarginTiers,
    Settlement,
    TierBracket,
)
from models.market import MarketSnapshot

log = logging.getLogger("executor.ccxt")
_T = TypeVar("_T")
#: Where pledged collateral rules come from: Multi-Assets bidBuffer (USD-M) or Portfolio Margin tiers.
PLEDGE_SOURCES = ("multi_assets", "portfolio_margin")


class ExchangeSetupError(FbrError):
    """The exchange refused a setup call (leverage, margin mode) or lacks a contract."""


#: Binance answers that leave an order's execution status unknown (whatever ccxt maps them to).
AMBIGUOUS_CODES = frozenset({-1000, -1001, -1006, -1007})
#: Binance: "ClientOrderId is duplicated" (an open order has that id: the order exists).
DUPLICATE_CLIENT_ID = -4116
_CODE = re.compile(r'"code"\s*:\s*(-?\d+)')


def exchange_code(exc: BaseException) -> int | None:
    """The exchange's numeric error code in a ccxt error message (Binance ``{"code": -NNNN}``)."""
    m = _CODE.search(str(exc))
    return int(m.group(1)) if m else None


def transient(exc: BaseException) -> bool:
    """A failure worth retrying for a read (and ambiguous for an order): ccxt's OperationFailed
    family (timeouts, 5xx, 429, unparseable answers) or a Binance "status unknown" code."""
    return isinstance(exc, ccxt.OperationFailed) or exchange_code(exc) in AMBIGUOUS_CODES


def order_error(exc: Exception) -> FbrError:
    """A failed ``create_order`` as AmbiguousOrderError (fate open) or OrderRejectedError."""
    code = exchange_code(exc)
    text = f"{type(exc).__name__}: {redact(str(exc))}"
    if code == DUPLICATE_CLIENT_ID:
        return AmbiguousOrderError(text, exists=True)
    if transient(exc):
        return AmbiguousOrderError(text)
    if isinstance(exc, ccxt.InsufficientFunds):
        return OrderRejectedError(f"insufficient margin: {redact(str(exc))}")
    return OrderRejectedError(text)


# --- metadata -------------------------------------------------------------------------------------

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


# --- funding income -------------------------------------------------------------------------------

#: Rows asked per income-history call (Binance's maximum).
FUNDING_PAGE = 1000


# --- the gateway --------------------------------------------------------------------------------

_STATUS = {"open": OrderStatus.OPEN, "closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELED,
           "cancelled": OrderStatus.CANCELED, "expired": OrderStatus.CANCELED,
           "rejected": OrderStatus.REJECTED}


class CcxtGateway:
    """An exchange gateway over one ccxt exchange instance (shared per account: one rate limiter).

    ``symbols`` maps book contracts to ccxt symbols (default ``BTC/USDT:USDT`` for ``BTC``'s linear
    perpetual); ``margin_mode`` is set on every traded contract; reads retry ``read_attempts`` times
    with ``base_delay_s`` x 2^k backoff (network errors only); ``pledge_source`` says how pledged
    spot is valued (module docstring): ``"multi_assets"`` (default) or ``"portfolio_margin"``.
    """

    def __init__(self, exchange: Any, *, symbols: Mapping[str, str] | None = None,
                 margin_mode: str = "cross", quote: str = "USDT", read_attempts: int = 4,
                 base_delay_s: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                 pledge_source: str = "multi_assets") -> None:
        if pledge_source not in PLEDGE_SOURCES:
            raise ValidationError("pledge_source", f"is {pledge_source!r}",
                                  f"use one of {', '.join(map(repr, PLEDGE_SOURCES))}")
        self._pledge_source = pledge_source
        exchange.options["maxRetriesOnFailure"] = 0  # never let ccxt resend an order itself
        exchange.options["maxRetriesOnFailureDelay"] = 0
        exchange.options.setdefault("fetchCurrencies", False)
        self.ex = exchange
        self.venue = str(exchange.id)
        self._symbols = dict(symbols or {})
        self._margin_mode = margin_mode
        self._quote = quote
        self._attempts = read_attempts
        self._delay = base_delay_s
        self._sleep = sleep
        self._to_book: dict[str, str] = {}
        self._contracts: dict[str, FuturesContract] = {}
        self._hedged: bool | None = None

    def account_key(self) -> str:
        """``<venue>:<first 16 hex of sha256(api key)>``: names the account, reveals no secret."""
        key = str(getattr(self.ex, "apiKey", "") or "")
        return f"{self.venue}:{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def hedge_mode(self) -> bool:
        """True when the account is in hedge (dual-side) position mode (asked once)."""
        if self._hedged is None:
            if not self.ex.has.get("fetchPositionMode"):
                self._hedged = False
            else:
                mode = self._read("fetch_position_mode", self.ex.fetch_position_mode)
                self._hedged = bool(mode.get("hedged"))
        return self._hedged

    # --- reads with retry ----------------------------------------------------------------------
    def _read(self, what: str, fn: Callable[..., _T], *args: Any) -> _T:
        last: Exception | None = None
        for k in range(self._attempts):
            try:
                return fn(*args)
            except ccxt.BaseError as exc:
                if not transient(exc):
                    raise ExchangeSetupError(f"{self.venue}: {what} failed: "
                                             f"{type(exc).__name__}: {redact(str(exc))}") from None
                last = exc
                log.warning("%s failed (%s), retry %d", what, type(exc).__name__, k + 1)
                if k + 1 < self._attempts:
                    self._sleep(self._delay * 2 ** k)
        raise ReadFailedError(f"{self.venue}: {what} failed {self._attempts} times: "
                              f"{type(last).__name__}: {redact(str(last))}")

    def exchange_symbol(self, contract: FuturesContract) -> str:
        """The ccxt symbol of a book contract."""
        return self._symbols.get(contract.symbol, default_exchange_symbol(contract, self._quote))

    # --- metadata -------------------------------------------------------------------------------
    def instruments(self, book: Book) -> dict[str, Instrument]:
        markets = self._read("load_markets", self.ex.load_markets)
        decimal_places = self.ex.precisionMode == ccxt.DECIMAL_PLACES
        wanted = {c.symbol: self.exchange_symbol(c) for c in book.contracts}
        for book_sym, sym in wanted.items():
            if sym not in markets:
                raise ValidationError(f"contracts.{book_sym}", f"maps to {sym!r}, which {self.venue} "
                                      f"does not list", "map it to a listed ccxt symbol")
        tiers: dict[str, Any] = {}
        if self.ex.has.get("fetchLeverageTiers"):
            tiers = self._read("fetch_leverage_tiers", self.ex.fetch_leverage_tiers,
                               list(wanted.values()))
        out: dict[str, Instrument] = {}
        for c in book.contracts:
            sym = wanted[c.symbol]
            rows = tiers.get(sym)
            t = tiers_from_ccxt(rows) if rows and not markets[sym].get("inverse") else None
            contract = contract_from_market(markets[sym], c, decimal_places=decimal_places, tiers=t)
            out[c.symbol] = Instrument(contract, sym)
            self._to_book[sym] = c.symbol
            self._contracts[c.symbol] = contract
        return out

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        """Marks, index prices (as the underlying's spot) and funding rates from the exchange."""
        spot = dict(fallback.spot)
        mark = dict(fallback.mark)
        funding = dict(fallback.funding)
        for c in book.contracts:
            row = self._read("fetch_funding_rate", self.ex.fetch_funding_rate, self.exchange_symbol(c))
            if row.get("markPrice"):
                mark[c.symbol] = float(row["markPrice"])
            if row.get("indexPrice") and c.kind == ContractKind.PERPETUAL:
                spot[c.underlying] = float(row["indexPrice"])
            if row.get("fundingRate") is not None:
                funding[c.symbol] = float(row["fundingRate"])
        return MarketSnapshot(time=pd.Timestamp.now(tz="UTC"), spot=spot, mark=mark, funding=funding,
                              half_spread=dict(fallback.half_spread), adv=dict(fallback.adv),
                              spot_half_spread=dict(fallback.spot_half_spread))

    def _net_positions(self, to_book: Mapping[str, str]) -> tuple[dict[str, FuturesPosition], float]:
        """Net signed position per book contract (rows of one symbol summed: hedge mode's LONG
        and SHORT rows net out; the entry is the larger row's) and the unrealised PnL (USD)."""
        rows = self._read("fetch_positions", self.ex.fetch_positions, list(to_book))
        net: dict[str, float] = {}
        entry: dict[str, tuple[float, float]] = {}
        upnl = 0.0
        for row in rows:
            book_sym = to_book.get(str(row.get("symbol")))
            q = float(row.get("contracts") or 0.0)
            if book_sym is None or q == 0:
                continue
            sign = -1.0 if row.get("side") == "short" else 1.0
            net[book_sym] = net.get(book_sym, 0.0) + sign * q
            if q > entry.get(book_sym, (0.0, 0.0))[0]:
                entry[book_sym] = (q, float(row.get("entryPrice") or 0.0))
            upnl += float(row.get("unrealizedPnl") or 0.0)
        futures = {s: FuturesPosition(round(q, 12), entry[s][1]) for s, q in net.items()
                   if round(q, 12) != 0}
        return futures, upnl

    def account(self, book: Book, market: MarketSnapshot) -> Book:
        """``book`` with the exchange's positions (contracts, entry) and wallet cash (USD)."""
        to_book = {self.exchange_symbol(c): c.symbol for c in book.contracts}
        futures, upnl = self._net_positions(to_book)
        bal = self._read("fetch_balance", self.ex.fetch_balance)
        cash = self._wallet(bal, upnl)
        held = self._wallet_assets(bal, book)
        book = book.evolve(futures=futures, cash=cash)
        if self._pledge_source == "portfolio_margin":
            return self._with_portfolio_pledges(book, held)
        return self._with_pledged(book, held) if held else book

    def _wallet_assets(self, bal: Mapping[str, Any], book: Book) -> dict[str, float]:
        """Book assets other than the quote held in the futures wallet: asset -> walletBalance
        (base units, > 0), from the account's ``assets`` rows."""
        info = bal.get("info") or {}
        rows = (info.get("assets") or []) if isinstance(info, dict) else []
        known = set(book.asset_symbols) - {self._quote}
        out: dict[str, float] = {}
        for row in rows:
            asset, qty = str(row.get("asset") or ""), float(row.get("walletBalance") or 0.0)
            if qty > 0 and asset in known:
                out[asset] = qty
            elif qty > 0 and asset != self._quote:
                log.warning("futures wallet holds %s %s, not a book asset: not counted as margin",
                            qty, asset)
        return out

    def multi_assets_mode(self) -> bool:
        """True when the account is in Binance Multi-Assets mode (``GET /fapi/v1/multiAssetsMargin``);
        False where the exchange has no such endpoint."""
        fn = getattr(self.ex, "fapiPrivateGetMultiAssetsMargin", None)
        if fn is None:
            return False
        answer = self._read("multi_assets_margin", fn)
        return str(answer.get("multiAssetsMargin")).lower() == "true"

    def bid_buffers(self) -> dict[str, float]:
        """bidBuffer per asset (``GET /fapi/v1/assetIndex``: rows ``<ASSET>USD``), a fraction."""
        rows = self._read("asset_index", self.ex.fapiPublicGetAssetIndex)
        out: dict[str, float] = {}
        for row in rows if isinstance(rows, list) else [rows]:
            sym = str(row.get("symbol") or "")
            if sym.endswith("USD") and row.get("bidBuffer") is not None:
                out[sym.removesuffix("USD")] = float(row["bidBuffer"])
        return out

    def _with_pledged(self, book: Book, held: Mapping[str, float]) -> Book:
        """``book`` with the wallet's holdings ``held`` (asset -> base units) pledged at
        quantity x index x (1 - bidBuffer) in Multi-Assets mode (nothing pledged otherwise); spot
        is raised to at least the wallet quantity."""
        if not self.multi_assets_mode():
            log.warning("futures wallet holds %s but Multi-Assets mode is off: only %s counts as "
                        "margin (switch the mode on to pledge them)", sorted(held), self._quote)
            return dataclasses.replace(book, pledged={})
        buffers = self.bid_buffers()
        pledged: dict[str, float | CollateralRule] = {}
        for asset, qty in held.items():
            if asset not in buffers:
                log.warning("%s is not a Multi-Assets collateral asset (no assetIndex row): "
                            "not counted as margin", asset)
                continue
            pledged[asset] = bid_buffer_rule(buffers[asset], f"pledged.{asset}", quantity=qty)
        spot = dict(book.spot)
        for asset, qty in held.items():
            spot[asset] = max(float(spot.get(asset, 0.0)), qty)
        return dataclasses.replace(book, spot=spot, pledged=pledged)

    # --- Portfolio Margin collateral tiers ------------------------------------------------------
    def portfolio_collateral_rates(self) -> dict[str, float]:
        """Portfolio Margin collateral rate per asset (``GET /sapi/v1/portfolio/collateralRate``,
        rows ``{asset, collateralRate}``), a fraction; {} where the exchange has no such endpoint."""
        fn = getattr(self.ex, "sapiGetPortfolioCollateralRate", None)
        if fn is None:
            return {}
        rows = self._read("portfolio_collateral_rate", fn)
        return {str(r["asset"]): float(r["collateralRate"]) for r in rows if isinstance(r, dict)
                and r.get("asset") and r.get("collateralRate") is not None}

    def cross_margin_collateral_tiers(self) -> dict[str, list[tuple[float, float, float]]]:
        """Tiers (min USD, max USD, rate) per asset (``GET /sapi/v1/margin/
        crossMarginCollateralRatio``: groups ``{collaterals: [{minUsdValue, maxUsdValue,
        discountRate}], assetNames}``; a tier without ``maxUsdValue`` is open-ended, max = inf);
        {} where the exchange has no such endpoint."""
        fn = getattr(self.ex, "sapiGetMarginCrossMarginCollateralRatio", None)
        if fn is None:
            return {}
        out: dict[str, list[tuple[float, float, float]]] = {}
        for group in self._read("cross_margin_collateral_ratio", fn):
            if not isinstance(group, dict):
                continue
            tiers = sorted((float(t.get("minUsdValue") or 0.0),
                            math.inf if t.get("maxUsdValue") in (None, "") else float(t["maxUsdValue"]),
                            float(t["discountRate"]))
                           for t in group.get("collaterals") or [] if t.get("discountRate") is not None)
            for name in group.get("assetNames") or []:
                out[str(name)] = tiers
        return out

    def portfolio_tiers(self, assets: set[str]) -> dict[str, list[tuple[float, float, float]]]:
        """Tiers (min USD, max USD, rate) of ``assets`` in Portfolio Margin: the cross-margin tiers
        with each rate capped at the asset's collateralRate, c_k = min(discountRate_k, rate_a);
        an asset with only a collateralRate gets one tier [0, inf, rate_a]. Asks nothing when
        ``assets`` is empty."""
        if not assets:
            return {}
        tiers = self.cross_margin_collateral_tiers()
        rates = self.portfolio_collateral_rates()
        out: dict[str, list[tuple[float, float, float]]] = {}
        for a in sorted(assets):
            cap = rates.get(a)
            if a in tiers:
                out[a] = [(lo, hi, rate if cap is None else min(rate, cap)) for lo, hi, rate in tiers[a]]
            elif cap is not None:
                out[a] = [(0.0, math.inf, cap)]
        return out

    def _with_portfolio_pledges(self, book: Book, held: Mapping[str, float]) -> Book:
        """``book`` with its ``[pledged]`` assets (their quantity caps kept) and the futures wallet's
        holdings ``held`` (quantity = the wallet's) valued by the exchange's Portfolio Margin tiers
        (:meth:`portfolio_tiers`); spot is raised to at least the wallet quantity. An asset the
        exchange gives no valid tiers for is not pledged (warned)."""
        wanted: dict[str, float | None] = {s: as_rule(p, f"pledged.{s}").quantity
                                           for s, p in book.pledged.items()}
        wanted.update(held)
        if not wanted:
            return book
        tiers = self.portfolio_tiers(set(wanted))
        pledged: dict[str, float | CollateralRule] = {}
        for asset, qty in wanted.items():
            if asset not in tiers:
                log.warning("%s has no Portfolio Margin collateral rate: not counted as margin", asset)
                continue
            try:
                pledged[asset] = tiered_rule(tiers[asset], f"pledged.{asset}", quantity=qty)
            except ValidationError as exc:
                log.warning("%s: the exchange's collateral tiers are not usable (%s): not counted "
                            "as margin", asset, exc)
        spot = dict(book.spot)
        for asset, q in held.items():
            spot[asset] = max(float(spot.get(asset, 0.0)), q)
        return dataclasses.replace(book, spot=spot, pledged=pledged)

    def positions(self, instruments: Mapping[str, Instrument]) -> dict[str, float]:
        """Signed net contracts per book contract, read now (0 when flat)."""
        futures, _ = self._net_positions({i.exchange_symbol: s for s, i in instruments.items()})
        return {s: (futures[s].contracts if s in futures else 0.0) for s in instruments}

    def orders_since(self, instrument: Instrument, since_ms: int) -> list[OrderState]:
        """The account's orders on one contract since ``since_ms`` (Binance allOrders)."""
        rows = self._read("fetch_orders", self.ex.fetch_orders, instrument.exchange_symbol,
                          int(since_ms))
        return [self._order_state(str(r.get("clientOrderId") or ""), instrument.contract.symbol, r)
                for r in rows]

    def trades_since(self, instrument: Instrument, since_ms: int) -> list[Trade]:
        """The account's fills on one contract since ``since_ms`` (Binance userTrades)."""
        rows = self._read("fetch_my_trades", self.ex.fetch_my_trades, instrument.exchange_symbol,
                          int(since_ms))
        out = []
        for r in rows:
            q = float(r.get("amount") or 0.0)
            fee = (r.get("fee") or {}).get("cost")
            out.append(Trade(str(r.get("order") or ""), q if r.get("side") == "buy" else -q,
                             float(r.get("price") or 0.0), float(fee or 0.0),
                             int(r.get("timestamp") or 0)))
        return out

    def _wallet(self, bal: Mapping[str, Any], upnl: float) -> float:
        """Stablecoin wallet balance (USD, unrealised PnL excluded)."""
        info = bal.get("info") or {}
        for asset in (info.get("assets") or []) if isinstance(info, dict) else []:
            if asset.get("asset") == self._quote and asset.get("walletBalance") is not None:
                return float(asset["walletBalance"])
        total = (bal.get("total") or {}).get(self._quote)
        return float(total or 0.0) - upnl

    def prepare(self, instruments: Mapping[str, Instrument]) -> None:
        """Refuse hedge mode; margin mode (already set is fine) and leverage per traded contract."""
        if self.hedge_mode():
            raise ExchangeSetupError(
                f"{self.venue}: the account is in hedge position mode (separate long and short "
                f"positions); fbr trades one net position per contract. Fix: switch the account "
                f"to one-way mode (Binance: Preferences > Position Mode, with no open positions "
                f"or orders), then run again")
        for inst in instruments.values():
            sym = inst.exchange_symbol
            if self.ex.has.get("setMarginMode"):
                try:
                    self._read("set_margin_mode", self.ex.set_margin_mode, self._margin_mode, sym)
                except ExchangeSetupError as exc:
                    if "MarginModeAlreadySet" not in str(exc) and "-4046" not in str(exc):
                        raise
            if self.ex.has.get("setLeverage"):
                self._read("set_leverage", self.ex.set_leverage, int(inst.contract.leverage), sym)

    # --- orders ---------------------------------------------------------------------------------
    def _state(self, leg: OrderLeg, order: Mapping[str, Any]) -> OrderState:
        return self._order_state(leg.client_id, leg.symbol, order, leg.contracts)

    def _order_state(self, client_id: str, symbol: str, order: Mapping[str, Any],
                     planned: float = 0.0) -> OrderState:
        filled = float(order.get("filled") or 0.0)
        amount = float(order.get("amount") or planned)
        status = _STATUS.get(str(order.get("status")), OrderStatus.OPEN)
        if status == OrderStatus.FILLED and filled < amount - 1e-12:
            status = OrderStatus.PARTIAL
        if status == OrderStatus.CANCELED and filled > 0:
            status = OrderStatus.PARTIAL
        average = order.get("average") or order.get("price")
        avg = float(average) if average else None
        fee_info = order.get("fee") or {}
        c = self._contracts.get(symbol)
        if fee_info.get("cost") is not None:
            fee = float(fee_info["cost"])
        elif c is not None and avg is not None:  # not in the order answer: the taker fee schedule
            fee = c.taker_fee * filled * c.notional_per_contract(avg)
        else:
            fee = 0.0
        return OrderState(client_id, str(order.get("id")) if order.get("id") else None, status,
                          filled, avg, fee)

    def create_order(self, leg: OrderLeg) -> OrderState:
        """One order with the leg's client id; ccxt never resends it."""
        sym = leg.exchange_symbol
        params: dict[str, Any] = {"clientOrderId": leg.client_id}
        if leg.reduce_only:
            params["reduceOnly"] = True
        price = None
        if leg.order_type == OrderType.LIMIT and leg.limit_price is not None:
            params["timeInForce"] = "IOC"
            price = float(self.ex.price_to_precision(sym, leg.limit_price))
        try:
            amount = float(self.ex.amount_to_precision(sym, leg.contracts))
            order = self.ex.create_order(sym, leg.order_type.value, leg.side.value, amount, price,
                                         params)
        except ccxt.BaseError as exc:
            raise order_error(exc) from None
        return self._state(leg, order)

    def find_order(self, leg: OrderLeg) -> OrderState | None:
        """``fetch_order`` by client id; None when the exchange has no such order."""
        try:
            order = self.ex.fetch_order(None, leg.exchange_symbol, {"clientOrderId": leg.client_id})
        except ccxt.OrderNotFound:
            return None
        except ccxt.NetworkError as exc:
            raise ReadFailedError(f"{type(exc).__name__}: {redact(str(exc))}") from None
        except ccxt.BaseError as exc:
            raise ReadFailedError(f"{type(exc).__name__}: {redact(str(exc))}") from None
        return self._state(leg, order)

    def open_orders(self, instruments: Mapping[str, Instrument]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for book_sym, inst in instruments.items():
            rows = self._read("fetch_open_orders", self.ex.fetch_open_orders, inst.exchange_symbol)
            out.extend({"symbol": book_sym, "side": r.get("side"), "contracts": r.get("remaining"),
                        "price": r.get("price"), "client_id": r.get("clientOrderId")} for r in rows)
        return out

    @property
    def offers_funding_history(self) -> bool:
        """True when the exchange serves the account's funding income history."""
        return bool(self.ex.has.get("fetchFundingHistory"))

    def _funding_page(self, since_ms: int) -> list[dict[str, Any]]:
        """One income-history call (all symbols), retried on network errors only."""
        def on_retry(k: int, exc: Exception) -> None:
            log.warning("fetch_funding_history failed (%s), retry %d", type(exc).__name__, k)

        try:
            rows: list[dict[str, Any]] = retry_read(
                lambda: self.ex.fetch_funding_history(None, since_ms, FUNDING_PAGE),
                attempts=self._attempts, base_delay_s=self._delay, sleep=self._sleep,
                on_retry=on_retry)
        except ccxt.NetworkError as exc:
            raise ReadFailedError(f"{self.venue}: fetch_funding_history failed {self._attempts} "
                                  f"times: {type(exc).__name__}: {redact(str(exc))}") from None
        except ccxt.BaseError as exc:
            raise ReadFailedError(f"{self.venue}: fetch_funding_history failed: "
                                  f"{type(exc).__name__}: {redact(str(exc))}") from None
        return rows

    def funding_history(self, since_ms: int, instruments: Mapping[str, Instrument] | None = None
                        ) -> list[FundingPayment]:
        """Every funding payment at or after ``since_ms`` (ms), oldest first, all symbols.

        Paged forward (``FUNDING_PAGE`` rows a call, the next call from the last row's time) and
        de-duplicated by transaction id. Contracts are named through ``instruments`` (or the ones
        :meth:`instruments` loaded). Raises ReadFailedError when the exchange cannot answer, or
        ExchangeSetupError when it has no income history."""
        if not self.offers_funding_history:
            raise ExchangeSetupError(f"{self.venue}: ccxt offers no funding history here")
        to_book = dict(self._to_book)
        if instruments is not None:
            to_book.update({inst.exchange_symbol: s for s, inst in instruments.items()})
        seen: dict[str, FundingPayment] = {}
        cursor = int(since_ms)
        while True:
            page = self._funding_page(cursor)
            last = cursor
            for r in page:
                t = int(r.get("timestamp") or 0)
                if t < since_ms:
                    continue
                sym = str(r.get("symbol"))
                tran = str(r.get("id") or f"{sym}@{t}")
                seen[tran] = FundingPayment(to_book.get(sym), sym, t, float(r.get("amount") or 0.0),
                                            tran)
                last = max(last, t)
            if len(page) < FUNDING_PAGE:
                break
            cursor = last if last > cursor else cursor + 1  # a full page at one instant: step on
        return sorted(seen.values(), key=lambda p: (p.time_ms, p.tran_id))

    def funding_since(self, since_ms: int,
                      instruments: Mapping[str, Instrument]) -> list[FundingPayment] | None:
        """The book contracts' funding since ``since_ms`` from the income history; None when the
        exchange has none (ReadFailedError when it has one but cannot answer)."""
        if not self.offers_funding_history:
            return None
        return [p for p in self.funding_history(since_ms, instruments) if p.contract is not None]
