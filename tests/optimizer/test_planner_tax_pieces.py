"""A plan (horizon H > 1) with the spot leg and tax lots that come and go re-uses its compiled
planner, as the single-period problem does (optimizer.rebalance.Rebalancer.fit_tax_pieces): the
tax curves are padded to a cached planner's piece count (or rounded up to a power of two when the
lots grew), and padding leaves the plan unchanged (checked against a fresh, unpadded compile)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from models.tax import LotMethod, TaxLot, TaxRates
from optimizer.planner import PlannerProblem
from optimizer.rebalance import Rebalancer
from optimizer.settings import ClusterBand, ConstraintSettings, OptimizerSettings, SpotLegSettings

D0 = pd.Timestamp("2025-01-01", tz="UTC")
ETH_LOTS = (TaxLot(20.0, 2_000.0, datetime(2023, 1, 1, tzinfo=UTC)),)


def _inputs(n_lots: int, horizon: int) -> tuple[Book, MarketSnapshot, RiskModel, OptimizerSettings]:
    """2 BTC at 50,000 and 20 ETH at 2,500, targets 50/50; the BTC perpetual capped at 10,000 USD
    and BTC held on target, so part of the BTC hedge is a taxed spot sale; BTC in ``n_lots`` lots."""
    book = Book((SpotAsset("BTC", fee=0.001), SpotAsset("ETH", fee=0.001)),
                (FuturesContract("BTC-PERP", "BTC", taker_fee=0.0004),
                 FuturesContract("ETH-PERP", "ETH", taker_fee=0.0004)),
                spot={"BTC": 2.0, "ETH": 20.0}, targets={"BTC": 0.5, "ETH": 0.5}, cash=100_000.0)
    market = MarketSnapshot(time=D0, spot={"BTC": 50_000.0, "ETH": 2_500.0},
                            mark={"BTC-PERP": 50_000.0, "ETH-PERP": 2_500.0},
                            half_spread={"BTC-PERP": 1e-4, "ETH-PERP": 1e-4},
                            spot_half_spread={"BTC": 1e-4, "ETH": 1e-4})
    cov = RiskModel.from_covariance(["BTC", "ETH"], np.array([[0.36, 0.25], [0.25, 0.49]]))
    risk = RiskModel(cov.symbols, cov.loadings, np.array([0.01, 0.01]))
    lots = tuple(TaxLot(2.0 / n_lots, 20_000.0 + 7_000.0 * j, datetime(2024, 1 + j, 1, tzinfo=UTC))
                 for j in range(n_lots))
    spot = SpotLegSettings(enabled=True, rates=TaxRates(short_term=0.30, long_term=0.15),
                           lots={"BTC": lots, "ETH": ETH_LOTS}, lot_method=LotMethod.HIFO)
    cons = ConstraintSettings(caps_usd={"BTC-PERP": 10_000.0},
                              clusters=(ClusterBand("btc_on_target", ("BTC",), 0.0),))
    return book, market, risk, OptimizerSettings(constraints=cons, spot=spot, round_lots=False,
                                                 horizon=horizon)


def _plan(sol: object) -> np.ndarray:
    steps = sol.plan.steps  # type: ignore[attr-defined]
    return np.array([[s.positions[c] for c in ("BTC-PERP", "ETH-PERP")] for s in steps])


def test_growing_lots_reuse_the_compiled_plan() -> None:
    rb = Rebalancer()
    before = PlannerProblem.builds
    for n in (2, 3, 2, 3, 4, 5, 6, 7):
        sol = rb.solve(*_inputs(n, horizon=2))
        assert sol.status == "optimal", sol.messages
    # pieces 2, then 4 (for 3 and 4), then 8 (for 5 to 7): three compiles, as the single period
    assert PlannerProblem.builds - before == 3
    assert len(rb._planners) == 3 and not rb._problems


@pytest.mark.parametrize("n", [2, 3])
def test_padded_plan_equals_a_fresh_compile(n: int) -> None:
    rb = Rebalancer()
    rb.solve(*_inputs(4, horizon=2))  # cached: 4 pieces; 2 or 3 lots are padded to 4
    builds = PlannerProblem.builds
    padded = rb.solve(*_inputs(n, horizon=2))
    assert PlannerProblem.builds == builds  # re-used, not recompiled
    fresh = Rebalancer().solve(*_inputs(n, horizon=2))
    assert padded.status == fresh.status == "optimal"
    np.testing.assert_allclose(_plan(padded), _plan(fresh), rtol=0, atol=1e-3)
