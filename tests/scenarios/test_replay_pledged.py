"""Pledged collateral in the replay (issue 11; ``run_backtest(pledged=True)``, rules in
``scenarios.collateral``'s docstring).

Hand case of a breach: 2 BTC at 60,000 pledged at a flat 0.9 (108,000 USD of collateral), a long
ETH perp of 200,000 USD (80 ETH at 2,500, entered at the mark), no cash, maintenance 0.5%,
liquidation penalty 1%. ETH falls 55% to 1,125: uPnL -110,000, collateral -110,000 + 108,000 =
-2,000 below maintenance 0.005 x 90,000 = 450: liquidated. Closing at mark leaves cash -110,000,
the penalty 0.01 x 90,000 = 900 takes it to -110,900; pledged BTC is sold to cover it:
G = 110,900 / (1 - 0.01) = 112,020.20 USD (1.8670034 BTC), penalty 0.01 G = 1,120.20, cash 0.
NAV 10,000 before the breach, 10,000 - 900 - 1,120.20 = 7,979.80 after (BTC left 7,979.80 USD).
Without ``pledged`` the debt stays: cash -110,900, NAV 9,100, BTC untouched (the pledged BTC, which
the margin check counted, still backs it, so the insurance fund takes nothing); a debt beyond the
pledged BTC's value is the insurance fund's. The what-if applies the same rule to the same fall
(``scenarios.whatif``).

Sweep: the same book with a small hedge and a 20% reserve target (band 0.5): the wallet (0) is
below 0.2 x 0.5 x NAV, but the pledged collateral covers it: no top-up with ``pledged``; the
plain replay sells spot into the wallet.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.instruments import FuturesContract, MarginTiers, SpotAsset
from optimizer.policies import NoRebalance
from scenarios.collateral import NO_SWEEPS, CollateralPolicy
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest

T0 = pd.Timestamp("2025-01-01", tz="UTC")
FLAT = MarginTiers.flat(max_leverage=20.0, mmr=0.005)
IDENTITY_COSTS = ["fee_spot", "fee_futures", "slippage_futures", "funding", "liquidation_penalty",
                  "sweep_fees"]


def book_and_path(eth_usd: float, eth_after: float) -> tuple[Book, MarketPath]:
    perp = FuturesContract("ETH-PERP", "ETH", lot_step=0.0, min_notional=0.0, tiers=FLAT)
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=(perp,),
                spot={"BTC": 2.0, "ETH": 0.0}, targets={"BTC": 0.6, "ETH": 0.4}, cash=0.0,
                futures={"ETH-PERP": FuturesPosition(eth_usd / 2_500.0, 2_500.0)},
                pledged={"BTC": 0.9})
    idx = pd.DatetimeIndex([T0, T0 + pd.Timedelta(hours=8)])
    spot = pd.DataFrame({"BTC": [60_000.0, 60_000.0], "ETH": [2_500.0, eth_after]}, index=idx)
    return book, MarketPath(spot=spot, mark=pd.DataFrame({"ETH-PERP": spot["ETH"]}))


def test_breach_sells_pledged_spot_at_the_penalty_by_hand() -> None:
    book, path = book_and_path(200_000.0, 1_125.0)
    res = run_backtest(book, path, NoRebalance(), collateral=NO_SWEEPS, liquidation_penalty=0.01,
                       pledged=True)
    s = res.steps.iloc[1]
    assert bool(s["liquidated"])
    gross = 110_900.0 / 0.99
    assert round(float(s["liquidation_penalty"]), 2) == round(900.0 + 0.01 * gross, 2) == 2_020.20
    assert float(s["cash"]) == pytest.approx(0.0, abs=1e-8)
    assert round(float(s["nav"]), 2) == 7_979.80
    assert float(res.spot_value["BTC"].iloc[1]) == pytest.approx(120_000.0 - gross, abs=1e-6)
    sale = res.trades[res.trades["kind"] == "collateral_sale"]
    assert list(sale["symbol"]) == ["BTC"]
    assert float(sale["quantity"].iloc[0]) == pytest.approx(-gross / 60_000.0, rel=1e-12)
    assert round(float(sale["fee"].iloc[0]), 2) == 1_120.20
    assert round(float(sale["notional"].iloc[0]), 2) == -112_020.20
    # NAV identity: the sale at the close is NAV-neutral, the penalties are costs
    flows = float(s["spot_pnl"] + s["futures_pnl"] - s[IDENTITY_COSTS].sum()
                  + s["insurance_fund"])
    assert float(res.steps["nav"].diff().iloc[1]) == pytest.approx(flows, abs=1e-8)


def test_without_pledged_rules_the_debt_stays() -> None:
    """The same fall with the pledged switch off: the wallet's -110,900 stays (the 120,000 of
    pledged BTC the margin check counted still backs it: the insurance fund takes nothing)."""
    book, path = book_and_path(200_000.0, 1_125.0)
    res = run_backtest(book, path, NoRebalance(), collateral=NO_SWEEPS, liquidation_penalty=0.01)
    s = res.steps.iloc[1]
    assert bool(s["liquidated"]) and round(float(s["cash"]), 2) == -110_900.00
    assert float(s["insurance_fund"]) == 0.0
    assert round(float(s["nav"]), 2) == 9_100.00
    assert (res.trades["kind"] != "collateral_sale").all()
    assert float(res.spot_value["BTC"].iloc[1]) == 120_000.0


def test_without_pledged_rules_a_debt_beyond_the_pledged_spot_is_the_insurance_funds() -> None:
    """ETH -70% with the switch off: the wallet's -140,600 is backed by 120,000 of pledged BTC;
    the 20,600 beyond it is the insurance fund's (cash -120,000, NAV 0), the BTC untouched."""
    book, path = book_and_path(200_000.0, 750.0)
    res = run_backtest(book, path, NoRebalance(), collateral=NO_SWEEPS, liquidation_penalty=0.01)
    s = res.steps.iloc[1]
    assert round(float(s["insurance_fund"]), 2) == 20_600.00
    assert round(float(s["cash"]), 2) == -120_000.00 and round(float(s["nav"]), 2) == 0.0
    assert (res.trades["kind"] != "collateral_sale").all()
    assert float(res.spot_value["BTC"].iloc[1]) == 120_000.0


