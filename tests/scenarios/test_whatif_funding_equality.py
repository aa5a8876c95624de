"""A what-if's funding run stops where the shared liquidation rule (``MarginState.liquidated``:
collateral <= maintenance with a position open, equality liquidates) says the wallet is gone: at
the settlement that brings the surplus to exactly 0, and before any funding when the book already
sits at collateral = maintenance. Every expected value is worked out by hand in the docstrings
(binary-exact numbers, so the equality is exact in floating point)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fbr.cli import app
from scenarios.funding_run import funding_until_liquidation

runner = CliRunner()

# One long ETH-PERP of 10 contracts at 1,280 (notional 12,800), one flat bracket with mmr 2^-7:
# MM = 12,800 / 128 = 100 USD. ``{cash}`` is the whole collateral (no spot is pledged).
ONE_PERP = """[book]
name = "edge"
cash = {cash}
[targets]
ETH = 1.0
[spot]
ETH = 10.0
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
leverage = 100.0
tiers = [ {{ max_notional = inf, max_leverage = 100, mmr = 0.0078125 }} ]
[[futures]]
symbol = "ETH-PERP"
contracts = 10.0
entry_price = 1280.0
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
ETH = 1280.0
[risk]
basis_risk = false
[risk.vols]
ETH = 0.70
[costs]
trading = false
carry = false
[constraints]
margin = false
"""

# Cash 5,000; short 1 BTC-PERP at 60,000 and long 20 ETH-PERP at 3,000 (both marked at spot, no
# uPnL); funding 0.01% (BTC) and 0.02% (ETH) per 8 h; Binance-like tiers (0.5% in [50k, 250k)).
TWO_PERPS = """[book]
name = "two perps"
cash = 5000.0
[targets]
BTC = 0.5
ETH = 0.5
[spot]
BTC = 1.0
ETH = 10.0
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
leverage = 20.0
tiers = [
  { max_notional = 50_000,    max_leverage = 125, mmr = 0.004 },
  { max_notional = 250_000,   max_leverage = 100, mmr = 0.005 },
  { max_notional = 1_000_000, max_leverage = 50,  mmr = 0.01 },
  { max_notional = inf, max_leverage = 20,  mmr = 0.025 },
]
[[futures]]
symbol = "BTC-PERP"
contracts = -1.0
entry_price = 60000.0
[[futures]]
symbol = "ETH-PERP"
contracts = 20.0
entry_price = 3000.0
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 3000.0
[market.funding]
BTC-PERP = 0.0001
ETH-PERP = 0.0002
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
[costs]
trading = false
carry = false
[constraints]
margin = false
"""


def _whatif(tmp_path: Path, text: str, *shocks: str) -> dict[str, Any]:
    book = tmp_path / "book.toml"
    book.write_text(text)
    args = ["whatif", str(book), "--no-resolve", "--json"]
    for s in shocks:
        args += ["--shock", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    [sc] = json.loads(res.stdout)["scenarios"]
    out: dict[str, Any] = sc
    return out


def test_funding_stops_at_the_settlement_that_brings_the_surplus_to_zero(tmp_path: Path) -> None:
    """Cash 200, MM 100 (12,800 x 2^-7): surplus 100. Funding shock +2^-8 per 8 h on a long of
    12,800: 12,800 / 256 = 50 USD paid per settlement, 3 settlements asked.
    After 1 settlement C = 150 > 100; after 2 (16 h) C = 100 = MM: liquidated (equality).
    Expected: 2 settlements, funding -100 USD, liquidated after 16 h; the close-out charges
    1% x 12,800 = 128, so the wallet holds 100 - 128 = -28 and the insurance fund absorbs 28.
    (Before the fix: 3 settlements, -150, 24 h, 78.)"""
    sc = _whatif(tmp_path, ONE_PERP.format(cash=200.0), "funding=0.00390625", "horizon=3")
    assert sc["liquidated"] is True
    assert sc["settlements"] == {"ETH-PERP": 2.0}
    assert sc["pnl"]["funding"] == -100.0
    assert sc["liquidated_after_hours"] == 16.0
    assert sc["insurance_fund"] == pytest.approx(28.0, abs=1e-9)


def test_two_perps_liquidated_at_equality_after_750_settlements(tmp_path: Path) -> None:
    """MM: 0.005 x 60,000 - 50 = 250 per contract (bracket [50k, 250k), cum 50), 500 in all;
    collateral 5,000: surplus 4,500. Per 8 h the BTC short receives 0.0001 x 60,000 = 6 and the
    ETH long pays 0.0002 x 60,000 = 12: net 6 USD paid. After 4,500 / 6 = 750 settlements
    (750 x 8 = 6,000 h) C = 500 = MM: liquidated. Expected with horizon = 1,000: 750 settlements
    of each contract, funding -4,500 USD, liquidated after 6,000 h (before the fix: 751)."""
    sc = _whatif(tmp_path, TWO_PERPS, "horizon=1000")
    assert sc["liquidated"] is True
    assert sc["settlements"] == {"BTC-PERP": 750.0, "ETH-PERP": 750.0}
    assert sc["pnl"]["funding"] == pytest.approx(-4_500.0, abs=1e-6)
    assert sc["liquidated_after_hours"] == 6_000.0


def test_book_at_collateral_equal_maintenance_pays_no_funding(tmp_path: Path) -> None:
    """Cash 100 = MM 100: liquidated now (margin ratio 100 / 100 = 1). A funding shock of 50 USD
    per settlement must pay nothing: liquidated by the price move, before any funding (0 h,
    funding 0, no settlement), and the liquidation move now is "liquidated now" (down = up = 0)."""
    sc = _whatif(tmp_path, ONE_PERP.format(cash=100.0), "funding=0.00390625")
    assert sc["margin_before"]["margin_ratio"] == 1.0
    assert sc["liquidated"] is True
    assert sc["pnl"]["funding"] == 0.0
    assert sc["settlements"] == {}
    assert sc["liquidated_after_hours"] == 0.0
    for move in sc["liquidation_move_before"]:
        assert (move["down"], move["up"]) == (0.0, 0.0)


def test_funding_run_with_payments_only_is_checked_at_the_end() -> None:
    """Payments 50 USD per 8 h, 2 settlements, surplus 100: S(16 h) = 100 - 2 x 50 = 0, so the
    wallet is liquidated at 16 h after paying 100 (the all-payments shortcut must not read a
    final surplus of exactly 0 as safe). A surplus of 0 to start with: liquidated at 0 h, nothing
    paid."""
    run = funding_until_liquidation(np.array([50.0]), np.array([2.0]), np.array([8.0]), 100.0, True)
    assert (run.settled.tolist(), run.paid, run.liquidated_after_h) == ([2.0], 100.0, 16.0)
    run = funding_until_liquidation(np.array([50.0]), np.array([2.0]), np.array([8.0]), 0.0, True)
    assert (run.settled.tolist(), run.paid, run.liquidated_after_h) == ([0.0], 0.0, 0.0)
    # one USD short of the edge: never liquidated, both settlements paid
    run = funding_until_liquidation(np.array([50.0]), np.array([2.0]), np.array([8.0]), 101.0, True)
    assert (run.settled.tolist(), run.paid, run.liquidated_after_h) == ([2.0], 100.0, None)
