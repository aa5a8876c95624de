"""Each constraint's numpy re-check ``violation`` (used by lot rounding's repair and the solution
checks) and its cvxpy rows after ``update``, against figures worked out by hand on a 2-asset,
2-contract instance (weight units)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from test_terms import set_factor

from optimizer.constraint_base import Constraint
from optimizer.constraints import (
    ClusterBands,
    ExpiryGuard,
    FundingBudget,
    GrossLeverage,
    PositionLimit,
    TradeLimit,
    VolatilityCap,
    constraints_for,
)
from optimizer.context import Context
from optimizer.data import Structure
from optimizer.margin_constraints import InitialMargin, StressMargin

B = np.eye(2)


def _data(**kw: Any) -> Any:
    d = SimpleNamespace(
        V=10_000.0, contracts=("BTCUSDT", "ETHUSDT"), s=np.array([0.6, 0.3]), w=np.array([0.5, 0.5]),
        B=B, z0=np.array([0.2, -0.1]), inv_lev=np.array([0.1, 0.25]), im_budget=0.12,
        margin_budget=None, mmr=np.array([[0.01, 0.02], [0.02, 0.02]]),
        cum=np.array([[0.0, 0.001], [0.0, 0.0]]), stress_g=np.array([[-0.3, -0.4]]),
        stress_coll=np.array([0.05]), stress_names=("crash",), max_gross=1.0,
        caps=np.array([1.0, 0.3]), cap_source=("position_cap", "tier_limit"),
        cluster_names=("majors",), cluster_bands=np.array([0.02]),
        F=np.array([[0.5], [0.2]]), sqrt_idio=np.array([0.1, 0.3]), vol_cap=0.3,
        carry=np.array([0.01, -0.02]), funding_budget=0.001, trade_limits=np.array([0.05, 1.0]),
        near_expiry=np.array([1.0, 0.0]), expired=None, expiry_chained=None)
    d.FtB = d.F.T @ B
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def _structure(**kw: Any) -> Structure:
    base: dict[str, Any] = dict(
        n_assets=2, n_contracts=2, n_factors=1, idio=True, n_basis_factors=0, n_tiers=2,
        mm_floor=False, exposure=B.astype(np.int8).tobytes(), stress_names=(),
        cluster_members=(), cluster_names=(), capped=(), trade_limited=(), margin=False,
        leverage=False, vol_cap=False, funding_budget=False, trading=False, impact=False,
        carry=False, objective_scale=1.0)
    base.update(kw)
    return Structure(**base)


Z = np.array([-0.5, 0.4])


def test_initial_margin_by_hand() -> None:
    c = InitialMargin()
    # 0.1 x 0.5 + 0.25 x 0.4 = 0.15 > 0.12
    np.testing.assert_allclose(c.violation(Z, _data()), [0.03])
    np.testing.assert_allclose(c.violation(Z, _data(im_budget=0.15)), [0.0], atol=1e-15)  # at the bound
    np.testing.assert_array_equal(c.violation(-Z, _data(im_budget=0.2)), [0.0])
    assert c.rows(_data()) == ["margin"]
    assert c.bound("margin", _data()) == pytest.approx(1200.0)


def test_stress_margin_by_hand() -> None:
    c = StressMargin(0, "crash")
    d = _data()
    # g'z = -0.3 x -0.5 - 0.4 x 0.4 = 0.15 - 0.16 = -0.01; stressed |z|: 0.35, 0.24
    # MM: max(0.01 x 0.35, 0.02 x 0.35 - 0.001) = 0.006; max(0.02 x 0.24, same) = 0.0048
    # surplus = 0.05 - 0.01 - 0.0108 = 0.0292
    assert c.surplus(Z, d) == pytest.approx(0.0292)
    np.testing.assert_array_equal(c.violation(Z, d), [0.0])
    low = _data(stress_coll=np.array([0.01]))
    assert c.surplus(Z, low) == pytest.approx(-0.0108)
    # the row keeps a surplus of 2e-9 (liquidation is at a surplus <= 0): violated by 0.0108 + 2e-9
    np.testing.assert_allclose(c.violation(Z, low), [0.0108 + 2e-9], rtol=0, atol=1e-15)
    edge = _data(stress_coll=np.array([0.0208]))  # a surplus of exactly 0: liquidated, so broken
    assert c.surplus(Z, edge) == pytest.approx(0.0, abs=1e-15)
    assert c.violation(Z, edge)[0] == pytest.approx(2e-9, abs=1e-15)
    assert c.name == "stress[crash]" and c.rows(d) == ["stress[crash]"]
    assert c.bound("stress[crash]", d) == pytest.approx(500.0)


def test_gross_leverage_by_hand() -> None:
    c = GrossLeverage()
    # |0.6 - 0.5| + |0.3 + 0.4| = 0.8 <= 1; z = (0.5, 0.4): 1.1 + 0.7 = 1.8 -> 0.8 over
    np.testing.assert_array_equal(c.violation(Z, _data()), [0.0])
    np.testing.assert_allclose(c.violation(np.array([0.5, 0.4]), _data()), [0.8])
    np.testing.assert_allclose(c.violation(np.array([-1.6, 0.0]), _data()), [0.3])  # |-1.0| + 0.3
    assert c.per_unit(_data()) == 1.0 and c.bound("gross_leverage", _data()) == 1.0


def test_position_limit_by_hand() -> None:
    c = PositionLimit((1,))
    d = _data()
    np.testing.assert_allclose(c.violation(Z, d), [0.1])  # |0.4| - 0.3; contract 0 is not capped
    np.testing.assert_allclose(c.violation(-Z, d), [0.1])
    np.testing.assert_array_equal(c.violation(np.array([5.0, 0.3]), d), [0.0])
    assert c.rows(d) == ["tier_limit[ETHUSDT]"]
    assert c.bound("tier_limit[ETHUSDT]", d) == pytest.approx(3000.0)
    both = PositionLimit((0, 1))
    np.testing.assert_allclose(both.violation(np.array([-1.2, 0.1]), d), [0.2, 0.0])
    assert both.rows(d) == ["position_cap[BTCUSDT]", "tier_limit[ETHUSDT]"]


def test_cluster_band_by_hand() -> None:
    c = ClusterBands(((0, 1),), 2)
    d = _data()
    # dev = s + z - w = (0.1 - 0.5, -0.2 + 0.4) = (-0.4, 0.2): sum -0.2, band 0.02 -> 0.18
    np.testing.assert_allclose(c.violation(Z, d), [0.18])
    np.testing.assert_allclose(c.violation(np.array([0.0, 0.13]), d), [0.01])  # sum +0.03
    np.testing.assert_array_equal(c.violation(np.array([0.0, 0.11]), d), [0.0])  # sum +0.01
    one = ClusterBands(((1,),), 2)  # ETH alone: -0.2 + 0.4 = 0.2 -> 0.18
    np.testing.assert_allclose(one.violation(Z, d), [0.18])
    assert c.rows(d) == ["cluster_band[majors]"]
    assert c.bound("cluster_band[majors]", d) == pytest.approx(2.0)  # pp


def test_volatility_cap_by_hand() -> None:
    c = VolatilityCap()
    d = _data()
    # e = s + z = (0.1, 0.7): F'e = 0.05 + 0.14 = 0.19; idio (0.01, 0.21)
    # vol = sqrt(0.0361 + 0.0001 + 0.0441) = sqrt(0.0803)
    np.testing.assert_allclose(c.violation(Z, _data(vol_cap=0.2)), [np.sqrt(0.0803) - 0.2])
    np.testing.assert_array_equal(c.violation(Z, d), [0.0])  # 0.2834 <= 0.3
    assert c.per_unit(d) == 0.01 and c.bound("vol_cap", d) == pytest.approx(30.0)


def test_funding_budget_by_hand() -> None:
    c = FundingBudget()
    # carry'z = 0.01 x -0.5 - 0.02 x 0.4 = -0.013 <= 0.001
    np.testing.assert_array_equal(c.violation(Z, _data()), [0.0])
    np.testing.assert_allclose(c.violation(-Z, _data()), [0.012])  # 0.013 - 0.001
    assert c.bound("funding_budget", _data()) == pytest.approx(10.0)


def test_trade_limit_by_hand() -> None:
    c = TradeLimit((0,))
    d = _data()
    # |z - z0| = (0.7, 0.5); contract 0 limited to 0.05 -> 0.65
    np.testing.assert_allclose(c.violation(Z, d), [0.65])
    np.testing.assert_array_equal(c.violation(np.array([0.24, 5.0]), d), [0.0])
    np.testing.assert_allclose(c.violation(np.array([0.14, 5.0]), d), [0.01])
    assert c.rows(d) == ["trade_limit[BTCUSDT]"]
    assert c.bound("trade_limit[BTCUSDT]", d) == pytest.approx(500.0)


def test_expiry_guard_by_hand() -> None:
    c = ExpiryGuard((0, 1))
    d = _data()  # z0 = (0.2, -0.1); contract 0 is near expiry
    np.testing.assert_allclose(c.violation(np.array([0.3, -5.0]), d), [0.1, 0.0])  # grew 0.1
    np.testing.assert_allclose(c.violation(np.array([-0.1, 0.0]), d), [0.1, 0.0])  # flipped
    np.testing.assert_array_equal(c.violation(np.array([0.15, 0.0]), d), [0.0, 0.0])  # reduced
    short = _data(near_expiry=np.array([0.0, 1.0]))
    np.testing.assert_allclose(c.violation(np.array([9.0, -0.3]), short), [0.0, 0.2])
    np.testing.assert_allclose(c.violation(np.array([9.0, 0.05]), short), [0.0, 0.05])
    np.testing.assert_array_equal(c.violation(np.array([9.0, -0.05]), short), [0.0, 0.0])
    off = _data(near_expiry=None)
    np.testing.assert_array_equal(c.violation(np.array([9.0, 9.0]), off), [0.0, 0.0])
    # a plan's later step after contract 1 settled: it is held at 0 whatever z0 and near say
    gone = _data(near_expiry=None, expired=np.array([0.0, 1.0]))
    np.testing.assert_allclose(c.violation(np.array([9.0, -0.05]), gone), [0.0, 0.05])
    np.testing.assert_allclose(c.violation(np.array([9.0, 0.02]), gone), [0.0, 0.02])
    both = _data(expired=np.array([0.0, 1.0]))  # contract 0 near expiry as before
    np.testing.assert_allclose(c.violation(np.array([0.3, 0.0]), both), [0.1, 0.0])
    assert c.rows(d) == ["min_days_to_expiry[BTCUSDT]", "min_days_to_expiry[ETHUSDT]"]
    assert c.bound("min_days_to_expiry[ETHUSDT]", d) == pytest.approx(1000.0)


def _rows_at(c: Constraint, st: Structure, d: Any, z: np.ndarray) -> float:
    """The largest violation of ``c``'s cvxpy rows after ``update(d)`` at z (a = |z|, u = |z - z0|)."""
    ctx = Context.create(st)
    cons = c.build(ctx)
    ctx.set_common(d)
    c.update(d)
    ctx.z.value, ctx.a.value, ctx.u.value = z, np.abs(z), np.abs(z - d.z0)
    set_factor(ctx, z)
    return max(float(np.max(k.violation())) for k in cons)


