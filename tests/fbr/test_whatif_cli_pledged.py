"""`fbr whatif` on a book file whose [pledged] BTC has Portfolio Margin tiers: an up move past the
tier edge, through the real entry point (JSON and table), by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_tiered_pledge_up_move_through_the_cli(tmp_path: Path) -> None:
    # the seed book holds 0.1 BTC at 60,000 (6,000 USD); tiers [0, 1000, 0.95], [1000, 1e9, 0.9]
    book = tmp_path / "book.toml"
    book.write_text((ROOT / "examples" / "seed_example_1.toml").read_text()
                    + "\n[pledged]\nBTC = { tiers = [[0, 1000, 0.95], [1000, 1e9, 0.9]] }\n")
    args = [sys.executable, "-m", "fbr.cli", "whatif", str(book), "--shock", "BTC=+30%",
            "--no-resolve"]
    proc = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    (sc,) = json.loads(proc.stdout)["scenarios"]
    before, after = 0.95 * 1000 + 0.9 * 5000, 0.95 * 1000 + 0.9 * 6800  # 6,000 -> 7,800 USD
    assert sc["pledged_collateral"] == pytest.approx({"before": before, "after": after})
    table = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert table.returncode == 0, table.stderr
    assert "pledged collateral before -> after (USD)" in table.stdout
    assert "5,450.00 -> 7,070.00" in table.stdout
