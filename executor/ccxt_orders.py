"""Trading through ccxt (part of :class:`~executor.ccxt_gateway.CcxtGateway`): setup, orders,
the account's orders and fills.

- :meth:`CcxtOrders.prepare`: trading is refused in hedge mode (orders there need ``positionSide``
  and reject reduce-only), with a message saying how to switch; margin mode and leverage are set
  before trading;
- orders carry the leg's client id; ccxt's own resend is off. Every answer that leaves an order's
  fate open becomes :class:`~executor.base.AmbiguousOrderError` for the executor to reconcile
  (:func:`executor.ccxt_errors.order_error`); everything else is a definite rejection;
- order states: quantities in contracts, average price in USD, fee in USD (the answer's, else the
  taker fee schedule on the filled notional);
- fees in USD (:func:`fee_usd`): ccxt reports each fee in the currency the exchange charged it in.
  A stablecoin (USDT, USDC, USD; no fee currency given counts as one) is taken at 1 USD; the
  contract's base asset is converted at the fill price; any other currency (BNB with Binance's fee
  discount) at the exchange's USD index of that asset (``GET /fapi/v1/assetIndex``, row
  ``<ASSET>USD``: Binance lists BNB there as a Multi-Assets collateral asset), read once per
  trade history read. A currency with no such price (another venue, an asset not listed, a failed
  read) makes the fee the contract's taker fee on the fill notional, flagged as an estimate
  (:attr:`executor.base.Trade.fee_estimated`; an order state falls back to the same taker fee
  schedule).

Every message that leaves this module goes through :func:`executor.safety.redact`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import ccxt

from executor.base import OrderState, OrderStatus, ReadFailedError, Trade
from executor.ccxt_base import CcxtBase
from executor.ccxt_errors import ExchangeSetupError, order_error
from executor.ccxt_wiring import retry_after_s
from executor.plan import Instrument, OrderLeg, OrderType
from executor.safety import redact

_STATUS = {"open": OrderStatus.OPEN, "closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELED,
           "cancelled": OrderStatus.CANCELED, "expired": OrderStatus.CANCELED,
           "rejected": OrderStatus.REJECTED}
#: Fee currencies counted at 1 USD.
USD_CURRENCIES = frozenset({"USDT", "USDC", "USD"})
log = logging.getLogger("executor.ccxt")
#: Rows a history request asks for (Binance userTrades and allOrders: at most 1000, default 500).
HISTORY_PAGE = 1000
#: Pages read at most before a history read is refused as too long to read whole.
HISTORY_MAX_PAGES = 20


def all_pages(page: Callable[[int | None, int | None], list[dict[str, Any]]], since_ms: int, *,
              by_id: bool, what: str) -> list[dict[str, Any]]:
    """Every row since ``since_ms`` of a history endpoint that answers at most ``HISTORY_PAGE``
    rows a request, in time order. ``page(since, after_id)`` reads one page. The first page is
    read from ``since_ms``; while a page is full, the next is read after the last row: on Binance
    from the largest id + 1 (``fromId`` / ``orderId``, which the exchange refuses beside a start
    time; ids ascend with time), elsewhere from the latest row's time, the rows already seen (by id)
    dropped. More than ``HISTORY_MAX_PAGES`` pages, or a full page that adds no row, is a
    ReadFailedError: the reconciler then judges nothing on a history it could not read whole."""
    raw = page(since_ms, None)
    out, seen = list(raw), {str(r.get("id")) for r in raw}
    for _ in range(HISTORY_MAX_PAGES - 1):
        if len(raw) < HISTORY_PAGE:
            return out
        if by_id:
            raw = page(None, max(int(r["id"]) for r in raw) + 1)
        else:
            raw = page(max(int(r.get("timestamp") or since_ms) for r in raw), None)
        rows = [r for r in raw if str(r.get("id")) not in seen]
        if not rows and len(raw) >= HISTORY_PAGE:
            raise ReadFailedError(f"{what}: over {HISTORY_PAGE} rows at one time; the history "
                                  f"cannot be paged further")
        out += rows
        seen |= {str(r.get("id")) for r in rows}
    if len(raw) < HISTORY_PAGE:
        return out
    raise ReadFailedError(f"{what}: more than {HISTORY_MAX_PAGES * HISTORY_PAGE} rows since "
                          f"{since_ms} ms; not read whole")


def fee_usd(cost: float, currency: str | None, base: str, price: float | None) -> float | None:
    """A fee of ``cost`` units of ``currency`` in USD: as is for a stablecoin (or no currency
    given), ``cost`` x ``price`` (USD per base unit, the fill price) for the contract's ``base``
    asset; None when it cannot be priced here (the caller then estimates it)."""
    if currency is None or currency.upper() in USD_CURRENCIES:
        return cost
    if currency.upper() == base.upper() and price is not None and price > 0:
        return cost * price
    return None


def _base(exchange_symbol: str) -> str:
    """The base asset of a ccxt unified symbol (``BTC/USDT:USDT`` -> ``BTC``)."""
    return exchange_symbol.split("/")[0]


class CcxtOrders(CcxtBase):
    """Setup, orders, open orders, past orders and fills of a ccxt gateway."""

    def _history(self, what: str, fetch: Any, symbol: str, since_ms: int,
                 id_param: str) -> list[dict[str, Any]]:
        """Every row of a history read since ``since_ms``, page by page (see :func:`all_pages`)."""
        binance = self.venue.startswith("binance")

        def page(since: int | None, after_id: int | None) -> list[dict[str, Any]]:
            params = {id_param: after_id} if after_id is not None else {}
            rows: list[dict[str, Any]] = self._read(what, fetch, symbol, since, HISTORY_PAGE, params)
            return rows

        return all_pages(page, since_ms, by_id=binance, what=f"{self.venue}: {what} {symbol}")

    def orders_since(self, instrument: Instrument, since_ms: int) -> list[OrderState]:
        """The account's orders on one contract since ``since_ms`` (Binance allOrders)."""
        rows = self._history("fetch_orders", self.ex.fetch_orders, instrument.exchange_symbol,
                             int(since_ms), "orderId")
        return [self._order_state(str(r.get("clientOrderId") or ""), instrument.contract.symbol, r)
                for r in rows]

    def trades_since(self, instrument: Instrument, since_ms: int) -> list[Trade]:
        """The account's fills on one contract since ``since_ms`` (Binance userTrades); fees in USD
        (see :func:`fee_usd`; a fee in a currency without a price here is the contract's taker fee
        on the fill notional, flagged ``fee_estimated``)."""
        rows = self._history("fetch_my_trades", self.ex.fetch_my_trades,
                             instrument.exchange_symbol, int(since_ms), "fromId")
        c = instrument.contract
        out = []
        index: dict[str, float | None] = {}
        for r in rows:
            q = float(r.get("amount") or 0.0)
            price = float(r.get("price") or 0.0)
            fee_info = r.get("fee") or {}
            cost = float(fee_info.get("cost") or 0.0)
            currency = fee_info.get("currency")
            fee = fee_usd(cost, currency, _base(instrument.exchange_symbol), price)
            if fee is None and currency:
                if currency not in index:
                    index[currency] = self.asset_usd_index(str(currency))
                usd = index[currency]
                fee = cost * usd if usd is not None else None
            estimated = fee is None
            if fee is None:
                fee = c.taker_fee * q * c.notional_per_contract(price)
            out.append(Trade(str(r.get("order") or ""), q if r.get("side") == "buy" else -q,
                             price, fee, int(r.get("timestamp") or 0), estimated))
        return out

    def asset_usd_index(self, asset: str) -> float | None:
        """The exchange's USD index price of ``asset`` (``GET /fapi/v1/assetIndex``, row
        ``<ASSET>USD``), or None when the venue has no such endpoint, does not list the asset, or
        the read fails (the caller then estimates the fee)."""
        if not hasattr(self.ex, "fapiPublicGetAssetIndex"):
            return None
        try:
            rows = self.asset_index_rows(asset)
        except (ExchangeSetupError, ReadFailedError) as exc:
            log.warning("no USD index for fee asset %s: %s", asset, redact(str(exc)))
            return None
        for r in rows:
            if str(r.get("symbol") or "").upper() == f"{asset.upper()}USD":
                value = float(r.get("index") or 0.0)
                return value if value > 0 else None
        return None

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
        answered = None
        if fee_info.get("cost") is not None:
            answered = fee_usd(float(fee_info["cost"]), fee_info.get("currency"),
                               _base(str(order.get("symbol") or "")), avg)
        if answered is not None:
            fee = answered
        elif c is not None and avg is not None:  # not in the answer, or in a currency without a
            # price here: the taker fee schedule
            fee = c.taker_fee * filled * c.notional_per_contract(avg)
        else:
            fee = 0.0
        return OrderState(client_id, str(order.get("id")) if order.get("id") else None, status,
                          filled, avg, fee, fee_estimated=answered is None and filled > 0)

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
        self.check_silence()  # never send inside a long wait the exchange asked for
        try:
            amount = float(self.ex.amount_to_precision(sym, leg.contracts))
            order = self.ex.create_order(sym, leg.order_type.value, leg.side.value, amount, price,
                                         params)
        except ccxt.BaseError as exc:
            self.after_failure(exc)  # a long wait: stop here, the journal keeps the leg in doubt
            raise order_error(exc, retry_after_s(self.ex, exc)) from None
        return self._state(leg, order)

    def find_order(self, leg: OrderLeg) -> OrderState | None:
        """``fetch_order`` by client id; None when the exchange has no such order."""
        self.check_silence()
        try:
            order = self.ex.fetch_order(None, leg.exchange_symbol, {"clientOrderId": leg.client_id})
        except ccxt.OrderNotFound:
            return None
        except ccxt.BaseError as exc:
            self.after_failure(exc)  # the caller's next look is on a synced clock
            wait = retry_after_s(self.ex, exc)
            if wait > 0:  # and never inside a 429's Retry-After
                self._sleep(wait)
            raise ReadFailedError(f"{type(exc).__name__}: {redact(str(exc))}") from None
        return self._state(leg, order)

    def open_orders(self, instruments: Mapping[str, Instrument]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for book_sym, inst in instruments.items():
            rows = self._read("fetch_open_orders", self.ex.fetch_open_orders, inst.exchange_symbol)
            out.extend({"symbol": book_sym, "side": r.get("side"), "contracts": r.get("remaining"),
                        "price": r.get("price"), "client_id": r.get("clientOrderId")} for r in rows)
        return out

