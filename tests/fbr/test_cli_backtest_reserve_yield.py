"""``fbr backtest --json`` prices the reserve at the book's ``[costs] reserve_yield``.

The book is examples/backtest_book.toml with ``reserve_yield = 0.0``: the reserve forgoes nothing,
so reserve_opportunity_cost_bps (sum_t W_{t-1} y dt / (mean NAV x years) x 1e4) is 0 whatever the
wallet; at the 4% default the same run reports about 63 bp/yr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FBR = Path(sys.executable).parent / "fbr"


def test_backtest_json_prices_the_reserve_at_the_books_yield(tmp_path: Path) -> None:
    book = (ROOT / "examples" / "backtest_book.toml").read_text()
    assert "horizon_days = 7.0" in book
    (tmp_path / "book.toml").write_text(
        book.replace("horizon_days = 7.0", "horizon_days = 7.0\nreserve_yield = 0.0", 1))
    (tmp_path / "bt.toml").write_text(
        'book = "book.toml"\n[data]\nsource = "synthetic"\nseed = 12\ndays = 30\n'
        'start = "2024-01-01"\n[[policies]]\nkind = "naive_futures"\nperiod = "7D"\n'
        'name = "naive weekly"\n[backtest]\nliquidation_penalty = "1%"\nspot_fee = "10bp"\n')
    out = subprocess.run([str(FBR), "backtest", str(tmp_path / "bt.toml"), "--json", "--no-report"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)["policies"]["naive weekly"]
    assert m["reserve_opportunity_cost_bps"] == pytest.approx(0.0)
