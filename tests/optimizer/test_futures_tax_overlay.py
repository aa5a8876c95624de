"""[tax] price_futures on an overlay-only book (spot leg off): the tax of realising futures gains
is priced as with the spot leg (review finding 1), and with it off the problem is unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from datetime import date
from pathlib import Path

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
import tomli_w

from models.book import Book, FuturesPosition
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from models.tax import TaxRates
from optimizer.prepare import prepare
from optimizer.settings import OptimizerSettings, SpotLegSettings
from optimizer.terms import FuturesTax, terms_for

ROOT = Path(__file__).resolve().parents[2]
SEED1 = ROOT / "examples" / "seed_example_1.toml"
RATES = TaxRates(short_term=0.30, long_term=0.15, futures=0.30)


def _book() -> tuple[Book, MarketSnapshot, RiskModel]:
    """2 BTC at 50,000, 20 ETH at 2,500 and a long 0.5 BTC perp struck at 30,000: 25,000 USD of
    notional with a 10,000 USD unrealised gain; no ETH position."""
    contracts = (FuturesContract("BTC-PERP", "BTC", taker_fee=0.0004),
                 FuturesContract("ETH-PERP", "ETH", taker_fee=0.0004))
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=contracts,
                spot={"BTC": 2.0, "ETH": 20.0}, targets={"BTC": 0.5, "ETH": 0.5}, cash=100_000.0,
                futures={"BTC-PERP": FuturesPosition(0.5, 30_000.0)})
    market = MarketSnapshot(time=pd.Timestamp("2025-01-02T00:00:00Z"),
                            spot={"BTC": 50_000.0, "ETH": 2_500.0},
                            mark={"BTC-PERP": 50_000.0, "ETH-PERP": 2_500.0})
    risk = RiskModel.from_covariance(["BTC", "ETH"], np.array([[0.36, 0.25], [0.25, 0.49]]))
    return book, market, risk


def test_overlay_only_problem_carries_the_futures_tax_coefficients() -> None:
    """c = gamma x rate x U / |x0| = 1 x 0.30 x 10,000 / 25,000 = 0.12 per unit of weight the BTC
    long is reduced by; 0 for ETH (no position). The spot leg stays off (d.spot None)."""
    book, market, risk = _book()
    spot = SpotLegSettings(enabled=False, rates=RATES, futures_tax=True)
    d = prepare(book, market, risk, OptimizerSettings(spot=spot))
    assert d.spot is None
    assert d.futures_tax_coef is not None
    np.testing.assert_allclose(d.futures_tax_coef, [0.12, 0.0], atol=1e-12)
    assert d.structure.futures_tax and not d.structure.spot_leg
    assert any(isinstance(t, FuturesTax) for t in terms_for(d.structure))
    # value at z_BTC = z0 / 2: 0.12 x z0 / 2, z0 = 25,000 / V
    z0 = d.z0[0]
    assert FuturesTax().value(np.array([z0 / 2, 0.0]), d) == pytest.approx(0.12 * z0 / 2, abs=1e-12)


@pytest.mark.parametrize("spot", [SpotLegSettings(), SpotLegSettings(rates=RATES),
                                  SpotLegSettings(rates=RATES, futures_tax=False)])
def test_without_price_futures_no_term_is_added(spot: SpotLegSettings) -> None:
    book, market, risk = _book()
    d = prepare(book, market, risk, OptimizerSettings(spot=spot))
    assert d.futures_tax_coef is None and not d.structure.futures_tax


def test_price_futures_is_priced_by_fbr_solve_on_an_overlay_only_book(tmp_path: Path) -> None:
    """Seed example 1 (0.1 BTC, 1 ETH, 10 SOL at 60,000 / 2,500 / 150; V = 10,000; targets
    50/30/20; vols 55/70/95%, correlation 0.7) short 0.04 BTC-PERP entered at 80,000: U = 0.04 x
    20,000 = 800 USD; [tax] futures 40%, price_futures, no spot leg. Plain cvxpy, z = x / V:
        min (s + z - w)' Sigma (s + z - w) + 0.0006 ||z - z0||_1 + (0.40 x 800 / 2,400) pos(0.24 + z_BTC)
    (0.0006: the default 5 bp taker fee + 1 bp half spread) holds the short at -2,400 USD; without
    the tax term fbr cut it to about -1,010."""
    doc = tomllib.loads(SEED1.read_text(encoding="utf-8"))
    doc["costs"] = {"trading": True, "carry": False, "impact": False}
    doc["tax"] = {"short_term": "30%", "long_term": "15%", "futures": "40%", "price_futures": True}
    doc["lots"] = [{"asset": a, "quantity": q, "cost_basis": b, "acquired": date(2023, 1, 1)}
                   for a, q, b in (("BTC", 0.1, 30000.0), ("ETH", 1.0, 2000.0), ("SOL", 10.0, 100.0))]
    doc["futures"] = [{"symbol": "BTC-PERP", "contracts": -0.04, "entry_price": 80000.0}]
    path = tmp_path / "book.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")

    P, Q = np.array([60000.0, 2500.0, 150.0]), np.array([0.1, 1.0, 10.0])
    vol = np.array([0.55, 0.70, 0.95])
    C = np.full((3, 3), 0.7)
    np.fill_diagonal(C, 1.0)
    V = float(P @ Q)
    s, w, z0 = Q * P / V, np.array([0.5, 0.3, 0.2]), np.array([-2400.0 / V, 0.0, 0.0])
    z = cp.Variable(3)
    obj = (cp.quad_form(s + z - w, np.outer(vol, vol) * C) + 0.0006 * cp.sum(cp.abs(z - z0))
           + 0.40 * 800.0 / 2400.0 * cp.pos(-z0[0] + z[0]))
    cp.Problem(cp.Minimize(obj)).solve(solver=cp.CLARABEL)
    expected = z.value * V
    assert expected[0] == pytest.approx(-2400.0, abs=0.5)

    r = subprocess.run([sys.executable, "-m", "fbr.cli", "solve", str(path), "--json"],
                       capture_output=True, text=True,
                       cwd=str(ROOT), check=False)
    assert r.returncode == 0, r.stderr
    got = {p["underlying"]: p["notional"] for p in json.loads(r.stdout)["target_positions"]}
    np.testing.assert_allclose([got[a] for a in ("BTC", "ETH", "SOL")], expected, atol=1.0)