@pytest.mark.parametrize("z", [Z, -Z, np.array([0.3, -0.5]), np.array([0.14, 0.1])])
def test_cvxpy_rows_agree_with_the_hand_checks(z: np.ndarray) -> None:
    d = _data(im_budget=0.1, vol_cap=0.25)
    st = _structure()
    cases: list[Constraint] = [InitialMargin(), GrossLeverage(), PositionLimit((1,)), FundingBudget(),
                               TradeLimit((0,)), ExpiryGuard((0, 1)), VolatilityCap(),
                               ClusterBands(((0, 1),), 2)]
    for c in cases:
        assert _rows_at(c, st, d, z) == pytest.approx(float(c.violation(z, d).max()), abs=1e-12), c.name


def test_vol_cap_rows_without_idio() -> None:
    d = _data(sqrt_idio=np.zeros(2), vol_cap=0.1)
    c = VolatilityCap()
    # e = (0.1, 0.7): F'e = 0.19 -> 0.09 over
    np.testing.assert_allclose(c.violation(Z, d), [0.09])
    assert _rows_at(c, _structure(idio=False), d, Z) == pytest.approx(0.09)


def test_constraints_for_follows_the_structure() -> None:
    assert constraints_for(_structure()) == []
    got = constraints_for(_structure(margin=True, stress_names=("a", "b"), leverage=True, capped=(1,),
                                     cluster_members=((0, 1),), cluster_names=("m",), vol_cap=True,
                                     funding_budget=True, trade_limited=(0,), expiry_guarded=(1,)))
    assert [c.name for c in got] == ["margin", "stress[a]", "stress[b]", "gross_leverage",
                                     "position_limit", "cluster_band", "vol_cap", "funding_budget",
                                     "trade_limit", "min_days_to_expiry"]
    assert [c.index for c in got if isinstance(c, StressMargin)] == [0, 1]


