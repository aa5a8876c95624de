"""The binding-row explanations (optimizer.constraint_base.Constraint.predict / explain and each
constraint's note and step phrase) against figures worked out by hand on a 2-asset, 2-contract
instance whose "solve" is set directly: z is given, so the tracking variance, basis risk and costs
at the solution are sums of a few squares.

The prediction: the step starts at start_step (1% of V rounded down to 1-2-5, at most a tenth of
the bound) and goes down the 1-2-5 ladder until dual x step x collateral factor is at most a
quarter of the objective's size; that product is the predicted fall, the TE it equals at unchanged
costs is sqrt(TE^2 - fall) (none when the fall exceeds TE^2) and the USD of trading cost it equals
is fall x V / gamma_trade (none without a trading cost weight)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from optimizer.constraint_base import NEGLIGIBLE_SHARE, Constraint
from optimizer.constraints import ExpiryGuard, FundingBudget, GrossLeverage, VolatilityCap
from optimizer.context import Context
from optimizer.data import Structure
from optimizer.margin_constraints import InitialMargin, StressMargin
from optimizer.spot_leg import SpotContext

B = np.eye(2)


def _structure(**kw: Any) -> Structure:
    base: dict[str, Any] = dict(
        n_assets=2, n_contracts=2, n_factors=1, idio=True, n_basis_factors=0, n_tiers=2,
        mm_floor=False, exposure=B.astype(np.int8).tobytes(), stress_names=(),
        cluster_members=(), cluster_names=(), capped=(), trade_limited=(), margin=False,
        leverage=False, vol_cap=False, funding_budget=False, trading=False, impact=False,
        carry=False, objective_scale=1.0)
    base.update(kw)
    return Structure(**base)


def _data(**kw: Any) -> Any:
    """V = 100,000 USD; on target (s = w), no factor risk, idiosyncratic vol 1 per asset (so TE^2
    is the squared length of the deviation B z) and one basis factor loading 0.75 on contract 1."""
    d = SimpleNamespace(
        V=100_000.0, contracts=("BTCUSDT", "ETHUSDT"), s=np.array([0.5, 0.5]),
        w=np.array([0.5, 0.5]), B=B, F=np.zeros((2, 1)), sqrt_idio=np.ones(2),
        Gb=np.array([[0.0], [0.75]]), z0=np.zeros(2), gamma_trade=2.0, gamma_fund=1.0,
        lin_cost=np.array([0.001, 0.001]), carry=np.zeros(2), funding_budget=0.5, vol_cap=0.5,
        im_budget=0.5, inv_lev=np.array([0.1, 0.1]), margin_budget=None, max_gross=1.5,
        structure=_structure(n_basis_factors=1))
    for k, v in kw.items():
        setattr(d, k, v)
    d.FtB = d.F.T @ d.B
    return d


def _solved(c: Constraint, d: Any, z: np.ndarray) -> Constraint:
    """``c`` built, updated with ``d`` and with the solve's positions set to ``z``."""
    ctx = Context.create(d.structure)
    c.build(ctx)
    c.update(d)
    ctx.z.value = z
    return c


#: the deviation (0, 0.04): TE^2 = 0.04^2 + (0.75 x 0.04)^2 = 0.0016 + 0.0009 = 0.0025 (TE 5%),
#: the objective's size 0.0025 (no cost term is on)
Z = np.array([0.0, 0.04])


def test_a_usd_row_steps_down_to_a_quarter_of_the_objective_by_hand() -> None:
    c = _solved(FundingBudget(), _data(), Z)
    # start: 1% of V = 1,000 USD (a tenth of the 50,000 USD budget is 5,000); 1e-6 x 1,000 =
    # 0.001 > 0.0025 / 4 = 0.000625, so 500: 0.0005 <= 0.000625
    p = c.predict("funding_budget", 1e-6)
    assert p is not None
    assert p.step == 500.0
    assert p.step_weight == pytest.approx(0.005)  # 500 / V
    assert p.objective_change == pytest.approx(-0.0005)
    assert p.objective_size == pytest.approx(0.0025)
    assert p.tracking_error == pytest.approx(0.05)  # the basis risk counts
    assert p.tracking_error_after == pytest.approx(np.sqrt(0.0025 - 0.0005))  # 4.472%
    assert p.usd == pytest.approx(25.0)  # 0.0005 x 100,000 / gamma_trade 2
    # -52.79 bp = 1e4 x (0.044721 - 0.05)
    assert c.explain("funding_budget", 1e-6) == (
        "funding_budget binds: 500 USD more funding budget would lower the objective by at most "
        "0.0005 (first order, an upper bound; the objective's terms now total 0.0025 in absolute "
        "value): worth at most cutting tracking error (before lot rounding) from 5.000% to 4.472% "
        "(-52.79 bp) at the same costs, or 25.00 USD less trading cost")


