"""A paper account read is one committed state: the cash and the positions are two SELECTs, and a
fill another process commits between them gave an account that never existed (the cash from
before the fill with the positions after it).

Account: long 1 BTC-PERP at entry 50,000, cash 3,000 USD; mark 70,000 (no spread, no ADV), taker
fee 5 bp. Another process (its own store connection and gateway on the same journal) closes it:
realised 1 x (70,000 - 50,000) = 20,000, fee 0.0005 x 70,000 = 35, so the cash becomes
3,000 + 20,000 - 35 = 22,965 and the account is flat (by hand). A read must give one of the two
states that existed; the torn read gave (3,000, flat): 20,000 USD of NAV missing. The other
process's commit is forced between the reader's two statements (the journal in WAL mode, as
``executor.journal.Journal`` opens it)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exec_helpers import market, three_asset_book

from executor.journal import Journal
from executor.paper import PaperGateway, PaperStore
from executor.plan import OrderLeg, OrderType, Side
from models.book import Book, FuturesPosition

PRICES = {"BTC": 70_000.0, "ETH": 3_000.0, "SOL": 200.0}


class Pausing:
    """A connection whose cursor runs ``between`` once, before the positions' SELECT."""

    def __init__(self, conn: sqlite3.Connection, between: Callable[[], None]) -> None:
        self._conn, self._between, self.fired = conn, between, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def cursor(self) -> Any:
        outer, cur = self, self._conn.cursor()

        class Cursor:
            def __getattr__(self, name: str) -> Any:
                return getattr(cur, name)

            def execute(self, sql: str, *args: Any) -> Any:
                if "FROM paper_positions" in sql and not outer.fired:
                    outer.fired = True
                    outer._between()
                return cur.execute(sql, *args)

        return Cursor()


def test_a_read_is_one_committed_state(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()  # WAL mode, as fbr opens its journal
    book: Book = three_asset_book(futures={"BTC-PERP": FuturesPosition(1.0, 50_000.0)},
                                  cash=3_000.0)
    m = market(PRICES)
    writer_store, reader = PaperStore(path, book.name), PaperStore(path, book.name)
    writer = PaperGateway(book, m, store=writer_store)  # opens the stored account

    def other_process_closes() -> None:
        writer.create_order(OrderLeg(index=0, client_id="fbrX-000", symbol="BTC-PERP",
                                     exchange_symbol="BTC-PERP", side=Side.SELL, contracts=1.0,
                                     notional=-70_000.0, price=70_000.0, reduce_only=True,
                                     order_type=OrderType.MARKET))

    reader._conn = Pausing(reader._conn, other_process_closes)  # type: ignore[assignment]
    try:
        saved = reader.load()
        assert reader._conn.fired  # type: ignore[attr-defined]
        after = reader.load()
    finally:
        writer_store.close()
        reader.close()
    assert saved is not None and after is not None
    assert (saved[1], {s: p.contracts for s, p in saved[0].items()}) == (3_000.0, {"BTC-PERP": 1.0})
    assert (round(after[1], 6), after[0]) == (22_965.0, {})
