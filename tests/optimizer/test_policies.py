"""Policies share one interface; each is checked against a hand computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.policies import (
    BandSpotRebalance,
    CalendarSpotRebalance,
    NaiveFutures,
    NoRebalance,
    OptimizedFutures,
    TargetHoldings,
    naive_futures_notional,
)
from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings

SYMS = ("BTC", "ETH", "SOL")
T0 = pd.Timestamp("2025-01-01", tz="UTC")


def make_book(spot_usd: tuple[float, float, float]) -> tuple[Book, MarketSnapshot]:
    prices = {"BTC": 60000.0, "ETH": 2500.0, "SOL": 150.0}
    assets = tuple(SpotAsset(s) for s in SYMS)
    cons = tuple(FuturesContract(f"{s}-PERP", s, lot_step=1e-9, min_notional=0.0) for s in SYMS)
    book = Book(assets, cons, spot={s: v / prices[s] for s, v in zip(SYMS, spot_usd, strict=True)},
                targets={"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}, cash=3000.0)
    market = MarketSnapshot(T0, spot=prices, mark={f"{s}-PERP": p for s, p in prices.items()})
    return book, market


def risk() -> RiskModel:
    vols = np.array([0.55, 0.7, 0.95])
    corr = np.full((3, 3), 0.7) + 0.3 * np.eye(3)
    return RiskModel.from_covariance(list(SYMS), np.outer(vols, vols) * corr)


def test_naive_rule_is_the_seed_article() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0))
    got = naive_futures_notional(book, market)
    assert got == pytest.approx({"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0})


def test_no_rebalance_keeps_holdings() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0))
    h = NoRebalance()(book, market, T0)
    assert h.spot == pytest.approx(dict(book.spot))
    assert all(v == 0 for v in h.futures.values())


def test_calendar_spot_trades_on_schedule_only() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0))
    pol = CalendarSpotRebalance("7D")
    first = pol(book, market, T0)
    assert first.spot["BTC"] * 60000 == pytest.approx(5000.0)
    assert first.spot["SOL"] * 150 == pytest.approx(2000.0)
    assert pol(book, market, T0 + pd.Timedelta("3D")).spot == pytest.approx(dict(book.spot))
    again = pol(book, market, T0 + pd.Timedelta("7D"))
    assert again.spot["ETH"] * 2500 == pytest.approx(3000.0)


def test_band_spot_triggers_on_drift() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0))  # max drift 10 pp
    assert BandSpotRebalance(0.12)(book, market, T0).spot == pytest.approx(dict(book.spot))
    moved = BandSpotRebalance(0.08)(book, market, T0)
    assert moved.spot["BTC"] * 60000 == pytest.approx(5000.0)


def test_naive_futures_band_and_calendar() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0))
    quiet = NaiveFutures(band=0.2)(book, market, T0)
    assert all(v == 0 for v in quiet.futures.values())
    acted = NaiveFutures(period="1D")(book, market, T0)
    assert acted.futures["BTC-PERP"] == pytest.approx(-1000.0)
    assert acted.spot == pytest.approx(dict(book.spot))


def test_optimized_equals_naive_without_costs_or_constraints() -> None:
    book, market = make_book((5500.0, 2000.0, 2500.0))
    st = OptimizerSettings(costs=CostSettings(trading=False, carry=False),
                           constraints=ConstraintSettings(margin=False), basis_risk=False)
    h = OptimizedFutures(risk(), st, report=True)(book, market, T0)
    assert isinstance(h, TargetHoldings) and h.solution is not None
    lean = OptimizedFutures(risk(), st)(book, market, T0)
    assert lean.solution is None and lean.solve_time_ms is not None
    assert lean.futures == h.futures  # the report changes nothing in the decision
    naive = naive_futures_notional(book, market)
    for k, v in naive.items():
        assert h.futures[k] == pytest.approx(v, abs=0.01)
