"""The exact pledged value after a spot trade (optimizer.pledge_pieces) and the margin rows that use
it (optimizer.margin_constraints.PledgedValue).

- by hand: a sale across Portfolio-Margin tier edges, today and in a fall; a buy above a pledged
  quantity (no collateral gained) and a sale below it;
- 300 seeded random rules, holdings, trades and moves: the pieces equal the book's own collateral
  (``Book.pledged_collateral`` / ``Book.stressed_collateral``) of the holdings after the trade;
- a hand case: a spot buy of an asset pledged only up to a quantity pays its whole cash out of the
  collateral (the old rows counted 0.99 of it as pledged and broke the buffer after the trade);
- the rows' cvxpy expressions equal their numpy re-checks after the trade;
- a plain-cvxpy reference, the collateral written afresh from the tier tables as a concave
  minimum, agrees on 80 seeded NAV-base books with kinked pledges to 1e-5 of NAV.
"""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
from optcases import solve_clarabel

from models.book import Book, TargetsBase
from models.collateral import CollateralRule, bid_buffer_rule, flat_rule, tiered_rule
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.margin_constraints import STRESS_CUSHION, InitialMargin, StressMargin
from optimizer.pledge_pieces import pledge_pieces
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem
from optimizer.rebalance import Rebalancer
from optimizer.settings import (
    ConstraintSettings,
    CostSettings,
    OptimizerSettings,
    SpotLegSettings,
    StressScenario,
)
from optimizer.spot_leg import SpotContext, after_spot_trade

T0 = pd.Timestamp("2025-01-01T00:00:00Z")
TIERS = tiered_rule([(0.0, 20_000.0, 0.95), (20_000.0, 50_000.0, 0.5), (50_000.0, math.inf, 0.0)])


def _one(rule: CollateralRule, held: float, price: float) -> Book:
    return Book(assets=(SpotAsset("BTC"),), contracts=(FuturesContract("BTC-PERP", "BTC"),),
                spot={"BTC": held}, targets={"BTC": 1.0}, cash=0.0, pledged={"BTC": rule})


def test_a_sale_across_tier_edges_by_hand() -> None:
    """1 BTC at 60,000: C = 0.95 x 20,000 + 0.5 x 30,000 = 34,000 today. Selling 30,000 (t = -0.3
    of V = 100,000) leaves 30,000: C = 19,000 + 5,000 = 24,000. In a 40% fall: 36,000 -> 27,000
    today, 18,000 -> 17,100 after."""
    V = 100_000.0
    pp = pledge_pieces(_one(TIERS, 1.0, 60_000.0), np.array([60_000.0]), np.array([60_000.0]), V,
                       np.array([[-0.4]]))
    assert pp is not None and pp.assets == (0,)
    t = np.array([-0.3])
    np.testing.assert_allclose(pp.now[:, 0] * V, [34_000.0, 27_000.0])
    assert pp.value(0, t)[0] * V == pytest.approx(24_000.0)
    assert pp.change(0, t) * V == pytest.approx(-10_000.0)
    assert pp.value(1, t)[0] * V == pytest.approx(17_100.0)
    assert pp.change(1, t) * V == pytest.approx(-9_900.0)


def test_a_pledged_quantity_by_hand() -> None:
    """10 SOL held at 150, 10 pledged at a 20% bidBuffer: 1,200 of collateral. A buy of 200 adds
    nothing (above the pledged quantity); a sale of 300 leaves 8 SOL: 960. After a +30% move:
    1,560 either way for the buy."""
    V = 10_000.0
    rule = bid_buffer_rule(0.2, quantity=10.0)
    pp = pledge_pieces(_one(rule, 10.0, 150.0), np.array([1_500.0]), np.array([150.0]), V,
                       np.array([[0.3]]))
    assert pp is not None
    assert pp.value(0, np.array([200.0 / V]))[0] * V == pytest.approx(1_200.0)
    assert pp.value(0, np.array([-300.0 / V]))[0] * V == pytest.approx(960.0)
    assert pp.change(1, np.array([200.0 / V])) == pytest.approx(0.0, abs=1e-15)
    assert pp.now[1, 0] * V == pytest.approx(1_560.0)
    assert pledge_pieces(_one(flat_rule(0.9), 10.0, 150.0), np.array([1_500.0]),
                         np.array([150.0]), V, np.zeros((1, 1))) is None  # linear: no pieces


