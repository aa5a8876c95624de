"""The spot leg with tax lots (issue 11, item 4): spot buys b and sells q (weights) join the futures
z, e = s + b - q + B z; spot trades pay fee + half spread (and impact), sales pay the convex tax of the
book's lots (optimizer.tax_term.TaxTerm, ascending tax per unit).

- off by default: the settings default has it off and the compiled problem has no spot variable;
- hand case: BTC capped futures cannot reach the target, a zero cluster band pins e_BTC = w_BTC, so
  the optimiser must sell exactly 1/6 - 1/15 = 0.1 of V = 15,000 USD = 0.3 BTC, from the lot with
  the lowest tax (basis 48,000, short-term 30%: 600 USD/BTC, not the long-term lot at 4,500/BTC),
  a tax of 0.3 x 600 = 180.00 USD = models.tax.realised_tax for that sale; on the invested base
  the sale buys 15,000 USD of ETH (a net sale would shrink the base);
- spot cheaper than futures (negative funding for the short) -> spot; a high tax on gains -> futures;
- a plain-cvxpy reference written from DESIGN.md (futures z, spot b and q, one variable per lot for
  the tax: the lot LP of Moehle et al.; the invested base, the spot value, moves with the net spot
  trade, so the targets are w* (1 + 1'(b - q))) agrees on 150 seeded random books to 1e-5 of NAV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
from optcases import solve_clarabel

from models.book import Book
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from models.tax import LotMethod, TaxLot, TaxRates, realised_tax
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem
from optimizer.rebalance import Rebalancer
from optimizer.settings import (
    ClusterBand,
    ConstraintSettings,
    CostSettings,
    OptimizerSettings,
    SpotLegSettings,
)
from optimizer.spot_leg import SpotContext

T0 = pd.Timestamp("2025-01-01T00:00:00Z")
NOW = T0.to_pydatetime()
RATES = TaxRates(short_term=0.30, long_term=0.15)
BTC_LOTS = (TaxLot(1.0, 20_000.0, datetime(2022, 6, 1, tzinfo=UTC)),   # long-term: 4,500 USD/BTC
            TaxLot(1.0, 48_000.0, datetime(2024, 9, 1, tzinfo=UTC)))   # short-term: 600 USD/BTC
ETH_LOTS = (TaxLot(20.0, 2_000.0, datetime(2023, 1, 1, tzinfo=UTC)),)


def _two_asset(fee: float = 0.0004) -> tuple[Book, MarketSnapshot, RiskModel]:
    """2 BTC at 50,000 and 20 ETH at 2,500: V = 150,000, s = (2/3, 1/3), targets 50/50."""
    assets = (SpotAsset("BTC", fee=0.001), SpotAsset("ETH", fee=0.001))
    contracts = (FuturesContract("BTC-PERP", "BTC", taker_fee=fee),
                 FuturesContract("ETH-PERP", "ETH", taker_fee=fee))
    book = Book(assets=assets, contracts=contracts, spot={"BTC": 2.0, "ETH": 20.0},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=100_000.0)
    market = MarketSnapshot(time=T0, spot={"BTC": 50_000.0, "ETH": 2_500.0},
                            mark={"BTC-PERP": 50_000.0, "ETH-PERP": 2_500.0},
                            half_spread={"BTC-PERP": 1e-4, "ETH-PERP": 1e-4},
                            spot_half_spread={"BTC": 1e-4, "ETH": 1e-4})
    cov = np.array([[0.36, 0.25], [0.25, 0.49]])
    risk = RiskModel.from_covariance(["BTC", "ETH"], cov)
    return book, market, RiskModel(risk.symbols, risk.loadings, np.array([0.01, 0.01]))


def _spot(**kw: object) -> SpotLegSettings:
    args: dict[str, object] = {"enabled": True, "rates": RATES,
                               "lots": {"BTC": BTC_LOTS, "ETH": ETH_LOTS}}
    args.update(kw)
    return SpotLegSettings(**args)  # type: ignore[arg-type]


# ---------------------------------------------------------------- off by default


def test_spot_leg_is_off_by_default_and_adds_nothing() -> None:
    book, market, risk = _two_asset()
    assert OptimizerSettings().spot.enabled is False
    d = prepare(book, market, risk, OptimizerSettings())
    assert d.spot is None and not d.structure.spot_leg and d.structure.tax_pieces == 0
    hp = HedgeProblem(d.structure)
    assert not isinstance(hp.ctx, SpotContext)
    assert {v.name() for v in hp.problem.variables()} == {"z", "a", "u"}
    sol = Rebalancer().solve(book, market, risk, OptimizerSettings())
    assert sol.spot_trades == () and sol.spot_costs is None
    assert "spot_trades" not in sol.to_dict() and "spot_costs" not in sol.to_dict()
    # lots in the settings change nothing while the leg is off
    off = OptimizerSettings(spot=_spot(enabled=False))
    assert prepare(book, market, risk, off).structure == d.structure
    assert Rebalancer().solve(book, market, risk, off).target_positions == sol.target_positions


# ---------------------------------------------------------------- hand case


def _capped(method: LotMethod = LotMethod.HIFO) -> OptimizerSettings:
    cons = ConstraintSettings(caps_usd={"BTC-PERP": 10_000.0},
                              clusters=(ClusterBand("btc_on_target", ("BTC",), 0.0),))
    return OptimizerSettings(constraints=cons, spot=_spot(lot_method=method), round_lots=False)


def test_capped_futures_sell_the_lowest_tax_lot_first_hand_computed() -> None:
    book, market, risk = _two_asset()
    sol = Rebalancer().solve(book, market, risk, _capped())
    assert sol.status == "optimal"
    pos = {p.symbol: p.notional for p in sol.target_positions}
    assert pos["BTC-PERP"] == pytest.approx(-10_000.0, abs=1e-3)  # the cap binds
    (btc,) = [t for t in sol.spot_trades if t.asset == "BTC"]
    assert btc.notional == pytest.approx(-15_000.0, abs=1e-3)
    assert btc.units == pytest.approx(-0.3, abs=1e-8)
    assert btc.bought == 0.0 and btc.sold == pytest.approx(15_000.0, abs=1e-3)
    # 0.3 BTC from the short-term lot at 48,000: 0.30 x (50,000 - 48,000) x 0.3 = 180.00 USD
    assert round(btc.tax, 2) == 180.00 and round(btc.tax_optimiser, 2) == 180.00
    ref, left = realised_tax(BTC_LOTS, -btc.units, LotMethod.HIFO, 50_000.0, NOW, RATES)
    assert round(sol.spot_costs.tax, 2) == round(ref, 2) == 180.00  # type: ignore[union-attr]
    assert [lot.cost_basis for lot in left] == [20_000.0, 48_000.0]  # the 48k lot was cut
    assert left[1].quantity == pytest.approx(0.7)
    # the invested base (the spot value) must not shrink, so the sale pays for 15,000 USD of ETH
    # spot (6 ETH); ETH's future tops it up: 1/3 + 0.1 + z = 0.5 -> z = 1/15 = 10,000 USD
    (eth,) = [t for t in sol.spot_trades if t.asset == "ETH"]
    assert eth.bought == pytest.approx(15_000.0, abs=1e-3) and eth.sold == 0.0
    assert eth.units == pytest.approx(6.0, abs=1e-8)
    # (ETH has no band: its future stops a little short, where a unit's cost meets its TE gain)
    assert pos["ETH-PERP"] == pytest.approx(10_000.0, rel=0.01)
    assert sol.effective_weights_after["BTC"] == pytest.approx(0.5, abs=1e-8)
    assert sol.effective_weights_after["ETH"] == pytest.approx(0.5, abs=1e-3)
    costs = sol.spot_costs
    assert costs is not None  # 0.1% fee and 1 bp half spread on 30,000 USD traded
    assert costs.fees == pytest.approx(30.0, abs=1e-5) and costs.spread == pytest.approx(3.0, abs=1e-5)
    d = sol.to_dict()
    assert d["spot_costs"]["tax"] == pytest.approx(180.0, abs=1e-4)
    assert d["spot_trades"][0]["asset"] == "BTC"


def test_fifo_books_are_priced_in_fifo_order() -> None:
    # FIFO books sell the 2022 lot first (basis 20,000, long-term 15%): 4,500 USD per BTC; the
    # optimiser prices that order (slopes 4,500 then max(600, 4,500)), not the ascending 600/BTC
    book, market, risk = _two_asset()
    sol = Rebalancer().solve(book, market, risk, _capped(LotMethod.FIFO))
    costs = sol.spot_costs
    assert costs is not None and costs.lot_method == "fifo"
    assert round(costs.tax_optimiser, 2) == 1_350.00
    assert round(costs.tax, 2) == round(0.3 * 0.15 * 30_000.0, 2) == 1_350.00


# ---------------------------------------------------------------- spot versus futures


def test_spot_when_cheaper_than_futures_and_futures_when_tax_is_high() -> None:
    # futures at a 0.5% taker fee: dearer than spot (0.1% fee + 0.01% spread) when the lots carry
    # no tax (basis = price). (A negative funding rate would instead make a long perp against a
    # spot sale pay: a cash-and-carry the spot leg may take, bounded by the spot held.)
    book, market, risk = _two_asset(fee=0.005)
    no_gain = {"BTC": (TaxLot(2.0, 50_000.0, datetime(2024, 1, 1, tzinfo=UTC)),),
               "ETH": (TaxLot(20.0, 2_500.0, datetime(2024, 1, 1, tzinfo=UTC)),)}
    cheap = OptimizerSettings(spot=_spot(lots=no_gain), round_lots=False)
    sol = Rebalancer().solve(book, market, risk, cheap)
    spot = {t.asset: t for t in sol.spot_trades}
    pos = {p.symbol: p.notional for p in sol.target_positions}
    assert spot["BTC"].notional < -24_000.0 and spot["ETH"].notional > 24_000.0
    assert abs(pos["BTC-PERP"]) < 1.0 and abs(pos["ETH-PERP"]) < 1.0
    assert sol.spot_costs is not None and abs(sol.spot_costs.tax) < 1e-6
    # the same book with BTC bought at 10,000 and a 50% rate: selling costs 40% of the USD sold
    gains = {"BTC": (TaxLot(2.0, 10_000.0, datetime(2024, 6, 1, tzinfo=UTC)),),
             "ETH": no_gain["ETH"]}
    taxed = OptimizerSettings(spot=_spot(lots=gains, rates=TaxRates(0.5, 0.5)), round_lots=False)
    sol = Rebalancer().solve(book, market, risk, taxed)
    pos = {p.symbol: p.notional for p in sol.target_positions}
    assert sol.spot_trades == ()  # no BTC sale; no ETH buy either (nothing sold to pay for it)
    assert pos["BTC-PERP"] < -20_000.0 and pos["ETH-PERP"] > 20_000.0
    # ... which is the overlay-only answer
    overlay = Rebalancer().solve(book, market, risk, OptimizerSettings(round_lots=False))
    assert overlay.spot_trades == ()
    for p in overlay.target_positions:
        assert pos[p.symbol] == pytest.approx(p.notional, abs=1.0)


def test_lots_must_match_the_spot_held() -> None:
    book, market, risk = _two_asset()
    short = {"BTC": BTC_LOTS[:1], "ETH": ETH_LOTS}
    with pytest.raises(ValidationError, match=r"BTC add up to 1 units but the book holds 2 units"):
        prepare(book, market, risk, OptimizerSettings(spot=_spot(lots=short)))


def test_compiled_once_dpp_and_re_solved_for_new_lots() -> None:
    book, market, risk = _two_asset()
    rb = Rebalancer()
    before = HedgeProblem.builds
    first = rb.solve(book, market, risk, _capped())
    assert HedgeProblem.builds == before + 1
    other = {"BTC": (TaxLot(1.0, 49_000.0, datetime(2024, 10, 1, tzinfo=UTC)),
                     TaxLot(1.0, 30_000.0, datetime(2024, 11, 1, tzinfo=UTC))), "ETH": ETH_LOTS}
    s2 = OptimizerSettings(constraints=_capped().constraints, spot=_spot(lots=other), round_lots=False)
    second = rb.solve(book, market, risk, s2)
    assert HedgeProblem.builds == before + 1  # same structure: only Parameter values changed
    (hp,) = rb._problems.values()
    assert hp.problem.is_dpp()
    assert first.spot_costs is not None and second.spot_costs is not None
    assert round(second.spot_costs.tax, 2) == round(0.3 * 0.3 * 1_000.0, 2) == 90.00


# ---------------------------------------------------------------- plain-cvxpy reference


@dataclass(frozen=True)
class Case:
    book: Book
    market: MarketSnapshot
    risk: RiskModel
    settings: OptimizerSettings
    basis_cov: np.ndarray | None


def _random_case(rng: np.random.Generator, impact: bool = False) -> Case:
    n = int(rng.integers(2, 6))
    syms = [f"A{i}" for i in range(n)]
    px = rng.uniform(5.0, 60_000.0, n)
    qty = rng.uniform(0.2, 2.0, n) * 10_000.0 / px
    assets = tuple(SpotAsset(s, fee=float(rng.uniform(0.0, 0.002))) for s in syms)
    contracts = tuple(FuturesContract(f"{s}-PERP", s, taker_fee=float(rng.uniform(0.0, 0.001)))
                      for s in syms)
    w = rng.dirichlet(np.ones(n)) * float(rng.uniform(0.85, 1.0))
    x0 = rng.uniform(-0.2, 0.2, n) * qty * px
    book = Book(assets=assets, contracts=contracts, spot=dict(zip(syms, qty.tolist(), strict=True)),
                targets=dict(zip(syms, w.tolist(), strict=True)), cash=float(rng.uniform(1e4, 5e4)))
    from models.book import FuturesPosition
    book = book.evolve(futures={c.symbol: FuturesPosition(float(x0[j] / px[j]), float(px[j]))
                                for j, c in enumerate(contracts)})
    adv = ({k: float(rng.uniform(1e5, 1e7)) for k in [*syms, *(c.symbol for c in contracts)]}
           if impact else {})
    market = MarketSnapshot(
        time=T0, spot=dict(zip(syms, px.tolist(), strict=True)),
        mark={c.symbol: float(px[j]) for j, c in enumerate(contracts)},
        funding={c.symbol: float(rng.uniform(-0.002, 0.002)) for c in contracts},
        half_spread={c.symbol: float(rng.uniform(0.0, 5e-4)) for c in contracts},
        spot_half_spread={s: float(rng.uniform(0.0, 5e-4)) for s in syms}, adv=adv)
    a = rng.normal(size=(n, n)) * 0.3
    cov = a @ a.T + np.diag(rng.uniform(0.01, 0.1, n))
    base = RiskModel.from_covariance(syms, cov)
    basis = None
    if rng.uniform() < 0.5:
        g = rng.normal(size=(n, n)) * 0.02
        basis = g @ g.T
    risk = RiskModel(base.symbols, base.loadings, rng.uniform(0.0, 0.02, n), basis_cov=basis)
    lots: dict[str, tuple[TaxLot, ...]] = {}
    for i, s in enumerate(syms):
        k = int(rng.integers(1, 5))
        parts = rng.dirichlet(np.ones(k)) * qty[i]
        parts[-1] = qty[i] - parts[:-1].sum()
        lots[s] = tuple(TaxLot(float(q), float(px[i] * rng.uniform(0.3, 1.5)),
                               NOW - timedelta(days=float(rng.uniform(1, 900)))) for q in parts)
    caps = {c.symbol: float(rng.uniform(0.0, 0.2)) * float(qty[j] * px[j])
            for j, c in enumerate(contracts) if rng.uniform() < 0.5}
    cons = ConstraintSettings(margin=False, caps_usd=caps,
                              max_gross_leverage=float(rng.uniform(0.95, 1.3)) if rng.uniform() < 0.3
                              else None)
    costs = CostSettings(impact=impact, impact_k=float(rng.uniform(0.5, 2.0)),
                         gamma_trade=float(rng.uniform(0.5, 20.0)),
                         gamma_fund=float(rng.uniform(0.0, 5.0)), horizon_days=float(rng.uniform(1, 7)))
    spot = SpotLegSettings(enabled=True,
                           rates=TaxRates(float(rng.uniform(0, 0.5)), float(rng.uniform(0, 0.3)))
                           if rng.uniform() < 0.8 else None,
                           lots=lots, harvest_losses=bool(rng.uniform() < 0.3),
                           gamma_tax=float(rng.uniform(0.2, 3.0)),
                           cash_usd=float(rng.uniform(0, 5_000)) if rng.uniform() < 0.3 else 0.0)
    settings = OptimizerSettings(costs=costs, constraints=cons, spot=spot, round_lots=False,
                                 noise_trade_weight=1e-12)
    return Case(book, market, risk, settings, basis)


@dataclass(frozen=True)
class RefNumbers:
    """A random case's numbers computed afresh with numpy (no fbr code), weights of today's V:
    spot s, targets w, futures x0 (one perpetual per asset: B = I), the covariance, the linear
    trading costs (fee + half spread) of futures and spot, the carry over the horizon, and the
    3/2-power impact coefficients k sigma_daily sqrt(V / ADV) of futures and spot (None without
    impact)."""

    syms: list[str]
    V: float
    px: np.ndarray
    s: np.ndarray
    w: np.ndarray
    x0: np.ndarray
    cov: np.ndarray
    lin_f: np.ndarray
    lin_s: np.ndarray
    carry: np.ndarray
    c_f: np.ndarray | None
    c_s: np.ndarray | None


def ref_numbers(c: Case) -> RefNumbers:
    """:class:`RefNumbers` of ``c``."""
    book, market, risk, st = c.book, c.market, c.risk, c.settings
    syms = list(book.targets)
    px = np.array([market.spot[s] for s in syms])
    qty = np.array([book.spot[s] for s in syms])
    V = float(qty @ px)
    x0 = np.array([book.futures[f"{s_}-PERP"].contracts * px[i] for i, s_ in enumerate(syms)]) / V
    cov = risk.loadings @ risk.loadings.T + np.diag(risk.idio)
    cov = 0.5 * (cov + cov.T)
    lin_f = np.array([con.taker_fee + market.half_spread[con.symbol] for con in book.contracts])
    lin_s = np.array([a.fee + market.spot_half_spread[s_] for a, s_ in zip(book.assets, syms, strict=True)])
    carry = np.array([market.funding[con.symbol] for con in book.contracts]) \
        * st.costs.horizon_days * 24.0 / 8.0
    c_f = c_s = None
    if st.costs.impact:  # k sigma_daily |t|^{3/2} / sqrt(ADV), t = trade in USD, divided by V
        sig = np.sqrt(np.diag(cov) / 365.0)
        c_f = np.array([st.costs.impact_k * sig[j] * math.sqrt(V / market.adv[con.symbol])
                        for j, con in enumerate(book.contracts)])
        c_s = np.array([st.costs.impact_k * sig[i] * math.sqrt(V / market.adv[s_])
                        for i, s_ in enumerate(syms)])
    return RefNumbers(syms, V, px, qty * px / V, np.array([book.targets[s_] for s_ in syms]), x0, cov,
                      lin_f, lin_s, carry, c_f, c_s)


def lot_tax(c: Case, sold: cp.Expression, i: int, r: RefNumbers) -> tuple[cp.Expression, list[cp.Constraint]]:
    """The tax of selling ``sold`` (weights) of asset i: one variable per lot (weights sold from
    it), tax per USD sold rate x (price - basis) / price, losses credited only when harvested."""
    st = c.settings.spot
    assert st.rates is not None
    lots = st.lots[r.syms[i]]
    # more than a year on calendar dates (rates.long_term_days is 365 here)
    long = [(NOW.year, NOW.month, NOW.day)
            > (lot.acquired.year + 1, lot.acquired.month, lot.acquired.day) for lot in lots]
    rate = np.array([st.rates.long_term if lg else st.rates.short_term for lg in long])
    tau = rate * (r.px[i] - np.array([lot.cost_basis for lot in lots])) / r.px[i]
    if not st.harvest_losses:
        tau = np.maximum(tau, 0.0)
    size = np.array([lot.quantity for lot in lots]) * r.px[i] / r.V
    y = cp.Variable(len(lots))
    return st.gamma_tax * tau @ y, [y >= 0, y <= size, cp.sum(y) == sold]


def solve_tight(prob: cp.Problem, conic: bool) -> None:
    """Clarabel far past fbr's tolerances (a conic problem retried a notch looser), 'optimal'."""
    for tol in ((1e-10, 1e-9) if conic else (1e-12,)):
        solve_clarabel(prob, tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol, max_iter=400)
        if prob.status == cp.OPTIMAL:
            break
    assert prob.status == cp.OPTIMAL, prob.status


