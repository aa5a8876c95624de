"""Every objective term by hand on a 2-asset, 2-contract instance: the numpy ``value`` and the cvxpy
expression after ``update`` both equal figures worked out here (weight units, annualised variances
or fractions of V). The data are plain numbers, not a prepared book, so each expectation is a few
products that can be checked on paper."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from optimizer.context import Context
from optimizer.data import Structure
from optimizer.terms import (
    BasisRisk,
    CarryCost,
    CostToGo,
    FuturesTax,
    ImpactCost,
    LinearTradingCost,
    ReserveCost,
    SpotImpactCost,
    SpotTax,
    SpotTradingCost,
    Term,
    TrackingVariance,
    terms_for,
)

B = np.eye(2)
Z = np.array([-0.05, 0.10])
Z0 = np.array([0.0, 0.19])


def _data(**kw: Any) -> Any:
    F = np.array([[0.5], [0.2]])
    d = SimpleNamespace(
        s=np.array([0.6, 0.3]), w=np.array([0.5, 0.5]), B=B, F=F, FtB=F.T @ B,
        sqrt_idio=np.array([0.1, 0.3]), Gb=np.array([[0.4, 0.0], [0.1, 0.3]]), z0=Z0,
        gamma_trade=2.0, lin_cost=np.array([0.001, 0.002]), impact_cost=np.array([0.01, 0.04]),
        gamma_fund=0.5, carry=np.array([0.01, -0.02]),
        cost_to_go_root=np.array([[1.0, 0.5], [0.0, 2.0]]),
        mmr=np.array([[0.01], [0.02]]), cum=np.zeros((2, 1)), stress_g=np.array([[-0.3, -0.3]]),
        stress_names=("crash",), stress_coll=np.array([0.06]), nav=0.95, V=1.0,
        collateral=0.06, inv_lev=np.array([0.1, 0.1]),
        settings=SimpleNamespace(costs=SimpleNamespace(reserve_yield=0.04, horizon_days=36.5)),
        futures_tax_coef=np.array([0.2, 0.3]))
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def _structure(**kw: Any) -> Structure:
    base: dict[str, Any] = dict(
        n_assets=2, n_contracts=2, n_factors=1, idio=True, n_basis_factors=2, n_tiers=1,
        mm_floor=False, exposure=B.astype(np.int8).tobytes(), stress_names=("crash",),
        cluster_members=(), cluster_names=(), capped=(), trade_limited=(), margin=False,
        leverage=False, vol_cap=False, funding_budget=False, trading=True, impact=True, carry=True,
        objective_scale=1.0)
    base.update(kw)
    return Structure(**base)


#: the hand values at Z (z0 = Z0) and the data above
# dev = s + B z - w = (0.05, -0.10); F' dev = 0.025 - 0.020 = 0.005 -> 2.5e-5;
# idio: (0.1 x 0.05)^2 + (0.3 x -0.1)^2 = 2.5e-5 + 9e-4 -> TE^2 = 9.5e-4
TE2 = 9.5e-4
# Gb' z = (0.4 x -0.05 + 0.1 x 0.1, 0.3 x 0.1) = (-0.01, 0.03) -> 1e-4 + 9e-4
BASIS = 1e-3
# u = |z - z0| = (0.05, 0.09); 2 x (0.001 x 0.05 + 0.002 x 0.09) = 2 x 2.3e-4
LIN = 4.6e-4
# 2 x (0.01 x 0.05^1.5 + 0.04 x 0.09^1.5) = 2 x (0.01 x 0.0111803 + 0.04 x 0.027)
IMPACT = 2 * (0.01 * 0.05 ** 1.5 + 0.04 * 0.027)
# 0.5 x (0.01 x -0.05 - 0.02 x 0.10) = 0.5 x -2.5e-3
CARRY = -1.25e-3
# R dev = (0.05 - 0.05, -0.2) -> 0.04
CTG = 0.04
# c_j max(0, sign(z0_j) (z0_j - z_j)): j = 0 has z0 = 0 (nothing to realise); j = 1: 0.3 x 0.09
FTAX = 0.3 * 0.09
# rho = 0.04 x 36.5 / 365 = 0.004; P = 0.06 - (0.95 - 0.9) = 0.01; g'z = 0.015 - 0.03 = -0.015;
# MM at |z| x 0.7: 0.01 x 0.035 + 0.02 x 0.07 = 1.75e-3 -> R = -0.01 + 0.015 + 0.00175 = 0.00675;
# the initial margin's row: 0.1 x (0.05 + 0.10) - P_0 (0.06 - 0.05 = 0.01) = 0.005, below it
RESERVE = 0.004 * 0.00675

CASES: list[tuple[type[Term], float]] = [
    (TrackingVariance, TE2), (BasisRisk, BASIS), (LinearTradingCost, LIN), (ImpactCost, IMPACT),
    (CarryCost, CARRY), (CostToGo, CTG), (FuturesTax, FTAX), (ReserveCost, RESERVE)]


def test_tracking_variance_equals_dev_sigma_dev() -> None:
    d = _data()
    sigma = d.F @ d.F.T + np.diag(d.sqrt_idio ** 2)
    dev = d.s + B @ Z - d.w
    assert float(dev @ sigma @ dev) == pytest.approx(TE2, rel=1e-12)


@pytest.mark.parametrize(("cls", "want"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_numpy_value_by_hand(cls: type[Term], want: float) -> None:
    t = cls()
    d = _data()
    if isinstance(t, ReserveCost):
        assert t.pledged is None
        t.value(Z, d)  # before any update: P from the data
        assert t.value(Z, d) == pytest.approx(want, rel=1e-12)
        t.pledged = np.array([0.005])  # the value re-uses P of the last update
        assert t.value(Z, d) == pytest.approx(0.004 * (-0.005 + 0.015 + 0.00175), rel=1e-12)
        t.pledged, t.pledged0 = np.array([0.02]), 0.0  # the initial margin then sets R = 0.015
        assert t.value(Z, d) == pytest.approx(0.004 * 0.015, rel=1e-12)
        t.pledged0 = 0.02  # a reserve below 0 is no reserve
        assert t.value(Z, d) == 0.0
        return
    assert t.value(Z, d) == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert isinstance(t.value(Z, d), float)


@pytest.mark.parametrize(("cls", "want"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_cvxpy_expression_after_update_by_hand(cls: type[Term], want: float) -> None:
    ctx = Context.create(_structure(reserve_cost=True, cost_to_go=True))
    t = cls()
    expr = t.build(ctx)
    d = _data()
    ctx.set_common(d)  # the shared Parameters (F' B of the tracking variance among them)
    t.update(d)
    ctx.z.value = Z
    ctx.u.value = np.abs(Z - Z0)
    ctx.a.value = np.abs(Z)
    assert float(expr.value) == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_tracking_variance_without_idio() -> None:
    d = _data(sqrt_idio=np.zeros(2))
    assert TrackingVariance().value(Z, d) == pytest.approx(2.5e-5, rel=1e-12)
    ctx = Context.create(_structure(idio=False))
    t = TrackingVariance()
    expr = t.build(ctx)
    ctx.set_common(d)
    t.update(d)
    ctx.z.value = Z
    assert float(expr.value) == pytest.approx(2.5e-5, rel=1e-9)
    assert t.sd is None


def test_tracking_variance_idio_part_is_a_positive_square() -> None:
    # no factor at all: the whole TE^2 is the idio sum of squares, positive and quadratic in dev
    d = _data(F=np.zeros((2, 1)), FtB=np.zeros((1, 2)))
    assert TrackingVariance().value(Z, d) == pytest.approx(9.25e-4, rel=1e-12)
    assert TrackingVariance().value(2 * Z + d.w - d.s, d) == pytest.approx(
        float(np.sum((d.sqrt_idio * 2 * Z) ** 2)), rel=1e-12)


def test_costs_scale_with_gamma_and_vanish_without_trades() -> None:
    d = _data(gamma_trade=1.0, gamma_fund=1.0)
    assert LinearTradingCost().value(Z, d) == pytest.approx(LIN / 2)
    assert ImpactCost().value(Z, d) == pytest.approx(IMPACT / 2)
    assert CarryCost().value(Z, d) == pytest.approx(CARRY * 2)
    assert LinearTradingCost().value(Z0, d) == 0.0 and ImpactCost().value(Z0, d) == 0.0


def test_impact_is_a_three_halves_power_of_the_trade() -> None:
    d = _data(gamma_trade=1.0, impact_cost=np.array([1.0, 0.0]))
    one = ImpactCost().value(np.array([0.04, 0.19]), d)  # u_0 = 0.04 -> 0.008
    four = ImpactCost().value(np.array([0.16, 0.19]), d)  # 0.16^1.5 = 0.064
    assert one == pytest.approx(0.008) and four == pytest.approx(0.064)


def test_futures_tax_by_hand_short_and_long() -> None:
    d = _data(z0=np.array([-0.1, 0.19]))
    # j = 0: short -0.1 -> -0.05 buys back 0.05: 0.2 x 0.05 = 0.01; j = 1: 0.027
    assert FuturesTax().value(Z, d) == pytest.approx(0.01 + 0.027)
    # growing both positions realises nothing
    assert FuturesTax().value(np.array([-0.2, 0.3]), d) == 0.0
    # a flip keeps growing past 0 (the conservative over-estimate): -0.1 -> +0.1 is 0.2 x 0.2
    assert FuturesTax().value(np.array([0.1, 0.19]), d) == pytest.approx(0.04)


def test_cost_to_go_off_is_zero() -> None:
    assert CostToGo().value(Z, _data(cost_to_go_root=None)) == 0.0


def test_spot_terms_value_zero() -> None:
    d = _data()
    for t in (SpotTradingCost(), SpotImpactCost(), SpotTax()):
        assert t.value(Z, d) == 0.0


def test_terms_for_follows_the_structure() -> None:
    def names(**kw: Any) -> list[str]:
        return [t.name for t in terms_for(_structure(**kw))]

    assert names() == ["tracking_error", "basis_risk", "trading_cost", "impact_cost", "carry_cost"]
    assert names(n_basis_factors=0, trading=False, impact=False, carry=False) == ["tracking_error"]
    assert names(n_basis_factors=0, trading=False, impact=False, carry=False, reserve_cost=True,
                 cost_to_go=True) == ["tracking_error", "reserve_cost", "cost_to_go"]
    assert names(n_basis_factors=0, impact=False, carry=False, spot_leg=True, spot_impact=True,
                 tax_pieces=2, futures_tax=True) == [
        "tracking_error", "trading_cost", "spot_trading_cost", "spot_impact_cost", "spot_tax",
        "futures_tax"]
    # spot costs need trading on; the spot-only terms need the spot leg; the futures tax is
    # priced with or without it ([tax] price_futures on an overlay-only book)
    assert names(n_basis_factors=0, trading=False, impact=False, carry=False, spot_leg=True) == \
        ["tracking_error"]
    assert names(n_basis_factors=0, trading=False, impact=False, carry=False, spot_impact=True,
                 tax_pieces=2, futures_tax=True) == ["tracking_error", "futures_tax"]


def test_spot_terms_need_the_spot_context() -> None:
    ctx = Context.create(_structure())
    for t in (SpotTradingCost(), SpotImpactCost(), SpotTax()):
        with pytest.raises(TypeError, match=r"^a spot-leg term needs the spot leg's context$"):
            t.build(ctx)


def test_reserve_cost_with_the_maintenance_floor_row() -> None:
    # mm_floor (some first bracket has cum > 0): MM_j = max(..., 0) in the expression; here
    # cum = 0.01 on contract 1 makes its stressed MM 0.02 x 0.07 - 0.01 < 0 -> 0 (not negative)
    d = _data(cum=np.array([[0.0], [0.01]]))
    ctx = Context.create(_structure(reserve_cost=True, mm_floor=True))
    t = ReserveCost()
    expr = t.build(ctx)
    t.update(d)
    ctx.z.value, ctx.u.value, ctx.a.value = Z, np.abs(Z - Z0), np.abs(Z)
    # R = -0.01 + 0.015 + (0.01 x 0.035 + 0) = 0.00535
    assert float(expr.value) == pytest.approx(0.004 * 0.00535, rel=1e-9)
    assert t.value(Z, d) == pytest.approx(0.004 * 0.00535, rel=1e-12)


def test_one_basis_factor_prices_basis_risk() -> None:
    assert "basis_risk" in [t.name for t in terms_for(_structure(n_basis_factors=1))]


def test_reserve_cost_where_the_initial_margin_binds() -> None:
    # at leverage 2 (1 / L = 0.5): R_IM = 0.5 x (0.05 + 0.10) - 0.01 = 0.065, above the crash's
    # 0.00675, in the expression and in the numpy value alike
    d = _data(inv_lev=np.array([0.5, 0.5]))
    ctx = Context.create(_structure(reserve_cost=True))
    t = ReserveCost()
    expr = t.build(ctx)
    t.update(d)
    ctx.z.value, ctx.u.value, ctx.a.value = Z, np.abs(Z - Z0), np.abs(Z)
    assert float(expr.value) == pytest.approx(0.004 * 0.065, rel=1e-9)
    assert t.value(Z, d) == pytest.approx(0.004 * 0.065, rel=1e-12)
