"""Paper trading: an in-memory exchange that fills at mark plus modelled slippage and charges fees.

Fill price of a leg of signed contracts q on contract j: p = mark_j x (1 + sign(q) x (h_j + i_j)),
h_j the half spread (fraction, from the market), i_j = k x sigma_daily x sqrt(|n| / ADV_j) the
square-root impact (fraction; 0 without ADV or daily vol), n = |q| x npc_j(mark) USD.
Fee = taker fee x |q| x npc_j(mark) USD, paid from the wallet: on the notional at mark, as the
optimiser's cost model and the backtest charge it (a real exchange charges it on the fill notional;
the difference is fee x slippage, about 1e-7 of the notional), so a paper account and a backtest
fed the same prices and decisions keep the same NAV. A position that shrinks realises PnL
against its average entry (linear: q x size x (p - entry); inverse: q x size x (1/entry - 1/p) x p,
USD); one that grows averages its entry (arithmetic for linear, harmonic for inverse).
Limit legs fill only when p is within the limit (else they are cancelled, like IOC). A dated
position settles once the market reaches its expiry (:meth:`PaperGateway.settle_expired`). The
exchange's margin rules (:mod:`executor.paper_margin`): an order that opens or increases a position
is refused when the initial margin after it exceeds the collateral, and a feed that moves the
market calls :meth:`PaperGateway.liquidate_if_due` (collateral <= maintenance closes everything).

The paper exchange keeps its account (positions, wallet cash), its orders and its trades in its
own tables of the journal file (:class:`PaperStore`), just as a real exchange keeps them on its
side: a gateway over the store reads the account from it at every read, and applies each fill to
the stored account in one transaction that reads and writes it. So the paper venue has the live
venue's semantics: an order is journalled before it is sent, ``--resume`` reads positions from the
paper account and sends only what is still missing (a finished plan sends nothing and charges
nothing), successive ``fbr execute --exchange paper`` runs build on each other, and an ``fbr run``
loop sees (and builds on) a manual ``fbr execute --exchange paper`` made between its cycles.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from executor.base import FundingPayment, OrderRejectedError, OrderState, OrderStatus, Trade
from executor.paper_book import check_listed, paper_book, with_funding_intervals
from executor.paper_margin import Liquidation, insufficient_margin, liquidate, opens
from executor.paper_store import VENUE, PaperAccount, PaperStore, apply_fill
from executor.plan import Instrument, OrderLeg, Side, book_instruments
from models.book import Book
from models.instruments import ContractKind
from models.margin import LIQUIDATION_PENALTY
from models.market import MarketSnapshot

__all__ = ["VENUE", "PaperGateway", "PaperStore", "apply_fill", "check_listed", "paper_book",
           "with_funding_intervals"]


class PaperGateway:
    """An :class:`~executor.base.ExchangeGateway` over a simulated account (see module doc):
    in memory, or persisted in a :class:`PaperStore` when one is given.

    With a store, the stored account is the account: every read (account, positions, orders,
    trades) reloads it, and every change (a fill, an expiry settlement, funding) is made on the
    stored account inside one transaction (:meth:`PaperStore.update`), so another run trading the
    same paper account (a manual ``fbr execute --exchange paper`` between two cycles of an
    ``fbr run`` loop) is seen, and built on, rather than overwritten.

    ``daily_vol`` maps a contract to its underlying's daily volatility (fraction) for the impact
    term; ``impact_k`` is its coefficient; ``clock`` gives fill times (ms, UTC).
    """

    venue = VENUE

    def __init__(self, book: Book, market: MarketSnapshot, *,
                 daily_vol: Mapping[str, float] | None = None, impact_k: float = 1.0,
                 store: PaperStore | None = None,
                 clock: Callable[[], int] | None = None) -> None:
        self._market = market
        self._daily_vol = dict(daily_vol or {})
        self._impact_k = impact_k
        self._contracts = {c.symbol: c for c in book.contracts}
        self._store = store
        self._traded_now: dict[str, float] = {}
        self._clock = clock or (lambda: int(time.time() * 1000))
        self.orders: dict[str, OrderState] = {}
        self._trades: list[tuple[str, Trade]] = []
        self._seen = (0, 0)  # the last stored order row and trade id read
        self._cleared: set[str] = set()  # contracts past their expiry, settled (or found flat)
        self._paid_to: int | None = None  # funding paid up to (ms, UTC), without a store
        self._book = book
        self.liquidations: list[Liquidation] = []
        #: called with each liquidation as it happens (``fbr run``'s paper loop: its alert)
        self.on_liquidation: Callable[[Liquidation], None] | None = None
        if store is not None:
            if store.load() is None:
                store.init_account(book.futures, book.cash)
            self._sync()

    def _sync(self) -> None:
        """Reload the account, and the orders and trades stored since the last read, from the
        store (no-op without one). Raises :class:`JournalError` when the account holds a contract
        the book does not list (:func:`check_listed`)."""
        if self._store is None:
            return
        with self._store.reading():  # the account, its orders and trades: one committed state
            saved = self._store.load()
            orders, last_order = self._store.orders_after(self._seen[0])
            trades, last_trade = self._store.trades_after(self._seen[1])
        if saved is not None:
            check_listed(self._book, saved[0], self._store.path)
            self._book = self._book.evolve(futures=saved[0], cash=saved[1])
        self.orders.update(orders)
        self._trades.extend(trades)
        self._seen = (last_order, last_trade)

    @contextmanager
    def _update(self) -> Iterator[PaperAccount]:
        """The account to change: the stored one, read and written in one store transaction (so a
        change lands on what is stored, not on this gateway's copy), else the in-memory one. The
        gateway's account, orders and trades follow once the change is made."""
        if self._store is not None:
            with self._store.update((self._book.futures, self._book.cash)) as acct:
                check_listed(self._book, acct.futures, self._store.path)
                yield acct
            self._sync()
            return
        acct = PaperAccount(dict(self._book.futures), self._book.cash)
        yield acct
        self._book = self._book.evolve(futures=acct.futures, cash=acct.cash)
        for symbol, state, trade in acct.fills:
            self.orders[state.client_id] = state
            if trade is not None:
                self._trades.append((symbol, trade))

    def set_market(self, market: MarketSnapshot, daily_vol: Mapping[str, float] | None = None,
                   expiry_prices: Mapping[str, float] | None = None) -> float:
        """Move the paper exchange to ``market`` (a simulated clock's new step); ``daily_vol``
        replaces the impact term's daily vols when given. Dated positions at or past their expiry
        then settle (:meth:`settle_expired`, at ``expiry_prices``); returns their fees (USD)."""
        self._market = market
        self._traded_now = {}
        if daily_vol is not None:
            self._daily_vol = dict(daily_vol)
        return self.settle_expired(expiry_prices)

    def settle_expired(self, prices: Mapping[str, float] | None = None) -> float:
        """Close every dated position at or past its expiry at the market's time, as the backtest
        settles it (``scenarios.settlement``): at S = ``prices[symbol]`` (the spot at the expiry),
        else the underlying's spot now, the PnL at S realised into cash, the fee ``taker_fee x |q|
        x npc(S)`` paid from it; a filled order and trade ``settle-<symbol>-<ms>``. Returns fees.
        The account is the stored one, read (and settled, in one transaction) once after each
        contract's expiry and whenever the account last read holds an expired position: no plan
        opens a contract past its expiry (``executor.plan``), so a contract found flat then stays
        flat."""
        due = {s for s in self._contracts if s not in self._cleared and self._expired(s)}
        if not due and not any(self._expired(s) for s in self._book.futures):
            return 0.0
        fees = 0.0
        with self._update() as acct:
            for sym, pos in list(acct.futures.items()):
                if not self._expired(sym):
                    continue
                c = self._contracts[sym]
                px = float((prices or {}).get(sym, self._market.spot_price(c.underlying)))
                fee = c.taker_fee * abs(pos.contracts) * c.notional_per_contract(px)
                acct.cash += apply_fill(pos, -pos.contracts, px, c)[1] - fee
                acct.set_position(sym, None)
                ms = int(self._market.time.timestamp() * 1000)
                oid = f"settle-{sym}-{ms}"
                acct.fills.append((sym, OrderState(oid, oid, OrderStatus.FILLED, abs(pos.contracts),
                                                   px, fee), Trade(oid, -pos.contracts, px, fee, ms)))
                fees += fee
        self._cleared |= due
        return fees

    def _expired(self, symbol: str) -> bool:
        """Whether ``symbol`` is a dated contract at or past its expiry at the market's time."""
        days = self._contracts[symbol].days_to_expiry(self._market.time)
        return days is not None and days <= 0

    def settle_funding(self, rates: Mapping[str, float]) -> float:
        """Pay funding at the current marks: for each contract j with summed rate r_j (fraction,
        every settlement since the last call), cash -= r_j x q_j x npc_j(mark_j) (a long pays a
        positive rate); the account is persisted with one row per contract in the journal's
        ``funding`` table (as an exchange's income history is copied there), so ``fbr status``
        and the dashboard see paper funding too. Returns the amount received (USD, signed)."""
        self._sync()
        if not any(r != 0 and s in self._book.futures for s, r in rates.items()):
            return 0.0
        with self._update() as acct:
            total = self._fund(acct, rates)
        return total

    def funding_paid_to(self) -> int | None:
        """The time (ms, UTC) the account's funding is paid up to (None: never paid)."""
        return self._store.funding_paid_to() if self._store is not None else self._paid_to

    def settle_funding_to(self, t_ms: int,
                          rates_between: Callable[[int, int], Mapping[str, float]]) -> float:
        """Pay the settlements between the time the account's funding is paid up to, t0, and
        ``t_ms`` (ms, UTC), at ``rates_between(t0, t_ms)`` (summed rate per contract), on the
        positions held now, and move that time to ``t_ms``; all in one store transaction, so a
        settlement is paid once whichever process (the loop, a cron run, a manual trade) reads
        first, and before a trade that follows it. The first read of an account (no t0) pays
        nothing; the time never moves back. Returns the amount received (USD, signed)."""
        if self._store is None:
            t0, self._paid_to = self._paid_to, max(t_ms, self._paid_to or t_ms)
            return 0.0 if t0 is None or t_ms <= t0 else self.settle_funding(rates_between(t0, t_ms))
        total = 0.0
        with self._update() as acct:
            t0 = acct.paid_to_ms
            acct.pay_to(t_ms)
            if t0 is not None and t_ms > t0:
                total = self._fund(acct, rates_between(t0, t_ms))
        return total

    def _fund(self, acct: PaperAccount, rates: Mapping[str, float]) -> float:
        """Book funding at ``rates`` (summed rate per contract) on ``acct`` (see
        :meth:`settle_funding`); the amount received (USD, signed)."""
        for sym, r in rates.items():
            pos = acct.futures.get(sym)
            if pos is None or r == 0:
                continue
            c = self._contracts[sym]
            acct.funding[sym] = -float(r) * pos.contracts * c.notional_per_contract(
                self._market.mark_price(sym))
        total = sum(acct.funding.values())
        if acct.funding:
            acct.cash += total
            acct.funding_ms = self._clock()
        return total

    def liquidate_if_due(self, penalty_rate: float = LIQUIDATION_PENALTY) -> Liquidation | None:
        """The exchange's rule, after a market move and its funding: a position open and
        collateral <= maintenance at the marks closes every position at its mark, charges
        ``penalty_rate x |notional|`` and lets the insurance fund cover a deficit
        (:func:`executor.paper_margin.liquidate`), in one store transaction; the event is returned
        and kept in ``liquidations``, and given to ``on_liquidation`` (None: nothing to do)."""
        self._sync()
        if not self._book.futures:
            return None
        with self._update() as acct:
            event = liquidate(acct, self._book, self._market, penalty_rate)
        if event is not None:
            self.liquidations.append(event)
            if self.on_liquidation is not None:
                self.on_liquidation(event)
        return event

    def account_key(self) -> str:
        """``paper:<book name>``."""
        return f"paper:{self._book.name}"

    def set_funding_intervals(self, hours: Mapping[str, float]) -> None:
        """Give the perpetuals named in ``hours`` (book symbol -> hours between settlements, > 0)
        that funding interval: the exchange's, when the paper venue follows an exchange's market
        (``executor.paper_feed``). The account read (:meth:`account`) and the instruments
        reported (:meth:`instruments`) then carry it, so the carry (rate per settlement x the
        settlements in the horizon) and the next settlement count the exchange's settlements.
        With a store the intervals are kept in it too (:meth:`PaperStore.save_funding_intervals`),
        so every other reader of this paper account (:func:`paper_book`: ``fbr status``,
        ``solve``/``whatif``/``execute --exchange paper``, the dashboard) counts the same ones."""
        book = with_funding_intervals(self._book, hours)
        perps = {c.symbol: c.funding_interval_h for c in book.contracts
                 if c.symbol in hours and c.kind == ContractKind.PERPETUAL}
        if not perps:
            return
        self._book = book
        self._contracts.update({c.symbol: c for c in book.contracts})
        if self._store is not None:
            self._store.save_funding_intervals(perps)

    def instruments(self, book: Book) -> dict[str, Instrument]:
        """The book's contracts as this paper venue lists them (its own metadata: the exchange's
        funding intervals after :meth:`set_funding_intervals`), default exchange symbols."""
        return book_instruments(dataclasses.replace(book, contracts=tuple(
            self._contracts.get(c.symbol, c) for c in book.contracts)))

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        return self._market

    def account(self, book: Book, market: MarketSnapshot) -> Book:
        """The paper account (the stored one, read now, with a store)."""
        self._sync()
        return self._book

    def positions(self, instruments: Mapping[str, Instrument]) -> dict[str, float]:
        """Signed contracts per book contract (0 when flat)."""
        self._sync()
        return {s: (self._book.futures[s].contracts if s in self._book.futures else 0.0)
                for s in instruments}

    def orders_since(self, instrument: Instrument, since_ms: int) -> list[OrderState]:
        """Paper orders on the contract (all of them: the paper venue keeps its whole history)."""
        self._sync()
        ids = {t.order_id for s, t in self._trades if s == instrument.contract.symbol}
        return [o for o in self.orders.values() if o.exchange_id in ids]

    def trades_since(self, instrument: Instrument, since_ms: int) -> list[Trade]:
        """Paper fills on the contract at or after ``since_ms``."""
        self._sync()
        return [t for s, t in self._trades
                if s == instrument.contract.symbol and t.time_ms >= since_ms]

    def prepare(self, instruments: Mapping[str, Instrument]) -> None:
        return None

    def fill_price(self, leg: OrderLeg) -> float:
        """Mark plus half spread plus impact, against the trader (USD). Orders on one contract at
        one market snapshot share their impact: after n0 USD already traded there, n more cost
        k sigma ((n0 + n)^{3/2} - n0^{3/2}) / sqrt(ADV) USD, so a flip sent as two legs costs what
        one order of the same size would (the backtest's 3/2-power cost)."""
        c = self._contracts[leg.symbol]
        mark = self._market.mark_price(leg.symbol)
        notional = leg.contracts * c.notional_per_contract(mark)
        adv = self._market.contract_adv(leg.symbol)
        vol = self._daily_vol.get(leg.symbol, 0.0)
        impact = 0.0
        if math.isfinite(adv) and notional > 0:
            n0 = self._traded_now.get(leg.symbol, 0.0)
            impact = self._impact_k * vol * ((n0 + notional) ** 1.5 - n0 ** 1.5) / (
                notional * math.sqrt(adv))
        slip = self._market.contract_half_spread(leg.symbol) + impact
        return mark * (1.0 + slip if leg.side == Side.BUY else 1.0 - slip)

    def create_order(self, leg: OrderLeg) -> OrderState:
        """Fill ``leg`` on the account (the stored one, in one transaction, with a store)."""
        self._sync()
        if leg.client_id in self.orders:
            raise OrderRejectedError(f"client order id {leg.client_id} is already used")
        c = self._contracts[leg.symbol]
        price = self.fill_price(leg)
        oid = f"paper-{leg.client_id}"
        if leg.limit_price is not None and (
                (leg.side == Side.BUY and price > leg.limit_price)
                or (leg.side == Side.SELL and price < leg.limit_price)):
            state = OrderState(leg.client_id, oid, OrderStatus.CANCELED, 0.0, None, 0.0)
            with self._update() as acct:
                acct.fills.append((leg.symbol, state, None))
            return state
        at_mark = leg.contracts * c.notional_per_contract(self._market.mark_price(leg.symbol))
        fee = c.taker_fee * at_mark
        state = OrderState(leg.client_id, oid, OrderStatus.FILLED, leg.contracts, price, fee)
        with self._update() as acct:
            pos = acct.futures.get(leg.symbol)
            if leg.reduce_only and (pos is None or pos.contracts * leg.signed_contracts >= 0
                                    or leg.contracts > abs(pos.contracts) + 1e-12):
                raise OrderRejectedError(f"reduce-only order {leg.client_id} would open or increase "
                                         f"{leg.symbol}")
            new_pos, realised = apply_fill(pos, leg.signed_contracts, price, c)
            acct.set_position(leg.symbol, new_pos)
            acct.cash += realised - fee
            if opens(pos, new_pos) and (why := insufficient_margin(self._book, acct,
                                                                   self._market)) is not None:
                raise OrderRejectedError(f"order {leg.client_id} on {leg.symbol}: {why}")
            acct.fills.append((leg.symbol, state, Trade(oid, leg.signed_contracts, price, fee,
                                                        self._clock())))
        self._traded_now[leg.symbol] = self._traded_now.get(leg.symbol, 0.0) + at_mark
        return state

    def find_order(self, leg: OrderLeg) -> OrderState | None:
        self._sync()
        return self.orders.get(leg.client_id)

    def open_orders(self, instruments: Mapping[str, Instrument]) -> list[dict[str, Any]]:
        return []

    def funding_since(self, since_ms: int,
                      instruments: Mapping[str, Instrument]) -> list[FundingPayment] | None:
        return None
