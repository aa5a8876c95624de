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
position settles once the market reaches its expiry (:meth:`PaperGateway.settle_expired`).

The paper exchange keeps its account (positions, wallet cash), its orders and its trades in its
own tables of the journal file (:class:`PaperStore`), written in one transaction per fill, just as a
real exchange keeps them on its side. So the paper venue has the live venue's semantics: an order is
journalled before it is sent, ``--resume`` reads positions from the paper account and sends only
what is still missing (a finished plan sends nothing and charges nothing), and successive
``fbr execute --exchange paper`` runs build on each other.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from executor.base import FundingPayment, OrderRejectedError, OrderState, OrderStatus, Trade
from executor.journal import Journal
from executor.journal_schema import JournalError
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


_STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS paper_account (book_name TEXT PRIMARY KEY, cash REAL NOT NULL,
    updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS paper_positions (book_name TEXT NOT NULL, symbol TEXT NOT NULL,
    contracts REAL NOT NULL, entry REAL NOT NULL, PRIMARY KEY (book_name, symbol));
CREATE TABLE IF NOT EXISTS paper_orders (client_id TEXT PRIMARY KEY, book_name TEXT NOT NULL,
    exchange_id TEXT NOT NULL, symbol TEXT NOT NULL, status TEXT NOT NULL, filled REAL NOT NULL,
    average REAL, fee REAL NOT NULL, time_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS funding (
    id INTEGER PRIMARY KEY AUTOINCREMENT, venue TEXT NOT NULL, book_name TEXT NOT NULL,
    symbol TEXT NOT NULL, amount REAL NOT NULL, time_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS paper_trades (id INTEGER PRIMARY KEY AUTOINCREMENT,
    book_name TEXT NOT NULL, symbol TEXT NOT NULL, order_id TEXT NOT NULL, contracts REAL NOT NULL,
    price REAL NOT NULL, fee REAL NOT NULL, time_ms INTEGER NOT NULL);
"""


class PaperStore:
    """The paper exchange's side of the account, in tables of the journal file (one per book
    name): positions (signed contracts, entry USD), cash (USD), orders and trades."""

    def __init__(self, path: str | Path, book_name: str) -> None:
        self.book_name = book_name
        self.path = Path(path)
        self._conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
        self._conn.executescript(_STORE_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def load(self) -> tuple[dict[str, FuturesPosition], float] | None:
        """(positions, cash) of this book's paper account, None before its first fill."""
        row = self._conn.execute("SELECT cash FROM paper_account WHERE book_name = ?",
                                 (self.book_name,)).fetchone()
        if row is None:
            return None
        rows = self._conn.execute("SELECT symbol, contracts, entry FROM paper_positions WHERE "
                                  "book_name = ? AND contracts != 0", (self.book_name,)).fetchall()
        return {r[0]: FuturesPosition(float(r[1]), float(r[2])) for r in rows}, float(row[0])

    def orders(self) -> dict[str, OrderState]:
        """Every paper order of this book by client id."""
        rows = self._conn.execute("SELECT client_id, exchange_id, status, filled, average, fee FROM "
                                  "paper_orders WHERE book_name = ?", (self.book_name,)).fetchall()
        return {r[0]: OrderState(r[0], r[1], OrderStatus(r[2]), float(r[3]), r[4], float(r[5]))
                for r in rows}

    def trades(self) -> list[tuple[str, Trade]]:
        """(book symbol, trade) of this book, in fill order."""
        rows = self._conn.execute("SELECT symbol, order_id, contracts, price, fee, time_ms FROM "
                                  "paper_trades WHERE book_name = ? ORDER BY id",
                                  (self.book_name,)).fetchall()
        return [(r[0], Trade(r[1], float(r[2]), float(r[3]), float(r[4]), int(r[5]))) for r in rows]

    def save_fill(self, state: OrderState, symbol: str, trade: Trade | None,
                  futures: Mapping[str, FuturesPosition], cash: float) -> None:
        """An order, its trade and the account after it, in one transaction."""
        with self._transaction() as cur:
            cur.execute("INSERT INTO paper_orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (state.client_id, self.book_name, state.exchange_id or "", symbol,
                         state.status.value, state.filled, state.average, state.fee,
                         trade.time_ms if trade else 0))
            if trade is not None:
                cur.execute("INSERT INTO paper_trades (book_name, symbol, order_id, contracts, price, "
                            "fee, time_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (self.book_name, symbol, trade.order_id, trade.contracts, trade.price,
                             trade.fee, trade.time_ms))
            self._write_account(cur, futures, cash)

    def save_account(self, futures: Mapping[str, FuturesPosition], cash: float,
                     funding: Mapping[str, float] | None = None, time_ms: int = 0) -> None:
        """Overwrite this book's account after a funding settlement, with its payments (USD
        received by contract, at ``time_ms``) in the journal's funding table, in one
        transaction."""
        with self._transaction() as cur:
            self._write_account(cur, futures, cash)
            cur.executemany("INSERT INTO funding (venue, book_name, symbol, amount, time_ms) "
                            "VALUES (?, ?, ?, ?, ?)",
                            [(VENUE, self.book_name, sym, amount, time_ms)
                             for sym, amount in (funding or {}).items()])

    def init_account(self, futures: Mapping[str, FuturesPosition], cash: float) -> None:
        """Open this book's paper account at ``futures`` and ``cash`` (no-op when it exists)."""
        with self._transaction() as cur:
            if cur.execute("SELECT 1 FROM paper_account WHERE book_name = ?",
                           (self.book_name,)).fetchone() is None:
                self._write_account(cur, futures, cash)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """A cursor inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any exception)."""
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def _write_account(self, cur: sqlite3.Cursor, futures: Mapping[str, FuturesPosition],
                       cash: float) -> None:
        cur.execute("INSERT OR REPLACE INTO paper_account VALUES (?, ?, ?)",
                    (self.book_name, cash, int(time.time() * 1000)))
        cur.execute("DELETE FROM paper_positions WHERE book_name = ?", (self.book_name,))
        cur.executemany("INSERT INTO paper_positions VALUES (?, ?, ?, ?)",
                        [(self.book_name, s, p.contracts, p.entry_price) for s, p in futures.items()])


