"""The SQLite journal: schema version, one transaction per state change, fills, positions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from exec_helpers import market, solution_with, three_asset_book

from executor.base import OrderState, OrderStatus
from executor.journal import SCHEMA_VERSION, Journal, JournalError
from executor.plan import PlanOptions, book_instruments, plan_orders


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