def _random_rule(rng: np.random.Generator) -> CollateralRule:
    kind = int(rng.integers(3))
    qty = float(rng.uniform(0.0, 3.0)) if rng.uniform() < 0.5 else None
    if kind == 0:
        return flat_rule(float(rng.uniform(0.3, 1.0)), quantity=qty if qty is not None else 1.0)
    edges = np.sort(rng.uniform(1_000.0, 200_000.0, int(rng.integers(1, 4))))
    rates = np.sort(rng.uniform(0.0, 1.0, len(edges) + 1))[::-1]
    bounds = [0.0, *edges.tolist(), math.inf if kind == 1 else 400_000.0]
    return tiered_rule([(bounds[k], bounds[k + 1], float(rates[k])) for k in range(len(rates))],
                       quantity=qty)


def _pledged(book: Book, syms: list[str], prices: np.ndarray) -> float:
    """The book's collateral value of its pledges at ``prices`` (USD per unit)."""
    return book.pledged_collateral(np.array([book.spot[s] for s in syms]) * prices)


def test_pieces_equal_the_books_collateral_after_the_trade() -> None:
    """Independent arithmetic: the book after the trade values its pledges itself."""
    rng = np.random.default_rng(11)
    for case in range(300):
        n = int(rng.integers(1, 4))
        syms = [f"A{i}" for i in range(n)]
        px = rng.uniform(1.0, 60_000.0, n)
        held = rng.uniform(0.0, 3.0, n) * 60_000.0 / px * rng.uniform(0.1, 1.0, n)
        pledged = {s: _random_rule(rng) for s in syms if rng.uniform() < 0.8}
        book = Book(assets=tuple(SpotAsset(s) for s in syms), contracts=(),
                    spot=dict(zip(syms, held.tolist(), strict=True)),
                    targets={s: 1.0 / n for s in syms}, cash=0.0, pledged=pledged)
        V = float(rng.uniform(10_000.0, 500_000.0))
        values = held * px
        r = rng.uniform(-0.6, 0.6, (3, n))
        pp = pledge_pieces(book, values, px, V, r)
        if pp is None:
            continue
        trade = rng.uniform(-1.0, 1.0, n) * values / V  # sales never beyond the holding
        trade[rng.uniform(size=n) < 0.3] = 0.0
        after = book.evolve(spot={s: float(held[i] + trade[i] * V / px[i]) for i, s in enumerate(syms)})
        only = [i for i in range(n) if i in pp.assets]
        mask = np.zeros(n)
        mask[only] = 1.0
        for row, rs in enumerate([np.zeros(n), *r]):
            moved = px * (1.0 + rs) * mask
            want = (_pledged(after, syms, moved) - _pledged(book, syms, moved)) / V
            assert pp.change(row, trade) == pytest.approx(want, abs=1e-12), (case, row)


