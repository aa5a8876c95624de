"""The journal's rows the dashboard shows (``/history``, ``/orders``, ``/run``), read through a
read-only SQLite connection (a page never writes the journal).

Times are ISO 8601 UTC strings, as in every fbr JSON document (README, "JSON output": keys ending
in ``_ms`` are durations); the journal stores epoch milliseconds (``time_ms``, ``updated_ms``),
converted here. SQLite's errors on a damaged file become a :class:`executor.journal_schema.JournalError`
naming the file (the page shows it, as the Book page shows the journal's own errors).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict, TypeVar, cast

from executor.journal_schema import JournalError
from fbr.console import iso_utc

_Row = TypeVar("_Row")


class CycleRow(TypedDict):
    """One ``fbr run`` cycle (USD, annualised TE and ratios as fractions, ISO time)."""

    time: str
    reason: str
    action: str
    nav: float | None
    te_before: float | None
    te_after: float | None
    turnover_usd: float
    margin_ratio: float | None
    max_drift: float | None
    message: str


class FillRow(TypedDict):
    """One fill of a journalled order: contracts, price (USD), fee (USD), time (ISO 8601 UTC)."""

    time: str
    symbol: str
    side: str
    contracts: float
    price: float | None
    fee: float
    plan_id: str


class FundingRow(TypedDict):
    """One funding payment (USD, > 0 received) at ``time`` (ISO 8601 UTC)."""

    time: str
    symbol: str
    amount: float


class PositionRow(TypedDict):
    """A position snapshot after a plan (ISO 8601 UTC time): contracts and the wallet cash (USD)."""

    time: str
    symbol: str
    contracts: float
    cash: float
    plan_id: str


class History(TypedDict):
    """What ``/history`` shows."""

    cycles: list[CycleRow]
    fills: list[FillRow]
    funding: list[FundingRow]
    positions: list[PositionRow]


class OrderRow(TypedDict):
    """One journalled leg with its fill (contracts, USD; ``updated``: ISO 8601 UTC)."""

    plan_id: str
    venue: str
    leg: int
    client_id: str
    symbol: str
    side: str
    contracts: float
    status: str
    filled: float
    average: float | None
    fee: float
    message: str
    updated: str


class AlertRow(TypedDict):
    """One alert the loop sent."""

    time: str
    kind: str
    severity: str
    title: str
    text: str


#: a plan of this account (its key), or one journalled before plans kept their account (its venue
#: and book name): the parameters (account, venue, book name)
PLAN_OF = "(p.account = ? OR (p.account = '' AND p.venue = ? AND p.book_name = ?))"


def empty_history() -> History:
    """The history of a journal that does not exist yet."""
    return {"cycles": [], "fills": [], "funding": [], "positions": []}


@contextmanager
def reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the journal ``path``; SQLite's errors (a damaged file) as one
    :class:`JournalError` naming the file and the fix."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as exc:
        raise _unreadable(path, exc) from None
    try:
        yield conn
    except sqlite3.DatabaseError as exc:
        raise _unreadable(path, exc) from None
    finally:
        conn.close()


def _unreadable(path: Path, exc: sqlite3.Error) -> JournalError:
    """The message of a journal SQLite cannot read."""
    return JournalError(f"journal {path} is not an fbr journal or is damaged (SQLite says: {exc}). "
                        f"Fix: give fbr serve --journal the file fbr execute and fbr run write, "
                        f"or restore it from a backup")


def rows(conn: sqlite3.Connection, sql: str, args: tuple[int | str, ...] = (), *,
         kind: type[_Row], times: tuple[str, ...] = ()) -> list[_Row]:
    """Rows as ``kind`` dicts, one key per selected column, the columns ``times`` (epoch ms) as
    ISO 8601 UTC strings (an absent table, e.g. before the first ``fbr run``, gives none)."""
    try:
        cur = conn.execute(sql, args)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    names = [d[0] for d in cur.description]
    out: list[_Row] = []
    for values in cur.fetchall():
        row: dict[str, object] = dict(zip(names, values, strict=True))
        for key in times:
            ms = row[key]
            row[key] = iso_utc(float(ms)) if isinstance(ms, int | float) else None
        out.append(cast(_Row, row))
    return out


def history_rows(path: Path, account: str, venue: str, name: str) -> History:
    """This account's loop cycles, and this book's fills, funding and position snapshots on
    ``venue``, from the journal ``path``."""
    with reading(path) as conn:
        return {"cycles": rows(conn, "SELECT time, reason, action, nav, te_before, te_after, "
                                     "turnover_usd, margin_ratio, max_drift, message FROM run_cycles "
                                     "WHERE account = ? ORDER BY id", (account,), kind=CycleRow),
                "fills": rows(conn, "SELECT f.time_ms AS time, o.symbol, o.side, f.contracts, "
                                    "f.price, f.fee, f.plan_id FROM fills f JOIN orders o ON "
                                    "o.plan_id = f.plan_id AND o.leg = f.leg JOIN plans p ON "
                                    f"p.plan_id = f.plan_id WHERE {PLAN_OF} ORDER BY f.id",
                              (account, venue, name), kind=FillRow, times=("time",)),
                "funding": rows(conn, "SELECT time_ms AS time, symbol, amount FROM funding WHERE "
                                      "venue = ? AND book_name = ? ORDER BY time_ms",
                                (venue, name), kind=FundingRow, times=("time",)),
                "positions": rows(conn, "SELECT time_ms AS time, symbol, contracts, cash, plan_id "
                                        "FROM positions WHERE venue = ? AND book_name = ? ORDER BY id",
                                  (venue, name), kind=PositionRow, times=("time",))}


def order_rows(path: Path, account: str, venue: str, name: str, limit: int) -> list[OrderRow]:
    """The latest ``limit`` orders of this account's plans (newest first) with their fills."""
    with reading(path) as conn:
        return rows(conn, "SELECT o.plan_id, p.venue, o.leg, o.client_id, o.symbol, o.side, "
                          "o.contracts, o.status, o.filled, o.average, o.fee, o.message, "
                          "o.updated_ms AS updated FROM orders o JOIN plans p ON p.plan_id = "
                          f"o.plan_id WHERE {PLAN_OF} ORDER BY o.updated_ms DESC, o.leg LIMIT ?",
                    (account, venue, name, limit), kind=OrderRow, times=("updated",))


def alert_rows(path: Path, account: str, limit: int = 50) -> list[AlertRow]:
    """The latest ``limit`` alerts of this account's loop (newest first)."""
    with reading(path) as conn:
        return rows(conn, "SELECT time, kind, severity, title, text FROM run_alerts WHERE "
                          "account = ? ORDER BY id DESC LIMIT ?", (account, limit), kind=AlertRow)