def test_a_debt_beyond_the_pledged_spot_sells_it_all() -> None:
    # ETH falls 70%: cash -140,000 - 600 penalty; all 120,000 of BTC sold (penalty 1,200), the
    # debt left (-21,800) is the insurance fund's: the wallet is back at 0
    book, path = book_and_path(200_000.0, 750.0)
    res = run_backtest(book, path, NoRebalance(), collateral=NO_SWEEPS, liquidation_penalty=0.01,
                       pledged=True)
    s = res.steps.iloc[1]
    assert float(res.spot_value["BTC"].iloc[1]) == 0.0
    assert round(float(s["liquidation_penalty"]), 2) == 600.0 + 1_200.0
    assert round(float(s["insurance_fund"]), 2) == round(140_600.0 - 120_000.0 * 0.99, 2) == 21_800.0
    assert float(s["cash"]) == 0.0


def test_no_top_up_while_pledged_collateral_covers_the_reserve() -> None:
    book, path = book_and_path(20_000.0, 2_500.0)
    reserve = CollateralPolicy(target_fraction=0.2, band=0.5)
    plain = run_backtest(book, path, NoRebalance(), collateral=reserve)
    assert float(plain.steps["sweep_in"].iloc[0]) > 0  # wallet 0 < 0.1 NAV: spot sold
    pledged = run_backtest(book, path, NoRebalance(), collateral=reserve, pledged=True)
    assert float(pledged.steps["sweep_in"].sum()) == 0.0
    assert (pledged.trades["kind"] != "sweep_in").all()
    np.testing.assert_array_equal(pledged.spot_value.to_numpy(),
                                  np.array([[120_000.0, 0.0], [120_000.0, 0.0]]))


