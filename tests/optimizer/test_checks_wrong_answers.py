"""Answers that used to look right and were not: an infeasible book's least-violation plan turned into
orders, a book past liquidation solved as "optimal", a silent proxy hedge, and the dense risk form
that ran out of memory at large N. Each is checked against an independent reference (hand figures,
numpy formulas, constraints re-checked on the returned positions)."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from executor.paper import PaperGateway
from executor.plan import PlanOptions
from fbr.config import load_book_file
from fbr.render import render_solution
from models.book import Book, FuturesPosition
from models.errors import ExitCode, InfeasibleError
from models.factor_form import factor_form
from models.instruments import FuturesContract, MarginTiers, SpotAsset, TierBracket
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.checks import LiquidatableBookError, position_breaches, require_orderable
from optimizer.prepare import prepare
from optimizer.rebalance import Rebalancer
from optimizer.settings import ClusterBand, ConstraintSettings, OptimizerSettings, StressScenario

T0 = pd.Timestamp("2025-01-01T00:00:00Z")
SYMS = ("BTC", "ETH", "SOL")
PRICES = {"BTC": 60000.0, "ETH": 2500.0, "SOL": 150.0}
VOLS = np.array([0.55, 0.70, 0.95])


def _risk() -> RiskModel:
    corr = np.full((3, 3), 0.7) + 0.3 * np.eye(3)
    return RiskModel.from_covariance(list(SYMS), corr * np.outer(VOLS, VOLS))


def _perps(*syms: str) -> tuple[FuturesContract, ...]:
    return tuple(FuturesContract(f"{s}-PERP", s, lot_step=1e-8, min_notional=0.0) for s in syms)


def _seed(contracts: tuple[FuturesContract, ...], cash: float) -> tuple[Book, MarketSnapshot]:
    book = Book(assets=tuple(SpotAsset(s) for s in SYMS), contracts=contracts,
                spot={"BTC": 0.1, "ETH": 1.0, "SOL": 10.0},
                targets={"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}, cash=cash)
    market = MarketSnapshot(time=T0, spot=dict(PRICES),
                            mark={c.symbol: PRICES[c.underlying] for c in contracts})
    return book, market


#: BTC must move from 60% to within 0.1 pp of 50% (a 990+ USD short, 99+ USD of margin at 10x),
#: but only 50 USD of collateral backs it: the cluster band and the margin row conflict.
INFEASIBLE = OptimizerSettings(constraints=ConstraintSettings(
    clusters=(ClusterBand("btc", ("BTC",), 0.001),)))


# ---------------------------------------------------------------------------------------------
# 1. an infeasible book is never turned into orders
# ---------------------------------------------------------------------------------------------

def test_infeasible_solution_names_both_sides_and_is_blocked() -> None:
    book, market = _seed(_perps(*SYMS), cash=50.0)
    sol = Rebalancer().solve(book, market, _risk(), INFEASIBLE)
    assert sol.status == "infeasible"
    assert [c.name for c in sol.conflicts] == ["margin"]
    assert sol.opposing == ("cluster_band[btc]",)
    assert not sol.orderable
    assert "margin" in sol.blockers[0] and "cluster_band[btc]" in sol.blockers[0]
    # re-check by hand: the least-violation positions need IM = |x| / 10 > 50 USD of collateral
    im = sum(abs(p.notional) for p in sol.target_positions) / 10.0
    assert im > 50.0
    assert any(b.startswith("margin:") for b in sol.blockers)
    assert sol.to_dict()["blockers"] == list(sol.blockers)


def test_prepare_plan_raises_before_any_order_is_planned(monkeypatch: pytest.MonkeyPatch) -> None:
    import executor.workflow as workflow

    planned: list[object] = []
    monkeypatch.setattr(workflow, "plan_orders", lambda *a, **k: planned.append(a))
    book, market = _seed(_perps(*SYMS), cash=50.0)
    gw = PaperGateway(book, market)
    with pytest.raises(InfeasibleError) as exc:
        workflow.prepare_plan(gw, book, market, _risk(), INFEASIBLE, PlanOptions())
    assert exc.value.exit_code == ExitCode.INFEASIBLE
    msg = str(exc.value)
    assert "margin" in msg and "cluster_band[btc]" in msg and "Fix:" in msg
    assert planned == [] and gw.orders == {}


def test_feasible_book_still_plans() -> None:
    book, market = _seed(_perps(*SYMS), cash=3000.0)
    from executor.workflow import prepare_plan

    prep = prepare_plan(PaperGateway(book, market), book, market, _risk(), INFEASIBLE,
                        PlanOptions())
    assert prep.solution.status == "optimal" and prep.solution.orderable
    assert len(prep.plan.legs) >= 1


def test_optimal_status_with_positions_past_a_hard_row_is_refused() -> None:
    """The re-check looks at the returned positions, not at the status."""
    book, market = _seed(_perps(*SYMS), cash=3000.0)
    settings = OptimizerSettings(constraints=ConstraintSettings(
        stress=(StressScenario("crash", {}, common=-0.5),)))
    d = prepare(book, market, _risk(), settings)
    # 40,000 USD long BTC: IM 4,000 > 3,000; after -50%: 3,000 - 20,000 + ... < 0
    x = {"BTC-PERP": 40_000.0}
    breaches = position_breaches(d, np.array([40_000.0, 0.0, 0.0]))
    assert [b.split(":")[0] for b in breaches] == ["margin", "stress[crash]"]
    # stress surplus by hand: 3,000 - 0.5 x 40,000 - 0.005 x 20,000 = -17,100
    assert "-17,100.00 USD" in breaches[1]
    with pytest.raises(InfeasibleError, match="stress\\[crash\\]"):
        require_orderable("optimal", (), d, x)
    require_orderable("optimal", (), d, {"BTC-PERP": -1000.0})  # a sound book passes


# ---------------------------------------------------------------------------------------------
# 2. a book already past liquidation is refused with exact figures
# ---------------------------------------------------------------------------------------------

TIERS = MarginTiers((TierBracket(0.0, 5e4, 125.0, 0.004, 0.0),
                     TierBracket(5e4, 2.5e5, 100.0, 0.005, 50.0),
                     TierBracket(2.5e5, 1e12, 50.0, 0.01, 1300.0)))


def _liquidatable(cash: float, contracts: float = 10.0, entry: float = 61_000.0) -> Book:
    c = FuturesContract("BTC-PERP", "BTC", lot_step=1e-8, min_notional=0.0, tiers=TIERS)
    return Book(assets=(SpotAsset("BTC"),), contracts=(c,), spot={"BTC": 1.0},
                targets={"BTC": 1.0}, cash=cash,
                futures={"BTC-PERP": FuturesPosition(contracts, entry)})


def _btc_market() -> MarketSnapshot:
    return MarketSnapshot(time=T0, spot={"BTC": 60_000.0}, mark={"BTC-PERP": 60_000.0})


def _btc_risk() -> RiskModel:
    return RiskModel(("BTC",), np.array([[0.55]]), np.zeros(1))


def test_liquidatable_book_is_refused_with_the_amounts_by_hand() -> None:
    # 10 BTC long from 61,000 at mark 60,000: uPnL -10,000; C = 14,000 - 10,000 = 4,000 USD.
    # Notional 600,000 -> bracket 3: MM = 0.01 x 600,000 - 1,300 = 4,700 > 4,000.
    # Add more than 4,700 - 4,000 = 700 USD, or cut below n with MM(n) = 4,000:
    # min(4,000/0.004, 4,050/0.005, 5,300/0.01) = 530,000 USD, i.e. by more than 70,000 USD
    # = 70,000 / 60,000 = 1.1666667 contracts.
    with pytest.raises(LiquidatableBookError) as exc:
        Rebalancer().solve(_liquidatable(14_000.0), _btc_market(), _btc_risk(), OptimizerSettings())
    msg = str(exc.value)
    assert exc.value.exit_code == ExitCode.INFEASIBLE
    assert "liquidatable now" in msg
    assert "margin balance 4,000.00 USD <= maintenance margin 4,700.00 USD" in msg
    assert "add more than 700.00 USD of collateral" in msg
    assert "BTC-PERP by more than 1.1666667 contracts (70,000.00 USD notional" in msg
    assert "Fix:" in msg


def test_equality_is_liquidatable_and_one_cent_more_is_not() -> None:
    with pytest.raises(LiquidatableBookError, match=r"more than 0\.00 USD"):
        Rebalancer().solve(_liquidatable(14_700.0), _btc_market(), _btc_risk(), OptimizerSettings())
    sol = Rebalancer().solve(_liquidatable(14_700.01), _btc_market(), _btc_risk(),
                             OptimizerSettings(constraints=ConstraintSettings(margin=False)))
    assert sol.status == "optimal"


def test_absurd_position_is_refused_not_solved() -> None:
    """1e15 contracts used to come back 'optimal' with a TE of 2e16%."""
    book = _liquidatable(14_000.0, contracts=1e15, entry=60_000.0)
    with pytest.raises(LiquidatableBookError) as exc:
        Rebalancer().solve(book, _btc_market(), _btc_risk(), OptimizerSettings())
    mm = 0.01 * 6e19 - 1300.0
    assert f"add more than {mm - 14_000.0:,.2f} USD" in str(exc.value)


# ---------------------------------------------------------------------------------------------
# 3. a target asset no contract can hedge is reported, not silently proxied
# ---------------------------------------------------------------------------------------------

def test_proxy_hedge_is_named_with_the_tracking_error_left() -> None:
    book, market = _seed(_perps("BTC", "ETH"), cash=3000.0)  # SOL (target 20%) has no contract
    risk = _risk()
    sol = Rebalancer().solve(book, market, risk, OptimizerSettings(basis_risk=False))
    notes = [m for m in sol.messages if m.startswith("SOL has no futures contract")]
    assert len(notes) == 1
    note = notes[0]
    assert "proxy" in note and "BTC-PERP" in note and "ETH-PERP" in note
    assert "correlation 0.70" in note
    # independent TE: dev' Sigma dev with the dense covariance at the returned effective weights
    w = np.array([0.5, 0.3, 0.2])
    e = np.array([sol.effective_weights_after[a] for a in SYMS])
    cov = risk.covariance
    dev = e - w
    te = math.sqrt(dev @ cov @ dev)
    assert sol.tracking_error_after == pytest.approx(te, rel=1e-9)
    assert f"Tracking error left: {100 * te:.3f}%" in note
    assert f"SOL contributes {100 * dev[2] * (cov @ dev)[2] / te:.3f}%" in note
    assert e[2] == pytest.approx(0.15)  # SOL itself cannot move
    console = Console(record=True, width=300)
    render_solution(sol, console)
    assert "SOL has no futures contract" in console.export_text()


def test_no_proxy_note_when_every_asset_has_a_contract() -> None:
    book, market = _seed(_perps(*SYMS), cash=3000.0)
    sol = Rebalancer().solve(book, market, _risk(), OptimizerSettings())
    assert not any("no futures contract" in m for m in sol.messages)


# ---------------------------------------------------------------------------------------------
# 4. the factor form at large N
# ---------------------------------------------------------------------------------------------

def _universe(n: int, k0: int, seed: int) -> tuple[Book, MarketSnapshot, RiskModel, np.ndarray]:
    """N assets with one perp each and a dense (full-rank form) risk model of a K0-factor Sigma."""
    rng = np.random.default_rng(seed)
    syms = [f"A{i}" for i in range(n)]
    px = rng.uniform(1.0, 100.0, n)
    contracts = tuple(FuturesContract(f"{s}-PERP", s, lot_step=1e-8, min_notional=0.0)
                      for s in syms)
    w = rng.dirichlet(np.ones(n))
    value = w * np.clip(1.0 + rng.normal(0.0, 0.2, n), 0.1, None)
    value *= 1e6 / value.sum()
    book = Book(tuple(SpotAsset(s) for s in syms), contracts,
                {s: float(v / p) for s, v, p in zip(syms, value, px, strict=True)},
                {s: float(x) for s, x in zip(syms, w, strict=True)}, cash=2e5)
    market = MarketSnapshot(T0, dict(zip(syms, map(float, px), strict=True)),
                            {c.symbol: float(p) for c, p in zip(contracts, px, strict=True)})
    F = rng.normal(0.0, 0.25, (n, k0)) + 0.25
    cov = F @ F.T + np.diag(rng.uniform(0.05, 0.3, n))
    return book, market, RiskModel.from_covariance(syms, cov), cov


def test_factor_fit_recovers_a_factor_covariance_exactly() -> None:
    _, _, dense, cov = _universe(60, 3, seed=11)
    fit = factor_form(dense, 20)
    assert fit.model.loadings.shape == (60, 3)
    assert np.max(np.abs(fit.model.covariance - cov)) < 1e-12
    assert fit.residual < 1e-13
    # a constant correlation (what a book file's vols + correlation give) is one factor
    v = np.random.default_rng(3).uniform(0.4, 1.2, 150)
    cc = (np.full((150, 150), 0.7) + 0.3 * np.eye(150)) * np.outer(v, v)
    one = factor_form(RiskModel.from_covariance([f"B{i}" for i in range(150)], cc), 20)
    assert one.model.loadings.shape[1] == 1
    assert np.max(np.abs(one.model.covariance - cc)) < 1e-12


def test_factor_form_is_chosen_at_moderate_n() -> None:
    book, market, dense, cov = _universe(300, 4, seed=5)
    assert dense.loadings.shape[1] == 300
    d = prepare(book, market, dense, OptimizerSettings())
    assert d.F.shape == (300, 4) and d.structure.n_factors == 4 and d.structure.idio
    assert d.risk_note is not None and "4-factor form" in d.risk_note
    # the problem's Sigma (F F' + diag(sqrt_idio^2)) is the dense one
    sigma = d.F @ d.F.T + np.diag(d.sqrt_idio ** 2)
    assert np.max(np.abs(sigma - cov)) < 1e-12
    small = prepare(book, market, dense, OptimizerSettings(factor_min_assets=301))
    assert small.F.shape[1] == 300  # below the threshold the model is used as given


def test_factor_form_answer_equals_the_dense_answer() -> None:
    book, market, dense, cov = _universe(40, 3, seed=9)
    as_given = Rebalancer().solve(book, market, dense, OptimizerSettings(round_lots=False))
    factored = Rebalancer().solve(book, market, dense,
                                  OptimizerSettings(round_lots=False, factor_min_assets=10))
    assert as_given.status == factored.status == "optimal"
    assert any("3-factor form" in m for m in factored.messages)
    assert not any("factor form" in m for m in as_given.messages)
    x1 = np.array([p.notional for p in as_given.target_positions])
    x2 = np.array([p.notional for p in factored.target_positions])
    assert np.max(np.abs(x1 - x2)) <= 1e-6 * as_given.base
    # both TEs equal the numpy dense formula at the returned weights
    for sol in (as_given, factored):
        dev = np.array([sol.effective_weights_after[a] - sol.targets[a] for a in book.asset_symbols])
        assert sol.tracking_error_after == pytest.approx(math.sqrt(dev @ cov @ dev), rel=1e-8)


def test_lot_rounding_that_removes_the_solution_is_reported() -> None:
    """lot_step = 1000 contracts: every target rounds back to the start; the note says so and the
    tracking error left equals the tracking error before the trade (nothing was traded)."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "examples" / "seed_example_1.toml").read_text()
    coarse = re.sub(r"(?m)^lot_step = 1e-8.*$", "lot_step = 1000", text)
    assert coarse != text
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "coarse.toml"
        path.write_text(coarse)
        loaded = load_book_file(path)
    sol = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, loaded.settings)
    notes = [m for m in sol.messages if m.startswith("lot rounding removed the whole solution")]
    assert len(notes) == 1
    assert all(c in notes[0] for c in ("BTC-PERP", "ETH-PERP", "SOL-PERP"))
    assert sol.trades == ()
    assert sol.tracking_error_after == pytest.approx(sol.tracking_error_before, rel=1e-9)
    assert f"{100 * sol.tracking_error_after:.3f}% left" in notes[0]
    fine = Rebalancer().solve(*_seed_parts())
    assert not any(m.startswith("lot rounding removed") for m in fine.messages)


def _seed_parts() -> tuple[Book, MarketSnapshot, RiskModel, OptimizerSettings]:
    loaded = load_book_file(Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml")
    return loaded.book, loaded.market, loaded.risk, loaded.settings
