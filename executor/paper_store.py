"""The paper exchange's side of the account: its fill arithmetic (:func:`apply_fill`) and its tables
in the journal file (:class:`PaperStore`).

The stored account is the paper account: every change to it (a fill, an expiry settlement, a
funding payment) is made by :meth:`PaperStore.update`, which reads the account and writes what the
change did to it in one ``BEGIN IMMEDIATE`` transaction. So two writers on one journal (a loop's
``fbr run`` and a manual ``fbr execute --exchange paper``) each apply their fills on top of the
other's, as an exchange applies every order to the account it holds, and neither overwrites the
account with a copy it read earlier.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from executor.base import OrderState, OrderStatus, Trade
from executor.sqlite_tx import immediate, reading
from models.book import FuturesPosition
from models.instruments import FuturesContract, Settlement

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
CREATE TABLE IF NOT EXISTS paper_intervals (book_name TEXT NOT NULL, symbol TEXT NOT NULL,
    hours REAL NOT NULL, PRIMARY KEY (book_name, symbol));
CREATE TABLE IF NOT EXISTS paper_prices (book_name TEXT PRIMARY KEY, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS paper_funding_clock (book_name TEXT PRIMARY KEY,
    paid_to_ms INTEGER NOT NULL);
"""

#: The price source of a paper account no loop has named: the book file's market.
BOOK_PRICES = "book"


@dataclass
class PaperAccount:
    """A paper account being changed (:meth:`PaperStore.update`): positions (signed contracts,
    entry USD) and cash (USD) as read, changed by the caller, and what the change records: orders
    with their trades (book symbol, order, trade or None), funding received (USD by contract, at
    ``funding_ms``), and the time its funding is paid up to (``paid_to_ms``, stored with it)."""

    futures: dict[str, FuturesPosition]
    cash: float
    fills: list[tuple[str, OrderState, Trade | None]] = field(default_factory=list)
    funding: dict[str, float] = field(default_factory=dict)
    funding_ms: int = 0
    touched: set[str] = field(default_factory=set)
    #: the time (ms, UTC) up to which the account's funding settlements are paid (None: never)
    paid_to_ms: int | None = None
    paid_to_moved: bool = False

    def pay_to(self, t_ms: int) -> None:
        """Record that the settlements up to ``t_ms`` are paid (the clock never moves back)."""
        if self.paid_to_ms is None or t_ms > self.paid_to_ms:
            self.paid_to_ms, self.paid_to_moved = t_ms, True

    def set_position(self, symbol: str, pos: FuturesPosition | None) -> None:
        """Hold ``pos`` on ``symbol`` (None: flat)."""
        self.futures.pop(symbol, None)
        if pos is not None:
            self.futures[symbol] = pos
        self.touched.add(symbol)

    @property
    def changed(self) -> bool:
        """Whether the change wrote anything."""
        return bool(self.fills or self.funding or self.touched or self.paid_to_moved)