def test_a_buy_above_the_pledged_quantity_pays_its_whole_cash() -> None:
    """NAV base: 1 BTC at 50,000 of which 0.01 is pledged (500 USD of collateral), 20,000 of cash,
    BTC at 100% of NAV (70,000), the perpetual at leverage 1 capped at 10,000, a 1,000 buffer. A
    spot buy s leaves 20,500 - 1.0011 s of collateral (the bought BTC is not pledged; 0.11% fee
    and half spread), so x + 1.0011 s <= 19,500: x = 10,000 (the cheaper perpetual at its cap)
    and s = 9,500 / 1.0011. The old rows counted 0.99 of each USD bought as pledged (s = 9,596,
    and the book after the trade had 96 USD too little for the margin and the buffer)."""
    book = Book(assets=(SpotAsset("BTC"),),
                contracts=(FuturesContract("BTC-PERP", "BTC", leverage=1.0),),
                spot={"BTC": 1.0}, targets={"BTC": 1.0}, cash=20_000.0,
                targets_base=TargetsBase.NAV,
                pledged={"BTC": bid_buffer_rule(0.0, quantity=0.01)})
    market = MarketSnapshot(time=T0, spot={"BTC": 50_000.0}, mark={"BTC-PERP": 50_000.0},
                            half_spread={"BTC-PERP": 1e-4}, spot_half_spread={"BTC": 1e-4})
    risk = RiskModel.from_covariance(["BTC"], np.array([[0.36]]))
    settings = OptimizerSettings(
        costs=CostSettings(carry=False),
        constraints=ConstraintSettings(margin_buffer_usd=1_000.0, caps_usd={"BTC-PERP": 10_000.0}),
        spot=SpotLegSettings(enabled=True, cash_usd=20_000.0), round_lots=False)
    sol = Rebalancer().solve(book, market, risk, settings)
    assert sol.status == "optimal" and not sol.blockers
    (perp,) = sol.target_positions
    bought = sum(t.bought for t in sol.spot_trades)
    assert perp.notional == pytest.approx(10_000.0, abs=1e-2)
    assert bought == pytest.approx(9_500.0 / 1.0011, abs=1e-2)
    after = book.evolve(spot={"BTC": 1.0 + bought / 50_000.0}, cash=20_000.0 - 1.0011 * bought)
    assert after.collateral(market) == pytest.approx(20_500.0 - 1.0011 * bought)
    assert perp.notional <= after.collateral(market) - 1_000.0 + 1e-3
    assert sol.margin.collateral == pytest.approx(after.collateral(market), abs=1e-2)


@pytest.mark.parametrize("fraction", [0.0, 0.2])
def test_rows_equal_their_numpy_rechecks_with_kinked_pledges(fraction: float) -> None:
    """With and without a relative margin buffer (the budget then moves by 1 - f per USD of
    collateral); the rise moves ETH, whose pledged quantity's value moves with it."""
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")),
                contracts=(FuturesContract("BTC-PERP", "BTC"), FuturesContract("ETH-PERP", "ETH")),
                spot={"BTC": 1.0, "ETH": 20.0}, targets={"BTC": 0.5, "ETH": 0.5}, cash=20_000.0,
                targets_base=TargetsBase.NAV,
                pledged={"BTC": TIERS, "ETH": bid_buffer_rule(0.1, quantity=15.0)})
    market = MarketSnapshot(time=T0, spot={"BTC": 50_000.0, "ETH": 2_500.0},
                            mark={"BTC-PERP": 50_000.0, "ETH-PERP": 2_500.0})
    risk = RiskModel.from_covariance(["BTC", "ETH"], np.array([[0.36, 0.25], [0.25, 0.49]]))
    fall, rise = StressScenario("all -40%", {}, -0.4), StressScenario("ETH +30%", {"ETH": 0.3})
    settings = OptimizerSettings(constraints=ConstraintSettings(stress=(fall, rise),
                                                                margin_buffer_fraction=fraction),
                                 spot=SpotLegSettings(enabled=True, cash_usd=5_000.0))
    d = prepare(book, market, risk, settings)
    assert d.spot is not None and d.spot.pledge is not None and d.structure.pledge_assets == (0, 1)
    ctx = SpotContext.create_spot(d.structure)
    rows: list[InitialMargin | StressMargin] = [InitialMargin(), StressMargin(0, fall.name),
                                                StressMargin(1, rise.name)]
    built = [r.build(ctx) for r in rows]
    for r in rows:
        r.update(d)
    rng = np.random.default_rng(4)
    for _ in range(20):
        z = rng.uniform(-0.4, 0.4, 2)
        b, q = rng.uniform(0, 0.3, 2), rng.uniform(0, 0.3, 2)
        ctx.z.value, ctx.a.value, ctx.buy.value, ctx.sell.value = z, np.abs(z), b, q
        dp = after_spot_trade(d, b - q, b + q)
        for k, r in enumerate(rows):
            assert r.pledged is not None
            r.pledged.y.value = d.spot.pledge.value(k, b - q)  # y at its largest: G after / V
        assert float(built[0][0].expr.value) == pytest.approx(
            float(d.inv_lev @ np.abs(z)) - dp.im_budget, abs=1e-12)
        for k, r in enumerate(rows[1:]):
            assert isinstance(r, StressMargin)
            mm = np.max(r.coef.value * np.abs(z)[:, None] - r.cum.value, axis=1)
            (m,) = [v for v in built[k + 1][0].variables() if v.name().startswith("mm_")]
            m.value = mm
            assert -float(built[k + 1][0].expr.value) == pytest.approx(
                r.surplus(z, dp) - STRESS_CUSHION, abs=1e-12)  # the row keeps the cushion


