"""The journal file's transactions (executor.sqlite_tx): a write block commits on success and rolls
back on any exception; a read block nests inside a transaction already begun and ends its own."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from executor.sqlite_tx import immediate, reading


def _conn(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    return conn


def test_immediate_commits_or_rolls_back(tmp_path: Path) -> None:
    conn, other = _conn(tmp_path / "j.sqlite"), _conn(tmp_path / "j.sqlite")
    with immediate(conn) as cur:
        cur.execute("INSERT INTO t VALUES (1)")
        assert conn.in_transaction
    assert other.execute("SELECT COUNT(*) FROM t").fetchone() == (1,)
    with pytest.raises(KeyboardInterrupt), immediate(conn) as cur:
        cur.execute("INSERT INTO t VALUES (2)")
        raise KeyboardInterrupt
    assert not conn.in_transaction
    assert other.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_reading_begins_and_ends_its_own_or_joins_one(tmp_path: Path) -> None:
    conn = _conn(tmp_path / "j.sqlite")
    with reading(conn):
        assert conn.in_transaction
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
    assert not conn.in_transaction
    with immediate(conn) as cur:
        with reading(conn):  # joins the write transaction, ends nothing
            cur.execute("INSERT INTO t VALUES (3)")
        assert conn.in_transaction
    assert conn.execute("SELECT x FROM t").fetchall() == [(3,)]