def test_round_down_125_and_next_down() -> None:
    from optimizer.constraint_base import _next_down, _round_down_125, fmt_step

    cases = {7.0: 5.0, 5.0: 5.0, 4.99: 2.0, 3.0: 2.0, 1.5: 1.0, 999.0: 500.0, 1000.0: 1000.0,
             0.03: 0.02, 0.011: 0.01, 123.45: 100.0}
    for x, want in cases.items():
        assert _round_down_125(x) == pytest.approx(want), x
    for x in (0.0, -1.0, float("inf"), float("nan")):
        assert _round_down_125(x) == 0.0
    assert [_next_down(x) for x in (5.0, 2.0, 1.0, 0.5)] == pytest.approx([2.0, 1.0, 0.5, 0.2])
    assert _next_down(1e-12) == 0.0
    assert [fmt_step(x) for x in (1000.0, 1.0, 2.5, 0.5, 1e-05)] == ["1,000", "1", "2.5", "0.5", "1e-05"]


def test_steps_and_units_by_hand() -> None:
    d = _data(V=100_000.0, im_budget=0.001)
    m = InitialMargin()
    assert m.nominal_step(d) == 1000.0  # 1% of V = 1,000
    assert m.per_unit(d) == pytest.approx(1e-5)
    # bound 0.001 x 100,000 = 100 USD: a tenth of it, 10, is the smaller start
    assert m.start_step("margin", d) == 10.0
    assert m.start_step("margin", _data(V=100_000.0, im_budget=1.0)) == 1000.0
    assert GrossLeverage().nominal_step(d) == 0.1 and VolatilityCap().nominal_step(d) == 1.0
    assert ClusterBands(((0, 1),), 2).nominal_step(d) == 1.0
    assert VolatilityCap().per_unit(d) == 0.01
    assert GrossLeverage().start_step("gross_leverage", _data(max_gross=0.5)) == pytest.approx(0.05)
    # a row without a bound keeps the nominal step
    assert TradeLimit((0,)).start_step("trade_limit[BTCUSDT]", _data(trade_limits=np.zeros(2))) == 100.0


