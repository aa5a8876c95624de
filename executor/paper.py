"""Paper trading: an in-memory exchange that fills at mark plus modelled slippage and charges fees.

Fill price of a leg of signed contracts q on contract j: p = mark_j x (1 + sign(q) x (h_j + i_j)),
h_j the half spread (fraction, from the market), i_j = k x sigma_daily x sqrt(|n| / ADV_j) the
square-root impact (fraction; 0 without ADV or daily vol), n = |q| x npc_j(mark) USD.
Fee = taker fee x |q| x npc_j(p) USD, paid from the wallet. A position that shrinks realises PnL
against its average entry (linear: q x size x (p - entry); inverse: q x size x (1/entry - 1/p) x p,
USD); one that grows averages its entry (arithmetic for linear, harmonic for inverse).
Limit legs fill only when p is within the limit (else they are cancelled, like IOC).

The paper account lives in the journal: :func:`paper_book` applies the latest journalled positions
and cash for the book to the book file, so successive ``fbr execute --exchange paper`` runs build on
each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from executor.base import FundingPayment, OrderRejectedError, OrderState, OrderStatus
from executor.journal import Journal
from executor.plan import Instrument, OrderLeg, Side, book_instruments
from models.book import Book, FuturesPosition
from models.instruments import FuturesContract, Settlement
from models.market import MarketSnapshot

VENUE = "paper"


def apply_fill(pos: FuturesPosition | None, dq: float, price: float,
               c: FuturesContract) -> tuple[FuturesPosition | None, float]:
    """(new position, realised PnL in USD) after trading ``dq`` signed contracts at ``price``."""
    q = pos.contracts if pos else 0.0
    e = pos.entry_price if pos else price
    new = q + dq
    if abs(new) < 1e-12:
        new = 0.0
    inverse = c.settlement == Settlement.INVERSE
    realised = 0.0
    if q == 0 or q * dq > 0:
        if inverse:
            entry = (abs(q) + abs(dq)) / (abs(q) / e + abs(dq) / price)
        else:
            entry = (abs(q) * e + abs(dq) * price) / (abs(q) + abs(dq))
    else:
        closed = min(abs(dq), abs(q)) * math.copysign(1.0, q)
        if inverse:
            realised = closed * c.contract_size * (1.0 / e - 1.0 / price) * price
        else:
            realised = closed * c.contract_size * (price - e)
        entry = price if abs(dq) > abs(q) else e
    return (FuturesPosition(new, entry) if new != 0 else None), realised


class PaperGateway:
    """An :class:`~executor.base.ExchangeGateway` over an in-memory account (see module doc).

    ``daily_vol`` maps a contract to its underlying's daily volatility (fraction) for the impact
    term; ``impact_k`` is its coefficient.
    """

    venue = VENUE

    def __init__(self, book: Book, market: MarketSnapshot, *,
                 daily_vol: Mapping[str, float] | None = None, impact_k: float = 1.0) -> None:
        self._book = book
        self._market = market
        self._daily_vol = dict(daily_vol or {})
        self._impact_k = impact_k
        self._contracts = {c.symbol: c for c in book.contracts}
        self.orders: dict[str, OrderState] = {}

    def instruments(self, book: Book) -> dict[str, Instrument]:
        return book_instruments(book)

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        return self._market

    def account(self, book: Book, market: MarketSnapshot) -> Book:
        return self._book

    def prepare(self, instruments: Mapping[str, Instrument]) -> None:
        return None

    def fill_price(self, leg: OrderLeg) -> float:
        """Mark plus half spread plus impact, against the trader (USD)."""
        c = self._contracts[leg.symbol]
        mark = self._market.mark_price(leg.symbol)
        notional = leg.contracts * c.notional_per_contract(mark)
        adv = self._market.contract_adv(leg.symbol)
        vol = self._daily_vol.get(leg.symbol, 0.0)
        impact = self._impact_k * vol * math.sqrt(notional / adv) if math.isfinite(adv) else 0.0
        slip = self._market.contract_half_spread(leg.symbol) + impact
        return mark * (1.0 + slip if leg.side == Side.BUY else 1.0 - slip)

    def create_order(self, leg: OrderLeg) -> OrderState:
        if leg.client_id in self.orders:
            raise OrderRejectedError(f"client order id {leg.client_id} is already used")
        c = self._contracts[leg.symbol]
        price = self.fill_price(leg)
        if leg.limit_price is not None and (
                (leg.side == Side.BUY and price > leg.limit_price)
                or (leg.side == Side.SELL and price < leg.limit_price)):
            state = OrderState(leg.client_id, f"paper-{len(self.orders) + 1}", OrderStatus.CANCELED,
                               0.0, None, 0.0)
            self.orders[leg.client_id] = state
            return state
        pos = self._book.futures.get(leg.symbol)
        if leg.reduce_only and (pos is None or pos.contracts * leg.signed_contracts >= 0
                                or leg.contracts > abs(pos.contracts) + 1e-12):
            raise OrderRejectedError(f"reduce-only order {leg.client_id} would open or increase "
                                     f"{leg.symbol}")
        fee = c.taker_fee * leg.contracts * c.notional_per_contract(price)
        new_pos, realised = apply_fill(pos, leg.signed_contracts, price, c)
        futures = {s: p for s, p in self._book.futures.items() if s != leg.symbol}
        if new_pos is not None:
            futures[leg.symbol] = new_pos
        self._book = self._book.evolve(futures=futures, cash=self._book.cash + realised - fee)
        state = OrderState(leg.client_id, f"paper-{len(self.orders) + 1}", OrderStatus.FILLED,
                           leg.contracts, price, fee)
        self.orders[leg.client_id] = state
        return state

    def find_order(self, leg: OrderLeg) -> OrderState | None:
        return self.orders.get(leg.client_id)

    def open_orders(self, instruments: Mapping[str, Instrument]) -> list[dict[str, Any]]:
        return []

    def funding_since(self, since_ms: int,
                      instruments: Mapping[str, Instrument]) -> list[FundingPayment] | None:
        return None


def paper_book(book: Book, journal: Journal, resume: str | None = None) -> tuple[Book, bool]:
    """``book`` with the paper account's latest journalled positions and cash; (book, found).

    With ``resume`` (a plan interrupted before its closing snapshot), that plan's journalled fills
    are applied on top, so the resumed paper account holds what the interrupted run filled.
    """
    snap = journal.latest_positions(VENUE, book.name)
    found = snap is not None
    if snap is not None:
        positions, cash = snap
        known = set(book.contract_symbols)
        futures = {s: FuturesPosition(q, e) for s, (q, e) in positions.items()
                   if s in known and q != 0}
        book = book.evolve(futures=futures, cash=cash)
    if resume is not None:
        contracts = {c.symbol: c for c in book.contracts}
        futures = dict(book.futures)
        cash = book.cash
        for sym, dq, price, fee in journal.fills_with_legs(resume):
            new, realised = apply_fill(futures.get(sym), dq, price, contracts[sym])
            futures.pop(sym, None)
            if new is not None:
                futures[sym] = new
            cash += realised - fee
        book = book.evolve(futures=futures, cash=cash)
    return book, found
