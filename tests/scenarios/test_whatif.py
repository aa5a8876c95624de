"""What-if: shock arithmetic by hand, exact liquidation moves checked against the backtester's margin
engine, risk and liquidity shocks, the re-solve and the stress-safe constraint."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from fbr.config import load_book_file
from models.book import Book, FuturesPosition
from models.errors import ValidationError
from models.instruments import FuturesContract, MarginTiers, SpotAsset, TierBracket
from models.liquidation_distance import (
    LiquidationMove,
    is_liquidated,
    liquidation_move,
    liquidation_moves,
)
from models.market import MarketSnapshot
from models.price_moves import move_prices
from models.risk import RiskModel
from optimizer.policies import NoRebalance
from optimizer.rebalance import Rebalancer
from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings
from scenarios.applied_shocks import resolve_shocks, shock_market, shock_risk
from scenarios.collateral import NO_SWEEPS
from scenarios.library import book_scenarios
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest
from scenarios.shocks import parse_scenario
from scenarios.whatif import apply_solution, run_whatif

T0 = pd.Timestamp("2025-01-01", tz="UTC")
EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples"
TIERED = MarginTiers((TierBracket(0.0, 50_000.0, 125.0, 0.004, 0.0),
                      TierBracket(50_000.0, 250_000.0, 100.0, 0.005, 50.0),
                      TierBracket(250_000.0, 1e12, 50.0, 0.01, 1_300.0)))
FLAT = MarginTiers.flat(max_leverage=20.0, mmr=0.005)


def perp(asset: str, tiers: MarginTiers = FLAT) -> FuturesContract:
    return FuturesContract(f"{asset}-PERP", asset, lot_step=0.0, min_notional=0.0, tiers=tiers)


def three_asset_book(cash: float = 3_000.0) -> tuple[Book, MarketSnapshot]:
    """0.1 BTC, 1 ETH, 10 SOL; short BTC, long ETH and SOL perps; SOL pledged at 90%."""
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH"), SpotAsset("SOL")),
                contracts=(perp("BTC", TIERED), perp("ETH"), perp("SOL")),
                spot={"BTC": 0.1, "ETH": 1.0, "SOL": 10.0},
                targets={"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}, cash=cash,
                futures={"BTC-PERP": FuturesPosition(-0.02, 58_000.0),
                         "ETH-PERP": FuturesPosition(0.2, 2_600.0),
                         "SOL-PERP": FuturesPosition(5.0, 140.0)},
                pledged={"SOL": 0.9})
    market = MarketSnapshot(time=T0, spot={"BTC": 60_000.0, "ETH": 2_500.0, "SOL": 150.0},
                            mark={"BTC-PERP": 60_060.0, "ETH-PERP": 2_502.0, "SOL-PERP": 150.3},
                            funding={"BTC-PERP": 0.0002, "ETH-PERP": 0.0001},
                            half_spread={"BTC-PERP": 0.0001}, adv={"ETH-PERP": 1e9})
    return book, market


def risk3() -> RiskModel:
    vols = np.array([0.5, 0.7, 0.9])
    corr = np.array([[1.0, 0.6, 0.5], [0.6, 1.0, 0.4], [0.5, 0.4, 1.0]])
    return RiskModel.from_covariance(["BTC", "ETH", "SOL"], corr * np.outer(vols, vols))


NO_COSTS = OptimizerSettings(costs=CostSettings(trading=False, carry=False),
                             constraints=ConstraintSettings(margin=False), basis_risk=False)


# --- shock arithmetic by hand -----------------------------------------------------------------

def test_three_asset_book_by_hand() -> None:
    book, market = three_asset_book()
    sc = parse_scenario("hand", ["BTC=-20%", "common=-10%", "basis.SOL-PERP=-1%",
                                 "funding.ETH=+0.1%", "horizon=3"])
    r = run_whatif(book, market, risk3(), sc, NO_COSTS)
    # prices: BTC -20%, ETH and SOL -10% (common); SOL-PERP mark a further -1%
    s1 = {"BTC": 48_000.0, "ETH": 2_250.0, "SOL": 135.0}
    m1 = {"BTC": 60_060.0 * 0.8, "ETH": 2_502.0 * 0.9, "SOL": 150.3 * 0.9 * 0.99}
    q = {"BTC": -0.02, "ETH": 0.2, "SOL": 5.0}
    entry = {"BTC": 58_000.0, "ETH": 2_600.0, "SOL": 140.0}
    spot_pnl = 0.1 * (48_000 - 60_000) + 1.0 * (2_250 - 2_500) + 10.0 * (135 - 150)
    assert spot_pnl == pytest.approx(-1_600.0)
    fut_pnl = (-0.02 * (m1["BTC"] - 60_060) + 0.2 * (m1["ETH"] - 2_502)
               + 5.0 * (m1["SOL"] - 150.3))
    # funding over 3 settlements at the shocked rates and notionals: BTC 0.02%, ETH 0.01% + 0.1%
    paid = 3 * 0.0002 * (-0.02 * m1["BTC"]) + 3 * 0.0011 * (0.2 * m1["ETH"])
    assert r.pnl.spot == pytest.approx(spot_pnl, abs=1e-9)
    assert r.pnl.futures == pytest.approx(fut_pnl, abs=1e-9)
    assert r.pnl.funding == pytest.approx(-paid, abs=1e-12)
    assert r.settlements == {"BTC-PERP": 3.0, "ETH-PERP": 3.0, "SOL-PERP": 3.0}

    upnl0 = sum(q[a] * ({"BTC": 60_060.0, "ETH": 2_502.0, "SOL": 150.3}[a] - entry[a]) for a in q)
    nav0 = 6_000 + 2_500 + 1_500 + 3_000 + upnl0
    assert r.nav_before == pytest.approx(nav0, abs=1e-9)
    assert r.nav_after == pytest.approx(nav0 + spot_pnl + fut_pnl - paid, abs=1e-9)

    base1 = 0.1 * 48_000 + 1.0 * 2_250 + 10.0 * 135  # invested base: spot value after
    for a, spot_q in (("BTC", 0.1), ("ETH", 1.0), ("SOL", 10.0)):
        e = (spot_q * s1[a] + q[a] * m1[a]) / base1
        assert r.weights_after[a] == pytest.approx(e, abs=1e-12)
        assert r.drift[a] == pytest.approx(e - {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}[a], abs=1e-12)

    upnl1 = sum(q[a] * (m1[a] - entry[a]) for a in q)
    collateral1 = 3_000 - paid + upnl1 + 0.9 * 10.0 * 135
    n = {a: abs(q[a] * m1[a]) for a in q}  # all in the first brackets
    mm1 = 0.004 * n["BTC"] + 0.005 * n["ETH"] + 0.005 * n["SOL"]
    assert r.margin_after.collateral == pytest.approx(collateral1, abs=1e-9)
    assert r.margin_after.maintenance == pytest.approx(mm1, abs=1e-9)
    assert r.margin_after.margin_ratio == pytest.approx(mm1 / collateral1, rel=1e-12)
    assert not r.liquidated
    # the asset tracking error after, with the unshocked covariance (no vol/corr shock)
    d = np.array([r.drift[a] for a in ("BTC", "ETH", "SOL")])
    assert r.tracking_error_after == pytest.approx(math.sqrt(d @ risk3().covariance @ d), rel=1e-12)


def test_no_funding_shock_means_an_instantaneous_scenario() -> None:
    book, market = three_asset_book()
    r = run_whatif(book, market, risk3(), parse_scenario("p", ["common=-5%"]), resolve=False,
                   distances=False)
    assert r.pnl.funding == 0.0 and r.settlements == {}
    week = resolve_shocks(parse_scenario("w", ["funding=+0.3%", "horizon=7d"]), book)
    assert list(week.settlements) == [21.0, 21.0, 21.0]  # 168 h / 8 h


def test_vol_and_corr_shock_is_d_c_d() -> None:
    book, _ = three_asset_book()
    applied = resolve_shocks(parse_scenario("r", ["vol=x1.5", "vol.SOL=x2", "corr=0.9@50%"]), book)
    shocked = shock_risk(risk3(), book, applied)
    vols = np.array([0.5, 0.7, 0.9]) * np.array([1.5, 1.5, 2.0])
    corr = np.array([[1.0, 0.6, 0.5], [0.6, 1.0, 0.4], [0.5, 0.4, 1.0]])
    blended = 0.5 * corr + 0.5 * (0.9 * np.ones((3, 3)) + 0.1 * np.eye(3))
    np.testing.assert_allclose(shocked.covariance, blended * np.outer(vols, vols), atol=1e-12)
    assert shock_risk(risk3(), book, resolve_shocks(parse_scenario("p", ["BTC=-1%"]), book)) \
        .covariance.tolist() == risk3().covariance.tolist()


def test_spread_and_liquidity_shocks_reach_the_market() -> None:
    book, market = three_asset_book()
    applied = resolve_shocks(parse_scenario("l", ["spread=x3", "liquidity.ETH=x0.5"]), book)
    m = shock_market(book, market, applied)
    assert m.contract_half_spread("BTC-PERP") == pytest.approx(0.0003)
    assert m.contract_half_spread("SOL-PERP") == pytest.approx(0.0003)  # 1 bp default x 3
    assert m.contract_adv("ETH-PERP") == pytest.approx(5e8)
    assert math.isinf(m.contract_adv("BTC-PERP"))  # no ADV: stays "no impact"


def test_spread_shock_reaches_the_default_spot_half_spread() -> None:
    """spread=x3 multiplies every asset's spot half spread, from the optimiser's 1 bp default
    when the market gives none: BTC and SOL 0.0001 x 3 = 0.0003; ETH's own 0.0002 x 3 = 0.0006.
    A spot-targeted spread.SOL=x2 leaves BTC and ETH as they are."""
    book, market = three_asset_book()
    market = replace(market, spot_half_spread={"ETH": 0.0002})
    m = shock_market(book, market, resolve_shocks(parse_scenario("s", ["spread=x3"]), book))
    assert m.spot_half_spread == pytest.approx({"BTC": 0.0003, "ETH": 0.0006, "SOL": 0.0003})
    m = shock_market(book, market, resolve_shocks(parse_scenario("s", ["spread.SOL=x2"]), book))
    assert m.spot_half_spread == pytest.approx({"ETH": 0.0002, "SOL": 0.0002})


def test_unknown_symbols() -> None:
    book, market = three_asset_book()
    with pytest.raises(ValidationError, match="DOGE"):
        run_whatif(book, market, risk3(), parse_scenario("x", ["DOGE=-10%"]))
    with pytest.raises(ValidationError, match="XRP-PERP"):
        run_whatif(book, market, risk3(), parse_scenario("x", ["funding.XRP-PERP=+1%"]))
    loose = parse_scenario("x", ["DOGE=-10%", "BTC=-10%"], strict=False)
    r = run_whatif(book, market, risk3(), loose, resolve=False, distances=False)
    assert r.pnl.spot == pytest.approx(0.1 * 60_000 * -0.1)


def test_resolve_runs_on_the_shocked_book() -> None:
    book, market = three_asset_book()
    r = run_whatif(book, market, risk3(), parse_scenario("x", ["BTC=+10%"]), NO_COSTS)
    assert r.next_solution is not None and r.next_error is None
    assert r.next_solution.nav == pytest.approx(r.nav_after, rel=1e-12)
    assert r.next_solution.tracking_error_after < 1e-6  # naive answer: back on target
    # the naive overlay: B x = w* V - spot at the shocked prices
    s1 = np.array([0.1 * 66_000, 2_500.0, 1_500.0])
    x = {p.underlying: p.notional for p in r.next_solution.target_positions}
    np.testing.assert_allclose([x["BTC"], x["ETH"], x["SOL"]],
                               np.array([0.5, 0.3, 0.2]) * s1.sum() - s1, atol=0.01)


# --- liquidation moves are exact against the backtester ---------------------------------------

def backtest_liquidates(book: Book, market: MarketSnapshot, returns: dict[str, float]) -> bool:
    """Two-step replay: step 0 = now, step 1 = prices moved; NoRebalance, no sweeps."""
    idx = pd.DatetimeIndex([T0, T0 + pd.Timedelta(hours=1)])
    r = np.array([returns.get(a, 0.0) for a in book.asset_symbols])
    moved = move_prices(book, market, r)
    spot = pd.DataFrame({a: [market.spot_price(a), moved.spot_price(a)] for a in book.asset_symbols},
                        index=idx)
    mark = pd.DataFrame({c: [market.mark_price(c), moved.mark_price(c)]
                         for c in book.contract_symbols}, index=idx)
    res = run_backtest(book, MarketPath(spot=spot, mark=mark), NoRebalance(), collateral=NO_SWEEPS)
    return bool(res.steps["liquidated"].iloc[1])


def assert_exact(book: Book, market: MarketSnapshot, move: float, assets: list[str]) -> None:
    """No liquidation a hair short of the move, liquidation a hair past it."""
    eps = 1e-7
    short_of = move * (1 - eps)
    past = move * (1 + eps)
    assert not backtest_liquidates(book, market, dict.fromkeys(assets, short_of))
    assert backtest_liquidates(book, market, dict.fromkeys(assets, past))
    mask = np.array([a in assets for a in book.asset_symbols], dtype=float)
    assert not is_liquidated(book, move_prices(book, market, mask * short_of))
    assert is_liquidated(book, move_prices(book, market, mask * past))


def one_contract_book(q: float, cash: float, tiers: MarginTiers) -> tuple[Book, MarketSnapshot]:
    book = Book(assets=(SpotAsset("BTC"),), contracts=(perp("BTC", tiers),), spot={"BTC": 1.0},
                targets={"BTC": 1.0}, cash=cash, futures={"BTC-PERP": FuturesPosition(q, 60_000.0)})
    market = MarketSnapshot(time=T0, spot={"BTC": 60_000.0}, mark={"BTC-PERP": 60_000.0})
    return book, market


def test_single_short_contract_up_move_by_hand() -> None:
    # short 1 BTC at 60,000, cash 3,000, flat 0.5%: 3,000 - 60,000 r = 0.005 x 60,000 (1 + r)
    book, market = one_contract_book(-1.0, 3_000.0, FLAT)
    m = liquidation_move(book, market)
    assert m.up == pytest.approx(2_700 / 60_300, abs=1e-12)
    assert m.down is None  # a short gains on the way down
    assert m.nearest == m.up
    assert m.up is not None
    assert_exact(book, market, m.up, ["BTC"])


def test_single_long_contract_across_a_tier_by_hand() -> None:
    # long 2 BTC (120,000 USD) with cash 10,000: the notional at the root is in the 50k-250k bracket
    # 10,000 + 120,000 r = 0.005 x 120,000 (1 + r) - 50  ->  r = -9,450 / 119,400
    book, market = one_contract_book(2.0, 10_000.0, TIERED)
    m = liquidation_move(book, market)
    assert m.down == pytest.approx(-9_450 / 119_400, abs=1e-12)
    assert m.up is None
    assert m.down is not None
    assert_exact(book, market, m.down, ["BTC"])


def test_no_move_liquidates_a_well_funded_long() -> None:
    book, market = one_contract_book(1.0, 1e6, FLAT)
    m = liquidation_move(book, market)
    assert m.down is None and m.up is None and m.has_positions
    assert not backtest_liquidates(book, market, {"BTC": -0.999999})


NET_LONG = {"BTC-PERP": FuturesPosition(-0.5, 60_000.0), "ETH-PERP": FuturesPosition(8.0, 2_500.0),
            "SOL-PERP": FuturesPosition(300.0, 150.0)}
NET_SHORT = {"BTC-PERP": FuturesPosition(-1.5, 60_000.0), "ETH-PERP": FuturesPosition(8.0, 2_500.0),
             "SOL-PERP": FuturesPosition(100.0, 150.0)}


@pytest.mark.parametrize(("positions", "book_side"), [(NET_LONG, "down"), (NET_SHORT, "up")])
def test_cross_margined_book_common_and_per_contract_moves(
        positions: dict[str, FuturesPosition], book_side: str) -> None:
    """A short BTC leg and long ETH/SOL legs on one margin balance (pledged SOL, tiered BTC)."""
    book, market = three_asset_book(cash=800.0)
    book = book.evolve(futures=positions)
    moves = liquidation_moves(book, market)
    assert [m.scope for m in moves] == ["book", "BTC-PERP", "ETH-PERP", "SOL-PERP"]
    common = moves[0]
    side = getattr(common, book_side)
    other = common.up if book_side == "down" else common.down
    assert side is not None and other is None and side > -1
    assert_exact(book, market, side, book.asset_symbols)
    btc, eth, sol = moves[1:]
    # the short BTC leg alone: only a rally hurts; the long legs alone: only a fall
    assert btc.down is None and btc.up is not None and btc.up > 0
    assert eth.up is None and eth.down is not None and sol.up is None and sol.down is not None
    for m, move in ((btc, btc.up), (eth, eth.down), (sol, sol.down)):
        assert_exact(book, market, move, [m.assets[0]])


def test_already_liquidated_and_flat_books() -> None:
    book, market = one_contract_book(-1.0, 3_000.0, FLAT)
    m = liquidation_move(book, move_prices(book, market, np.array([0.2])))
    assert m.down == 0.0 and m.up == 0.0 and m.surplus < 0
    flat = book.evolve(futures={})
    assert liquidation_move(flat, market) == LiquidationMove("book", ("BTC",), None, None, 3_000.0,
                                                             has_positions=False)


def test_whatif_liquidation_matches_the_backtester() -> None:
    book, market = one_contract_book(-1.0, 3_000.0, FLAT)
    r = run_whatif(book, market, RiskModel.from_covariance(["BTC"], np.array([[0.25]])),
                   parse_scenario("rally", ["BTC=+5%"]), resolve=False)
    assert r.liquidated and [x.contract for x in r.liquidations] == ["BTC-PERP"]
    assert r.liquidations[0].penalty == pytest.approx(0.01 * 63_000.0)
    idx = pd.DatetimeIndex([T0, T0 + pd.Timedelta(hours=1)])
    path = MarketPath(spot=pd.DataFrame({"BTC": [60_000.0, 63_000.0]}, index=idx))
    bt = run_backtest(book, path, NoRebalance(), collateral=NO_SWEEPS)
    assert bool(bt.steps["liquidated"].iloc[1])
    assert r.nav_after == pytest.approx(float(bt.steps["nav"].iloc[1]), abs=1e-9)
    # short 1 BTC with 3,000 of cash: +5% loses 3,000, the penalty 630 is the insurance fund's
    assert r.insurance_fund == pytest.approx(630.0)
    assert r.nav_after == pytest.approx(r.nav_before + r.pnl.total - r.liquidation_penalty
                                        + r.insurance_fund)
    assert r.weights_after == {"BTC": pytest.approx(1.0)}  # futures closed: spot only


# --- the optimiser's stress-safe margin constraint holds under the what-if ----------------------

def test_stress_safe_solution_survives_its_scenarios() -> None:
    lb = load_book_file(EXAMPLES / "ten_assets.toml")
    sol = Rebalancer().solve(lb.book, lb.market, lb.risk, lb.settings)
    tested = apply_solution(lb.book, lb.market, sol)
    by_name = {s.name: s.surplus for s in sol.margin.stress}
    for sc in book_scenarios(lb.settings.constraints.stress):
        r = run_whatif(tested, lb.market, lb.risk, sc, resolve=False, distances=False)
        assert not r.liquidated
        # the what-if's surplus (valuation + margin_state) equals the optimiser's own formula
        assert r.margin_surplus_after == pytest.approx(by_name[sc.name.removeprefix("book:")],
                                                       rel=1e-9, abs=1e-6)
        assert r.margin_surplus_after >= 0


def test_a_solution_with_spot_trades_is_tested_after_them() -> None:
    """--with-solution on a book whose spot leg trades: the tested book holds the spot the
    trades leave (units from the solution's trades table), its stablecoin pays the net buys and
    the spot trading costs, and its weights are the solution's effective weights after the trade
    (the old what-if tested today's spot with the new futures)."""
    lb = load_book_file(EXAMPLES / "seed_example_1.toml")
    cs = lb.settings.constraints
    settings = replace(lb.settings, constraints=replace(cs, caps_usd=dict.fromkeys(
        lb.book.contract_symbols, 300.0)), spot=replace(lb.settings.spot, enabled=True))
    sol = Rebalancer().solve(lb.book, lb.market, lb.risk, settings)
    assert sol.status == "optimal" and sol.spot_trades and sol.spot_costs is not None
    tested = apply_solution(lb.book, lb.market, sol)
    for t in sol.spot_trades:
        assert tested.spot[t.asset] == pytest.approx(lb.book.spot[t.asset] + t.units, rel=1e-12)
    paid = sum(t.notional for t in sol.spot_trades) + sol.spot_costs.trading
    assert tested.cash == pytest.approx(lb.book.cash - paid, rel=1e-12)
    assert {p.symbol: p.contracts for p in sol.target_positions if p.contracts} == {
        s: p.contracts for s, p in tested.futures.items()}
    assert tested.futures  # the capped perpetuals hedge part, the spot leg the rest
    r = run_whatif(tested, lb.market, lb.risk, parse_scenario("none", ["BTC=0%"]), resolve=False,
                   distances=False)
    for a, w in r.weights_before.items():
        assert w == pytest.approx(sol.effective_weights_after[a], abs=1e-9)


def test_the_tracking_error_before_is_the_book_s_with_its_basis_term() -> None:
    """A book whose risk model has a basis covariance (``examples/ten_assets.toml``) holding the
    optimiser's hedges: a what-if that moves nothing reports the TE ``fbr status`` and the order
    plan report (``executor.plan.tracking_error_of``: sqrt(d' Sigma d + z' Sigma_b z)) before and
    after; it left the basis term out (0.41% against 0.42% on a paper account)."""
    from executor.plan import tracking_error_of
    from scenarios.whatif import apply_solution

    loaded = load_book_file(EXAMPLES / "ten_assets.toml")
    assert loaded.risk.basis_cov is not None
    sol = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, loaded.settings)
    book = apply_solution(loaded.book, loaded.market, sol)
    held = {c: p.contracts for c, p in book.futures.items()}
    want = tracking_error_of(book, loaded.market, loaded.risk, held)
    r = run_whatif(book, loaded.market, loaded.risk, parse_scenario("flat", ["common=0%"]),
                   resolve=False, distances=False)
    assert r.tracking_error_before == pytest.approx(want, rel=1e-9)
    assert r.tracking_error_after == pytest.approx(want, rel=1e-9)
    d = book.effective_weights(loaded.market) - book.target_vector()
    idx = [loaded.risk.symbols.index(s) for s in book.asset_symbols]
    no_basis = float(np.sqrt(d @ loaded.risk.covariance[np.ix_(idx, idx)] @ d))
    assert want - no_basis > 1e-5  # the basis term is material here: the test can tell them apart