def test_margin_collateral_factor() -> None:
    c = InitialMargin()
    c.build(Context.create(_structure()))
    c.update(_data())
    assert c.collateral_factor() == 1.0 and not c.holding
    c.update(_data(margin_budget=SimpleNamespace(holding=False, per_collateral=0.8)))
    assert c.collateral_factor() == 0.8
    c.update(_data(margin_budget=SimpleNamespace(holding=True, per_collateral=0.8)))
    assert c.holding and c.collateral_factor() == 1.0


def test_dual_rows_by_hand() -> None:
    ctx = Context.create(_structure())
    lim = PositionLimit((0, 1))
    lim.build(ctx)
    lim.cons[0].save_dual_value(np.array([0.5, 0.0]))
    np.testing.assert_array_equal(lim.dual_rows(), [0.5, 0.0])
    fb = FundingBudget()
    fb.build(ctx)
    fb.cons[0].save_dual_value(np.float64(0.25))
    np.testing.assert_array_equal(fb.dual_rows(), [0.25])
    band = ClusterBands(((0, 1),), 2)
    band.build(ctx)
    band.cons[0].save_dual_value(np.array([0.7]))
    band.cons[1].save_dual_value(np.array([0.2]))
    np.testing.assert_allclose(band.dual_rows(), [0.5])  # |0.7 - 0.2|
    guard = ExpiryGuard((0, 1))
    guard.build(ctx)
    guard.update(_data(near_expiry=np.array([1.0, 0.0])))
    guard.cons[0].save_dual_value(np.array([0.1, 0.4]))
    guard.cons[1].save_dual_value(np.array([0.3, 0.9]))
    # contract 0 near expiry: |0.1 - 0.3|; contract 1 is not: its 0 <= 0 rows carry no dual
    np.testing.assert_allclose(guard.dual_rows(), [0.2, 0.0])


