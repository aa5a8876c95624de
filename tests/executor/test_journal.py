"""The SQLite journal: schema version, one transaction per state change, fills, positions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from exec_helpers import market, solution_with, three_asset_book

from executor.base import OrderState, OrderStatus
from executor.journal import Journal
from executor.journal_schema import SCHEMA_VERSION, JournalError
from executor.plan import OrderPlan, PlanOptions, book_instruments, plan_orders


def _plan(pid: str = "20240601000000aaaa"):  # type: ignore[no-untyped-def]
    book = three_asset_book()
    return plan_orders(solution_with({"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0}),
                       book, market(), book_instruments(book), PlanOptions(), plan_id=pid)


def test_plan_and_legs_are_recorded_and_read_back(tmp_path: Path) -> None:
    plan = _plan()
    with Journal(tmp_path / "j.sqlite") as j:
        assert j.schema_version == SCHEMA_VERSION
        j.record_plan(plan, "/books/x.toml")
        assert j.plan(plan.plan_id) == plan
        assert j.book_path(plan.plan_id) == "/books/x.toml"
        rows = j.orders(plan.plan_id)
        assert [(r.leg, r.client_id, r.status) for r in rows] == [
            (leg.index, leg.client_id, OrderStatus.PLANNED) for leg in plan.legs]
        with pytest.raises(JournalError, match="--resume"):
            j.record_plan(plan)
        with pytest.raises(JournalError, match="not in journal"):
            j.plan("nope")


def test_state_changes_and_fills(tmp_path: Path) -> None:
    plan = _plan()
    leg = plan.legs[0]
    with Journal(tmp_path / "j.sqlite") as j:
        j.record_plan(plan)
        assert j.mark_sending(plan.plan_id, 0) == 1
        assert j.mark_sending(plan.plan_id, 0) == 2
        assert j.order(plan.plan_id, 0).status == OrderStatus.SENDING
        j.record_state(plan.plan_id, 0, OrderState(leg.client_id, "7", OrderStatus.OPEN, 0.01, 59_990.0,
                                                   0.3))
        j.record_state(plan.plan_id, 0, OrderState(leg.client_id, "7", OrderStatus.FILLED, 0.017,
                                                   59_995.0, 0.51))
        row = j.order(plan.plan_id, 0)
        assert (row.status, row.filled, row.exchange_id, row.attempts) == (OrderStatus.FILLED, 0.017, "7", 2)
        fills = j.fills(plan.plan_id)
        # two fill rows: the increments 0.01 and 0.007 contracts, fees 0.3 and 0.21
        assert [f["contracts"] for f in fills] == pytest.approx([0.01, 0.007])
        assert [f["fee"] for f in fills] == pytest.approx([0.3, 0.21])
        assert j.fills_with_legs(plan.plan_id)[0][1] == pytest.approx(-0.01)  # a sell: signed


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    plan = _plan()
    with Journal(tmp_path / "j.sqlite") as j:
        j.record_plan(plan)
        with pytest.raises(RuntimeError), j._tx() as cur:
            cur.execute("UPDATE orders SET status = 'filled' WHERE plan_id = ?", (plan.plan_id,))
            raise RuntimeError("crash inside the transaction")
        assert all(r.status == OrderStatus.PLANNED for r in j.orders(plan.plan_id))
    # a plan whose legs cannot be inserted is not recorded either (duplicate client id)
    with Journal(tmp_path / "j.sqlite") as j:
        clash = _plan("20240601000000aaaa")
        object.__setattr__(clash, "plan_id", "20240601000000bbbb")
        with pytest.raises(sqlite3.IntegrityError):
            j.record_plan(clash)
        with pytest.raises(JournalError):
            j.plan("20240601000000bbbb")


def test_positions_snapshot_and_funding(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        plan = _plan()
        j.record_plan(plan)
        j.record_positions(plan.plan_id, "paper", "test book", {"BTC-PERP": (-0.017, 60_000.0)}, 2999.0)
        pos, cash = j.latest_positions("paper", "test book") or ({}, 0.0)
        assert pos == {"BTC-PERP": (-0.017, 60_000.0)} and cash == 2999.0
        assert j.latest_positions("binanceusdm", "test book") is None
        j.record_funding("paper", "test book", "BTC-PERP", 1.5, 1000)
        j.record_funding("paper", "test book", "BTC-PERP", -0.5, 2000)
        assert j.funding_since("paper", "test book", 1500) == {"BTC-PERP": -0.5}
        assert j.funding_since("paper", "test book", 0) == {"BTC-PERP": 1.0}


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(JournalError, match="newer"):
        Journal(path)


# --- every field read back, times from a fake clock (issue 13: mutation survivors) ---------------

class _Clock:
    """A fake ``now_ms``: 1,000, 2,000, 3,000, ... one per call."""

    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        self.t += 1000
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr("executor.journal.now_ms", c)
    return c


def test_now_ms_is_milliseconds_of_the_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    from executor import journal

    monkeypatch.setattr("executor.journal.time.time", lambda: 1_717_243_200.1234)
    assert journal.now_ms() == 1_717_243_200_123


def test_every_order_field_is_read_back(tmp_path: Path, clock: _Clock) -> None:
    from executor.safety import register_secret

    plan = _plan()
    with Journal(tmp_path / "j.sqlite") as j:
        j.record_plan(plan)
        o = j.order(plan.plan_id, 1)
        leg = plan.legs[1]
        # pytest.Approx matches a float by its own __eq__, which mypy's strict equality ignores in a tuple
        assert (o.plan_id, o.leg, o.client_id, o.symbol, o.side, o.contracts, o.reduce_only) == (  # type: ignore[comparison-overlap]
            plan.plan_id, 1, leg.client_id, "ETH-PERP", "buy", pytest.approx(0.2), False)
        assert (o.status, o.exchange_id, o.filled, o.average, o.fee, o.attempts, o.message) == (
            OrderStatus.PLANNED, None, 0.0, None, 0.0, 0, "")
        assert (o.position_before, o.sent_ms) == (None, None)
        # the send: position before and an explicit send time; a second send takes the clock's time
        assert j.mark_sending(plan.plan_id, 1, position_before=-0.3, sent_ms=123_456) == 1
        o = j.order(plan.plan_id, 1)
        assert (o.status, o.position_before, o.sent_ms, o.attempts) == (
            OrderStatus.SENDING, -0.3, 123_456, 1)
        assert j.mark_sending(plan.plan_id, 1) == 2
        o = j.order(plan.plan_id, 1)
        assert o.position_before is None and o.sent_ms == clock.t
        register_secret("sekret-key-123")
        j.set_status(plan.plan_id, 1, OrderStatus.UNKNOWN, "timeout; key sekret-key-123")
        o = j.order(plan.plan_id, 1)
        assert o.status == OrderStatus.UNKNOWN and o.message == "timeout; key ***"
        j.record_state(plan.plan_id, 1, OrderState(leg.client_id, "ex-9", OrderStatus.PARTIAL, 0.15,
                                                   2501.0, 0.19), "partly")
        o = j.order(plan.plan_id, 1)
        assert (o.status, o.exchange_id, o.filled, o.average, o.fee, o.message) == (
            OrderStatus.PARTIAL, "ex-9", 0.15, 2501.0, 0.19, "partly")
        assert j.order(plan.plan_id, 0).status == OrderStatus.PLANNED  # only leg 1 changed
        with pytest.raises(JournalError, match="has no leg 9"):
            j.order(plan.plan_id, 9)


def test_fill_rows_signed_by_side_with_price_and_fee(tmp_path: Path, clock: _Clock) -> None:
    plan = _plan()  # legs: 0 sell BTC 0.017, 1 buy ETH 0.2, 2 buy SOL 3.333
    with Journal(tmp_path / "j.sqlite") as j:
        j.record_plan(plan)
        b, e = plan.legs[0], plan.legs[1]
        j.record_state(plan.plan_id, 1, OrderState(e.client_id, "1", OrderStatus.OPEN, 0.05, 2500.0, 0.05))
        j.record_state(plan.plan_id, 0, OrderState(b.client_id, "2", OrderStatus.FILLED, 0.017, None, 0.4))
        j.record_state(plan.plan_id, 1, OrderState(e.client_id, "1", OrderStatus.FILLED, 0.2, 2502.0, 0.2))
        # the same state again adds no fill row
        j.record_state(plan.plan_id, 1, OrderState(e.client_id, "1", OrderStatus.FILLED, 0.2, 2502.0, 0.2))
        rows = j.fills_with_legs(plan.plan_id)
        assert [r[0] for r in rows] == ["ETH-PERP", "BTC-PERP", "ETH-PERP"]
        assert [r[1] for r in rows] == pytest.approx([0.05, -0.017, 0.15])
        assert [r[2] for r in rows] == [2500.0, 0.0, 2502.0]  # no average -> 0
        assert [r[3] for r in rows] == pytest.approx([0.05, 0.4, 0.15])
        fills = j.fills(plan.plan_id)
        assert [(f["leg"], f["client_id"], f["price"]) for f in fills] == [
            (1, e.client_id, 2500.0), (0, b.client_id, None), (1, e.client_id, 2502.0)]
        con = sqlite3.connect(tmp_path / "j.sqlite")
        times = [r[0] for r in con.execute("SELECT time_ms FROM fills ORDER BY id")]
        con.close()
        assert times == [2000, 3000, 4000]  # the plan took 1,000


def test_plans_accounts_supersession_and_successors(tmp_path: Path, clock: _Clock) -> None:
    a, b, c = _plan("20240601000000aaaa"), _plan("20240601000000bbbb"), _plan("20240601000000cccc")
    with Journal(tmp_path / "j.sqlite") as j:
        j.record_plan(a, account="acc1")
        assert j.open_plans("acc1") == [a.plan_id]
        j.record_plan(b, account="acc1")
        j.record_plan(c, account="other")
        bid, cid = "20240601000000bbbb", "20240601000000cccc"
        assert j.plan_status(a.plan_id) == "superseded"
        assert j.open_plans("acc1") == [bid] and j.open_plans("other") == [cid]
        assert j.successor(a.plan_id) == bid
        assert j.successor(bid) is None and j.successor(cid) is None
        assert j.plan_ids() == [a.plan_id, bid, cid]
        j.close_plan(bid)
        assert j.plan_status(bid) == "done"
        j.close_plan(cid, "stopped")
        assert j.plan_status(cid) == "stopped" and j.open_plans("other") == []
        with pytest.raises(JournalError, match="not in journal"):
            j.successor("nope")
        with pytest.raises(JournalError, match="not in journal"):
            j.plan_status("nope")
        with pytest.raises(JournalError, match="not in journal"):
            j.book_path("nope")
        assert j.plan_account(a.plan_id) == "acc1" and j.plan_account(cid) == "other"
        with pytest.raises(JournalError, match="'nope' is not in journal"):
            j.plan_account("nope")


def test_successor_is_a_newer_plan_of_the_same_account(tmp_path: Path, clock: _Clock) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        a = _plan("20240601000000aaaa")
        j.record_plan(a, account="acc1")
        j.close_plan(a.plan_id)  # done, so the next plan does not supersede it
        j.record_plan(_plan("20240601000000bbbb"), account="acc2")
        j.record_plan(_plan("20240601000000cccc"), account="acc1")
        j.record_plan(_plan("20240601000000dddd"), account="acc1")
        assert j.plan_status(a.plan_id) == "done"
        assert j.successor(a.plan_id) == "20240601000000cccc"  # the first newer one of acc1
        j.record_plan(_plan("20240601000000eeee"))  # no account
        assert j.successor("20240601000000eeee") is None
        assert j.plan_account("20240601000000eeee") == ""  # may be resumed by any account


def test_last_rebalance_times(tmp_path: Path, clock: _Clock) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        assert j.last_rebalance("paper", "test book") is None
        a = _plan("20240601000000aaaa")
        j.record_plan(a)  # created at 1,000
        assert j.last_rebalance("paper", "test book") is None  # the plan's venue is binanceusdm
        assert j.last_rebalance("binanceusdm", "other book") is None
        last = j.last_rebalance("binanceusdm", "test book")
        assert last is not None and (last.plan_id, last.time_ms, last.completed) == (a.plan_id, 1000, False)
        j.record_positions(a.plan_id, "binanceusdm", "test book", {"BTC-PERP": (-0.017, 6e4)}, 10.0)  # 2,000
        j.record_positions(a.plan_id, "binanceusdm", "test book", {"BTC-PERP": (-0.017, 6e4)}, 11.0)  # 3,000
        last = j.last_rebalance("binanceusdm", "test book")
        assert last is not None and (last.time_ms, last.completed) == (1000, False)  # not done yet
        j.close_plan(a.plan_id)
        last = j.last_rebalance("binanceusdm", "test book")
        assert last is not None and (last.plan_id, last.time_ms, last.completed) == (a.plan_id, 3000, True)
        b = (_plan("20240601000000bbbb"))
        j.record_plan(b)  # 4,000
        j.close_plan(b.plan_id)  # done without a position snapshot: its creation time
        last = j.last_rebalance("binanceusdm", "test book")
        assert last is not None and (last.plan_id, last.time_ms, last.completed) == (b.plan_id, 4000, True)


def test_latest_positions_is_the_last_snapshot_only(tmp_path: Path, clock: _Clock) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        plan = _plan()
        j.record_plan(plan)
        j.record_positions(plan.plan_id, "paper", "b", {"BTC-PERP": (0.1, 6e4), "ETH-PERP": (1.0, 2e3)}, 5.0)
        j.record_positions(plan.plan_id, "paper", "b", {"ETH-PERP": (2.0, 2.1e3)}, 7.0)
        assert j.latest_positions("paper", "b") == ({"ETH-PERP": (2.0, 2100.0)}, 7.0)
        j.record_positions(plan.plan_id, "paper", "b", {}, 9.5)  # flat: cash only
        assert j.latest_positions("paper", "b") == ({}, 9.5)
        assert j.latest_positions("paper", "c") is None


def test_funding_once_and_since(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        assert j.record_funding_once("paper", "b", "BTC-PERP", 2.0, 1000)
        assert not j.record_funding_once("paper", "b", "BTC-PERP", 2.0, 1000)  # the same settlement
        assert j.record_funding_once("paper", "b", "ETH-PERP", -1.0, 1000)
        assert j.record_funding_once("paper", "b", "BTC-PERP", 0.5, 2000)
        assert j.record_funding_once("paper", "c", "BTC-PERP", 9.0, 1000)  # another book
        assert j.funding_since("paper", "b", 1000) == {"BTC-PERP": 2.5, "ETH-PERP": -1.0}  # >= since
        assert j.funding_since("paper", "b", 1001) == {"BTC-PERP": 0.5}
        assert j.funding_since("bybit", "b", 0) == {}


def test_add_legs_and_book_path(tmp_path: Path, clock: _Clock) -> None:
    from dataclasses import replace

    plan = _plan()
    with Journal(tmp_path / "j.sqlite") as j:
        j.record_plan(plan)
        assert j.book_path(plan.plan_id) == ""
        extra = replace(plan.legs[0], index=7, client_id="fbrextra-007")
        j.add_legs(plan.plan_id, [extra])
        o = j.order(plan.plan_id, 7)
        # pytest.Approx matches a float by its own __eq__, which mypy's strict equality ignores in a tuple
        assert (o.client_id, o.status, o.contracts, o.side) == ("fbrextra-007", OrderStatus.PLANNED,  # type: ignore[comparison-overlap]
                                                                pytest.approx(0.017), "sell")
        assert [r.leg for r in j.orders(plan.plan_id)] == [0, 1, 2, 7]


def test_journal_paths_are_checked(tmp_path: Path) -> None:
    from executor.journal_schema import check_journal_path

    with pytest.raises(JournalError, match="is a folder"):
        Journal(tmp_path)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(JournalError, match="is a file, not a folder"):
        check_journal_path(f / "j.sqlite")
    with pytest.raises(JournalError, match="not an SQLite file"):
        check_journal_path(f)
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    check_journal_path(empty)  # an empty file is a new journal
    check_journal_path(tmp_path / "new" / "j.sqlite")
    with Journal(tmp_path / "new" / "j.sqlite") as j:  # the folder is made
        assert j.schema_version == SCHEMA_VERSION


def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE meta (k TEXT)")  # a meta table without the journal's columns
    con.commit()
    con.close()
    with pytest.raises(JournalError, match="not an fbr journal"):
        Journal(path)


def test_a_schema_1_journal_is_migrated(tmp_path: Path, clock: _Clock) -> None:
    path = tmp_path / "v1.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE plans (plan_id TEXT PRIMARY KEY, venue TEXT NOT NULL, book_name TEXT NOT NULL,
            created_ms INTEGER NOT NULL, status TEXT NOT NULL, plan_json TEXT NOT NULL,
            book_path TEXT NOT NULL DEFAULT '');
        CREATE TABLE orders (plan_id TEXT NOT NULL, leg INTEGER NOT NULL, client_id TEXT NOT NULL UNIQUE,
            symbol TEXT NOT NULL, side TEXT NOT NULL, contracts REAL NOT NULL, reduce_only INTEGER NOT NULL,
            status TEXT NOT NULL, exchange_id TEXT, filled REAL NOT NULL DEFAULT 0, average REAL,
            fee REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '', updated_ms INTEGER NOT NULL, PRIMARY KEY (plan_id, leg));
    """)
    con.close()
    with Journal(path) as j:
        assert j.schema_version == SCHEMA_VERSION
        plan = _plan()
        j.record_plan(plan, account="acc")
        j.mark_sending(plan.plan_id, 0, position_before=0.5, sent_ms=42)
        o = j.order(plan.plan_id, 0)
        assert (o.position_before, o.sent_ms) == (0.5, 42)
        assert j.open_plans("acc") == [plan.plan_id]
    with Journal(path) as j:  # opening again changes nothing
        assert j.schema_version == SCHEMA_VERSION


