"""A journal on storage that cannot be written (a full disk) is called that, not "not an fbr
journal" with the fix "give a new file name" (which fails the same way on the same disk); a file
that is not SQLite still is. The full disk is SQLite's own: the connection may not grow the file
(PRAGMA max_page_count), so the error is SQLITE_FULL as on a real full disk."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from executor.journal import Journal
from executor.journal_schema import JournalError


def test_a_new_journal_on_a_full_disk_says_it_cannot_be_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = sqlite3.connect

    def full_disk(*a: Any, **k: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = real(*a, **k)
        conn.execute("PRAGMA max_page_count = 1")
        return conn

    monkeypatch.setattr(sqlite3, "connect", full_disk)
    with pytest.raises(JournalError) as err:
        Journal(tmp_path / "j.sqlite")
    msg = str(err.value)
    assert "cannot be written" in msg and "full" in msg and "not an fbr journal" not in msg


def test_a_file_that_is_not_sqlite_is_not_an_fbr_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    path.write_bytes(b"this is a text file, not a database" * 100)
    with pytest.raises(JournalError, match="not an fbr journal"):
        Journal(path)


def test_a_journal_another_process_holds_is_called_in_use(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Another connection holds the write lock past the busy timeout (SQLITE_BUSY, code 5): the
    journal is in use, not unwritable; the fix is to wait for the other fbr process or stop it,
    not to free disk space (a review of this session's diff)."""
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    real = sqlite3.connect

    def fast(*a: Any, **k: Any) -> sqlite3.Connection:  # the 30 s busy timeout, shortened
        k["timeout"] = 0.2
        conn: sqlite3.Connection = real(*a, **k)
        return conn

    monkeypatch.setattr(sqlite3, "connect", fast)
    try:
        with pytest.raises(JournalError) as err:
            Journal(path)
    finally:
        other.execute("ROLLBACK")
        other.close()
    msg = str(err.value)
    assert "in use by another process" in msg and "free disk space" not in msg


def test_an_error_without_sqlites_code_is_not_an_fbr_journal(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A DatabaseError raised without SQLite's result code (no ``sqlite_errorcode``: raised by a
    driver layer, not by SQLite) is read as code 0: neither busy nor storage, so the file is
    named as not an fbr journal."""
    def broken(self: Journal) -> None:
        raise sqlite3.DatabaseError("file is not a database")

    monkeypatch.setattr(Journal, "_init_schema", broken)
    with pytest.raises(JournalError, match="is not an fbr journal"):
        Journal(tmp_path / "j.sqlite")


@pytest.mark.parametrize(("error", "code", "busy"), [
    (sqlite3.OperationalError, 5, True), (sqlite3.OperationalError, 6, True),
    (sqlite3.OperationalError, 5 | 256, True),  # SQLITE_BUSY_RECOVERY: an extended BUSY code
    (sqlite3.OperationalError, 1, False), (sqlite3.OperationalError, 13, False),
    (sqlite3.OperationalError, 4, False), (sqlite3.OperationalError, 7, False),
    (sqlite3.DatabaseError, 5, False)])
def test_journal_busy_is_busy_or_locked_only(error: type[sqlite3.Error], code: int,
                                             busy: bool) -> None:
    """SQLite's BUSY (5) and LOCKED (6), extended codes included (the low byte), on an
    OperationalError: a journal another process holds; any other code or class is not."""
    from executor.journal import journal_busy

    exc = error("database is locked")
    exc.sqlite_errorcode = code
    assert journal_busy(exc) is busy


def test_journal_busy_without_a_code_is_not_busy() -> None:
    """An OperationalError raised by Python code carries no SQLite code: not busy."""
    from executor.journal import journal_busy

    assert journal_busy(sqlite3.OperationalError("database is locked")) is False
    assert journal_busy(RuntimeError("database is locked")) is False
