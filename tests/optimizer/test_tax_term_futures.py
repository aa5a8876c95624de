"""The tax of realising futures gains as an objective term (``spot.futures_tax``), by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from models.tax import TaxLot, TaxRates
from optimizer.prepare import prepare
from optimizer.rebalance import Rebalancer
from optimizer.settings import OptimizerSettings, SpotLegSettings
from optimizer.terms import FuturesTax

T0 = pd.Timestamp("2025-01-02T00:00:00Z")
RATES = TaxRates(short_term=0.30, long_term=0.15, futures=0.30)


def _book() -> tuple[Book, MarketSnapshot, RiskModel]:
    """2 BTC at 50,000 and 20 ETH at 2,500 (V = 150,000, targets 50/50) and a long 0.5 BTC perp
    struck at 30,000: 25,000 USD of notional with a 10,000 USD gain. BTC is over target by
    (100,000 + 25,000) / 150,000 - 1/2 = 1/3."""
    assets = (SpotAsset("BTC", fee=0.001), SpotAsset("ETH", fee=0.001))
    contracts = (FuturesContract("BTC-PERP", "BTC", taker_fee=0.0004),
                 FuturesContract("ETH-PERP", "ETH", taker_fee=0.0004))
    book = Book(assets=assets, contracts=contracts, spot={"BTC": 2.0, "ETH": 20.0},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=100_000.0,
                futures={"BTC-PERP": FuturesPosition(0.5, 30_000.0)})
    market = MarketSnapshot(time=T0, spot={"BTC": 50_000.0, "ETH": 2_500.0},
                            mark={"BTC-PERP": 50_000.0, "ETH-PERP": 2_500.0},
                            half_spread={"BTC-PERP": 1e-4, "ETH-PERP": 1e-4},
                            spot_half_spread={"BTC": 1e-4, "ETH": 1e-4})
    cov = np.array([[0.36, 0.25], [0.25, 0.49]])
    risk = RiskModel.from_covariance(["BTC", "ETH"], cov)
    return book, market, RiskModel(risk.symbols, risk.loadings, np.array([0.01, 0.01]))


def _settings(futures_tax: bool) -> OptimizerSettings:
    lots = {"BTC": (TaxLot(2.0, 50_000.0, datetime(2024, 12, 1, tzinfo=UTC)),),  # no spot gain
            "ETH": (TaxLot(20.0, 2_500.0, datetime(2024, 12, 1, tzinfo=UTC)),)}
    spot = SpotLegSettings(enabled=True, rates=RATES, lots=lots, futures_tax=futures_tax)
    return OptimizerSettings(spot=spot, round_lots=False)


def test_coefficient_and_value_by_hand() -> None:
    """c = 0.30 x 10,000 / 25,000 = 0.12 per unit of weight reduced; z0 = 1/6. Reducing to
    1/12 costs 0.12 x 1/12 = 0.01 (1,500 USD / V = 30% of half the 10,000 gain); adding costs 0."""
    book, market, risk = _book()
    d = prepare(book, market, risk, _settings(True))
    assert d.spot is not None and d.futures_tax_coef is not None
    np.testing.assert_allclose(d.futures_tax_coef, [0.12, 0.0], atol=1e-12)
    assert d.structure.futures_tax and not prepare(book, market, risk, _settings(False)).structure.futures_tax
    term = FuturesTax()
    assert term.value(np.array([1 / 12, 0.0]), d) == pytest.approx(0.01, abs=1e-12)
    assert term.value(np.array([0.3, 0.0]), d) == 0.0
    # given gains replace the position's own PnL (a replay's average-cost entries)
    s = _settings(True)
    d2 = prepare(book, market, risk, replace(s, spot=replace(s.spot, futures_gains={"BTC-PERP": 2_500.0})))
    assert d2.spot is not None and d2.futures_tax_coef is not None
    assert d2.futures_tax_coef[0] == pytest.approx(0.3 * 2_500.0 / 25_000.0)


def test_a_taxed_gain_keeps_the_position_and_sells_untaxed_spot_instead() -> None:
    """Off: the cheapest way to cut BTC is the perpetual (5 bp against 11 bp for spot), so the
    long is closed and turned short. On: closing it would realise the 10,000 gain (3,000 USD of
    tax), so the long stays and BTC spot (bought at today's price, no gain) is sold instead."""
    book, market, risk = _book()
    off = Rebalancer().solve(book, market, risk, _settings(False))
    on = Rebalancer().solve(book, market, risk, _settings(True))
    assert off.status == on.status == "optimal"
    perp_off = {p.symbol: p.notional for p in off.target_positions}["BTC-PERP"]
    perp_on = {p.symbol: p.notional for p in on.target_positions}["BTC-PERP"]
    assert perp_off < 0.0
    assert perp_on == pytest.approx(25_000.0, rel=1e-5)
    sold_on = sum(t.sold for t in on.spot_trades if t.asset == "BTC")
    sold_off = sum(t.sold for t in off.spot_trades if t.asset == "BTC")
    assert sold_on > 40_000.0 > sold_off
    # both reach the target: the tax changes the instrument, not the exposure
    for sol in (on, off):
        assert sol.effective_weights_after["BTC"] == pytest.approx(0.5, abs=0.02)


def test_the_term_is_dpp_and_new_gains_only_change_parameters() -> None:
    from optimizer.problem import HedgeProblem

    book, market, risk = _book()
    rb = Rebalancer()
    s = _settings(True)
    rb.solve(book, market, risk, s)
    before = HedgeProblem.builds
    for gain in (0.0, 1_000.0, 50_000.0):
        rb.solve(book, market, risk, replace(s, spot=replace(s.spot, futures_gains={"BTC-PERP": gain})))
    assert HedgeProblem.builds == before
    (hp,) = rb._problems.values()
    assert hp.problem.is_dpp()


def _plan(futures_tax: bool, horizon: int) -> list[dict[str, float]]:
    """The planned BTC-PERP and ETH-PERP positions (USD) of each step of an H-step plan."""
    book, market, risk = _book()
    sol = Rebalancer().solve(book, market, risk, replace(_settings(futures_tax), horizon=horizon))
    assert sol.status == "optimal" and sol.plan is not None
    return [step.positions for step in sol.plan.steps]


def test_a_plan_cannot_dodge_the_tax_by_closing_at_a_later_step() -> None:
    """Each step's reduction pays c x reduction, so with zero expected drift a plan that closes
    the taxed long at step 2 pays the same 3,000 USD as closing it now: the 2-step plan keeps
    the long at both steps, as the single-period solve does (priced at step 1 only, step 2 would
    close it tax-free: the cheaper perpetual, the same exposure). Without the tax the plan
    closes it at step 1 and holds the short."""
    for positions in _plan(True, 2):
        assert positions["BTC-PERP"] == pytest.approx(25_000.0, rel=1e-5)
    off = _plan(False, 2)
    assert off[0]["BTC-PERP"] < 0.0
    assert off[1]["BTC-PERP"] == pytest.approx(off[0]["BTC-PERP"], rel=1e-4)


def test_each_step_prices_its_own_reduction_at_todays_gain_per_unit() -> None:
    """The compiled 2-step plan's futures-tax terms at hand-set positions: z0 = 1/6 cut to 1/12
    at step 1 and to 0 at step 2 costs 0.12 x (1/12 + 1/12) = 0.02 of V (the whole 10,000 gain
    taxed at 30%: 3,000 / 150,000), the same cut made at step 2 alone costs 0.02 too, and
    adding at step 2 after a cut costs only the cut (0.01)."""
    import cvxpy as cp

    from optimizer.planner import PlannerProblem

    book, market, risk = _book()
    d = prepare(book, market, risk, replace(_settings(True), horizon=2))
    pp = PlannerProblem(d.structure, 2)
    pp.update(d)
    terms = []
    for step in pp.steps:
        (tax,) = [t for t in step.terms if isinstance(t, FuturesTax)]
        terms.append(tax.build(step.ctx))  # the expression the plan compiled, re-built ...
        tax.update(d)  # ... with its new Parameters set from today's data
    total = cp.sum(terms)
    z0 = 1 / 6
    for path, want in (((1 / 12, 0.0), 0.02), ((z0, 0.0), 0.02), ((1 / 12, 0.3), 0.01)):
        for step, z in zip(pp.steps, path, strict=True):
            step.ctx.z.value = np.array([z, 0.0])
        assert float(total.value) == pytest.approx(want, abs=1e-12)