def test_a_small_dual_keeps_the_start_step() -> None:
    c = _solved(FundingBudget(), _data(), Z)
    p = c.predict("funding_budget", 1e-7)  # 1e-7 x 1,000 = 0.0001 <= 0.000625
    assert p is not None and p.step == 1000.0 and p.objective_change == pytest.approx(-1e-4)
    assert p.usd == pytest.approx(5.0)


def _big(**kw: Any) -> Any:
    """The deviation (0, 0.5): TE^2 = 0.25 (TE 50%), no basis factor; a linear trading cost of
    gamma 1 x 1.5 x |0.5| = 0.75: the objective's size is 1.0 (all exact in binary)."""
    base: dict[str, Any] = dict(Gb=np.zeros((2, 0)), structure=_structure(trading=True),
                                gamma_trade=1.0, lin_cost=np.array([0.0, 1.5]))
    base.update(kw)
    return _data(**base)


ZB = np.array([0.0, 0.5])


def test_a_fall_of_exactly_a_quarter_keeps_the_step_and_can_cut_te_to_zero() -> None:
    # vol cap 50%: start min(1 pp, a tenth of 50 pp) = 1 pp; 0.25 x 1 = 0.25 is "at most a
    # quarter" of 1.0, so the step stays 1 pp; the fall 0.25 is all of TE^2: TE 50% -> 0
    c = _solved(VolatilityCap(), _big(), ZB)
    p = c.predict("vol_cap", 0.25)
    assert p is not None
    assert p.step == 1.0 and p.step_weight == pytest.approx(0.01)  # 1 pp
    assert p.objective_change == -0.25 and p.objective_size == 1.0
    assert p.tracking_error == 0.5 and p.tracking_error_after == 0.0
    assert p.usd == pytest.approx(25_000.0)  # 0.25 x 100,000 / 1
    assert c.explain("vol_cap", 0.25) == (
        "vol_cap binds: allowing 1 pp more volatility would lower the objective by at most 0.25 "
        "(first order, an upper bound; the objective's terms now total 1 in absolute value): "
        "worth at most cutting tracking "
        "error (before lot rounding) from 50.000% to 0.000% (-5000.00 bp) at the same costs, or 25,000.00 "
        "USD less "
        "trading cost")


def test_the_ladder_goes_below_one_unit() -> None:
    c = _solved(VolatilityCap(), _big(), ZB)
    # dual 3 per pp: 1 -> 3, 0.5 -> 1.5, 0.2 -> 0.6, 0.1 -> 0.3, 0.05 -> 0.15 <= 0.25
    p = c.predict("vol_cap", 3.0)
    assert p is not None and p.step == pytest.approx(0.05)
    assert p.step_weight == pytest.approx(0.0005)
    assert p.objective_change == pytest.approx(-0.15)
    assert p.tracking_error_after == pytest.approx(np.sqrt(0.1))
    half = c.predict("vol_cap", 0.5)  # 1 pp -> 0.5 > 0.25; 0.5 pp -> 0.25
    assert half is not None and half.step == 0.5 and half.objective_change == -0.25


def test_te_cut_in_bp_from_50_to_40_percent() -> None:
    c = _solved(VolatilityCap(), _big(), ZB)
    # dual 0.09 per pp keeps the 1 pp step (0.09 <= 0.25): fall 0.09, TE sqrt(0.25 - 0.09) =
    # 0.4, i.e. -1000.00 bp; 0.09 x 100,000 / 1 = 9,000 USD
    text = c.explain("vol_cap", 0.09)
    assert "from 50.000% to 40.000% (-1000.00 bp) at the same costs, or 9,000.00 USD" in text


