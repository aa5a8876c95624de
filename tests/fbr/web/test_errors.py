"""Bad state under a running dashboard (a review): every page answers with the one message that
names the file or setting and the fix, as the Book page does (HTTP 422; ``{"status": "error",
"error": ...}`` under ``/api``), never a bare HTTP 500: a journal that is not one or is damaged, an
exchange account without keys, the book file moved away, a health file cut short."""

from __future__ import annotations

import html
import shutil
import sqlite3
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from web_world import ALERTS, ROOT, World

from executor.journal import Journal
from fbr.execute_wiring import ExchangeChoice
from fbr.web.app import create_app
from fbr.web.state import DashboardState, ServeConfig

SEED = ROOT / "examples" / "seed_example_1.toml"
JOURNAL_PAGES = ("/history", "/orders", "/run")
JOURNAL_APIS = ("/api/history", "/api/orders", "/api/run")
BOOK_PAGES = ("/", "/plan")
BOOK_APIS = ("/api/status", "/api/plan")


def serve(**config: object) -> TestClient:
    """A dashboard client over ``ServeConfig(**config)`` (a server exception is an HTTP 500, as
    under uvicorn, not a test error)."""
    state = DashboardState(ServeConfig(**config))  # type: ignore[arg-type]
    return TestClient(create_app(state), base_url="http://127.0.0.1:8765",
                      raise_server_exceptions=False)


def seed_book(tmp_path: Path) -> Path:
    """A copy of examples/seed_example_1.toml."""
    book = tmp_path / "book.toml"
    shutil.copy(SEED, book)
    return book


def error_of(c: TestClient, path: str) -> str:
    """The message a path answers with: HTTP 422, the error page's one paragraph or the API's
    error document."""
    r = c.get(path)
    assert r.status_code == 422, (path, r.status_code, r.text[:300])
    if path.startswith("/api/"):
        doc = r.json()
        assert set(doc) == {"status", "error"} and doc["status"] == "error", doc
        return str(doc["error"])
    start = r.text.index('<p class="error">') + len('<p class="error">')
    return html.unescape(r.text[start:r.text.index("</p>", start)])


def test_a_file_that_is_not_a_journal_is_named_on_every_page(tmp_path: Path) -> None:
    """--journal names a text file: every journal page says what the Book page says ("journal
    <path> is not an fbr journal ... Fix: ..."); they answered 500."""
    journal = tmp_path / "j.sqlite"
    journal.write_text("not an sqlite file\n" * 50)
    c = serve(book=seed_book(tmp_path), journal=journal)
    book = error_of(c, "/")
    assert f"journal {journal} is not an fbr journal" in book and "Fix:" in book
    for path in (*JOURNAL_PAGES, *JOURNAL_APIS):
        assert error_of(c, path) == book, path


def _damage(journal: Path, table: str) -> None:
    """Overwrite the root page of ``table`` with 0xff bytes (the header and the schema page stay
    intact, so the journal still opens)."""
    conn = sqlite3.connect(journal)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = DELETE")
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    finally:
        conn.close()
    data = bytearray(journal.read_bytes())
    data[(root - 1) * size:root * size] = b"\xff" * size
    journal.write_bytes(bytes(data))


@pytest.mark.parametrize(("table", "paths"), [("fills", ("/history", "/api/history")),
                                              ("orders", ("/orders", "/api/orders")),
                                              ("run_alerts", ("/run", "/api/run"))])
def test_a_damaged_journal_table_is_named(world: World, tmp_path: Path, table: str,
                                          paths: tuple[str, ...]) -> None:
    """A journal that opens but whose ``table`` cannot be read (SQLite: "database disk image is
    malformed"): the pages reading it name the journal and the fix (they answered 500); the Book
    page, which does not read that table, still answers."""
    journal = tmp_path / "journal.sqlite"
    shutil.copy(world.journal, journal)
    _damage(journal, table)
    book = tmp_path / "book.toml"
    shutil.copy(world.book, book)
    c = serve(book=book, journal=journal, state_dir=world.state_dir)
    for path in paths:
        msg = error_of(c, path)
        assert f"journal {journal} is not an fbr journal or is damaged" in msg, msg
        assert "malformed" in msg and "Fix:" in msg
    assert c.get("/").status_code == 200


def test_an_exchange_account_without_keys_is_named_on_every_page(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fbr serve --exchange binanceusdm without keys: History, Orders and Run say what the Book
    page says (which variables to set); they answered 500. No request leaves the machine (the
    gateway stops before any network call)."""
    for name in ("FBR_BINANCEUSDM_API_KEY", "FBR_BINANCEUSDM_SECRET"):
        monkeypatch.delenv(name, raising=False)
    journal = tmp_path / "j.sqlite"
    Journal(journal).close()  # an empty, valid journal
    c = serve(book=seed_book(tmp_path), journal=journal, exchange=ExchangeChoice.BINANCEUSDM)
    book = error_of(c, "/")
    assert "FBR_BINANCEUSDM_API_KEY" in book
    for path in (*JOURNAL_PAGES, *JOURNAL_APIS):
        assert error_of(c, path) == book, path


def test_the_book_file_moved_away_while_serving(tmp_path: Path) -> None:
    """The book file is renamed while the server runs: the Book and Plan pages and their APIs
    give the loader's message ("book file ... does not exist. Fix: ..."), as /api/whatif does
    (they answered 500), the header falls back to the file's name; the file back, they answer."""
    book = seed_book(tmp_path)
    c = serve(book=book, journal=tmp_path / "none.sqlite")
    assert c.get("/api/status").status_code == 200
    book.rename(tmp_path / "moved.toml")
    whatif = error_of(c, "/api/whatif?shock=BTC%3D-30%25")
    assert str(book) in whatif and "does not exist" in whatif and "Fix:" in whatif
    for path in (*BOOK_PAGES, *BOOK_APIS):
        assert error_of(c, path) == whatif, path
    assert "<title>fbr · Error · book.toml</title>" in c.get("/").text
    (tmp_path / "moved.toml").rename(book)
    for path in (*BOOK_PAGES, *BOOK_APIS):
        assert c.get(path).status_code == 200, path


@pytest.mark.parametrize("text", ['{"status": "runn', "[1, 2]", "\xff\xfe"])
def test_an_unreadable_health_file_is_named(world: World, tmp_path: Path, text: str) -> None:
    """health.json cut short by a killed ``fbr run`` (or not an object, or not text): /run names
    the file, says the loop rewrites it every cycle, and still lists the alerts; /api/run has
    ``health`` null and the message in ``health_error`` (both answered 500)."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "health.json").write_bytes(text.encode("latin-1"))
    c = serve(book=world.book, journal=world.journal, state_dir=state)
    r = c.get("/run")
    assert r.status_code == 200, r.text[:300]
    page = html.unescape(r.text)
    assert f"health file {state / 'health.json'} is unreadable" in page
    assert "rewrites it every cycle" in page and "No health file" not in page
    for a in ALERTS:
        assert a.title in page
    doc = c.get("/api/run").json()
    assert doc["health"] is None and doc["health_error"] in page
    assert [a["title"] for a in doc["alerts"]] == [a.title for a in reversed(ALERTS)]


def test_a_readable_health_file_has_no_error(client: TestClient) -> None:
    """The world's health file: ``health_error`` is null and no error is shown."""
    doc = client.get("/api/run").json()
    assert doc["health"] is not None and doc["health_error"] is None
    assert "unreadable" not in client.get("/run").text

