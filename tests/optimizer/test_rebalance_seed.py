"""The seed article's worked examples through the Python API, and "no costs, no binding constraints
=> the naive overlay B x = w* V - spot" (DESIGN.md, "The optimisation problem")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition, TargetsBase
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.policies import naive_futures_notional
from optimizer.prepare import prepare
from optimizer.rebalance import Rebalancer
from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings

T0 = pd.Timestamp("2024-06-01T00:00:00Z")
SYMS = ("BTC", "ETH", "SOL")
VOLS = np.array([0.55, 0.70, 0.95])
OFF = OptimizerSettings(costs=CostSettings(trading=False, impact=False, carry=False),
                        constraints=ConstraintSettings(margin=False), basis_risk=False)


def _seed_risk() -> RiskModel:
    corr = np.full((3, 3), 0.7) + 0.3 * np.eye(3)
    return RiskModel.from_covariance(list(SYMS), corr * np.outer(VOLS, VOLS))


def _seed_book(spot_usd: dict[str, float], prices: dict[str, float]) -> tuple[Book, MarketSnapshot]:
    contracts = tuple(FuturesContract(f"{s}-PERP", s, lot_step=1e-8, min_notional=0.0) for s in SYMS)
    book = Book(assets=tuple(SpotAsset(s) for s in SYMS), contracts=contracts,
                spot={s: spot_usd[s] / prices[s] for s in SYMS},
                targets={"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}, cash=3000.0,
                targets_base=TargetsBase.INVESTED)
    market = MarketSnapshot(time=T0, spot=prices, mark={f"{s}-PERP": prices[s] for s in SYMS})
    return book, market


SEED_CASES = [
    # spot USD, expected futures trade USD per contract
    ({"BTC": 6000.0, "ETH": 2500.0, "SOL": 1500.0},
     {"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0}),
    ({"BTC": 5500.0, "ETH": 2000.0, "SOL": 2500.0},
     {"BTC-PERP": -500.0, "ETH-PERP": 1000.0, "SOL-PERP": -500.0}),
]


@pytest.mark.parametrize(("spot_usd", "expected"), SEED_CASES, ids=["seed1", "seed2"])
def test_seed_article_examples(spot_usd: dict[str, float], expected: dict[str, float]) -> None:
    prices = {"BTC": 60000.0, "ETH": 2500.0, "SOL": 150.0}
    book, market = _seed_book(spot_usd, prices)
    risk = _seed_risk()
    settings = OptimizerSettings(costs=OFF.costs, constraints=OFF.constraints, basis_risk=False,
                                 round_lots=False)
    # the lean path, before any rounding
    d = prepare(book, market, risk, settings)
    base = d.V
    assert base == pytest.approx(10_000.0)
    z, _hp, solver, _ = Rebalancer().solve_z(d)
    assert solver in ("PIQP", "CLARABEL", "SCS")
    x = z * d.V
    for j, sym in enumerate(d.contracts):
        assert x[j] == pytest.approx(expected[sym], abs=0.005), sym  # to the cent
    # the full Solution, unrounded and rounded (lot 1e-8 coin moves a trade by far less than a cent)
    for rounding in (False, True):
        s2 = OptimizerSettings(costs=OFF.costs, constraints=OFF.constraints, basis_risk=False,
                               round_lots=rounding)
        sol = Rebalancer().solve(book, market, risk, s2)
        assert sol.status == "optimal"
        trades = sol.trade_vector()
        assert set(trades) == set(expected)
        for sym, usd in expected.items():
            assert trades[sym] == pytest.approx(usd, abs=0.005), sym
        assert sol.tracking_error_after == pytest.approx(0.0, abs=1e-6)
        for a, w in zip(SYMS, (0.5, 0.3, 0.2), strict=True):
            assert sol.effective_weights_after[a] == pytest.approx(w, abs=1e-6)
    # the naive policy gives the same numbers
    naive = naive_futures_notional(book, market)
    for sym, usd in expected.items():
        assert naive[sym] == pytest.approx(usd, abs=0.005)


def _random_plain_book(rng: np.random.Generator) -> tuple[Book, MarketSnapshot, RiskModel]:
    """One linear perp per asset, random spot/targets/existing positions, either target base."""
    N = int(rng.integers(2, 9))
    syms = [f"C{i}" for i in range(N)]
    prices = np.exp(rng.uniform(np.log(0.1), np.log(9e4), N))
    marks = prices * (1 + rng.normal(0, 1e-3, N))
    contracts = tuple(FuturesContract(f"{s}-PERP", s, lot_step=1e-9, min_notional=0.0) for s in syms)
    total = float(rng.uniform(5e3, 5e6))
    value = total * rng.dirichlet(np.ones(N))
    tw = rng.dirichlet(np.ones(N)) * (1.0 if rng.random() < 0.5 else rng.uniform(0.5, 1.0))
    futures = {}
    if rng.random() < 0.5:
        for j, c in enumerate(contracts):
            q = float(rng.normal(0, 0.1)) * total / marks[j]
            futures[c.symbol] = FuturesPosition(q, float(marks[j] * (1 + rng.normal(0, 0.01))))
    book = Book(assets=tuple(SpotAsset(s) for s in syms), contracts=contracts,
                spot={s: float(value[i] / prices[i]) for i, s in enumerate(syms)},
                targets={s: float(tw[i]) for i, s in enumerate(syms)},
                cash=float(total * rng.uniform(0.1, 0.5)), futures=futures,
                targets_base=TargetsBase.NAV if rng.random() < 0.4 else TargetsBase.INVESTED)
    market = MarketSnapshot(time=T0, spot=dict(zip(syms, map(float, prices), strict=True)),
                            mark={c.symbol: float(m) for c, m in zip(contracts, marks, strict=True)},
                            funding={c.symbol: float(rng.normal(1e-4, 1e-4)) for c in contracts})
    A = rng.normal(0, 0.4, (N, N))
    risk = RiskModel.from_covariance(syms, A @ A.T + np.diag(rng.uniform(0.05, 0.3, N)))
    return book, market, risk


@pytest.mark.parametrize("seed", range(10))
def test_no_costs_no_binding_constraints_equals_naive(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    book, market, risk = _random_plain_book(rng)
    # costs off; margin on with ample collateral and loose limits: nothing binds
    settings = OptimizerSettings(
        costs=CostSettings(trading=False, impact=False, carry=False),
        constraints=ConstraintSettings(margin=True, max_gross_leverage=10.0, default_cap_usd=1e12),
        basis_risk=False, round_lots=False)
    d = prepare(book, market, risk, settings)
    z, _hp, _solver, _ = Rebalancer().solve_z(d)
    # naive written out here: B x = w* V - spot with one contract per asset
    V = d.V
    spot_usd = np.array([book.spot[a] * market.spot[a] for a in book.asset_symbols])
    w = np.array([book.targets[a] for a in book.asset_symbols])
    x_naive = w * V - spot_usd
    np.testing.assert_allclose(z * V, x_naive, rtol=0, atol=1e-7 * V)
    np.testing.assert_allclose(d.naive_z() * V, x_naive, rtol=0, atol=1e-9 * V)
    policy = naive_futures_notional(book, market)
    np.testing.assert_allclose([policy[c] for c in book.contract_symbols], x_naive, rtol=0,
                               atol=1e-9 * V)
    sol = Rebalancer().solve(book, market, risk, settings)
    assert sol.status == "optimal"
    np.testing.assert_allclose([p.notional for p in sol.target_positions], x_naive, rtol=0,
                               atol=1e-7 * V)
    assert sol.tracking_error_after == pytest.approx(0.0, abs=1e-6)