def test_top_up_when_pledged_collateral_falls_short() -> None:
    # pledged at 0.05 only: 6,000 of collateral < 0.2 x 0.5 x NAV (about 12,000): top-up to
    # bring wallet + collateral to 0.2 NAV (the gap less the pledged value the sale removes)
    book, path = book_and_path(20_000.0, 2_500.0)
    book = Book(assets=book.assets, contracts=book.contracts, spot=dict(book.spot),
                targets=dict(book.targets), cash=0.0, futures=dict(book.futures),
                pledged={"BTC": 0.05})
    reserve = CollateralPolicy(target_fraction=0.2, band=0.5)
    res = run_backtest(book, path, NoRebalance(), collateral=reserve, pledged=True)
    s = res.steps.iloc[0]
    fee = 0.001 + 1e-4  # the sale pays the spot fee and the default 1 bp half spread
    gross = (0.2 * 120_000.0 - 6_000.0) / (1 - fee + 0.2 * fee)
    assert float(s["sweep_in"]) == pytest.approx(gross, rel=1e-12)
    assert float(s["wallet"]) == pytest.approx(gross * (1 - fee), rel=1e-12)


@pytest.mark.parametrize(("move", "eth_after"), [(-0.55, 1_125.0), (-0.70, 750.0)])
def test_the_whatif_liquidates_a_pledged_book_as_the_replay(move: float, eth_after: float) -> None:
    """One rule for a liquidation in the what-if and the replay: positions closed at the penalty,
    the wallet covered by pledged BTC sold at the penalty, the rest by the insurance fund. At
    -55% the pledged BTC covers the 110,900 debt (NAV 7,979.80, nothing absorbed); at -70% all
    120,000 of it is sold and the insurance fund takes the 21,800 left (NAV 0)."""
    from models.market import MarketSnapshot
    from models.risk import RiskModel
    from scenarios.shocks import parse_scenario
    from scenarios.whatif import run_whatif

    book, path = book_and_path(200_000.0, eth_after)
    replay = run_backtest(book, path, NoRebalance(), collateral=NO_SWEEPS,
                          liquidation_penalty=0.01, pledged=True).steps.iloc[1]
    market = MarketSnapshot(time=T0, spot={"BTC": 60_000.0, "ETH": 2_500.0},
                            mark={"ETH-PERP": 2_500.0})
    risk = RiskModel.from_covariance(("BTC", "ETH"), np.array([[0.36, 0.3], [0.3, 0.49]]))
    r = run_whatif(book, market, risk, parse_scenario("fall", [f"ETH={100 * move:g}%"]),
                   resolve=False, distances=False)
    assert r.liquidated and bool(replay["liquidated"])
    assert r.nav_after == pytest.approx(float(replay["nav"]), abs=1e-6)
    assert r.liquidation_penalty == pytest.approx(float(replay["liquidation_penalty"]), abs=1e-6)
    assert r.insurance_fund == pytest.approx(float(replay["insurance_fund"]), abs=1e-6)
    expected = (7_979.80, 0.0) if move == -0.55 else (0.0, 21_800.0)
    assert (round(r.nav_after, 2), round(r.insurance_fund, 2)) == expected


def test_spot_kept_outside_the_pledge_never_backs_the_debt() -> None:
    """3 BTC held, 2 of them pledged (a quantity cap): ETH -70% takes all 120,000 of pledged BTC
    (penalty 1,200) and leaves -21,800, which the insurance fund takes; the third BTC, never
    pledged, is untouched (NAV 60,000), although a quantity cap of 2 would count it once it is
    the only BTC left."""
    from models.collateral import flat_rule

    book, path = book_and_path(200_000.0, 750.0)
    book = Book(book.assets, book.contracts, spot={"BTC": 3.0, "ETH": 0.0}, targets=book.targets,
                cash=0.0, futures=book.futures, pledged={"BTC": flat_rule(0.9, quantity=2.0)})
    res = run_backtest(book, path, NoRebalance(), collateral=NO_SWEEPS, liquidation_penalty=0.01,
                       pledged=True)
    s = res.steps.iloc[1]
    assert round(float(s["liquidation_penalty"]), 2) == 600.0 + 1_200.0
    assert round(float(s["insurance_fund"]), 2) == 21_800.00 and float(s["cash"]) == 0.0
    assert float(res.spot_value["BTC"].iloc[1]) == pytest.approx(60_000.0, rel=1e-12)
    assert round(float(s["nav"]), 2) == 60_000.00