def _all_rows() -> list[Constraint]:
    return [InitialMargin(), GrossLeverage(), PositionLimit((1,)), FundingBudget(), TradeLimit((0,)),
            ExpiryGuard((0, 1)), VolatilityCap(), ClusterBands(((0, 1),), 2)]


@pytest.mark.parametrize("z", [Z, np.array([0.3, -0.5]), np.array([0.0, 0.3])])
def test_an_elastic_slack_relaxes_every_row(z: np.ndarray) -> None:
    import cvxpy as cp

    d = _data(im_budget=0.1, vol_cap=0.25)
    for c in _all_rows():
        ctx = Context.create(_structure())
        slack = cp.Variable(name="slack")
        cons = c.build(ctx, slack)
        ctx.set_common(d)
        c.update(d)
        ctx.z.value, ctx.a.value, ctx.u.value = z, np.abs(z), np.abs(z - d.z0)
        set_factor(ctx, z)
        slack.value = 0.05
        got = max(float(np.max(k.violation())) for k in cons)
        assert got == pytest.approx(max(float(c.violation(z, d).max()) - 0.05, 0.0), abs=1e-12), c.name


def test_predictions_read_the_last_solve_and_data() -> None:
    d = _data(im_budget=0.1, vol_cap=0.25, structure=_structure(), Gb=np.zeros((2, 0)), gamma_trade=1.0)
    for c in _all_rows():
        assert c.collateral_factor() == 1.0 or isinstance(c, InitialMargin)
        ctx = Context.create(_structure())
        c.build(ctx)
        ctx.set_common(d)
        c.update(d)
        assert c.predict(c.rows(d)[0], 1e-9) is None  # no solve yet
        ctx.z.value, ctx.a.value, ctx.u.value = Z, np.abs(Z), np.abs(Z - d.z0)
        set_factor(ctx, Z)
        p = c.predict(c.rows(d)[0], 1e-9)
        assert p is not None and p.step > 0 and p.objective_change < 0, c.name
    assert GrossLeverage().collateral_factor() == 1.0


def test_stress_rows_by_hand_with_the_maintenance_floor() -> None:
    st = _structure(stress_names=("crash",), mm_floor=True)
    c = StressMargin(0, "crash")
    ctx = Context.create(st)
    cons = c.build(ctx)
    assert len(cons) == 3  # surplus, the tier epigraph, and m >= 0
    c.update(_data())
    m = next(v for v in cons[0].variables() if v.name() == "mm_0")
    ctx.z.value, ctx.a.value = Z, np.abs(Z)
    m.value = np.array([0.006, 0.0048])  # the stressed MM of test_stress_margin_by_hand
    assert float(np.max(cons[2].violation())) == 0.0
    assert float(np.max(cons[1].violation())) == pytest.approx(0.0, abs=1e-15)
    assert float(np.max(cons[0].violation())) == pytest.approx(0.0, abs=1e-15)  # surplus 0.0292 >= 0
    m.value = np.array([-0.001, 0.0048])
    assert float(np.max(cons[2].violation())) == pytest.approx(0.001)


def test_stress_row_slack_and_prediction() -> None:
    import cvxpy as cp

    st = _structure(stress_names=("crash",))
    d = _data(stress_coll=np.array([0.01]), structure=st, Gb=np.zeros((2, 0)), gamma_trade=1.0)
    c = StressMargin(0, "crash")
    ctx = Context.create(st)
    slack = cp.Variable(name="slack")
    cons = c.build(ctx, slack)
    c.update(d)
    assert c.predict("stress[crash]", 1e-9) is None
    m = next(v for v in cons[0].variables() if v.name() == "mm_0")
    ctx.z.value, ctx.a.value, ctx.u.value = Z, np.abs(Z), np.abs(Z - d.z0)
    m.value = np.array([0.006, 0.0048])
    # surplus 0.01 - 0.01 - 0.0108 = -0.0108: a slack of 0.005 leaves 0.0058 of it
    slack.value = 0.005
    assert float(np.max(cons[0].violation())) == pytest.approx(0.0058)
    slack.value = 0.05
    assert float(np.max(cons[0].violation())) == 0.0
    p = c.predict("stress[crash]", 1e-9)
    assert p is not None and p.step > 0
