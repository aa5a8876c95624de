"""Spot trades on each asset's quantity step (``optimizer.spot_lots``): by hand, and through
``fbr solve`` on a hybrid book whose every reported spot trade is a whole number of steps, priced
on those units (fees = rate x |units| x price)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from optimizer.spot_lots import round_spot_lots

BOOK_SPOT_LOT = """
[book]
cash = 3000.0
[targets]
BTC = 0.50
ETH = 0.30
SOL = 0.20
[spot]
BTC = 0.1
ETH = 1.0
SOL = 10.0
[[assets]]
symbol = "BTC"
lot_step = 0.001
[[assets]]
symbol = "ETH"
lot_step = 0.01
[[assets]]
symbol = "SOL"
lot_step = 0.1
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
leverage = 10.0
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
SOL = 150.0
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
SOL = 0.95
[costs]
trading = true
carry = false
[constraints]
margin = false
[constraints.caps_usd]
BTC-PERP = 0.0
[[constraints.clusters]]
name = "btc"
assets = ["BTC"]
band = "0.5%"
[solver]
spot_leg = true
"""

def test_units_go_to_the_nearest_step_and_a_sale_to_whole_steps_held() -> None:
    """V = 1,000; prices 100 and 10; steps 0.1 and 0 (none). Buy 0.0123 of V = 0.123 units -> 0.1
    (0.01 of V); sale 0.0577 of V = 0.577 units -> 0.6, but only 0.55 held: 0.5 (whole steps held,
    0.05 of V); the step-less asset is untouched."""
    buy, sell = round_spot_lots(np.array([0.0123, 0.02]), np.array([0.0, 0.0]),
                                np.array([100.0, 10.0]), np.array([1.0, 5.0]),
                                np.array([0.1, 0.0]), 1000.0)
    np.testing.assert_allclose(buy, [0.01, 0.02], rtol=1e-12)
    buy, sell = round_spot_lots(np.zeros(2), np.array([0.0577, 0.01]), np.array([100.0, 10.0]),
                                np.array([0.55, 5.0]), np.array([0.1, 0.0]), 1000.0)
    np.testing.assert_allclose(sell, [0.05, 0.01], rtol=1e-12)
    same = round_spot_lots(np.array([0.3]), np.array([0.2]), np.array([1.0]), np.array([9.0]),
                           np.array([0.0]), 10.0)
    assert same[0][0] == 0.3 and same[1][0] == 0.2


def test_solve_reports_spot_trades_on_the_steps(tmp_path: Path) -> None:
    path = tmp_path / "book.toml"
    path.write_text(BOOK_SPOT_LOT)
    run = subprocess.run([sys.executable, "-m", "fbr.cli", "solve", str(path), "--json"],
                         capture_output=True, text=True, timeout=300, check=False)
    out = json.loads(run.stdout)
    steps = {"BTC": 0.001, "ETH": 0.01, "SOL": 0.1}
    prices = {"BTC": 60_000.0, "ETH": 2_500.0, "SOL": 150.0}
    assert out["spot_trades"], "the band on BTC makes the book sell BTC"
    gross = 0.0
    for t in out["spot_trades"]:
        k = t["units"] / steps[t["asset"]]
        assert k == pytest.approx(round(k), abs=1e-9)
        assert t["notional"] == pytest.approx(t["units"] * prices[t["asset"]], rel=1e-9)
        gross += abs(t["units"]) * prices[t["asset"]]
    # the default spot fee, 0.1% of the USD traded, on the rounded units
    assert out["spot_costs"]["fees"] == pytest.approx(0.001 * gross, rel=1e-9)


def _coarse_hybrid() -> str:
    """Seed example 1 (0.1 BTC, 1 ETH, 10 SOL at 60,000 / 2,500 / 150: 60/25/15 against
    50/30/20 of V = 10,000) with the spot leg on, 50 bp perpetuals, no margin rows, and spot steps
    no trade can meet: 1 BTC (0.1 held: nothing to sell), 10 ETH and 100 SOL (the buys round to 0)."""
    text = BOOK_SPOT_LOT.replace('lot_step = 0.001', 'lot_step = 1.0', 1)
    text = text.replace('lot_step = 0.01', 'lot_step = 10.0', 1)
    text = text.replace('lot_step = 0.1', 'lot_step = 100.0', 1)
    text = text.replace("leverage = 10.0", 'leverage = 10.0\ntaker_fee = "50bp"')
    head, _ = text.split("[constraints.caps_usd]")
    return head + "[solver]\nspot_leg = true\n"


def test_futures_take_up_the_spot_trades_rounding_removes(tmp_path: Path) -> None:
    """Every spot trade rounds away, so the futures must hold the exposure: the solve's answer
    is then no worse than the plain futures hedge. By hand (vols .55/.70/.95, correlation .7):
    no trade leaves d = (0.10, -0.05, -0.05), TE^2 = d' Sigma d = 0.00248125; the naive hedge
    (short 1,000 BTC, long 500 ETH and 500 SOL of perpetuals) reaches the target, TE^2 = 0, for
    (50 bp fee + 1 bp half spread) x 2,000 / 10,000 = 0.00102. The answer's TE^2 + cost, re-computed
    by hand from its trades, must be at most that (it was 0.00248: the futures had been sized for
    the spot trades that rounding removed, and none was left)."""
    path = tmp_path / "book.toml"
    path.write_text(_coarse_hybrid())
    run = subprocess.run([sys.executable, "-m", "fbr.cli", "solve", str(path), "--json"],
                         capture_output=True, text=True, timeout=300, check=False)
    out = json.loads(run.stdout)
    assert not out["spot_trades"]
    t = np.zeros(3)
    for tr in out["trades"]:
        t[["BTC-PERP", "ETH-PERP", "SOL-PERP"].index(tr["symbol"])] = tr["notional"]
    vols = np.array([0.55, 0.70, 0.95])
    corr = np.full((3, 3), 0.7) + 0.3 * np.eye(3)
    dev = np.array([0.10, -0.05, -0.05]) + t / 10_000
    objective = dev @ (np.outer(vols, vols) * corr) @ dev + 0.0051 * np.abs(t).sum() / 10_000
    assert objective <= 0.00102 + 1e-6
    assert t[0] < -900 and t[1] > 400 and t[2] > 400