def test_a_fall_above_te2_without_a_trading_weight_is_worth_nothing_named() -> None:
    # costs: carry gamma 1 x 3 x 0.5 = 1.5, so the size is 1.75 and a quarter 0.4375; dual 0.4
    # per pp keeps 1 pp: the fall 0.4 exceeds TE^2 = 0.25 (no TE equivalent) and gamma_trade = 0
    # (no USD equivalent)
    d = _big(structure=_structure(carry=True), gamma_trade=0.0, carry=np.array([0.0, 3.0]))
    c = _solved(VolatilityCap(), d, ZB)
    p = c.predict("vol_cap", 0.4)
    assert p is not None and p.step == 1.0 and p.objective_size == 1.75
    assert p.tracking_error_after is None and p.usd is None
    assert c.explain("vol_cap", 0.4) == (
        "vol_cap binds: allowing 1 pp more volatility would lower the objective by at most 0.4 "
        "(first order, an upper bound; the objective's terms now total 1.75 in absolute "
        "value)")


def test_a_fall_of_exactly_the_negligible_share_is_still_explained() -> None:
    # step 1 pp, size 1.0: a dual of NEGLIGIBLE_SHARE per pp predicts exactly that share, which
    # is not below it
    c = _solved(VolatilityCap(), _big(), ZB)
    text = c.explain("vol_cap", NEGLIGIBLE_SHARE)
    assert text.startswith("vol_cap binds: allowing 1 pp more volatility would lower the "
                           "objective by at most 1e-06 (first order, an upper bound; the "
                           "objective's terms now total 1 in absolute value)"), text


def test_a_row_that_holds_nothing_back() -> None:
    c = _solved(FundingBudget(), _data(), Z)
    # 1e-13 x 1,000 = 1e-10 < 1e-6 x 0.0025
    assert c.explain("funding_budget", 1e-13) == (
        "funding_budget holds nothing back: 1,000 USD more funding budget would change the "
        "objective by less than 1e-06 of its size (its dual is at solver precision: the row may "
        "touch its bound or be well inside it)")


def test_margin_collateral_buys_budget_at_the_relative_buffer_and_holding_says_so() -> None:
    d = _data(margin_budget=SimpleNamespace(holding=False, per_collateral=0.8))
    c = _solved(InitialMargin(), d, Z)
    # 1 USD of collateral buys 0.8 of budget: rate 8e-7; 1,000 -> 0.0008 > 0.000625, 500 -> 0.0004
    p = c.predict("margin", 1e-6)
    assert p is not None and p.step == 500.0
    assert p.step_weight == pytest.approx(0.004)  # 500 / V x 0.8
    assert p.objective_change == pytest.approx(-0.0004) and p.usd == pytest.approx(20.0)
    # sqrt(0.0021) = 0.045826: -41.74 bp
    assert c.explain("margin", 1e-6) == (
        "margin binds: 500 USD more collateral would lower the objective by at most 0.0004 (first "
        "order, an upper bound; the objective's terms now total 0.0025 in absolute value): "
        "worth at most cutting tracking error (before "
        "lot rounding) from "
        "5.000% to 4.583% (-41.74 bp) at the same costs, or 20.00 USD less trading cost")
    c.update(_data(margin_budget=SimpleNamespace(holding=True, per_collateral=0.8)))
    p = c.predict("margin", 1e-6)  # 1 USD of budget per USD: as the funding row, 500 USD
    assert p is not None and p.step == 500.0 and p.step_weight == pytest.approx(0.005)
    assert c.explain("margin", 1e-6).startswith(
        "margin binds (at the margin the current positions hold (hysteresis: above the relative "
        "buffer's target, below the hard limit)): 500 USD more margin budget would lower the "
        "objective by at most 0.0005 ")


def test_notes_and_units_before_a_solve() -> None:
    """Without a solve the explanation gives the rate per user unit, after the row's note."""
    assert StressMargin(0, "crash").explain("stress[crash]", 2e-6) == (
        "stress[crash] binds (the book would sit at its liquidation edge): loosening it lowers "
        "the objective by 2e-06 per USD of collateral")
    assert ExpiryGuard((0,)).explain("min_days_to_expiry[BTCUSDT]", 3e-6) == (
        "min_days_to_expiry[BTCUSDT] binds (within min_days_to_expiry of its expiry it may only "
        "be reduced or closed): loosening it lowers the objective by 3e-06 per USD of position")
    assert FundingBudget().explain("funding_budget", 2e-6) == (
        "funding_budget binds: loosening it lowers the objective by 2e-06 per USD")
    assert InitialMargin().note("margin") == ""
    assert StressMargin(0, "crash").step_phrase("stress[crash]", 500.0) == "500 USD more collateral"


