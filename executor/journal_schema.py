"""The journal file's schema (its tables, version and the migration from schema 1) and the check of
a journal path made before any long work; :mod:`executor.journal` reads and writes the file.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from models.errors import FbrError, RefusedError

SCHEMA_VERSION = 2

#: Columns added in schema 2: each leg's signed position before its send and the send time (the
#: account-side evidence a reconcile compares against), and each plan's account and successor.
_V2_COLUMNS = (("orders", "position_before", "REAL"), ("orders", "sent_ms", "INTEGER"),
               ("plans", "account", "TEXT NOT NULL DEFAULT ''"), ("plans", "superseded_by", "TEXT"))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS plans (
    plan_id TEXT PRIMARY KEY, venue TEXT NOT NULL, book_name TEXT NOT NULL, created_ms INTEGER NOT NULL,
    status TEXT NOT NULL, plan_json TEXT NOT NULL, book_path TEXT NOT NULL DEFAULT '',
    account TEXT NOT NULL DEFAULT '', superseded_by TEXT);
CREATE TABLE IF NOT EXISTS orders (
    plan_id TEXT NOT NULL REFERENCES plans(plan_id), leg INTEGER NOT NULL, client_id TEXT NOT NULL UNIQUE,
    symbol TEXT NOT NULL, side TEXT NOT NULL, contracts REAL NOT NULL, reduce_only INTEGER NOT NULL,
    status TEXT NOT NULL, exchange_id TEXT, filled REAL NOT NULL DEFAULT 0, average REAL,
    fee REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT '',
    updated_ms INTEGER NOT NULL, position_before REAL, sent_ms INTEGER, PRIMARY KEY (plan_id, leg));
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT, plan_id TEXT NOT NULL, leg INTEGER NOT NULL,
    client_id TEXT NOT NULL, contracts REAL NOT NULL, price REAL, fee REAL NOT NULL,
    time_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS positions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, plan_id TEXT NOT NULL, venue TEXT NOT NULL,
    book_name TEXT NOT NULL, symbol TEXT NOT NULL, contracts REAL NOT NULL, entry_price REAL NOT NULL,
    cash REAL NOT NULL, time_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS funding (
    id INTEGER PRIMARY KEY AUTOINCREMENT, venue TEXT NOT NULL, book_name TEXT NOT NULL,
    symbol TEXT NOT NULL, amount REAL NOT NULL, time_ms INTEGER NOT NULL);
"""


class JournalError(FbrError):
    """The journal cannot be used as asked (unknown plan, newer schema, plan already there)."""


def check_journal_path(path: Path) -> None:
    """A journal path must be an SQLite file or not exist yet, under a folder (checked before any
    long work, so a bad --journal fails at once)."""
    if path.is_dir():
        raise JournalError(f"journal {path} is a folder. Fix: give --journal a file path, e.g. "
                           f"{path / 'journal.sqlite'}")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise JournalError(f"journal {path}: {parent} is a file, not a folder. Fix: give "
                               f"--journal a path under a folder")
    if path.is_file() and path.stat().st_size > 0:
        with path.open("rb") as f:
            head = f.read(16)
        if head != b"SQLite format 3\x00":
            raise JournalError(f"journal {path} is not an fbr journal (not an SQLite file). Fix: "
                               f"give --journal the file fbr execute wrote, or a new file name")


def _migrate(cur: sqlite3.Cursor) -> None:
    """Schema 1 -> 2: add the columns of :data:`_V2_COLUMNS` that are missing."""
    for table, column, decl in _V2_COLUMNS:
        have = {r[1] for r in cur.execute(f"PRAGMA table_info({table})").fetchall()}
        if column not in have:
            cur.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    cur.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))


def one_book(cur: sqlite3.Cursor, venue: str, book_name: str, book_path: str, account: str) -> None:
    """Refuse a plan of a book on ``account`` (on ``venue``) when this journal's latest plan on
    that account is another book's: another name (``book_name``), or the same name taken by
    default from two files of one stem in two folders (``book_path``, compared resolved: two
    ``book.toml`` without ``[book] name``; a name given in the file names the book wherever the
    file is). Each book reads the account's whole position on a
    contract and its whole wallet as its own, so two books on one account undo each other's
    hedges and count the same collateral twice. Raises :class:`RefusedError` naming both books
    and the fix (exit code 6)."""
    row = cur.execute("SELECT book_name, book_path FROM plans WHERE account = ? AND venue = ? "
                      "ORDER BY created_ms DESC, rowid DESC LIMIT 1", (account, venue)).fetchone()
    if row is None:
        return
    name, path = str(row[0]), str(row[1] or "")
    if name == book_name and not _default_named_apart(name, path, book_path):
        return
    other = f"{name!r}" + (f" ({path})" if path else "")
    this = f"{book_name!r}" + (f" ({book_path})" if book_path else "")
    raise RefusedError(
        f"this {venue} account is traded by book {other} in this journal; book {this} would read "
        f"that book's positions and wallet as its own and trade against it. Fix: give each book "
        f"an account (or sub-account) of its own; if book {name!r} no longer trades this account "
        f"(retired, renamed or moved), start a new journal (--journal)")


def check_one_book(path: Path, venue: str, book_name: str, book_path: str, account: str) -> None:
    """:func:`one_book` on the journal file at ``path`` before anything else opens it (a loop's
    start-up): nothing to refuse when the file or its plans table does not exist yet."""
    if not path.is_file():
        return
    with closing(sqlite3.connect(str(path), timeout=30.0)) as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'plans'").fetchone() is None:
            return
        one_book(conn.cursor(), venue, book_name, book_path, account)


def _default_named_apart(name: str, path: str, book_path: str) -> bool:
    """Whether two plans of the book name ``name`` come from two different files (resolved paths,
    both known) whose stem is that name: the name the loader gives a book without ``[book] name``,
    so they are two books."""
    if not path or not book_path or os.path.realpath(path) == os.path.realpath(book_path):
        return False
    return Path(path).stem == name == Path(book_path).stem