class PaperGateway:
    """An :class:`~executor.base.ExchangeGateway` over a simulated account (see module doc):
    in memory, or persisted in a :class:`PaperStore` when one is given.

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
        self._book = book
        if store is not None:
            saved = store.load()
            if saved is None:
                store.init_account(book.futures, book.cash)
            else:
                check_listed(book, saved[0], store.path)
                self._book = book.evolve(futures=saved[0], cash=saved[1])
            self.orders = store.orders()
            self._trades = store.trades()

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
        x npc(S)`` paid from it; a filled order and trade ``settle-<symbol>-<ms>``. Returns fees."""
        fees = 0.0
        for sym, pos in list(self._book.futures.items()):
            c = self._contracts[sym]
            if (days := c.days_to_expiry(self._market.time)) is None or days > 0:
                continue
            px = float((prices or {}).get(sym, self._market.spot_price(c.underlying)))
            fee = c.taker_fee * abs(pos.contracts) * c.notional_per_contract(px)
            cash = self._book.cash + apply_fill(pos, -pos.contracts, px, c)[1] - fee
            futures = {s: p for s, p in self._book.futures.items() if s != sym}
            self._book = self._book.evolve(futures=futures, cash=cash)
            ms = int(self._market.time.timestamp() * 1000)
            oid = f"settle-{sym}-{ms}"
            self._keep(sym, OrderState(oid, oid, OrderStatus.FILLED, abs(pos.contracts), px, fee),
                       Trade(oid, -pos.contracts, px, fee, ms))
            fees += fee
        return fees

    def settle_funding(self, rates: Mapping[str, float]) -> float:
        """Pay funding at the current marks: for each contract j with summed rate r_j (fraction,
        every settlement since the last call), cash -= r_j x q_j x npc_j(mark_j) (a long pays a
        positive rate); the account is persisted with one row per contract in the journal's
        ``funding`` table (as an exchange's income history is copied there), so ``fbr status``
        and the dashboard see paper funding too. Returns the amount received (USD, signed)."""
        received: dict[str, float] = {}
        for sym, r in rates.items():
            pos = self._book.futures.get(sym)
            if pos is None or r == 0:
                continue
            c = self._contracts[sym]
            received[sym] = -float(r) * pos.contracts * c.notional_per_contract(
                self._market.mark_price(sym))
        total = sum(received.values())
        if received:
            self._book = self._book.evolve(cash=self._book.cash + total)
            if self._store is not None:
                self._store.save_account(self._book.futures, self._book.cash, received,
                                         self._clock())
        return total

    def account_key(self) -> str:
        """``paper:<book name>``."""
        return f"paper:{self._book.name}"

    def instruments(self, book: Book) -> dict[str, Instrument]:
        return book_instruments(book)

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        return self._market

    def account(self, book: Book, market: MarketSnapshot) -> Book:
        return self._book

    def positions(self, instruments: Mapping[str, Instrument]) -> dict[str, float]:
        """Signed contracts per book contract (0 when flat)."""
        return {s: (self._book.futures[s].contracts if s in self._book.futures else 0.0)
                for s in instruments}

    def orders_since(self, instrument: Instrument, since_ms: int) -> list[OrderState]:
        """Paper orders on the contract (all of them: the paper venue keeps its whole history)."""
        ids = {t.order_id for s, t in self._trades if s == instrument.contract.symbol}
        return [o for o in self.orders.values() if o.exchange_id in ids]

    def trades_since(self, instrument: Instrument, since_ms: int) -> list[Trade]:
        """Paper fills on the contract at or after ``since_ms``."""
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
        if leg.client_id in self.orders:
            raise OrderRejectedError(f"client order id {leg.client_id} is already used")
        c = self._contracts[leg.symbol]
        price = self.fill_price(leg)
        oid = f"paper-{leg.client_id}"
        if leg.limit_price is not None and (
                (leg.side == Side.BUY and price > leg.limit_price)
                or (leg.side == Side.SELL and price < leg.limit_price)):
            return self._keep(leg.symbol, OrderState(leg.client_id, oid, OrderStatus.CANCELED,
                                                     0.0, None, 0.0), None)
        pos = self._book.futures.get(leg.symbol)
        if leg.reduce_only and (pos is None or pos.contracts * leg.signed_contracts >= 0
                                or leg.contracts > abs(pos.contracts) + 1e-12):
            raise OrderRejectedError(f"reduce-only order {leg.client_id} would open or increase "
                                     f"{leg.symbol}")
        at_mark = leg.contracts * c.notional_per_contract(self._market.mark_price(leg.symbol))
        fee = c.taker_fee * at_mark
        new_pos, realised = apply_fill(pos, leg.signed_contracts, price, c)
        futures = {s: p for s, p in self._book.futures.items() if s != leg.symbol}
        if new_pos is not None:
            futures[leg.symbol] = new_pos
        self._book = self._book.evolve(futures=futures, cash=self._book.cash + realised - fee)
        self._traded_now[leg.symbol] = self._traded_now.get(leg.symbol, 0.0) + at_mark
        trade = Trade(oid, leg.signed_contracts, price, fee, self._clock())
        return self._keep(leg.symbol, OrderState(leg.client_id, oid, OrderStatus.FILLED,
                                                 leg.contracts, price, fee), trade)

    def _keep(self, symbol: str, state: OrderState, trade: Trade | None) -> OrderState:
        """Remember (and persist) an order, its trade and the account after it."""
        if self._store is not None:
            self._store.save_fill(state, symbol, trade, self._book.futures, self._book.cash)
        self.orders[state.client_id] = state
        if trade is not None:
            self._trades.append((symbol, trade))
        return state

    def find_order(self, leg: OrderLeg) -> OrderState | None:
        return self.orders.get(leg.client_id)

    def open_orders(self, instruments: Mapping[str, Instrument]) -> list[dict[str, Any]]:
        return []

    def funding_since(self, since_ms: int,
                      instruments: Mapping[str, Instrument]) -> list[FundingPayment] | None:
        return None