def _reference(c: Case) -> tuple[np.ndarray, np.ndarray, float]:
    """DESIGN.md's problem written afresh: returns (x (USD), spot trade u = b - q (USD), V)."""
    st, r = c.settings, ref_numbers(c)
    V, s, w, x0 = r.V, r.s, r.w, r.x0
    n = len(r.syms)
    z, b, q = cp.Variable(n), cp.Variable(n), cp.Variable(n)
    e = s + b - q + z  # one perp per asset: B = I
    # the base is the spot value (targets_base "invested"), so the net spot trade moves it to
    # V (1 + 1'(b - q)) and the targets with it (in units of today's V)
    obj = cp.quad_form(e - w * (1 + cp.sum(b - q)), cp.psd_wrap(r.cov))
    if c.basis_cov is not None:
        obj += cp.quad_form(z, cp.psd_wrap(c.basis_cov))
    obj += st.costs.gamma_trade * (r.lin_f @ cp.abs(z - x0) + r.lin_s @ (b + q))
    obj += st.costs.gamma_fund * r.carry @ z
    if r.c_f is not None and r.c_s is not None:
        p32 = [cp.power(v, 1.5, approx=False) for v in (cp.abs(z - x0), b, q)]
        obj += st.costs.gamma_trade * (r.c_f @ p32[0] + r.c_s @ (p32[1] + p32[2]))
    # no net sale on an invested base (it would shrink the base): sales pay for buys
    cons: list[cp.Constraint] = [b >= 0, q >= 0, q <= s, cp.sum(b) - cp.sum(q) <= st.spot.cash_usd / V,
                                 cp.sum(b) - cp.sum(q) >= 0]
    if st.spot.rates is not None:
        for i in range(n):
            tax, rows = lot_tax(c, q[i], i, r)
            obj += tax
            cons += rows
    for j, con in enumerate(c.book.contracts):
        if con.symbol in st.constraints.caps_usd:
            cons.append(cp.abs(z[j]) <= st.constraints.caps_usd[con.symbol] / V)
    if st.constraints.max_gross_leverage is not None:
        cons.append(cp.sum(cp.abs(e)) <= st.constraints.max_gross_leverage)
    solve_tight(cp.Problem(cp.Minimize(1e4 * obj), cons), st.costs.impact)
    assert z.value is not None and b.value is not None and q.value is not None
    return z.value * V, (b.value - q.value) * V, V


