"""``fbr status`` on a book whose rebalance needs an order above a safety limit: the daily view is
shown (exit 0) with the plan empty and an alert naming the limit, as ``fbr execute`` would refuse
it; it used to fail whole with the limit's message, so the holder saw no view at all.

The seed book (0.1 BTC, 1 ETH, 10 SOL at 60,000 / 2,500 / 150) with a long of 1 BTC-PERP entered
at 60,000: BTC is 60,000 USD over, so its reduction is one order of about 61,000 USD, above the
default per-order limit of 50,000 USD."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fbr.cli import app

ROOT = Path(__file__).resolve().parents[2]
SEED = (ROOT / "examples" / "seed_example_1.toml").read_text()
runner = CliRunner()


def test_status_shows_the_view_when_the_plan_breaks_a_limit(tmp_path: Path) -> None:
    book = tmp_path / "book.toml"
    book.write_text(SEED.replace("[market]", '[[futures]]\nsymbol = "BTC-PERP"\ncontracts = 1.0\n'
                                 "entry_price = 60000.0\n\n[market]", 1))
    res = runner.invoke(app, ["status", str(book), "--exchange", "paper", "--journal",
                              str(tmp_path / "j.sqlite"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["status"] == "ok" and doc["plan"]["legs"] == []
    assert any("exceeds the per-order limit 50,000.00 USD" in a for a in doc["alerts"])
    assert doc["rebalance_due"] is True
    ex = runner.invoke(app, ["execute", str(book), "--json"])
    assert ex.exit_code != 0 and "per-order limit" in ex.output
