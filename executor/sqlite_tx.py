"""Transactions on fbr's journal file, shared by the journal and the paper exchange's store (both
open it with ``isolation_level=None``: autocommit unless a transaction is begun here)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Cursor]:
    """A cursor inside ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception: the write
    lock is taken at the start, so two writers' read-modify-write never interleave."""
    cur = conn.cursor()
    cur.execute("BEGIN IMMEDIATE")
    try:
        yield cur
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    cur.execute("COMMIT")


@contextmanager
def reading(conn: sqlite3.Connection) -> Iterator[None]:
    """The reads inside see one committed state (a read transaction, ``BEGIN`` ... ``COMMIT``;
    inside a transaction already, that one): another process's write cannot land between two of
    them."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")