@pytest.mark.parametrize(("block", "impact"), [(0, False), (1, False), (2, False), (3, False),
                                               (4, True)])
def test_matches_plain_cvxpy_reference_on_random_books(block: int, impact: bool) -> None:
    """Blocks 0-3: 120 QP books (PIQP); block 4: 30 conic books with 3/2-power impact on futures
    and spot (Clarabel)."""
    rb = Rebalancer()
    for seed in range(30 * block, 30 * block + 30):
        case = _random_case(np.random.default_rng(1000 + seed), impact=impact)
        sol = rb.solve(case.book, case.market, case.risk, case.settings, explain=False)
        assert sol.status == "optimal", (seed, sol.status)
        x_ref, u_ref, V = _reference(case)
        nav = sol.nav
        assert sol.base == pytest.approx(V)
        x = np.array([p.notional for p in sol.target_positions])
        x0 = np.array([case.book.futures[p.symbol].contracts * case.market.mark[p.symbol]
                       for p in sol.target_positions])
        by_asset = {t.asset: t.notional for t in sol.spot_trades}
        u = np.array([by_asset.get(a, 0.0) for a in case.book.targets])
        tol = 1e-5 * nav
        np.testing.assert_allclose(x, x_ref, rtol=0, atol=tol, err_msg=f"seed {seed} positions")
        np.testing.assert_allclose(x - x0, x_ref - x0, rtol=0, atol=tol, err_msg=f"seed {seed} trades")
        np.testing.assert_allclose(u, u_ref, rtol=0, atol=tol, err_msg=f"seed {seed} spot trades")
        assert math.isfinite(sol.tracking_error_after)
    for hp in rb._problems.values():
        assert hp.problem.is_dpp()


