"""A ccxt exchange as an :class:`~executor.base.ExchangeGateway` (Binance USD-M first; Bybit and OKX
metadata paths too).

The class is assembled from parts, one module each:

- :mod:`executor.ccxt_base`: the ccxt instance, settings, reads with retry, position mode;
- :mod:`executor.ccxt_errors`: transient vs definite failures, order errors;
- :mod:`executor.ccxt_metadata`: markets -> :class:`FuturesContract` (contract size, inverse,
  lot step, tick, limits, fees) and the limit-price band (PERCENT_PRICE), leverage tiers ->
  :class:`MarginTiers`;
- :mod:`executor.ccxt_collateral`: spot pledged as margin (Multi-Assets bidBuffer, Portfolio
  Margin tiers);
- :mod:`executor.ccxt_orders`: setup (hedge mode refused, margin mode, leverage), orders, fills;
- :mod:`executor.ccxt_funding`: funding paid and received (USD), the perpetuals' funding intervals;
- this module: reading the market (marks, index prices in USD, funding rates as fractions per
  interval), the contracts' metadata, and the account: positions (contracts; rows of one symbol
  are summed: hedge mode gives a LONG and a SHORT row, net = long - short, never overwritten),
  the wallet's stablecoin cash (USD, unrealised PnL excluded: the quote's balance plus the other
  USD stablecoins' collateral value, :mod:`executor.ccxt_collateral`) and pledged spot. An
  account holding a USD-M position on a contract the book does not list is refused
  (:func:`foreign_positions`, :class:`ForeignPositionError`): its unrealised PnL and maintenance
  margin belong to the cross margin fbr computes, and no plan would hedge or close it.

Every message that leaves this module goes through :func:`executor.safety.redact`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import ccxt
import pandas as pd

from executor.base import OrderState
from executor.ccxt_collateral import (
    STABLECOINS,
    CcxtCollateral,
    stablecoin_balances,
    wallet_balances,
)
from executor.ccxt_funding import CcxtFunding
from executor.ccxt_metadata import (
    check_symbol_map,
    contract_from_market,
    percent_price_band,
    tiers_from_ccxt,
)
from executor.ccxt_orders import CcxtOrders
from executor.plan import Instrument, OrderLeg
from models.book import Book, FuturesPosition
from models.errors import ExitCode, FbrError, spoken_list
from models.instruments import ContractKind, Settlement
from models.market import MarketSnapshot

log = logging.getLogger("executor.ccxt")

#: ccxt market types of a USD-M position row: perpetual (swap) and dated (future) contracts
POSITION_TYPES = ("swap", "future")


class ForeignPositionError(FbrError):
    """The exchange account holds a position on a contract the book does not list (exit code 2,
    as the paper venue's refusal of the same case, :func:`executor.paper_book.check_listed`)."""

    exit_code = ExitCode.BAD_INPUT


class CcxtGateway(CcxtOrders, CcxtFunding, CcxtCollateral):
    """An exchange gateway over one ccxt exchange instance (shared per account: one rate limiter).

    ``symbols`` maps book contracts to ccxt symbols (default ``BTC/USDT:USDT`` for ``BTC``'s linear
    perpetual); ``margin_mode`` is set on every traded contract; reads retry ``read_attempts`` times
    with ``base_delay_s`` x 2^k backoff (transient failures only); ``pledge_source`` says how pledged
    spot is valued (:mod:`executor.ccxt_collateral`): ``"multi_assets"`` (default) or
    ``"portfolio_margin"``; ``clock`` (seconds, default ``time.time``) times the end of a silence
    the exchange asked for (:meth:`~executor.ccxt_base.CcxtBase.check_silence`).
    """

    #: an order was sent since the last :meth:`account` read (its check only warns then)
    _sent_since_read: bool = False
    #: :meth:`account` refuses a position outside the book (False: a reader that only lists it,
    #: e.g. ``fbr account import``'s notes, sets this and gets a warning instead)
    refuse_foreign: bool = True

    # --- metadata -------------------------------------------------------------------------------
    def instruments(self, book: Book) -> dict[str, Instrument]:
        markets = self._read("load_markets", self.ex.load_markets, True)  # lots, caps, status today
        decimal_places = self.ex.precisionMode == ccxt.DECIMAL_PLACES
        wanted = {c.symbol: self.exchange_symbol(c) for c in book.contracts}
        check_symbol_map(book, wanted, markets, self.venue)
        tiers: dict[str, Any] = {}
        if self.ex.has.get("fetchLeverageTiers"):
            tiers = self._read("fetch_leverage_tiers", self.ex.fetch_leverage_tiers,
                               list(wanted.values()))
        perps = [wanted[c.symbol] for c in book.contracts if c.kind == ContractKind.PERPETUAL]
        hours = self.funding_hours(perps) if perps else {}
        fees = self.account_fees(list(wanted.values()))
        out: dict[str, Instrument] = {}
        for c in book.contracts:
            sym = wanted[c.symbol]
            rows = tiers.get(sym)
            t = (tiers_from_ccxt(rows, venue=self.venue, symbol=sym)
                 if rows and not markets[sym].get("inverse") else None)
            contract = contract_from_market(markets[sym], c, decimal_places=decimal_places, tiers=t)
            if sym in hours and c.kind == ContractKind.PERPETUAL:
                contract = dataclasses.replace(contract, funding_interval_h=hours[sym])
            if sym in fees:
                contract = dataclasses.replace(contract, maker_fee=fees[sym][0],
                                               taker_fee=fees[sym][1])
            out[c.symbol] = Instrument(contract, sym, _halted(markets[sym]),
                                       percent_price_band(markets[sym]))
            self._to_book[sym] = c.symbol
            self._contracts[c.symbol] = contract
        return out

    def account_fees(self, symbols: Sequence[str]) -> dict[str, tuple[float, float]]:
        """The account's (maker, taker) commission rates (fractions of notional) per ccxt symbol
        where ccxt reads them (Binance ``GET /fapi/v1/commissionRate``, one signed request a
        symbol: a VIP tier pays less than the listed 0.02% / 0.05%); {} where it does not."""
        if self.ex.has.get("fetchTradingFee") is not True:
            return {}
        out: dict[str, tuple[float, float]] = {}
        for sym in symbols:  # the USD-M endpoint, where fbr sends its orders
            fee = self._read("fetch_trading_fee", self.ex.fetch_trading_fee, sym)
            if fee.get("maker") is not None and fee.get("taker") is not None:
                out[sym] = (float(fee["maker"]), float(fee["taker"]))
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

    def _net_positions(self, to_book: Mapping[str, str],
                       rows: Sequence[Mapping[str, Any]] | None = None,
                       ) -> tuple[dict[str, FuturesPosition], float]:
        """Net signed position per book contract (rows of one symbol summed: hedge mode's LONG
        and SHORT rows net out) at the entry that keeps their PnL: sum q_i e_i / net for a linear
        contract, net / sum (q_i / e_i) for an inverse one (signed q_i); and the unrealised PnL
        (USD). ``rows``: the account's position rows already read (ccxt unified; read now, only
        the book's symbols, when None); rows of other symbols are left out here."""
        if rows is None:
            rows = self._read("fetch_positions", self.ex.fetch_positions, list(to_book))
        net: dict[str, float] = {}
        weighted: dict[str, float] = {}
        entries: dict[str, list[float]] = {}
        upnl = 0.0
        for row in rows:
            book_sym = to_book.get(str(row.get("symbol")))
            q = float(row.get("contracts") or 0.0)
            if book_sym is None or q == 0:
                continue
            signed = -q if row.get("side") == "short" else q
            e = float(row.get("entryPrice") or 0.0)
            inverse = self._is_inverse(book_sym)
            net[book_sym] = net.get(book_sym, 0.0) + signed
            entries.setdefault(book_sym, []).append(e)
            weighted[book_sym] = weighted.get(book_sym, 0.0) + (
                (signed / e if e else 0.0) if inverse else signed * e)
            upnl += float(row.get("unrealizedPnl") or 0.0)
        futures: dict[str, FuturesPosition] = {}
        for sym, q in net.items():
            if round(q, 12) == 0:
                continue
            w = weighted[sym]
            entry = (entries[sym][0] if len(entries[sym]) == 1  # one-way mode: as the exchange says
                     else (q / w if w else 0.0) if self._is_inverse(sym) else w / q)
            futures[sym] = FuturesPosition(round(q, 12), entry)
        return futures, upnl

    def _is_inverse(self, book_sym: str) -> bool:
        c = self._contracts.get(book_sym)
        return c is not None and c.settlement == Settlement.INVERSE

    def account(self, book: Book, market: MarketSnapshot) -> Book:
        """``book`` with the exchange's positions (contracts, entry) and wallet cash (USD: the
        quote's balance plus the other stablecoins' value, :meth:`stablecoin_cash`). The
        Multi-Assets mode and the ``assetIndex`` rows are read once, when a stablecoin or (outside
        Portfolio Margin) a book asset is in the futures wallet. Every position row of the account
        is read (one request): a USD-M position on a contract the book does not list is refused
        before anything else (:meth:`check_foreign`, :class:`ForeignPositionError`), except on the
        first read after this gateway sent an order (an execution's report of what it did: the
        orders are out, so the position, opened meanwhile, is logged as a warning; the next read,
        a status or the next plan, refuses it) and while :attr:`refuse_foreign` is False."""
        to_book = {self.exchange_symbol(c): c.symbol for c in book.contracts}
        after_send, self._sent_since_read = self._sent_since_read, False  # whatever the read does
        rows = self.all_positions()  # every symbol, one request (Binance: positionRisk, no symbol)
        self.check_foreign(rows, to_book, refuse=self.refuse_foreign and not after_send)
        isolated = isolated_positions(rows, to_book)
        if isolated:
            raise IsolatedPositionError(isolated_message(isolated, self.venue))
        futures, upnl = self._net_positions(to_book, rows)
        bal = self._read("fetch_balance", self.ex.fetch_balance)
        held = self._wallet_assets(bal, book)
        stables = stablecoin_balances(bal, self._quote)
        portfolio = self._pledge_source == "portfolio_margin"
        multi = bool(stables or (held and not portfolio)) and self.multi_assets_mode()
        rows = self.asset_index_rows() if multi else []
        cash = self._wallet(bal, upnl) + self.stablecoin_cash(stables, multi, rows)
        book = book.evolve(futures=futures, cash=cash)
        if portfolio:
            return self._with_portfolio_pledges(book, held)
        return self._with_pledged(book, held, multi, rows) if held else book

    def check_foreign(self, rows: Sequence[Mapping[str, Any]], to_book: Mapping[str, str], *,
                      refuse: bool = True) -> None:
        """Raise :class:`ForeignPositionError` (``refuse``; else log it as a warning) when the
        position ``rows`` (ccxt unified, every symbol of the account) hold a non-zero position on a
        symbol not in ``to_book`` (the book's contracts' exchange symbols) that shares the account's
        cross margin (:func:`foreign_positions`; a row settled in another USD stablecoin than the
        quote shares it only in Multi-Assets mode, asked only when there is such a row)."""
        foreign = foreign_positions(rows, to_book, self.ex.markets or {}, self._quote)
        other = {s for s, f in foreign.items() if f.settle != self._quote}
        if other and not self.multi_assets_mode():
            log.warning("the account holds %s, settled outside %s: Multi-Assets mode is off, so "
                        "their margin is not %s's (left out)", ", ".join(sorted(other)),
                        self._quote, self._quote)
            foreign = {s: v for s, v in foreign.items() if s not in other}
        if foreign and refuse:
            raise ForeignPositionError(foreign_message(foreign, self.venue))
        if foreign:
            log.warning("%s", foreign_message(foreign, self.venue, refused=False))

    def create_order(self, leg: OrderLeg) -> OrderState:
        """One order (:meth:`CcxtOrders.create_order`); the next :meth:`account` read is then this
        execution's report, which warns of a position outside the book instead of refusing."""
        self._sent_since_read = True
        return super().create_order(leg)

    def _wallet_assets(self, bal: Mapping[str, Any], book: Book) -> dict[str, float]:
        """Book assets other than the stablecoins held in the futures wallet: asset ->
        walletBalance (base units, > 0), from the account's ``assets`` rows (stablecoins are
        cash: :meth:`stablecoin_cash`)."""
        known = set(book.asset_symbols) - {self._quote, *STABLECOINS}
        out: dict[str, float] = {}
        for asset, qty in wallet_balances(bal).items():
            if qty > 0 and asset in known:
                out[asset] = qty
            elif qty > 0 and asset != self._quote and asset not in STABLECOINS:
                log.warning("futures wallet holds %s %s, not a book asset: not counted as margin",
                            qty, asset)
        return out

    def balance(self) -> dict[str, Any]:
        """The account's balance as ccxt gives it (``info.assets`` rows: the wallet per asset),
        read with retries."""
        out: dict[str, Any] = self._read("fetch_balance", self.ex.fetch_balance)
        return out

    def all_positions(self) -> list[dict[str, Any]]:
        """Every open position row of the account, on any contract (ccxt unified rows), read
        with retries."""
        out: list[dict[str, Any]] = self._read("fetch_positions", self.ex.fetch_positions)
        return out

    def positions(self, instruments: Mapping[str, Instrument]) -> dict[str, float]:
        """Signed net contracts per book contract, read now (0 when flat)."""
        futures, _ = self._net_positions({i.exchange_symbol: s for s, i in instruments.items()})
        return {s: (futures[s].contracts if s in futures else 0.0) for s in instruments}

    def _wallet(self, bal: Mapping[str, Any], upnl: float) -> float:
        """The quote's wallet balance (USD, unrealised PnL excluded)."""
        quote = wallet_balances(bal).get(self._quote)
        if quote is not None:
            return quote
        total = (bal.get("total") or {}).get(self._quote)
        return float(total or 0.0) - upnl


def _halted(market: Mapping[str, Any]) -> str | None:
    """The exchange's status of a contract it does not trade now (ccxt ``active`` False: Binance's
    ``status`` is not TRADING), or None while it trades (or when ccxt does not say)."""
    if market.get("active") is not False:
        return None
    return str((market.get("info") or {}).get("status") or "not active")


class IsolatedPositionError(FbrError):
    """A book contract's position is held in isolated margin (exit code 2): fbr's collateral and
    margin figures are the account's cross margin, which that position does not share."""

    exit_code = ExitCode.BAD_INPUT


def isolated_positions(rows: Sequence[Mapping[str, Any]], to_book: Mapping[str, str]
                       ) -> dict[str, float]:
    """Signed contracts of the non-zero position rows (ccxt unified) on the book's contracts
    (``to_book``: exchange symbol -> book symbol) whose ``marginMode`` is "isolated" (ccxt reads
    Binance's ``marginType``, or an ``isolatedMargin`` other than 0 where the row has none), by the
    exchange's symbol."""
    out: dict[str, float] = {}
    for row in rows:
        q = signed_contracts(row)
        exchange_id = str(row_info(row).get("symbol") or row.get("symbol"))
        if q != 0 and str(row.get("marginMode") or "").lower() == "isolated" and (
                exchange_id in to_book or str(row.get("symbol")) in to_book):
            out[exchange_id] = out.get(exchange_id, 0.0) + q
    return out


def row_info(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """The exchange's own fields of a ccxt position row (``info``; {} when absent)."""
    raw = row.get("info")
    return raw if isinstance(raw, Mapping) else {}


def signed_contracts(row: Mapping[str, Any]) -> float:
    """A ccxt position row's size in contracts, signed by its ``side`` (short < 0)."""
    q = abs(float(row.get("contracts") or 0.0))
    return -q if row.get("side") == "short" else q


def isolated_message(isolated: Mapping[str, float], venue: str) -> str:
    """The refusal of the book positions held in isolated margin, each with its signed size."""
    held = spoken_list([f"{s} {q:+.12g} contracts" for s, q in sorted(isolated.items())])
    return (f"the {venue} account holds {held} in isolated margin: fbr counts one cross-margin "
            "collateral for every position (the wallet, unrealised PnL and pledged spot), which an "
            "isolated position does not share, so its margin ratio, stress surplus and liquidation "
            "figures would be wrong. Nothing was sent. Fix: close the isolated position on the "
            "exchange (fbr sets each contract to cross margin before it trades), then run again")


class Foreign(NamedTuple):
    """A position on a contract the book does not list: its settle asset, the exchange's own
    symbol (Binance ``ETHUSDT``) and the signed contracts of each non-zero row (one row in one-way
    mode; LONG and SHORT in hedge mode)."""

    settle: str
    exchange_id: str
    sizes: list[float]


def foreign_positions(rows: Sequence[Mapping[str, Any]], to_book: Mapping[str, str],
                      markets: Mapping[str, Mapping[str, Any]], quote: str) -> dict[str, Foreign]:
    """The account's USD-M positions on symbols not in ``to_book``, by ccxt symbol. Kept: linear
    perpetual or dated contracts (``markets``' type swap / future; a symbol missing from
    ``markets`` is kept) settled in ``quote`` or another USD stablecoin; zero-size rows and
    coin-margined (inverse) contracts, another margin pool, are left out."""
    out: dict[str, Foreign] = {}
    for row in rows:
        sym = str(row.get("symbol"))
        q = signed_contracts(row)
        if sym in to_book or q == 0:
            continue
        m = markets.get(sym) or {}
        if m.get("inverse") or m.get("linear") is False or (
                m.get("type") is not None and m.get("type") not in POSITION_TYPES):
            continue
        info = row_info(row)
        settle = str(m.get("settle") or info.get("marginAsset")
                     or (sym.split(":")[1].split("-")[0] if ":" in sym else quote))
        if settle != quote and settle not in STABLECOINS:
            continue
        exchange_id = str(m.get("id") or info.get("symbol") or sym)
        out.setdefault(sym, Foreign(settle, exchange_id, [])).sizes.append(q)
    return out


def foreign_message(foreign: Mapping[str, Foreign], venue: str, *, refused: bool = True) -> str:
    """The refusal of the positions ``foreign`` (:func:`foreign_positions`) on ``venue``: each
    symbol (the exchange's and ccxt's) with its signed size in contracts, and the fix;
    ``refused=False``: the warning of an execution's report (its orders went out)."""
    held = []
    for sym, f in sorted(foreign.items()):
        size = f"{sum(f.sizes):+.12g} contracts"
        if len(f.sizes) > 1:
            size += f" net ({' and '.join(f'{q:+.12g}' for q in f.sizes)}: LONG and SHORT rows)"
        held.append(f"{f.exchange_id} ({sym}) {size}")
    one = len(held) == 1
    names = spoken_list(held)
    it, its = ("it", "its") if one else ("them", "their")
    return (f"the {venue} account holds {names}, {'a position' if one else 'positions'} on "
            f"{'a contract' if one else 'contracts'} the book does not list: {its} unrealised PnL "
            f"and maintenance margin would be left out of the collateral, margin ratio and weights "
            f"fbr computes, and no plan would hedge or close {it}."
            f"{' Nothing was sent.' if refused else ''} Fix: add the "
            f"{'contract' if one else 'contracts'} to the book (it is then hedged and counted) or "
            f"close {it} on the exchange; fbr needs the account, or a sub-account, to itself: a "
            f"position it does not know changes the cross margin it computes")
