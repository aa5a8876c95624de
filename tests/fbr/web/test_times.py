"""Times in the dashboard's JSON and pages (a review): README ("JSON output", times) says times are
ISO 8601 UTC strings and keys ending in ``_ms`` are durations, never timestamps; /api/history and
/api/orders gave the journal's epoch milliseconds (``time_ms``, ``updated_ms``)."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from starlette.testclient import TestClient
from web_world import ROOT, cli_json, table

from fbr.web.app import create_app
from fbr.web.state import DashboardState, ServeConfig

#: 2024-01-01T00:00:00Z is 1,704,067,200 s; + 152 days (January to May 2024) x 86,400 s.
JUNE_1_MS = (1_704_067_200 + 152 * 86_400) * 1000


def _in(value: object, t0: datetime, t1: datetime) -> bool:
    """``value`` is an ISO 8601 string in UTC (offset +00:00) between t0 and t1 (whole seconds)."""
    if not isinstance(value, str):
        return False
    t = datetime.fromisoformat(value)
    offset = t.utcoffset()
    return (offset is not None and offset.total_seconds() == 0
            and t0.replace(microsecond=0) <= t.replace(microsecond=0) <= t1)


def test_history_and_orders_times_are_iso_utc(tmp_path: Path) -> None:
    """One paper execution of examples/seed_example_1.toml (3 legs, filled between t0 and t1) and
    one funding payment journalled at 2024-06-01 00:00 UTC (epoch ms by hand above): every time in
    /api/history (fills, funding, positions) and /api/orders is an ISO UTC string (``time``,
    ``updated``) in its window, no key ends in ``_ms``, and the pages print the same strings."""
    book, journal = tmp_path / "book.toml", tmp_path / "j.sqlite"
    shutil.copy(ROOT / "examples" / "seed_example_1.toml", book)
    env = {"FBR_LOCK_DIR": str(tmp_path / "locks"), "FBR_DATA_HOME": str(tmp_path / "home")}
    t0 = datetime.now(UTC)
    executed = cli_json("execute", str(book), "--exchange", "paper", "--journal", str(journal),
                        env=env)
    t1 = datetime.now(UTC)
    assert len(executed["plan"]["legs"]) == 3
    with sqlite3.connect(journal) as conn:
        conn.execute("INSERT INTO funding (venue, book_name, symbol, amount, time_ms) VALUES "
                     "('paper', 'seed example 1', 'BTC-PERP', 1.25, ?)", (JUNE_1_MS,))
    conn.close()
    c = TestClient(create_app(DashboardState(ServeConfig(book=book, journal=journal))),
                   base_url="http://127.0.0.1:8765")
    h = c.get("/api/history").json()
    orders = c.get("/api/orders").json()
    assert len(h["fills"]) == 3 and len(orders) == 3 and h["positions"]
    rows = [*h["fills"], *h["positions"], *h["funding"], *orders]
    assert [k for r in rows for k in r if k.endswith("_ms")] == []
    assert all(_in(r["time"], t0, t1) for r in [*h["fills"], *h["positions"]]), h
    assert all(_in(o["updated"], t0, t1) for o in orders), orders
    assert h["funding"] == [{"time": "2024-06-01T00:00:00+00:00", "symbol": "BTC-PERP",
                             "amount": 1.25}]

    page = c.get("/history").text
    shown = table(page, "time", "contract", "side", "contracts", "price", "fee (USD)", "plan")
    assert [r["time"] for r in shown] == [f["time"] for f in reversed(h["fills"])]
    assert '"2024-06-01T00:00:00+00:00"' in page  # the funding chart's x value
    shown = table(c.get("/orders").text, "updated", "plan", "leg", "contract")
    assert [(r["updated"], r["leg"]) for r in shown] == [(o["updated"], str(o["leg"])) for o in orders]
