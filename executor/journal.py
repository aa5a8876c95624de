"""The order journal: SQLite with plans, orders, fills, positions and funding, one book's per account
(:func:`executor.journal_schema.one_book`); money in USD, contracts, ms (UTC); never an API key.

Every state change is one transaction, written *before* the action it announces when that can fail
half-way (a leg is ``sending`` before its order goes out): after a crash ``resume`` finishes the
plan sending no leg twice. The schema is versioned (``meta.schema_version``)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor.base import OrderState, OrderStatus
from executor.journal_schema import (
    _SCHEMA,
    SCHEMA_VERSION,
    JournalError,
    _migrate,
    check_journal_path,
    one_book,
)
from executor.plan import OrderLeg, OrderPlan
from executor.safety import redact
from executor.sqlite_tx import immediate


@dataclass(frozen=True)
class JournalOrder:
    """One leg's row."""

    plan_id: str
    leg: int
    client_id: str
    symbol: str
    side: str
    contracts: float
    reduce_only: bool
    status: OrderStatus
    exchange_id: str | None
    filled: float
    average: float | None
    fee: float
    attempts: int
    message: str
    position_before: float | None = None
    sent_ms: int | None = None


@dataclass(frozen=True)
class LastRebalance:
    """The last rebalance of a venue and book: plan id, time (ms, UTC) and whether it completed."""

    plan_id: str
    time_ms: int
    completed: bool


def now_ms() -> int:
    """Current UTC time in ms since the epoch."""
    return int(time.time() * 1000)


#: SQLite's primary result codes of storage that cannot be written or read (PERM, READONLY, IOERR,
#: FULL, CANTOPEN): the file may well be an fbr journal.
_STORAGE_ERRORS = frozenset({3, 8, 10, 13, 14})
#: ... and of a journal another connection holds (BUSY, LOCKED) past the 30 s busy timeout.
_BUSY_ERRORS = frozenset({5, 6})


def journal_busy(exc: BaseException) -> bool:
    """True when ``exc`` is SQLite's answer for a journal another connection held past the busy
    timeout (BUSY, LOCKED): a wait, not a fault of the journal."""
    return isinstance(exc, sqlite3.OperationalError) and \
        getattr(exc, "sqlite_errorcode", 0) & 0xFF in _BUSY_ERRORS