def test_successor_of_plans_without_an_account(tmp_path: Path, clock: _Clock) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        j.record_plan(_plan("20240601000000aaaa"))
        j.record_plan(_plan("20240601000000bbbb"))
        assert j.successor("20240601000000aaaa") is None  # no account: no successor by account


def test_a_flat_position_row_is_kept(tmp_path: Path, clock: _Clock) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        plan = _plan()
        j.record_plan(plan)
        j.record_positions(plan.plan_id, "paper", "b", {"BTC-PERP": (0.0, 60_000.0), "ETH-PERP": (1.0, 2e3)},
                           3.0)
        assert j.latest_positions("paper", "b") == (
            {"BTC-PERP": (0.0, 60_000.0), "ETH-PERP": (1.0, 2000.0)}, 3.0)


def test_a_half_migrated_journal_is_finished(tmp_path: Path, clock: _Clock) -> None:
    # schema 1 with one of the new columns already there: only the missing ones are added
    path = tmp_path / "half.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE plans (plan_id TEXT PRIMARY KEY, venue TEXT NOT NULL, book_name TEXT NOT NULL,
            created_ms INTEGER NOT NULL, status TEXT NOT NULL, plan_json TEXT NOT NULL,
            book_path TEXT NOT NULL DEFAULT '');
        CREATE TABLE orders (plan_id TEXT NOT NULL, leg INTEGER NOT NULL, client_id TEXT NOT NULL UNIQUE,
            symbol TEXT NOT NULL, side TEXT NOT NULL, contracts REAL NOT NULL, reduce_only INTEGER NOT NULL,
            status TEXT NOT NULL, exchange_id TEXT, filled REAL NOT NULL DEFAULT 0, average REAL,
            fee REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '', updated_ms INTEGER NOT NULL, position_before REAL,
            PRIMARY KEY (plan_id, leg));
    """)
    con.close()
    with Journal(path) as j:
        assert j.schema_version == SCHEMA_VERSION
        plan = _plan()
        j.record_plan(plan, account="acc")
        j.mark_sending(plan.plan_id, 0, position_before=1.5, sent_ms=7)
        assert (j.order(plan.plan_id, 0).position_before, j.order(plan.plan_id, 0).sent_ms) == (1.5, 7)


def test_error_texts_and_folders(tmp_path: Path) -> None:
    with pytest.raises(JournalError) as err:
        Journal(tmp_path)
    assert f"e.g. {tmp_path / 'journal.sqlite'}" in str(err.value)
    with Journal(tmp_path / "a" / "b" / "j.sqlite") as j:  # every missing folder is made
        assert j.schema_version == SCHEMA_VERSION


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
def test_a_journal_that_cannot_be_created_says_so() -> None:
    with pytest.raises(JournalError, match=r"cannot be opened .*Fix: give --journal a writable file path"):
        Journal("/proc/fbr-no-such-folder/j.sqlite")


def test_reduce_only_and_messages_read_back(tmp_path: Path, clock: _Clock) -> None:
    from executor.plan import book_instruments, plan_orders
    from models.book import FuturesPosition

    book = three_asset_book(futures={"BTC-PERP": FuturesPosition(-0.05, 60_000.0)})
    plan = plan_orders(solution_with({"BTC-PERP": -1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0}), book, market(),
                       book_instruments(book), PlanOptions(), plan_id="20240601000000cccc")
    with Journal(tmp_path / "j.sqlite") as j:
        j.record_plan(plan)
        o = j.order(plan.plan_id, 0)
        assert o.reduce_only and o.side == "buy"
        j.set_status(plan.plan_id, 0, OrderStatus.SKIPPED)
        assert j.order(plan.plan_id, 0).message == ""
        j.record_state(plan.plan_id, 0, OrderState(o.client_id, "1", OrderStatus.FILLED, 0.033, 6e4, 0.1))
        assert j.order(plan.plan_id, 0).message == ""


def test_a_flat_snapshot_stores_a_zero_placeholder(tmp_path: Path, clock: _Clock) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        plan = _plan()
        j.record_plan(plan)
        j.record_positions(plan.plan_id, "paper", "b", {}, 9.5)
    con = sqlite3.connect(tmp_path / "j.sqlite")
    rows = con.execute("SELECT symbol, contracts, entry_price, cash FROM positions").fetchall()
    con.close()
    assert rows == [("", 0.0, 0.0, 9.5)]


def test_an_account_s_plans_are_one_book_s(tmp_path: Path) -> None:
    """A plan of another book on an account this journal's latest plan gave to a book is refused
    (exit code 6), naming both; the same book again, another account, or another venue pass."""
    import dataclasses

    from models.errors import RefusedError

    a = _plan("20240601000000aaaa")
    b = dataclasses.replace(_plan("20240601000000bbbb"), book_name="other book")
    with Journal(tmp_path / "j.sqlite") as j:
        j.record_plan(a, account="binanceusdm:k1")
        with pytest.raises(RefusedError) as refused:
            j.record_plan(b, account="binanceusdm:k1")
        assert ("account is traded by book 'test book' in this journal; book 'other book' would "
                "read that book's positions") in str(refused.value)
        assert j.plan_ids() == [a.plan_id]  # nothing recorded
        j.record_plan(b, account="binanceusdm:k2")
        j.record_plan(dataclasses.replace(_plan("20240601000000cccc")), account="binanceusdm:k1")
        j.record_plan(dataclasses.replace(_plan("20240601000000dddd"), book_name="other book",
                                          venue="paper"), account="binanceusdm:k1")


def test_two_book_files_of_one_default_name_are_two_books(tmp_path: Path) -> None:
    """Two ``book.toml`` files in two folders without ``[book] name`` (the loader names a book
    after its file's stem: both "book") are two books: the second is refused; the first again, by
    another spelling of its path, is not. A name given in the file names the book wherever its
    file is (a copy of the file elsewhere is the same book)."""
    import dataclasses

    from models.errors import RefusedError

    def plan(pid: str, name: str = "book") -> OrderPlan:
        made: OrderPlan = _plan(pid)
        return dataclasses.replace(made, book_name=name)

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = str(tmp_path / "a" / "book.toml"), str(tmp_path / "b" / "book.toml")
    with Journal(tmp_path / "j.sqlite") as j:
        j.record_plan(plan("20240601000000aaaa"), a, account="binanceusdm:k1")
        with pytest.raises(RefusedError) as refused:
            j.record_plan(plan("20240601000000bbbb"), b, account="binanceusdm:k1")
        assert (f"traded by book 'book' ({a}) in this journal; book 'book' ({b}) would"
                in str(refused.value))
        j.record_plan(plan("20240601000000cccc"), str(tmp_path / "b" / ".." / "a" / "book.toml"),
                      account="binanceusdm:k1")
        j.record_plan(plan("20240601000000dddd"), "", account="binanceusdm:k1")
        j.record_plan(plan("20240601000000eeee"), a, account="binanceusdm:k1")  # after a path-less
        j.record_plan(plan("20240601000000ffff", "test book"), a, account="binanceusdm:k2")
        j.record_plan(plan("20240601000000ffee", "test book"), b, account="binanceusdm:k2")


def test_the_start_up_check_reads_the_journal_file_as_the_record_does(tmp_path: Path) -> None:
    """``journal_schema.check_one_book`` before anything opens the journal: no file and a file
    without plans pass (nothing recorded yet); the book of the account's latest plan passes, any
    other is refused as recording its plan would be, and the file is left as it was."""
    import dataclasses

    from executor.journal_schema import check_one_book
    from models.errors import RefusedError

    path = tmp_path / "j.sqlite"
    check_one_book(path, "paper", "other book", "", "binanceusdm:k1")  # no file yet
    assert not path.exists()
    sqlite3.connect(path).close()  # an empty database: no plans table
    check_one_book(path, "paper", "other book", "", "binanceusdm:k1")
    plan = _plan("20240601000000aaaa")
    with Journal(path) as j:
        j.record_plan(plan, account="binanceusdm:k1")
        with pytest.raises(RefusedError) as recorded:
            j.record_plan(dataclasses.replace(_plan("20240601000000bbbb"), book_name="other book"),
                          account="binanceusdm:k1")
    check_one_book(path, plan.venue, plan.book_name, "", "binanceusdm:k1")
    check_one_book(path, plan.venue, "other book", "", "binanceusdm:k2")
    with pytest.raises(RefusedError) as checked:
        check_one_book(path, plan.venue, "other book", "", "binanceusdm:k1")
    assert str(checked.value) == str(recorded.value)
