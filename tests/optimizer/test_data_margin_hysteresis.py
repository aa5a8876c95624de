"""The initial-margin row's relative buffer and hysteresis (optimizer.data.MarginBudget).

Book used throughout: spot 1 BTC ($60,000), 4 ETH ($10,000), 40 SOL ($6,000), so V = $76,000, at
equal targets. The naive hedge (short BTC 34,667, long ETH 15,333, long SOL 19,333) needs
69,333 / 10 = $6,933 of initial margin at 10x, more than the $5,000 wallet: the margin row binds.

Every margin figure below is recomputed by hand in the test: IM = sum_j |x_j| / L_j (USD) from the
returned positions, and the budgets from C (collateral), b (absolute buffer), f (relative buffer):
hard = C - b, target = C - b - f C, held = IM of the current positions.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbr.config import parse_book
from models.book import Book, FuturesPosition
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.margin_constraints import InitialMargin
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem
from optimizer.rebalance import Rebalancer
from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings, SolverName
from optimizer.solution import Solution

T0 = pd.Timestamp("2025-01-01T00:00:00Z")
SYMS = ("BTC", "ETH", "SOL")
PRICES = {"BTC": 60000.0, "ETH": 2500.0, "SOL": 150.0}
SPOT = {"BTC": 1.0, "ETH": 4.0, "SOL": 40.0}
V = 76000.0
LEV = 10.0
CONTRACTS = tuple(FuturesContract(f"{s}-PERP", s, lot_step=1e-8, min_notional=0.0, leverage=LEV)
                  for s in SYMS)
COSTS = CostSettings(trading=True, impact=False, carry=False, gamma_trade=1.0)
#: relative tolerance on USD margin figures (solver accuracy is ~1e-9 of V)
RTOL = 1e-6


def _risk() -> RiskModel:
    vols = np.array([0.55, 0.70, 0.95])
    corr = np.full((3, 3), 0.7) + 0.3 * np.eye(3)
    return RiskModel.from_covariance(list(SYMS), corr * np.outer(vols, vols))


def _market() -> MarketSnapshot:
    return MarketSnapshot(time=T0, spot=dict(PRICES),
                          mark={c.symbol: PRICES[c.underlying] for c in CONTRACTS})


def _book(cash: float, notional: dict[str, float] | None = None) -> Book:
    """The test book with futures positions of the given USD notional, entered at the current mark
    (no unrealised PnL, so collateral = cash)."""
    futures = {sym: FuturesPosition(contracts=x / PRICES[sym.split("-")[0]],
                                    entry_price=PRICES[sym.split("-")[0]])
               for sym, x in (notional or {}).items()}
    return Book(assets=tuple(SpotAsset(s) for s in SYMS), contracts=CONTRACTS, spot=dict(SPOT),
                targets=dict.fromkeys(SYMS, 1.0 / 3.0), cash=cash, futures=futures)


def _settings(fraction: float = 0.0, hysteresis: bool = False, buffer: float = 0.0,
              round_lots: bool = False, solvers: tuple[SolverName, ...] = ()) -> OptimizerSettings:
    cons = ConstraintSettings(margin=True, margin_buffer_usd=buffer, margin_buffer_fraction=fraction,
                              margin_hysteresis=hysteresis)
    return OptimizerSettings(costs=COSTS, constraints=cons, basis_risk=False, round_lots=round_lots,
                             solvers=solvers)


def _solve(book: Book, settings: OptimizerSettings) -> Solution:
    return Rebalancer().solve(book, _market(), _risk(), settings)


def _positions(sol: Solution) -> dict[str, float]:
    return {p.symbol: p.notional for p in sol.target_positions}


def _im(notional: dict[str, float]) -> float:
    """Initial margin by hand: sum |x_j| / L_j (USD)."""
    return sum(abs(x) for x in notional.values()) / LEV


def _traded(sol: Solution) -> float:
    return sum(abs(t.notional) for t in sol.trades)


@pytest.fixture(scope="module")
def at_target() -> dict[str, float]:
    """Step 1: no positions, $5,000 wallet, f = 20% with hysteresis: the book takes margin up to
    the target 0.8 x 5,000 = 4,000 USD (and no more)."""
    sol = _solve(_book(5000.0), _settings(0.2, True))
    assert sol.status == "optimal"
    return _positions(sol)


# ---------------------------------------------------------------------------------------------
# the budget


@pytest.mark.parametrize(("cash", "held_im", "fraction", "hysteresis", "buffer", "expected"), [
    (5000.0, 0.0, 0.0, False, 0.0, 5000.0),       # default: C - b
    (5000.0, 0.0, 0.0, True, 300.0, 4700.0),      # hysteresis without a fraction: unchanged
    (5000.0, 4500.0, 0.2, False, 0.0, 4000.0),    # relative buffer only: C (1 - f)
    (5000.0, 4500.0, 0.2, True, 0.0, 4500.0),     # held inside [target, hard]: held
    (5000.0, 3000.0, 0.2, True, 0.0, 4000.0),     # held below target: target
    (5000.0, 6000.0, 0.2, True, 0.0, 5000.0),     # held above hard: hard
    (5000.0, 4500.0, 0.2, True, 200.0, 4500.0),   # held inside [3,800, 4,800]
    (5000.0, 3000.0, 0.2, True, 200.0, 3800.0),   # target = C - b - f C
])
def test_budget_is_held_margin_clipped_into_target_and_hard(
        cash: float, held_im: float, fraction: float, hysteresis: bool, buffer: float,
        expected: float) -> None:
    # positions using exactly held_im of margin: split over the three contracts as -2 : 1 : 1
    x = {"BTC-PERP": -0.5 * held_im * LEV, "ETH-PERP": 0.25 * held_im * LEV,
         "SOL-PERP": 0.25 * held_im * LEV}
    assert _im(x) == pytest.approx(held_im)
    d = prepare(_book(cash, x), _market(), _risk(), _settings(fraction, hysteresis, buffer))
    assert math.isclose(d.V, V, rel_tol=1e-12)
    assert d.im_budget * d.V == pytest.approx(expected, rel=1e-12)
    assert d.margin_budget is not None
    mb = d.margin_budget
    assert mb.hard * V == pytest.approx(cash - buffer)
    assert mb.target * V == pytest.approx(cash - buffer - fraction * cash)
    assert mb.held * V == pytest.approx(held_im)
    assert mb.holding == (hysteresis and cash - buffer - fraction * cash < held_im)


def test_settings_do_not_change_the_compiled_problem() -> None:
    """The budget is a Parameter value: same Structure, one compilation, still DPP."""
    book = _book(5000.0, {"BTC-PERP": -20000.0})
    plain = prepare(book, _market(), _risk(), _settings())
    hyst = prepare(book, _market(), _risk(), _settings(0.3, True))
    assert plain.structure == hyst.structure
    hp = HedgeProblem(hyst.structure)
    assert hp.problem.is_dpp()
    before = HedgeProblem.builds
    reb = Rebalancer()
    for s in (_settings(), _settings(0.3, True), _settings(0.1, False)):
        reb.solve(book, _market(), _risk(), s)
    assert HedgeProblem.builds == before + 1


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, math.nan, math.inf])
def test_bad_fraction_names_the_field(fraction: float) -> None:
    with pytest.raises(ValidationError) as exc:
        prepare(_book(5000.0), _market(), _risk(), _settings(fraction, True))
    assert exc.value.field == "constraints.margin_buffer_fraction"
    assert "[0, 1)" in exc.value.fix


# ---------------------------------------------------------------------------------------------
# solutions, re-checked with numpy


def test_relative_buffer_caps_new_margin_at_the_target(at_target: dict[str, float]) -> None:
    im = _im(at_target)
    assert im == pytest.approx(0.8 * 5000.0, rel=RTOL)  # binds at the target, not at 5,000
    # the hedge direction is the naive one (short the overweight BTC, long the others)
    assert at_target["BTC-PERP"] < 0 < min(at_target["ETH-PERP"], at_target["SOL-PERP"])
    # the plain row (f = 0) would have used the whole wallet
    plain = _positions(_solve(_book(5000.0), _settings()))
    assert _im(plain) == pytest.approx(5000.0, rel=RTOL)


def test_small_bound_drop_keeps_the_positions(at_target: dict[str, float]) -> None:
    """Step 2: the wallet falls 5% (4,750): hard 4,750 > held 4,000 > target 3,800. With hysteresis
    nothing is traded; with the relative buffer alone the book is cut to 3,800."""
    book = _book(4750.0, at_target)
    held = _solve(book, _settings(0.2, True))
    assert held.trades == ()
    assert _positions(held) == pytest.approx(at_target, abs=1e-9 * V)
    cut = _solve(book, _settings(0.2, False))
    assert _traded(cut) > 100.0
    assert _im(_positions(cut)) == pytest.approx(0.8 * 4750.0, rel=RTOL)


def test_small_bound_rise_grows_only_to_the_new_target(at_target: dict[str, float]) -> None:
    """The wallet rises 5% (5,250): the book may grow to the target 0.8 x 5,250 = 4,200, not to
    the hard bound 5,250."""
    sol = _solve(_book(5250.0, at_target), _settings(0.2, True))
    assert _im(_positions(sol)) == pytest.approx(0.8 * 5250.0, rel=RTOL)
    assert _traded(sol) > 0.0


def test_big_bound_drop_forces_a_cut_to_the_hard_bound(at_target: dict[str, float]) -> None:
    """The wallet falls to 3,000 < held 4,000: the book is cut, to the hard bound 3,000 (not to the
    target 2,400)."""
    sol = _solve(_book(3000.0, at_target), _settings(0.2, True))
    im = _im(_positions(sol))
    assert im == pytest.approx(3000.0, rel=RTOL)
    assert _traded(sol) > 0.9 * (_im(at_target) - 3000.0) * LEV / 2  # a real cut
    assert sol.margin.initial == pytest.approx(im, rel=1e-9)  # the report agrees with the hand IM


def test_held_binding_row_is_explained_as_hysteresis(at_target: dict[str, float]) -> None:
    sol = _solve(_book(4750.0, at_target), _settings(0.2, True))
    lines = [b.explanation for b in sol.binding_constraints if b.name == "margin"]
    assert lines and "hysteresis" in lines[0]


def test_collateral_dual_counts_only_the_budget_it_buys(at_target: dict[str, float]) -> None:
    """At the target one more USD of collateral buys 1 - f USD of budget; at the hard bound 1."""
    at_tgt = _solve(_book(5000.0), _settings(0.2, False))
    at_hard = _solve(_book(3000.0, at_target), _settings(0.2, True))
    for sol, slope in ((at_tgt, 0.8), (at_hard, 1.0)):
        rows = [b for b in sol.binding_constraints if b.name == "margin"]
        assert rows and rows[0].dual > 0
        # "<step> USD more collateral would lower the objective by <step x dual x slope>"
        m = re.search(r"([\d,.]+) USD more (?:collateral|margin budget) would lower the objective by at most "
                      r"([\d.e+-]+)", rows[0].explanation)
        assert m is not None, rows[0].explanation
        assert m.group(2) == f"{float(m.group(1).replace(',', '')) * rows[0].dual * slope:.3g}"


def test_random_books_never_grow_past_the_budget_nor_forced_cuts() -> None:
    """Seeded random books: the returned positions satisfy IM <= clip(held, target, hard) (numpy),
    and when the current positions fit under the hard bound but above the target the book does not
    take more margin than it holds."""
    rng = np.random.default_rng(20261125)
    reb = Rebalancer()
    for _ in range(8):
        cash = float(rng.uniform(2000.0, 8000.0))
        f = float(rng.uniform(0.05, 0.5))
        x0 = {"BTC-PERP": -float(rng.uniform(0, 40000)), "ETH-PERP": float(rng.uniform(0, 20000)),
              "SOL-PERP": float(rng.uniform(-5000, 20000))}
        sol = reb.solve(_book(cash, x0), _market(), _risk(), _settings(f, True))
        assert sol.status == "optimal"
        held, hard, target = _im(x0), cash, cash * (1 - f)
        im = _im(_positions(sol))
        assert im <= min(hard, max(target, held)) * (1 + RTOL)
        if target <= held <= hard:
            assert im <= held * (1 + RTOL)


def test_lean_piqp_and_clarabel_agree_when_holding(at_target: dict[str, float]) -> None:
    book = _book(4900.0, {k: 0.9 * v for k, v in at_target.items()})  # held 3,600 < target 3,920
    a = _positions(_solve(book, _settings(0.2, True, solvers=(SolverName.PIQP,))))
    b = _positions(_solve(book, _settings(0.2, True, solvers=(SolverName.CLARABEL,))))
    assert a == pytest.approx(b, abs=1e-6 * V)
    assert _im(a) == pytest.approx(0.8 * 4900.0, rel=RTOL)


def test_lot_rounding_respects_the_held_budget(at_target: dict[str, float]) -> None:
    """Coarse lots (0.01 BTC = $600) and a shifted book: the rounded positions still satisfy the
    row against the held budget (the repair re-checks InitialMargin.violation)."""
    coarse = tuple(FuturesContract(c.symbol, c.underlying, lot_step=0.01, min_notional=0.0,
                                   leverage=LEV) for c in CONTRACTS)
    x0 = {"BTC-PERP": at_target["BTC-PERP"] * 0.8, "ETH-PERP": at_target["ETH-PERP"] * 1.3,
          "SOL-PERP": at_target["SOL-PERP"]}
    book = Book(assets=tuple(SpotAsset(s) for s in SYMS), contracts=coarse, spot=dict(SPOT),
                targets=dict.fromkeys(SYMS, 1.0 / 3.0), cash=4750.0,
                futures={k: FuturesPosition(round(v / PRICES[k[:3]], 2), PRICES[k[:3]])
                         for k, v in x0.items()})
    d = prepare(book, _market(), _risk(), _settings(0.2, True, round_lots=True))
    assert d.margin_budget is not None and d.margin_budget.holding
    sol = _solve(book, _settings(0.2, True, round_lots=True))
    z = np.array([_positions(sol)[c.symbol] for c in coarse]) / V
    assert InitialMargin().violation(z, d)[0] == 0.0
    assert _im(_positions(sol)) <= d.im_budget * V + 1e-6
    assert sol.rounding_broken == ()


# ---------------------------------------------------------------------------------------------
# the book file


def _seed_toml() -> dict[str, object]:
    path = Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml"
    return tomllib.loads(path.read_text())


def test_book_file_reads_the_two_settings() -> None:
    data = _seed_toml()
    data["constraints"] = {"margin": True, "margin_buffer_fraction": "20%",
                           "margin_hysteresis": True}
    cs = parse_book(data).settings.constraints
    assert cs.margin_buffer_fraction == pytest.approx(0.2)
    assert cs.margin_hysteresis is True
    data["constraints"] = {"margin": True}
    cs = parse_book(data).settings.constraints
    assert cs.margin_buffer_fraction == 0.0 and cs.margin_hysteresis is False


@pytest.mark.parametrize(("key", "value"), [("margin_buffer_fraction", 1.2),
                                            ("margin_buffer_fraction", "-5%"),
                                            ("margin_hysteresis", "yes")])
def test_book_file_rejects_bad_values_naming_the_field(key: str, value: object) -> None:
    data = _seed_toml()
    data["constraints"] = {"margin": True, key: value}
    with pytest.raises(ValidationError) as exc:
        parse_book(data)
    assert exc.value.field == f"constraints.{key}"
