"""The multi-period planner with the spot leg against a plain cvxpy reference (optimizer.planner).

The H-step plan of the random hybrid books of ``test_spot_leg`` is written afresh, with no
Parameters: per step h the futures z_h and spot trades b_h, q_h (weights of today's V), the
totals through the step T_h = sum_{k<=h} (b_k - q_k), the exposure e_h = s + T_h + z_h against
targets that follow the invested base, w (1 + 1'T_h); every step pays its tracking error, basis
risk, fees and half spread, impact and carry on its own trades; the spot sales' tax is one lot-
by-lot LP on the plan's total sales sum_h q_h; the futures-gains tax prices each step's
reduction of a position at today's gain per unit; the rows (no short spot on the sales through
the step, the invested base never sold into the wallet, the cash for net buys, caps, gross
leverage) hold at every step. fbr's plan must agree to 1e-5 of NAV in every step's positions and
spot trades. Seeded.
"""

from __future__ import annotations

import math
from dataclasses import replace

import cvxpy as cp
import numpy as np
import pytest
from test_spot_leg import Case, _random_case, lot_tax, ref_numbers, solve_tight

from models.tax import TaxRates
from optimizer.rebalance import Rebalancer

H = 3


def _with_futures_tax(case: Case, rng: np.random.Generator) -> Case:
    """``case`` with the futures-gains tax priced on random gains (USD) of every position."""
    spot = case.settings.spot
    rates = spot.rates or TaxRates(0.3, 0.15)
    gains = {c.symbol: float(rng.uniform(-2_000.0, 6_000.0)) for c in case.book.contracts}
    spot = replace(spot, rates=rates, futures_tax=True, futures_gains=gains)
    return replace(case, settings=replace(case.settings, spot=spot))


def _plan_reference(case: Case) -> tuple[np.ndarray, np.ndarray, float]:
    """(z_h V (H x N), (b_h - q_h) V (H x N), V): the plan's positions and net spot trades."""
    st, r = case.settings, ref_numbers(case)
    V, s, w, x0 = r.V, r.s, r.w, r.x0
    n = len(r.syms)
    cov = cp.psd_wrap(r.cov)
    z = [cp.Variable(n) for _ in range(H)]
    b = [cp.Variable(n) for _ in range(H)]
    q = [cp.Variable(n) for _ in range(H)]
    obj: cp.Expression = 0
    cons: list[cp.Constraint] = []
    prev: cp.Expression | np.ndarray = x0
    for h in range(H):
        total = sum(b[k] - q[k] for k in range(h + 1))
        sold = sum(q[k] for k in range(h + 1))
        e = s + total + z[h]
        obj += cp.quad_form(e - w * (1 + cp.sum(total)), cov)
        if case.basis_cov is not None:
            obj += cp.quad_form(z[h], cp.psd_wrap(case.basis_cov))
        obj += st.costs.gamma_trade * (r.lin_f @ cp.abs(z[h] - prev) + r.lin_s @ (b[h] + q[h]))
        obj += st.costs.gamma_fund * r.carry @ z[h]
        if r.c_f is not None and r.c_s is not None:
            obj += st.costs.gamma_trade * (r.c_f @ cp.power(cp.abs(z[h] - prev), 1.5, approx=False)
                                           + r.c_s @ (cp.power(b[h], 1.5, approx=False)
                                                      + cp.power(q[h], 1.5, approx=False)))
        if st.spot.futures_tax and st.spot.rates is not None and st.spot.futures_gains is not None:
            rate = st.spot.rates.futures if st.spot.rates.futures is not None else st.spot.rates.short_term
            gain = np.array([max(st.spot.futures_gains[c.symbol], 0.0) for c in case.book.contracts])
            coef = st.spot.gamma_tax * rate * gain / (np.abs(x0) * V)
            obj += coef @ cp.pos(cp.multiply(np.sign(x0), prev - z[h]))
        cons += [b[h] >= 0, q[h] >= 0, sold <= s, cp.sum(total) <= st.spot.cash_usd / V,
                 cp.sum(total) >= 0]
        for j, c in enumerate(case.book.contracts):
            if c.symbol in st.constraints.caps_usd:
                cons.append(cp.abs(z[h][j]) <= st.constraints.caps_usd[c.symbol] / V)
        if st.constraints.max_gross_leverage is not None:
            cons.append(cp.sum(cp.abs(e)) <= st.constraints.max_gross_leverage)
        prev = z[h]
    if st.spot.rates is not None:  # one lot-by-lot tax on the plan's total sales
        plan_sold = sum(q)
        for i in range(n):
            tax, rows = lot_tax(case, plan_sold[i], i, r)
            obj += tax
            cons += rows
    solve_tight(cp.Problem(cp.Minimize(1e4 * obj), cons), st.costs.impact)
    zs = np.vstack([np.asarray(v.value) for v in z]) * V
    us = np.vstack([np.asarray(bb.value) - np.asarray(qq.value) for bb, qq in zip(b, q, strict=True)]) * V
    return zs, us, V


@pytest.mark.parametrize(("block", "impact", "futures_tax"), [(0, False, False), (1, False, True),
                                                              (2, True, False), (3, True, True)])
def test_a_hybrid_plan_matches_a_plain_cvxpy_reference(block: int, impact: bool,
                                                       futures_tax: bool) -> None:
    """Blocks of 10 random books as 3-step plans: QP (PIQP) and conic (Clarabel, 3/2-power impact
    on futures and spot), without and with the futures-gains tax."""
    rb = Rebalancer()
    for seed in range(10 * block, 10 * block + 10):
        rng = np.random.default_rng(7000 + seed)
        case = _random_case(rng, impact=impact)
        if futures_tax:
            case = _with_futures_tax(case, rng)
        case = replace(case, settings=replace(case.settings, horizon=H))
        dec = rb.decide(case.book, case.market, case.risk, case.settings)
        assert dec.status == "optimal", (seed, dec.status)
        assert dec.plan is not None
        z_ref, u_ref, V = _plan_reference(case)
        assert math.isclose(dec.data.V, V, rel_tol=1e-12)
        contracts = [c.symbol for c in case.book.contracts]
        z = np.array([[step.positions[c] for c in contracts] for step in dec.plan.steps])
        u = np.array([[step.spot_trades.get(a, 0.0) for a in case.book.targets] for step in dec.plan.steps])
        tol = 1e-5 * dec.data.V
        np.testing.assert_allclose(z, z_ref, rtol=0, atol=tol, err_msg=f"seed {seed} positions")
        np.testing.assert_allclose(u, u_ref, rtol=0, atol=tol, err_msg=f"seed {seed} spot trades")
