"""Must-show (issue 11, pledged collateral): a book with pledged BTC and a long ETH hedge under a
common fall. The optimiser's own stress row (``optimizer.prepare.prepare`` ->
``optimizer.margin_constraints.StressMargin.surplus``: collateral(r) + g' x - sum_j MM_j(|x_j| (1 + g_j)),
collateral(r) re-pricing pledged BTC through its rule) is zero at the common move r*; the replay's
margin engine (``scenarios.replay.run_backtest`` on a two-step path, and the what-if's
``is_liquidated``) leaves the book alone at r* (1 - 1e-7) and liquidates it at r* (1 + 1e-7).

Hand values (cash 0, ETH hedge entered at the mark, so uPnL = 0 at r = 0):

- Multi-Assets, 1 BTC at 60,000 with bidBuffer 0.05, long 200,000 USD ETH, flat MMR 0.5%:
  S(r) = 57,000 (1 + r) + 200,000 r - 1,000 (1 + r) = 56,000 + 256,000 r, r* = -0.21875;
- Portfolio Margin tiers [0, 250k, 0.95], [250k, 500k, 0.9], [500k, inf, 0.8] on 10 BTC (600,000
  USD), long 2,000,000 USD ETH on Binance-like brackets (1% and cum 1,300 above 250k). The fall
  takes BTC below the 500k edge (r < -1/6), where C(u) = 237,500 + 0.9 (u - 250k), so
  S(r) = 12,500 + 540,000 (1 + r) + 2,000,000 r - (20,000 (1 + r) - 1,300)
       = 533,800 + 2,520,000 r,  r* = -533,800 / 2,520,000 (BTC then 472.9k USD: inside tier 2).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq

from models.book import Book, FuturesPosition
from models.collateral import CollateralRule, bid_buffer_rule, tiered_rule
from models.instruments import FuturesContract, MarginTiers, SpotAsset, TierBracket
from models.liquidation_distance import is_liquidated, liquidation_move
from models.market import MarketSnapshot
from models.price_moves import move_prices
from models.risk import RiskModel
from optimizer.margin_constraints import StressMargin
from optimizer.policies import NoRebalance
from optimizer.prepare import prepare
from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings, StressScenario
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest

T0 = pd.Timestamp("2025-01-01", tz="UTC")
EPS = 1e-7
FLAT = MarginTiers.flat(max_leverage=20.0, mmr=0.005)
TIERED = MarginTiers((TierBracket(0.0, 50_000.0, 125.0, 0.004, 0.0),
                      TierBracket(50_000.0, 250_000.0, 100.0, 0.005, 50.0),
                      TierBracket(250_000.0, 1e12, 50.0, 0.01, 1_300.0)))
PM_TIERS = tiered_rule([(0, 250_000, 0.95), (250_000, 500_000, 0.9), (500_000, math.inf, 0.8)],
                       "pledged.BTC")
RISK = RiskModel.from_covariance(["BTC", "ETH"], np.array([[0.36, 0.3], [0.3, 0.49]]))


def pledged_btc_long_eth(btc: float, rule: CollateralRule, eth_usd: float, tiers: MarginTiers,
                         *, eth_spot: float = 0.0, cash: float = 0.0) -> tuple[Book, MarketSnapshot]:
    """``btc`` BTC pledged by ``rule``; a long ETH perp of ``eth_usd`` entered at the mark."""
    perp = FuturesContract("ETH-PERP", "ETH", lot_step=0.0, min_notional=0.0, tiers=tiers)
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=(perp,),
                spot={"BTC": btc, "ETH": eth_spot}, targets={"BTC": 0.6, "ETH": 0.4}, cash=cash,
                futures={"ETH-PERP": FuturesPosition(eth_usd / 2_500.0, 2_500.0)},
                pledged={"BTC": rule})
    market = MarketSnapshot(time=T0, spot={"BTC": 60_000.0, "ETH": 2_500.0},
                            mark={"ETH-PERP": 2_500.0})
    return book, market


def stress_row_surplus(book: Book, market: MarketSnapshot, r: float) -> float:
    """The optimiser's stress row at the current positions for a common move r (USD): the row
    ``StressMargin`` builds, on the data ``prepare`` computes (pledged spot re-priced)."""
    settings = OptimizerSettings(
        costs=CostSettings(trading=False, carry=False), basis_risk=False,
        constraints=ConstraintSettings(stress=(StressScenario("fall", {}, r),)))
    d = prepare(book, market, RISK, settings)
    return StressMargin(0, "fall").surplus(d.z0, d) * d.V


def stress_root(book: Book, market: MarketSnapshot) -> float:
    """r* in (-1, 0): the common fall at which the stress row's surplus is zero."""
    return float(brentq(lambda r: stress_row_surplus(book, market, r), -0.99, 0.0, xtol=1e-15,
                        rtol=4 * np.finfo(float).eps))


