"""What-if with Portfolio-Margin tiered pledged collateral (issue 11): an UP move that takes a pledged
holding across a tier edge re-prices it at the next tier's lower rate, in the margin after the
shock, in the table and JSON, and in the liquidation distances. Every number by hand.

Book: 9 BTC at 100,000 (u = 900,000 USD) pledged with tiers [0, 1M, 0.95], [1M, 5M, 0.9] (value
above 5M counts 0); short 10 BTC-PERP (X = 1,000,000 USD) entered at the mark 100,000; wallet cash
W; flat maintenance rate m = 0.5%. After a common move r (spot and mark alike):

    S(r) = W - X r + C(u (1 + r)) - m X (1 + r),
    C(v) = 0.95 min(v, 1M) + 0.9 clip(v - 1M, 0, 4M).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from fbr.whatif_render import summary_table
from models.book import Book, FuturesPosition
from models.collateral import tiered_rule
from models.instruments import FuturesContract, MarginTiers, SpotAsset
from models.liquidation_distance import liquidation_move
from models.market import MarketSnapshot
from models.risk import RiskModel
from scenarios.shocks import parse_scenario
from scenarios.whatif import run_whatif

T0 = pd.Timestamp("2025-01-01", tz="UTC")
FLAT = MarginTiers.flat(max_leverage=20.0, mmr=0.005)
PM = tiered_rule([(0, 1_000_000, 0.95), (1_000_000, 5_000_000, 0.9)], "pledged.BTC")


def pm_book(cash: float) -> tuple[Book, MarketSnapshot]:
    book = Book(assets=(SpotAsset("BTC"),),
                contracts=(FuturesContract("BTC-PERP", "BTC", lot_step=0.0, min_notional=0.0,
                                           tiers=FLAT),),
                spot={"BTC": 9.0}, targets={"BTC": 1.0}, cash=cash,
                futures={"BTC-PERP": FuturesPosition(-10.0, 100_000.0)}, pledged={"BTC": PM})
    market = MarketSnapshot(time=T0, spot={"BTC": 100_000.0}, mark={"BTC-PERP": 100_000.0})
    return book, market


RISK = RiskModel.from_covariance(["BTC"], np.array([[0.36]]))


def test_up_move_across_the_tier_edge_by_hand() -> None:
    book, market = pm_book(10_000.0)
    r = run_whatif(book, market, RISK, parse_scenario("up", ["BTC=+30%"]), resolve=False)
    # 900k -> 1.17M: the first 1M at 0.95, the 170k above the edge at 0.9
    assert r.pledged_before == pytest.approx(0.95 * 900_000, abs=1e-6)
    assert r.pledged_after == pytest.approx(0.95 * 1_000_000 + 0.9 * 170_000, abs=1e-6)
    assert r.pledged_after == pytest.approx(1_103_000.0, abs=1e-6)  # not 0.95 x 1.17M = 1,111,500
    # W' = 10,000 cash - 300,000 uPnL of the short; MM' = 0.5% x 1.3M
    assert r.margin_after.collateral == pytest.approx(10_000 - 300_000 + 1_103_000, abs=1e-6)
    assert r.margin_after.maintenance == pytest.approx(6_500.0, abs=1e-6)
    assert r.margin_surplus_after == pytest.approx(806_500.0, abs=1e-6)
    assert not r.liquidated
    assert r.pnl.spot == pytest.approx(270_000.0) and r.pnl.futures == pytest.approx(-300_000.0)

    # distance now: past the edge (r > 1/9), S(r) = 10k - 1M r + 50k + 810k (1 + r) - 5k (1 + r)
    #             = 865,000 - 195,000 r  ->  r = 865 / 195 (u (1 + r) = 4.89M < 5M: in tier 2)
    now = next(m for m in r.distance_before if m.scope == "book")
    assert now.surplus == pytest.approx(10_000 + 855_000 - 5_000, abs=1e-6)
    assert now.up == pytest.approx(865 / 195, abs=1e-9)
    assert now.down is None  # the short gains and the pledged BTC loses less on the way down
    # after the shock, from 130,000: S'(r') = 806,500 - 253,500 r'; the same price as now's root
    after = next(m for m in r.distance_after if m.scope == "book")
    assert after.surplus == pytest.approx(r.margin_surplus_after, abs=1e-6)
    assert after.up == pytest.approx(806_500 / 253_500, abs=1e-9)
    assert after.up is not None and now.up is not None
    assert 1.3 * (1 + after.up) == pytest.approx(1 + now.up, rel=1e-12)
    # a flat 0.95 would have put the root at 860 / 150: the tiers bring liquidation closer
    assert now.up < 860 / 150


def test_up_move_past_the_last_capped_tier_by_hand() -> None:
    # W = 100,000: in tier 2 the root 955/195 = 4.897 lies past the 5M edge (r = 5M/900k - 1 = 4.556);
    # there C = 0.95M + 0.9 x 4M = 4.55M flat, so S = 4,645,000 - 1,005,000 r
    book, market = pm_book(100_000.0)
    m = liquidation_move(book, market)
    assert m.up == pytest.approx(4_645_000 / 1_005_000, abs=1e-9)
    assert m.up is not None
    assert 900_000 * (1 + m.up) > 5_000_000
    assert m.down is None


def test_table_and_json_show_the_pledged_collateral() -> None:
    book, market = pm_book(10_000.0)
    r = run_whatif(book, market, RISK, parse_scenario("up", ["BTC=+30%"]), resolve=False)
    out = io.StringIO()
    Console(file=out, width=200).print(summary_table(r))
    assert "pledged collateral before -> after (USD)" in out.getvalue()
    assert "855,000.00 -> 1,103,000.00" in out.getvalue()
    d = r.to_dict()
    assert d["pledged_collateral"] == pytest.approx({"before": 855_000.0, "after": 1_103_000.0})
    assert d["margin_after"]["collateral"] == pytest.approx(813_000.0)


def test_no_pledge_no_row_no_key() -> None:
    book, market = pm_book(10_000.0)
    plain = Book(assets=book.assets, contracts=book.contracts, spot=book.spot,
                 targets=book.targets, cash=book.cash, futures=book.futures)
    r = run_whatif(plain, market, RISK, parse_scenario("up", ["BTC=+30%"]), resolve=False)
    assert not r.has_pledged and "pledged_collateral" not in r.to_dict()
    out = io.StringIO()
    Console(file=out, width=200).print(summary_table(r))
    assert "pledged" not in out.getvalue()
    assert math.isclose(r.margin_after.collateral, 10_000 - 300_000)