# ---------------------------------------------------------------- a plain-cvxpy reference


def _kinked_rule(rng: np.random.Generator, value: float, held: float) -> CollateralRule:
    """Tiers with edges around today's value, or a flat ratio up to a quantity around the holding."""
    if rng.uniform() < 0.5:
        edges = np.sort(rng.uniform(0.2, 1.8, 2)) * value
        rates = np.sort(rng.uniform(0.0, 1.0, 3))[::-1]
        return tiered_rule([(0.0, edges[0], rates[0]), (edges[0], edges[1], rates[1]),
                            (edges[1], math.inf, rates[2])])
    return flat_rule(float(rng.uniform(0.5, 0.99)), quantity=float(held * rng.uniform(0.3, 1.3)))


def _random_book(rng: np.random.Generator) -> tuple[Book, MarketSnapshot, RiskModel, OptimizerSettings]:
    """A NAV-base book, kinked pledges on most assets, little cash, low leverage, a fall and a
    rise: the margin rows bind often, with spot trades in the optimum."""
    n = int(rng.integers(2, 4))
    syms = [f"A{i}" for i in range(n)]
    px = rng.uniform(5.0, 50_000.0, n)
    qty = rng.uniform(5_000.0, 20_000.0, n) / px
    contracts = tuple(FuturesContract(f"{s}-PERP", s, taker_fee=float(rng.uniform(0.0, 0.001)),
                                      leverage=float(rng.uniform(1.0, 1.5))) for s in syms)
    pledged: dict[str, float | CollateralRule] = {
        s: _kinked_rule(rng, float(qty[i] * px[i]), float(qty[i]))
        for i, s in enumerate(syms) if rng.uniform() < 0.8}
    w = rng.dirichlet(np.ones(n)) * float(rng.uniform(0.85, 1.0))
    book = Book(assets=tuple(SpotAsset(s, fee=float(rng.uniform(0.0, 0.002))) for s in syms),
                contracts=contracts, spot=dict(zip(syms, qty.tolist(), strict=True)),
                targets=dict(zip(syms, w.tolist(), strict=True)),
                cash=float(rng.uniform(0.0, 500.0)), targets_base=TargetsBase.NAV, pledged=pledged)
    market = MarketSnapshot(time=T0, spot=dict(zip(syms, px.tolist(), strict=True)),
                            mark={c.symbol: float(px[j]) for j, c in enumerate(contracts)},
                            half_spread={c.symbol: float(rng.uniform(0.0, 5e-4)) for c in contracts},
                            spot_half_spread={s: float(rng.uniform(0.0, 5e-4)) for s in syms})
    a = rng.normal(size=(n, n)) * 0.3
    risk = RiskModel.from_covariance(syms, a @ a.T + np.diag(rng.uniform(0.01, 0.1, n)))
    up = syms[int(rng.integers(n))]
    stress = (StressScenario("all -50%", {}, -0.5), StressScenario(f"{up} +50%", {up: 0.5}))
    settings = OptimizerSettings(
        costs=CostSettings(carry=False, gamma_trade=float(rng.uniform(0.5, 10.0))),
        constraints=ConstraintSettings(margin_buffer_usd=float(rng.uniform(0.0, 300.0)), stress=stress),
        spot=SpotLegSettings(enabled=True, cash_usd=float(rng.uniform(0.0, 4_000.0))),
        round_lots=False, basis_risk=False, noise_trade_weight=1e-12)
    return book, market, risk, settings