class PaperStore:
    """The paper exchange's side of the account, in tables of the journal file (one per book
    name): positions (signed contracts, entry USD), cash (USD), orders and trades, and the hours
    between the perpetuals' funding settlements the venue uses (:meth:`funding_intervals`), and
    whose prices the account follows (:meth:`price_source`)."""

    def __init__(self, path: str | Path, book_name: str) -> None:
        self.book_name = book_name
        self.path = Path(path)
        self._conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
        self._conn.executescript(_STORE_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def load(self) -> tuple[dict[str, FuturesPosition], float] | None:
        """(positions, cash) of this book's paper account, None before its first fill: one
        committed state (:meth:`reading`), never a fill's cash without its position."""
        with self.reading():
            return _read(self._conn.cursor(), self.book_name)

    def reading(self) -> AbstractContextManager[None]:
        """The reads inside see one committed state of the journal
        (:func:`executor.sqlite_tx.reading`): another process's write cannot land between two."""
        return reading(self._conn)

    def funding_intervals(self) -> dict[str, float]:
        """Hours between funding settlements of this book's perpetuals as the paper venue last
        set them (book symbol -> hours; ``PaperGateway.set_funding_intervals``: the exchange's
        when a loop follows its prices); {} when none was set (the book file's stand)."""
        rows = self._conn.execute("SELECT symbol, hours FROM paper_intervals WHERE book_name = ?",
                                  (self.book_name,)).fetchall()
        return {str(r[0]): float(r[1]) for r in rows}

    def save_funding_intervals(self, hours: Mapping[str, float]) -> None:
        """Replace this book's stored funding intervals by ``hours`` (book symbol -> hours > 0),
        in one transaction."""
        with self._transaction() as cur:
            cur.execute("DELETE FROM paper_intervals WHERE book_name = ?", (self.book_name,))
            cur.executemany("INSERT INTO paper_intervals VALUES (?, ?, ?)",
                            [(self.book_name, s, float(h)) for s, h in hours.items()])

    def price_source(self) -> str:
        """Whose prices this book's paper account follows: :data:`BOOK_PRICES` (the book file's
        market), or the exchange an ``fbr run`` loop last followed it on (``[run] prices``, e.g.
        ``"binanceusdm"``), so a manual trade or read of the account values it where the loop
        does."""
        row = self._conn.execute("SELECT source FROM paper_prices WHERE book_name = ?",
                                 (self.book_name,)).fetchone()
        return BOOK_PRICES if row is None else str(row[0])

    def funding_paid_to(self) -> int | None:
        """The time (ms, UTC) this book's paper funding is paid up to (None: never paid)."""
        row = self._conn.execute("SELECT paid_to_ms FROM paper_funding_clock WHERE book_name = ?",
                                 (self.book_name,)).fetchone()
        return None if row is None else int(row[0])

    def save_price_source(self, source: str) -> None:
        """Record that this book's paper account follows ``source``'s prices (see
        :meth:`price_source`). On the book file's prices no exchange settlement is paid, so its
        funding clock is dropped with it: a later loop on an exchange's prices starts afresh (its
        first read pays nothing) rather than pay every settlement since the last exchange read."""
        with self._transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO paper_prices VALUES (?, ?)", (self.book_name, source))
            if source == BOOK_PRICES:
                cur.execute("DELETE FROM paper_funding_clock WHERE book_name = ?", (self.book_name,))

    def orders(self) -> dict[str, OrderState]:
        """Every paper order of this book by client id."""
        return self.orders_after(0)[0]

    def orders_after(self, rowid: int) -> tuple[dict[str, OrderState], int]:
        """This book's paper orders stored after row ``rowid`` (by client id), and the last row."""
        rows = self._conn.execute("SELECT client_id, exchange_id, status, filled, average, fee, rowid "
                                  "FROM paper_orders WHERE book_name = ? AND rowid > ? ORDER BY rowid",
                                  (self.book_name, rowid)).fetchall()
        return ({r[0]: OrderState(r[0], r[1], OrderStatus(r[2]), float(r[3]), r[4], float(r[5]))
                 for r in rows}, int(rows[-1][6]) if rows else rowid)

    def trades(self) -> list[tuple[str, Trade]]:
        """(book symbol, trade) of this book, in fill order."""
        return self.trades_after(0)[0]

    def trades_after(self, trade_id: int) -> tuple[list[tuple[str, Trade]], int]:
        """(book symbol, trade) of this book stored after trade ``trade_id``, in fill order, and
        the last trade's id."""
        rows = self._conn.execute("SELECT symbol, order_id, contracts, price, fee, time_ms, id FROM "
                                  "paper_trades WHERE book_name = ? AND id > ? ORDER BY id",
                                  (self.book_name, trade_id)).fetchall()
        return ([(r[0], Trade(r[1], float(r[2]), float(r[3]), float(r[4]), int(r[5]))) for r in rows],
                int(rows[-1][6]) if rows else trade_id)

    @contextmanager
    def update(self, opening: tuple[Mapping[str, FuturesPosition], float]) -> Iterator[PaperAccount]:
        """This book's stored account (opened at ``opening``, positions and cash, if it does not
        exist yet), to be changed by the block; its orders, trades and funding, the positions it
        set and its cash are then written, all in the transaction that read it (nothing is
        written when the block raises)."""
        with self._transaction() as cur:
            saved = _read(cur, self.book_name)
            if saved is None:
                self._write_account(cur, *opening)
                saved = dict(opening[0]), opening[1]
            acct = PaperAccount(saved[0], saved[1])
            acct.paid_to_ms = self.funding_paid_to()  # in this transaction: this connection's
            yield acct
            if acct.changed:
                self._write_change(cur, acct)

    def save_account(self, futures: Mapping[str, FuturesPosition], cash: float,
                     funding: Mapping[str, float] | None = None, time_ms: int = 0) -> None:
        """Overwrite this book's account, with funding payments (USD received by contract, at
        ``time_ms``) in the journal's funding table, in one transaction."""
        with self._transaction() as cur:
            self._write_account(cur, futures, cash)
            self._write_funding(cur, funding or {}, time_ms)

    def init_account(self, futures: Mapping[str, FuturesPosition], cash: float) -> None:
        """Open this book's paper account at ``futures`` and ``cash`` (no-op when it exists)."""
        with self._transaction() as cur:
            if cur.execute("SELECT 1 FROM paper_account WHERE book_name = ?",
                           (self.book_name,)).fetchone() is None:
                self._write_account(cur, futures, cash)

    def _transaction(self) -> AbstractContextManager[sqlite3.Cursor]:
        """A cursor inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any exception)."""
        return immediate(self._conn)

    def _write_change(self, cur: sqlite3.Cursor, acct: PaperAccount) -> None:
        """The orders and trades of ``acct``, its touched positions and its cash."""
        for symbol, state, trade in acct.fills:
            cur.execute("INSERT INTO paper_orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (state.client_id, self.book_name, state.exchange_id or "", symbol,
                         state.status.value, state.filled, state.average, state.fee,
                         trade.time_ms if trade else 0))
            if trade is not None:
                cur.execute("INSERT INTO paper_trades (book_name, symbol, order_id, contracts, price, "
                            "fee, time_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (self.book_name, symbol, trade.order_id, trade.contracts, trade.price,
                             trade.fee, trade.time_ms))
        for symbol in sorted(acct.touched):
            cur.execute("DELETE FROM paper_positions WHERE book_name = ? AND symbol = ?",
                        (self.book_name, symbol))
            if (pos := acct.futures.get(symbol)) is not None:
                cur.execute("INSERT INTO paper_positions VALUES (?, ?, ?, ?)",
                            (self.book_name, symbol, pos.contracts, pos.entry_price))
        cur.execute("UPDATE paper_account SET cash = ?, updated_ms = ? WHERE book_name = ?",
                    (acct.cash, int(time.time() * 1000), self.book_name))
        self._write_funding(cur, acct.funding, acct.funding_ms)
        if acct.paid_to_moved and acct.paid_to_ms is not None:
            cur.execute("INSERT OR REPLACE INTO paper_funding_clock VALUES (?, ?)",
                        (self.book_name, acct.paid_to_ms))

    def _write_funding(self, cur: sqlite3.Cursor, funding: Mapping[str, float], time_ms: int) -> None:
        cur.executemany("INSERT INTO funding (venue, book_name, symbol, amount, time_ms) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [(VENUE, self.book_name, sym, amount, time_ms) for sym, amount in funding.items()])

    def _write_account(self, cur: sqlite3.Cursor, futures: Mapping[str, FuturesPosition],
                       cash: float) -> None:
        cur.execute("INSERT OR REPLACE INTO paper_account VALUES (?, ?, ?)",
                    (self.book_name, cash, int(time.time() * 1000)))
        cur.execute("DELETE FROM paper_positions WHERE book_name = ?", (self.book_name,))
        cur.executemany("INSERT INTO paper_positions VALUES (?, ?, ?, ?)",
                        [(self.book_name, s, p.contracts, p.entry_price) for s, p in futures.items()])


def _read(cur: sqlite3.Cursor, book_name: str) -> tuple[dict[str, FuturesPosition], float] | None:
    """(positions, cash) of ``book_name``'s paper account, None when it has none."""
    row = cur.execute("SELECT cash FROM paper_account WHERE book_name = ?", (book_name,)).fetchone()
    if row is None:
        return None
    rows = cur.execute("SELECT symbol, contracts, entry FROM paper_positions WHERE "
                       "book_name = ? AND contracts != 0", (book_name,)).fetchall()
    return {r[0]: FuturesPosition(float(r[1]), float(r[2])) for r in rows}, float(row[0])