def replay_liquidates(book: Book, market: MarketSnapshot, r: float) -> bool:
    """Two-step replay (now, then every price moved by r), NoRebalance, no sweeps."""
    idx = pd.DatetimeIndex([T0, T0 + pd.Timedelta(hours=1)])
    moved = move_prices(book, market, np.full(len(book.assets), r))
    spot = pd.DataFrame({a: [market.spot_price(a), moved.spot_price(a)] for a in book.asset_symbols},
                        index=idx)
    mark = pd.DataFrame({c: [market.mark_price(c), moved.mark_price(c)]
                         for c in book.contract_symbols}, index=idx)
    res = run_backtest(book, MarketPath(spot=spot, mark=mark), NoRebalance(), collateral=NO_SWEEPS)
    return bool(res.steps["liquidated"].iloc[1])


def assert_boundary(book: Book, market: MarketSnapshot, r_star: float) -> None:
    """Not liquidated at r* (1 - EPS), liquidated at r* (1 + EPS): replay and what-if alike."""
    short_of, past = r_star * (1 - EPS), r_star * (1 + EPS)
    assert stress_row_surplus(book, market, short_of) > 0 > stress_row_surplus(book, market, past)
    assert not replay_liquidates(book, market, short_of)
    assert replay_liquidates(book, market, past)
    n = len(book.assets)
    assert not is_liquidated(book, move_prices(book, market, np.full(n, short_of)))
    assert is_liquidated(book, move_prices(book, market, np.full(n, past)))


def test_multi_assets_bid_buffer_boundary_by_hand() -> None:
    book, market = pledged_btc_long_eth(1.0, bid_buffer_rule(0.05, "pledged.BTC"), 200_000.0, FLAT)
    r_star = stress_root(book, market)
    assert r_star == pytest.approx(-56_000 / 256_000, abs=1e-13)
    assert_boundary(book, market, r_star)
    assert liquidation_move(book, market).down == pytest.approx(r_star, abs=1e-11)


def test_tiered_rates_boundary_across_a_tier_edge_by_hand() -> None:
    book, market = pledged_btc_long_eth(10.0, PM_TIERS, 2_000_000.0, TIERED)
    r_star = stress_root(book, market)
    assert r_star == pytest.approx(-533_800 / 2_520_000, abs=1e-13)
    btc_after = 600_000.0 * (1 + r_star)
    assert 250_000 < btc_after < 500_000 < 600_000  # the fall crossed the 500k edge
    assert_boundary(book, market, r_star)
    assert liquidation_move(book, market).down == pytest.approx(r_star, abs=1e-11)
    # re-pricing linearly at the holding's current average rate (542,500 / 600,000) misses the
    # tiers: C(u) / u rises as u falls (C concave, C(0) = 0), so it under-counts the collateral
    # left after the fall and puts the boundary nearer (r = -0.20765 instead of -0.21183)
    flat_avg = tiered_rule([(0, math.inf, 542_500 / 600_000)])
    naive = stress_root(*pledged_btc_long_eth(10.0, flat_avg, 2_000_000.0, TIERED))
    assert naive == pytest.approx(-(542_500 - 18_700) / (542_500 + 1_980_000), abs=1e-13)
    assert naive > r_star


def test_tiered_boundary_two_edges_with_spot_eth_and_cash() -> None:
    """A fall through two tier edges (30 BTC = 1.8M USD over edges at 1.5M and 1M), with ETH spot
    and cash: r* only from the stress row (no hand formula), exact through both engines."""
    rule = tiered_rule([(0, 1e6, 0.95), (1e6, 1.5e6, 0.85), (1.5e6, 3e6, 0.7)], "pledged.BTC")
    book, market = pledged_btc_long_eth(30.0, rule, 1_500_000.0, TIERED, eth_spot=40.0, cash=5_000.0)
    r_star = stress_root(book, market)
    assert 1_800_000 * (1 + r_star) < 1e6  # crossed 1.5M and 1M
    assert_boundary(book, market, r_star)


def test_fbr_status_liquidation_move_prices_pledged_tiers() -> None:
    """`fbr status`'s distance to liquidation re-prices pledged BTC through its tiers: the move it
    reports is the hand root -533,800 / 2,520,000 (the flat first-tier rate gave a smaller one)."""
    from executor.status import liquidation_move as status_move

    book, market = pledged_btc_long_eth(10.0, PM_TIERS, 2_000_000.0, TIERED)
    down = status_move(book, market, -1.0)
    assert down is not None
    assert down == pytest.approx(-533_800 / 2_520_000, rel=1e-12)  # a signed return, as the what-if's