def _collateral_after(rule: CollateralRule | float | None, qty: float, price: float,
                      units: cp.Expression, move: float) -> cp.Expression | float:
    """The rule's collateral (USD) of ``units`` held after the trade, the price moved by ``move``,
    written afresh from the tier table: the concave minimum of the tiers' lines through their
    cumulative values, capped at the pledged quantity's value."""
    if rule is None:
        return 0.0
    if isinstance(rule, float):
        rule = flat_rule(rule)
    p = price * (1.0 + move)
    lines: list[cp.Expression] = []
    below = 0.0  # collateral of the tiers under this one
    for t in rule.tiers:
        lines.append(below + t.rate * (units * p - t.min_usd))
        if math.isfinite(t.max_usd):
            below += t.rate * (t.max_usd - t.min_usd)
    if math.isfinite(rule.tiers[-1].max_usd):
        lines.append(cp.Constant(below))
    if rule.quantity is not None:
        cap = min(rule.quantity * p, rule.tiers[-1].max_usd)
        lines.append(cp.Constant(rule.value(cap)))
    del qty
    return cp.min(cp.hstack(lines))


def _reference(book: Book, market: MarketSnapshot, risk: RiskModel,
               st: OptimizerSettings) -> tuple[str, np.ndarray, np.ndarray, float, bool]:
    """The problem written afresh, the collateral after the trade by :func:`_collateral_after`:
    status, futures x (USD), spot trade b - q (USD), V, and whether a margin row binds."""
    syms = list(book.targets)
    n = len(syms)
    px = np.array([market.spot[s] for s in syms])
    qty = np.array([book.spot[s] for s in syms])
    V = float(qty @ px + book.cash)
    s, w = qty * px / V, np.array([book.targets[s_] for s_ in syms])
    cov = risk.loadings @ risk.loadings.T + np.diag(risk.idio)
    z, b, q = cp.Variable(n), cp.Variable(n), cp.Variable(n)
    units = qty + cp.multiply(b - q, V / px)
    fee_f = np.array([c.taker_fee + market.half_spread[c.symbol] for c in book.contracts])
    fee_s = np.array([a.fee + market.spot_half_spread[a.symbol] for a in book.assets])
    obj = cp.quad_form(s + b - q + z - w, cp.psd_wrap(0.5 * (cov + cov.T)))
    obj += st.costs.gamma_trade * (fee_f @ cp.abs(z) + fee_s @ (b + q))
    cs = st.constraints

    def collateral(r: np.ndarray) -> cp.Expression:
        pledged = [_collateral_after(book.pledged.get(a), float(qty[i]), float(px[i]), units[i],
                                     float(r[i])) for i, a in enumerate(syms)]
        return (book.cash - V * cp.sum(b - q) - V * fee_s @ (b + q)
                + cp.sum(cp.hstack(pledged))) / V

    rows_im = [np.array([1.0 / c.leverage for c in book.contracts]) @ cp.abs(z)
               <= collateral(np.zeros(n)) - cs.margin_buffer_usd / V]
    rows_stress = []
    for sc in cs.stress:
        r = np.array([sc.returns.get(s_, sc.common) for s_ in syms])
        rows_stress.append(collateral(r) + r @ z - 0.005 * (1 + r) @ cp.abs(z) >= 0)
    cons = [b >= 0, q >= 0, q <= s, cp.sum(b) - cp.sum(q) <= min(st.spot.cash_usd, book.cash) / V,
            *rows_im, *rows_stress]
    prob = cp.Problem(cp.Minimize(1e4 * obj), cons)
    solve_clarabel(prob, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    if prob.status != cp.OPTIMAL:
        return str(prob.status), np.zeros(n), np.zeros(n), V, False
    assert z.value is not None and b.value is not None and q.value is not None
    binds = any(abs(float(c.dual_value)) > 1e-9 for c in (*rows_im, *rows_stress))
    return "optimal", z.value * V, (b.value - q.value) * V, V, binds


def test_matches_a_plain_cvxpy_reference_with_kinked_pledges() -> None:
    """80 seeded NAV-base books with tiered or quantity-capped pledges: positions and spot trades
    agree with the reference to 1e-5 of NAV, and the margin rows bind in a fair share of them."""
    rb = Rebalancer()
    binding = optimal = 0
    for seed in range(80):
        book, market, risk, st = _random_book(np.random.default_rng(900 + seed))
        status, x_ref, u_ref, V, binds = _reference(book, market, risk, st)
        sol = rb.solve(book, market, risk, st, explain=False)
        if status != "optimal":
            assert sol.status == "infeasible", (seed, status, sol.status)
            continue
        optimal += 1
        binding += binds
        assert sol.status == "optimal", (seed, sol.status)
        x = np.array([p.notional for p in sol.target_positions])
        by_asset = {t.asset: t.notional for t in sol.spot_trades}
        u = np.array([by_asset.get(a, 0.0) for a in book.targets])
        np.testing.assert_allclose(x, x_ref, rtol=0, atol=1e-5 * V, err_msg=f"seed {seed} futures")
        np.testing.assert_allclose(u, u_ref, rtol=0, atol=1e-5 * V, err_msg=f"seed {seed} spot")
    assert optimal >= 60 and binding >= 15, (optimal, binding)


def test_kinked_pledges_keep_the_problem_dpp_and_compiled_once() -> None:
    """The pieces are Parameter values: re-solving the same book at other prices and holdings
    (other pieces, same count) changes values only, and the problem is DPP."""
    rb = Rebalancer()
    book, market, risk, st = _random_book(np.random.default_rng(77))
    d = prepare(book, market, risk, st)
    assert d.structure.pledge_assets and HedgeProblem(d.structure).problem.is_dpp()
    rb.solve(book, market, risk, st, explain=False)
    builds = HedgeProblem.builds
    for k in range(3):
        moved = {s: p * (1.0 + 0.05 * (k + 1)) for s, p in market.spot.items()}
        m2 = MarketSnapshot(time=T0, spot=moved, mark={c.symbol: moved[c.underlying]
                                                        for c in book.contracts})
        b2 = book.evolve(spot={s: q * (1.0 - 0.02 * k) for s, q in book.spot.items()})
        assert prepare(b2, m2, risk, st).structure == d.structure
        assert rb.solve(b2, m2, risk, st, explain=False).status in ("optimal", "infeasible")
    assert HedgeProblem.builds == builds, "a re-solve with new piece values rebuilt the problem"


def test_a_stress_row_with_a_kinked_pledge_binds_and_holds() -> None:
    """1 BTC at 50,000 pledged in Portfolio-Margin tiers (34,000 of collateral) and 20 ETH not
    pledged, no cash, NAV base, targets 90/10: the BTC long the target asks would lose 60% of
    itself in 'BTC -60%' while the pledged BTC falls to C(20,000) = 19,000 of collateral. The
    stress row (the pledged value re-priced in its pieces) caps the hedge: the solution's stress
    surplus after its trades is 0 to the cent, not negative, and nothing blocks it."""
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")),
                contracts=(FuturesContract("BTC-PERP", "BTC"), FuturesContract("ETH-PERP", "ETH")),
                spot={"BTC": 1.0, "ETH": 20.0}, targets={"BTC": 0.9, "ETH": 0.1}, cash=0.0,
                targets_base=TargetsBase.NAV, pledged={"BTC": TIERS})
    market = MarketSnapshot(time=T0, spot={"BTC": 50_000.0, "ETH": 2_500.0},
                            mark={"BTC-PERP": 50_000.0, "ETH-PERP": 2_500.0})
    risk = RiskModel.from_covariance(["BTC", "ETH"], np.array([[0.36, 0.25], [0.25, 0.49]]))
    crash = StressScenario("BTC -60%", {"BTC": -0.6})
    settings = OptimizerSettings(constraints=ConstraintSettings(stress=(crash,)),
                                 spot=SpotLegSettings(enabled=True), round_lots=False)
    d = prepare(book, market, risk, settings)
    assert d.structure.pledge_assets == (0,)
    sol = Rebalancer().solve(book, market, risk, settings)
    assert sol.status == "optimal" and not sol.blockers
    (stress,) = sol.margin.stress
    assert abs(stress.surplus) < 0.01  # binding, to the cent
    assert sol.target_positions[0].notional < 0.9 * 100_000.0 - 50_000.0  # the hedge is capped