def check_listed(book: Book, futures: Mapping[str, FuturesPosition], journal_path: Path) -> None:
    """Refuse a paper account (journal ``journal_path``) holding a position on a contract the book
    no longer lists: its exposure and PnL would be dropped from the book's NAV, and no plan could
    close it. Raises :class:`JournalError` naming the contracts (signed contracts) and the fix."""
    known = set(book.contract_symbols)
    stray = [f"{s} {p.contracts:.12g} contracts" for s, p in sorted(futures.items())
             if s not in known and p.contracts != 0]
    if stray:
        one = len(stray) == 1
        held = stray[0] if one else ", ".join(stray[:-1]) + " and " + stray[-1]
        raise JournalError(
            f"the paper account (journal {journal_path}) holds {held}, which the book no longer "
            f"lists. Fix: add the {'contract' if one else 'contracts'} back to the book and close "
            f"{'it' if one else 'them'}, or start a new journal (--journal)")


def paper_book(book: Book, journal: Journal) -> tuple[Book, bool]:
    """``book`` with its paper account (positions and cash) from the journal file; (book, found).

    The paper exchange's own tables come first; a journal written before they existed falls back
    to its latest position snapshot for the book. An account holding a position on a contract the
    book does not list is refused (:func:`check_listed`), as every reader of the paper account for
    a book (status, solve, whatif, execute, resume, run, the dashboard) comes through here.
    """
    with closing(PaperStore(journal.path, book.name)) as store:
        saved = store.load()
    if saved is not None:
        check_listed(book, saved[0], journal.path)
        return book.evolve(futures=saved[0], cash=saved[1]), True
    snap = journal.latest_positions(VENUE, book.name)
    if snap is None:
        return book, False
    positions, cash = snap
    futures = {s: FuturesPosition(q, e) for s, (q, e) in positions.items() if q != 0}
    check_listed(book, futures, journal.path)
    return book.evolve(futures=futures, cash=cash), True