class Journal:
    """A SQLite journal file. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        check_journal_path(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"journal {self.path} cannot be opened ({exc}). Fix: give --journal a "
                               f"writable file path (a new name creates a journal)") from None
        try:
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code in _BUSY_ERRORS:
                raise JournalError(f"journal {self.path} is in use by another process (SQLite "
                                   f"says: {exc}). Fix: wait for the other fbr run or resume on "
                                   f"it to finish, or stop it, and run again") from None
            if code in _STORAGE_ERRORS:
                raise JournalError(f"journal {self.path} cannot be written (SQLite says: {exc}). "
                                   f"Fix: free disk space, or make the file and its folder "
                                   f"writable, and run again") from None
            raise JournalError(f"journal {self.path} is not an fbr journal (SQLite says: {exc}). "
                               f"Fix: give --journal the file fbr execute wrote, or a new file "
                               f"name") from None
        except BaseException:
            self._conn.close()
            raise

    def _init_schema(self) -> None:
        self._conn.executescript(_SCHEMA)
        with self._tx() as cur:
            row = cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                cur.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise JournalError(f"journal {self.path} has schema version {row[0]}, newer than this "
                                   f"fbr ({SCHEMA_VERSION}). Fix: upgrade fbr or use another --journal")
            elif int(row[0]) < SCHEMA_VERSION:
                _migrate(cur)

    # --- plumbing -----------------------------------------------------------------------------
    def _tx(self) -> AbstractContextManager[sqlite3.Cursor]:
        """One transaction: committed on success, rolled back on any error."""
        return immediate(self._conn)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The file's schema version."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0])

    # --- plans --------------------------------------------------------------------------------
    def record_plan(self, plan: OrderPlan, book_path: str = "", account: str = "") -> None:
        """The plan (and the book file it came from) and one ``planned`` row per leg, in one
        transaction; every earlier open plan of the same ``account`` is marked superseded by it."""
        t = now_ms()
        with self._tx() as cur:
            if cur.execute("SELECT 1 FROM plans WHERE plan_id = ?", (plan.plan_id,)).fetchone():
                raise JournalError(f"plan {plan.plan_id} is already in the journal. Fix: "
                                   f"`fbr execute --resume {plan.plan_id}` to finish it")
            if account:
                one_book(cur, plan.venue, plan.book_name, book_path, account)
                cur.execute("UPDATE plans SET status = 'superseded', superseded_by = ? WHERE "
                            "account = ? AND status = 'open'", (plan.plan_id, account))
            cur.execute("INSERT INTO plans (plan_id, venue, book_name, created_ms, status, plan_json, "
                        "book_path, account) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (plan.plan_id, plan.venue, plan.book_name, t, "open",
                         json.dumps(plan.to_dict()), book_path, account))
            self._insert_legs(cur, plan.plan_id, plan.legs, t)

    @staticmethod
    def _insert_legs(cur: sqlite3.Cursor, plan_id: str, legs: Sequence[OrderLeg], t: int) -> None:
        cur.executemany(
            "INSERT INTO orders (plan_id, leg, client_id, symbol, side, contracts, reduce_only, "
            "status, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(plan_id, leg.index, leg.client_id, leg.symbol, leg.side.value, leg.contracts,
              int(leg.reduce_only), OrderStatus.PLANNED.value, t) for leg in legs])

    def add_legs(self, plan_id: str, legs: Sequence[OrderLeg]) -> None:
        """Legs re-planned from the account's positions (new indices and client ids), ``planned``."""
        with self._tx() as cur:
            self._insert_legs(cur, plan_id, legs, now_ms())

    def open_plans(self, account: str) -> list[str]:
        """Plan ids of this account still open, oldest first."""
        rows = self._conn.execute("SELECT plan_id FROM plans WHERE account = ? AND status = 'open' "
                                  "ORDER BY created_ms, rowid", (account,)).fetchall()
        return [str(r[0]) for r in rows]

    def plan_ids(self) -> list[str]:
        """Every plan id in the journal, oldest first."""
        return [str(r[0]) for r in self._conn.execute("SELECT plan_id FROM plans ORDER BY rowid")]

    def successor(self, plan_id: str) -> str | None:
        """The plan that superseded this one, or a newer plan of the same account (None if none)."""
        row = self._conn.execute("SELECT superseded_by, account, created_ms, rowid FROM plans WHERE "
                                 "plan_id = ?", (plan_id,)).fetchone()
        if row is None:
            raise JournalError(f"plan {plan_id!r} is not in journal {self.path}")
        if row[0]:
            return str(row[0])
        if not row[1]:
            return None
        newer = self._conn.execute("SELECT plan_id FROM plans WHERE account = ? AND rowid > ? "
                                   "ORDER BY rowid LIMIT 1", (row[1], row[3])).fetchone()
        return None if newer is None else str(newer[0])

    def set_silence(self, account: str, until_ms: int) -> None:
        """Record that the exchange asked ``account``'s runs for silence until ``until_ms``."""
        with self._tx() as cur:
            cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                        (f"silence:{account}", str(int(until_ms))))

    def silence_until(self, account: str) -> int | None:
        """The time (ms) until which the exchange asked ``account``'s runs for silence, if any."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?",
                                 (f"silence:{account}",)).fetchone()
        return None if row is None else int(row[0])

    def plan_account(self, plan_id: str) -> str:
        """The account key a plan was recorded for ("" when recorded without one)."""
        row = self._conn.execute("SELECT account FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()
        if row is None:
            raise JournalError(f"plan {plan_id!r} is not in journal {self.path}")
        return str(row[0] or "")

    def plan(self, plan_id: str) -> OrderPlan:
        """The stored plan (a clear error when unknown)."""
        row = self._conn.execute("SELECT plan_json FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()
        if row is None:
            raise JournalError(f"plan {plan_id!r} is not in journal {self.path}. Fix: give a plan id "
                               f"that `fbr execute` printed, and the same --journal")
        return OrderPlan.from_dict(json.loads(row[0]))

    def book_path(self, plan_id: str) -> str:
        """The book file the plan was made from ('' when not recorded)."""
        row = self._conn.execute("SELECT book_path FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()
        if row is None:
            raise JournalError(f"plan {plan_id!r} is not in journal {self.path}")
        return str(row[0])

    def fills_with_legs(self, plan_id: str) -> list[tuple[str, float, float, float]]:
        """(book symbol, signed contracts, price, fee) per fill of a plan, in fill order."""
        rows = self._conn.execute(
            "SELECT o.symbol, o.side, f.contracts, f.price, f.fee FROM fills f JOIN orders o "
            "ON o.plan_id = f.plan_id AND o.leg = f.leg WHERE f.plan_id = ? ORDER BY f.id",
            (plan_id,)).fetchall()
        return [(r[0], float(r[2]) if r[1] == "buy" else -float(r[2]), float(r[3] or 0.0), float(r[4]))
                for r in rows]

    def plan_status(self, plan_id: str) -> str:
        """open | done | superseded | stopped | refused (an exact run's, its account moved)."""
        row = self._conn.execute("SELECT status FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()
        if row is None:
            raise JournalError(f"plan {plan_id!r} is not in journal {self.path}")
        return str(row[0])

    def close_plan(self, plan_id: str, status: str = "done") -> None:
        """Mark the plan finished."""
        with self._tx() as cur:
            cur.execute("UPDATE plans SET status = ? WHERE plan_id = ?", (status, plan_id))

    def last_rebalance(self, venue: str, book_name: str) -> LastRebalance | None:
        """The last rebalance of this venue and book: its latest journalled plan (one refused before
        any order, its account moved, is none); the time is when
        that plan completed (its closing position snapshot) when done, else when it was created
        (an interrupted plan may already have moved positions)."""
        row = self._conn.execute(
            "SELECT p.plan_id, p.created_ms, p.status, (SELECT MAX(s.time_ms) FROM positions s "
            "WHERE s.plan_id = p.plan_id) FROM plans p WHERE p.venue = ? AND p.book_name = ? "
            "AND p.status != 'refused' ORDER BY p.created_ms DESC, p.rowid DESC LIMIT 1",
            (venue, book_name)).fetchone()
        if row is None:
            return None
        done = row[2] == "done"
        t = int(row[3]) if done and row[3] is not None else int(row[1])
        return LastRebalance(str(row[0]), t, done)

    # --- orders -------------------------------------------------------------------------------
    def orders(self, plan_id: str) -> list[JournalOrder]:
        """Every leg of a plan, by leg index."""
        rows = self._conn.execute(
            "SELECT plan_id, leg, client_id, symbol, side, contracts, reduce_only, status, exchange_id, "
            "filled, average, fee, attempts, message, position_before, sent_ms FROM orders "
            "WHERE plan_id = ? ORDER BY leg", (plan_id,)).fetchall()
        return [JournalOrder(r[0], int(r[1]), r[2], r[3], r[4], float(r[5]), bool(r[6]),
                             OrderStatus(r[7]), r[8], float(r[9]), r[10], float(r[11]), int(r[12]),
                             r[13], None if r[14] is None else float(r[14]),
                             None if r[15] is None else int(r[15])) for r in rows]

    def sent_between(self, account: str, since_ms: int, until_ms: int) -> list[JournalOrder]:
        """Every leg of ``account``'s plans sent in [since_ms, until_ms) (``sent_ms``, ms UTC)."""
        rows = self._conn.execute(
            "SELECT o.plan_id, o.leg FROM orders o JOIN plans p ON p.plan_id = o.plan_id "
            "WHERE p.account = ? AND o.sent_ms >= ? AND o.sent_ms < ? ORDER BY o.sent_ms, o.rowid",
            (account, since_ms, until_ms)).fetchall()
        return [self.order(str(r[0]), int(r[1])) for r in rows]

    def order(self, plan_id: str, leg: int) -> JournalOrder:
        """One leg's row."""
        for o in self.orders(plan_id):
            if o.leg == leg:
                return o
        raise JournalError(f"plan {plan_id} has no leg {leg}")

    def mark_sending(self, plan_id: str, leg: int, position_before: float | None = None,
                     sent_ms: int | None = None) -> int:
        """Announce a send (before it happens): status ``sending``, attempts + 1, the contract's
        signed position read just before (contracts) and the send time (ms, UTC); returns
        attempts."""
        t = now_ms()
        with self._tx() as cur:
            cur.execute("UPDATE orders SET status = ?, attempts = attempts + 1, updated_ms = ?, "
                        "position_before = ?, sent_ms = ? WHERE plan_id = ? AND leg = ?",
                        (OrderStatus.SENDING.value, t, position_before,
                         t if sent_ms is None else sent_ms, plan_id, leg))
            row = cur.execute("SELECT attempts FROM orders WHERE plan_id = ? AND leg = ?",
                              (plan_id, leg)).fetchone()
        return int(row[0])

    def set_status(self, plan_id: str, leg: int, status: OrderStatus, message: str = "") -> None:
        """A status change without fills (rejected, unknown, skipped)."""
        with self._tx() as cur:
            cur.execute("UPDATE orders SET status = ?, message = ?, updated_ms = ? "
                        "WHERE plan_id = ? AND leg = ?",
                        (status.value, redact(message), now_ms(), plan_id, leg))

    def record_state(self, plan_id: str, leg: int, state: OrderState, message: str = "") -> None:
        """The exchange's view of the order, plus a fill row for any newly filled quantity (one
        transaction)."""
        t = now_ms()
        with self._tx() as cur:
            row = cur.execute("SELECT filled, fee FROM orders WHERE plan_id = ? AND leg = ?",
                              (plan_id, leg)).fetchone()
            prev_filled, prev_fee = float(row[0]), float(row[1])
            cur.execute("UPDATE orders SET status = ?, exchange_id = ?, filled = ?, average = ?, fee = ?, "
                        "message = ?, updated_ms = ? WHERE plan_id = ? AND leg = ?",
                        (state.status.value, state.exchange_id, state.filled, state.average, state.fee,
                         redact(message), t, plan_id, leg))
            if state.filled > prev_filled + 1e-15:
                cur.execute("INSERT INTO fills (plan_id, leg, client_id, contracts, price, fee, time_ms) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (plan_id, leg, state.client_id, state.filled - prev_filled, state.average,
                             state.fee - prev_fee, t))

    def fills(self, plan_id: str) -> list[dict[str, Any]]:
        """Fill rows of a plan."""
        rows = self._conn.execute("SELECT leg, client_id, contracts, price, fee FROM fills WHERE "
                                  "plan_id = ? ORDER BY id", (plan_id,)).fetchall()
        return [{"leg": r[0], "client_id": r[1], "contracts": r[2], "price": r[3], "fee": r[4]}
                for r in rows]

    # --- positions and funding ----------------------------------------------------------------
    def record_positions(self, plan_id: str, venue: str, book_name: str,
                         positions: Mapping[str, tuple[float, float]], cash: float) -> None:
        """A snapshot of positions {symbol: (contracts, entry price)} and wallet cash (USD)."""
        t = now_ms()
        rows = [(plan_id, venue, book_name, s, q, e, cash, t) for s, (q, e) in positions.items()]
        if not rows:
            rows = [(plan_id, venue, book_name, "", 0.0, 0.0, cash, t)]
        with self._tx() as cur:
            cur.executemany("INSERT INTO positions (plan_id, venue, book_name, symbol, contracts, "
                            "entry_price, cash, time_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def latest_positions(self, venue: str,
                         book_name: str) -> tuple[dict[str, tuple[float, float]], float] | None:
        """The last snapshot for this venue and book: ({symbol: (contracts, entry)}, cash)."""
        row = self._conn.execute("SELECT time_ms, plan_id FROM positions WHERE venue = ? AND book_name = ? "
                                 "ORDER BY id DESC LIMIT 1", (venue, book_name)).fetchone()
        if row is None:
            return None
        rows = self._conn.execute("SELECT symbol, contracts, entry_price, cash FROM positions WHERE "
                                  "venue = ? AND book_name = ? AND plan_id = ? AND time_ms = ?",
                                  (venue, book_name, row[1], row[0])).fetchall()
        pos = {r[0]: (float(r[1]), float(r[2])) for r in rows if r[0]}
        return pos, float(rows[0][3])

    def record_funding(self, venue: str, book_name: str, symbol: str, amount: float,
                       time_ms: int) -> None:
        """A funding payment (USD, > 0 received)."""
        with self._tx() as cur:
            cur.execute("INSERT INTO funding (venue, book_name, symbol, amount, time_ms) "
                        "VALUES (?, ?, ?, ?, ?)", (venue, book_name, symbol, amount, time_ms))

    def record_funding_once(self, venue: str, book_name: str, symbol: str, amount: float,
                            time_ms: int) -> bool:
        """A funding payment (USD, > 0 received) unless this venue, book, contract and settlement
        time already has one (re-reading the exchange's history is idempotent); True if written."""
        with self._tx() as cur:
            if cur.execute("SELECT 1 FROM funding WHERE venue = ? AND book_name = ? AND symbol = ? "
                           "AND time_ms = ?", (venue, book_name, symbol, time_ms)).fetchone():
                return False
            cur.execute("INSERT INTO funding (venue, book_name, symbol, amount, time_ms) "
                        "VALUES (?, ?, ?, ?, ?)", (venue, book_name, symbol, amount, time_ms))
        return True

    def funding_since(self, venue: str, book_name: str, since_ms: int) -> dict[str, float]:
        """Funding (USD, > 0 received) per symbol since ``since_ms``."""
        rows = self._conn.execute("SELECT symbol, SUM(amount) FROM funding WHERE venue = ? AND "
                                  "book_name = ? AND time_ms >= ? GROUP BY symbol",
                                  (venue, book_name, since_ms)).fetchall()
        return {r[0]: float(r[1]) for r in rows}