def test_without_costs_a_buy_and_a_sale_of_one_asset_are_netted() -> None:
    """Costs off, futures capped at 1 USD: the objective does not price the split of a net spot
    trade into buys and sales (the solver may return a wash trade). Netted: 2/3 BTC and 1/3 ETH
    of an invested base of 150,000 go to 50/50 by selling 25,000 of BTC for 25,000 of ETH (less
    the capped futures' 1 USD each), each asset traded one way, and the reported fees and spread
    are the book's rates on that net (0.1% + 0.01% of about 50,000)."""
    book, market, risk = _two_asset()
    settings = OptimizerSettings(
        costs=CostSettings(trading=False, carry=False),
        constraints=ConstraintSettings(caps_usd={"BTC-PERP": 1.0, "ETH-PERP": 1.0}),
        spot=SpotLegSettings(enabled=True), round_lots=False)
    sol = Rebalancer().solve(book, market, risk, settings)
    assert sol.status == "optimal" and sol.spot_costs is not None
    by = {t.asset: t for t in sol.spot_trades}
    assert by["BTC"].bought == 0.0 and by["ETH"].sold == 0.0
    assert by["BTC"].sold == pytest.approx(25_000.0, abs=2.0)
    assert by["ETH"].bought == pytest.approx(25_000.0, abs=2.0)
    gross = by["BTC"].sold + by["ETH"].bought
    assert sol.spot_costs.fees == pytest.approx(0.001 * gross, rel=1e-12)
    assert sol.spot_costs.spread == pytest.approx(1e-4 * gross, rel=1e-12)