def test_no_prediction_without_data_a_positive_dual_or_an_objective() -> None:
    ctx = Context.create(_data().structure)
    c = FundingBudget()
    c.build(ctx)
    ctx.z.value = Z
    assert c.predict("funding_budget", 1e-6) is None  # solved, but no data from update
    c.update(_data())
    assert c.predict("funding_budget", 0.0) is None  # a dual of 0 holds nothing
    assert c.explain("funding_budget", 0.0) == (
        "funding_budget binds: loosening it lowers the objective by 0 per USD")
    # on target with no basis or cost: the objective is 0 and no step predicts at most a
    # quarter of it
    ctx.z.value = np.zeros(2)
    assert c.predict("funding_budget", 1e-6) is None


def test_gross_leverage_phrase_names_the_bound_before_and_after() -> None:
    c = GrossLeverage()
    assert c.step_phrase("gross_leverage", 0.1) == "allowing 0.1x more gross leverage (nanx -> nanx)"
    _solved(c, _data(), Z)
    assert c.step_phrase("gross_leverage", 0.1) == "allowing 0.1x more gross leverage (1.5x -> 1.6x)"
    # a step below the second decimal still shows the bound moving: 1.5 + 0.005 = 1.505
    assert c.step_phrase("gross_leverage", 0.005) == (
        "allowing 0.005x more gross leverage (1.5x -> 1.505x)")


def test_the_default_phrase_and_note() -> None:
    """The base class's step phrase (a new constraint's default; a concrete test subclass would
    break test_constraints' check that the factory covers every constraint class) and note."""
    c = FundingBudget()  # keeps the base's note
    assert c.note("funding_budget") == ""
    assert Constraint.step_phrase(c, "funding_budget", 1000.0) == "loosening it by 1,000 USD"
    assert Constraint.step_phrase(VolatilityCap(), "vol_cap", 0.5) == "loosening it by 0.5 pp of volatility"


@dataclass
class _SpotData:
    """Just the fields a funding row's prediction reads, as a dataclass (predict replaces ``s``)."""

    V: float = 100_000.0
    s: np.ndarray = field(default_factory=lambda: np.array([0.5, 0.5]))
    w: np.ndarray = field(default_factory=lambda: np.array([0.5, 0.5]))
    B: np.ndarray = field(default_factory=lambda: np.eye(2))
    F: np.ndarray = field(default_factory=lambda: np.zeros((2, 1)))
    sqrt_idio: np.ndarray = field(default_factory=lambda: np.ones(2))
    Gb: np.ndarray = field(default_factory=lambda: np.zeros((2, 0)))
    z0: np.ndarray = field(default_factory=lambda: np.zeros(2))
    carry: np.ndarray = field(default_factory=lambda: np.zeros(2))
    funding_budget: float = 0.5
    gamma_trade: float = 2.0
    structure: Structure = field(default_factory=lambda: _structure(spot_leg=True))
    #: the spot leg's data: only ``base_follows`` is read (None: a NAV base, targets stay put)
    spot: Any = None


def test_tracking_error_is_at_the_solved_spot_trades() -> None:
    d: Any = _SpotData()
    ctx = SpotContext.create_spot(d.structure)
    c = FundingBudget()
    c.build(ctx)
    c.update(d)
    ctx.z.value = np.array([0.03, 0.04])
    # without the spot trades: deviation (0.03, 0.04), TE 5%
    p = c.predict("funding_budget", 1e-7)
    assert p is not None and p.tracking_error == pytest.approx(0.05)
    # selling 0.03 of asset 0 cancels the short hedge's deviation: (0.03 - 0.03, 0.04), TE 4%
    ctx.buy.value, ctx.sell.value = np.zeros(2), np.array([0.03, 0.0])
    p = c.predict("funding_budget", 1e-7)
    assert p is not None and p.tracking_error == pytest.approx(0.04)
    assert p.objective_size == pytest.approx(0.0016)  # the spot leg's terms count 0
    # an invested base follows the sale: V' = 0.97 V, targets 0.5 x 0.97 = 0.485 each, so the
    # deviation is (0.47 + 0.03 - 0.485, 0.5 + 0.04 - 0.485) = (0.015, 0.055) of today's V by
    # hand, reported (as the solution's headline TE after) as a fraction of V' = 0.97 V
    d.spot = SimpleNamespace(base_follows=True)
    p = c.predict("funding_budget", 1e-7)
    assert p is not None and p.tracking_error == pytest.approx(math.hypot(0.015, 0.055) / 0.97)
    te2 = 0.015 ** 2 + 0.055 ** 2  # of today's V; the fall is in the same units
    assert p.tracking_error_after == pytest.approx(math.sqrt(te2 + p.objective_change) / 0.97)