@pytest.mark.parametrize("impact", [False, True])
def test_a_plan_of_random_books_keeps_every_steps_spot_rows(impact: bool) -> None:
    """The random hybrid books as 3-step plans (optimizer.planner, every step trading spot): each
    is solved 'optimal', and the totals through every step keep the rows by the numbers: no
    asset sold short (cumulative net spot >= -holdings) and the net spot bought within the wallet
    cash and no net sale on the invested base (0 <= sum of the cumulative nets <= cash); step 1's
    planned spot trades are the solution's spot trades."""
    from dataclasses import replace

    rb = Rebalancer()
    for seed in range(12):
        case = _random_case(np.random.default_rng(5000 + seed), impact=impact)
        settings = replace(case.settings, horizon=3)
        dec = rb.decide(case.book, case.market, case.risk, settings)
        assert dec.status == "optimal", (seed, dec.status)
        assert dec.plan is not None and dec.spot is not None
        d = dec.data
        assert d.spot is not None
        V = d.V
        net = np.array([[st.spot_trades[a] for a in d.assets] for st in dec.plan.steps]) / V
        total = np.cumsum(net, axis=0)
        tol = 1e-7
        assert np.all(total >= -d.spot.holdings - tol), seed
        assert np.all(total.sum(axis=1) >= -tol), seed
        assert np.all(total.sum(axis=1) <= d.spot.cash + tol), seed
        buy, sell = dec.spot
        np.testing.assert_allclose(net[0], buy - sell, rtol=0, atol=1e-6, err_msg=f"seed {seed}")
