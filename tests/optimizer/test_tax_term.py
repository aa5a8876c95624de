"""The convex tax term: its cvxpy value equals the lot-by-lot tax of the tax-optimal order (hand book,
seeded numpy and hypothesis property tests), minimising T(s) - g s stops at the breakpoint a hand
computation predicts, the Parameter form is DPP and re-solves for new books, and it agrees with the
lot-variable LP of Moehle et al. written independently in plain cvxpy.

Hand book (see tests/models/test_tax.py): BTC at 50,000 USD, ascending tax per unit
-3,000 (0.5 units), 1,200 (1.5), 1,500 (2.0), 4,500 (1.0); breakpoints Q = 0.5, 2, 4, 5 units.
Selling s units with a benefit of g USD per unit costs T(s) - g s, so the optimum sells every piece
whose slope is below g: g = 1,300 -> s* = 2; g = 2,000 -> 4; g = -4,000 -> 0; g = 5,000 -> 5.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import ValidationError
from models.tax import (
    LotMethod,
    TaxCurve,
    TaxLot,
    TaxRates,
    breakpoints,
    realised_tax,
    tax_per_unit,
    total_quantity,
)
from optimizer.tax_term import TaxTerm, curve_coefficients, sale_limits, tax_expression

NOW = datetime(2025, 1, 1, tzinfo=UTC)
PRICE = 50_000.0
RATES = TaxRates(short_term=0.30, long_term=0.15)
LOTS = [TaxLot(1.0, 20_000.0, datetime(2023, 6, 1, tzinfo=UTC)),
        TaxLot(0.5, 60_000.0, datetime(2024, 9, 1, tzinfo=UTC)),
        TaxLot(2.0, 45_000.0, datetime(2024, 6, 15, tzinfo=UTC)),
        TaxLot(1.5, 42_000.0, datetime(2023, 11, 28, tzinfo=UTC))]


def _expression_value(curve: TaxCurve, sold: float, n_pieces: int | None = None) -> float:
    """The cvxpy expression's value at ``sold`` (numeric evaluation, no solver)."""
    a, b, _ = curve_coefficients([curve], n_pieces or max(curve.slopes.size, 1))
    s = cp.Variable(1)
    s.value = np.array([sold])
    return float(tax_expression(s, a, b).value[0])


def _optimal_walk(lots: list[TaxLot], q: float, price: float, now: datetime, rates: TaxRates) -> float:
    return realised_tax(lots, q, LotMethod.SPECIFIC, price, now, rates)[0]


def _solve_sale(term: TaxTerm, gain: np.ndarray) -> tuple[cp.Problem, cp.Variable]:
    s = cp.Variable(term.n_assets)
    prob = cp.Problem(cp.Minimize(term.expression(s) - gain @ s), term.constraints(s))
    return prob, s


# ---------------------------------------------------------------- hand book


def test_expression_equals_lot_walk_on_a_grid_of_the_hand_book() -> None:
    curve = breakpoints(LOTS, PRICE, NOW, RATES)
    for q in np.linspace(0.0, 5.0, 201):
        ref = _optimal_walk(LOTS, float(q), PRICE, NOW, RATES)
        assert _expression_value(curve, float(q), n_pieces=7) == pytest.approx(ref, rel=1e-9, abs=1e-9)
    assert round(_expression_value(curve, 3.0), 2) == 1_800.00  # the hand sale of 3 units
    assert round(_expression_value(curve, 0.4), 2) == -1_200.00  # losses first


@pytest.mark.parametrize(("gain", "expected"), [(1_300.0, 2.0), (2_000.0, 4.0), (-4_000.0, 0.0),
                                                (5_000.0, 5.0), (0.0, 0.5)])
def test_minimising_tax_minus_gain_stops_at_the_predicted_breakpoint(gain: float, expected: float) -> None:
    term = TaxTerm.create(1, 6)
    term.update([breakpoints(LOTS, PRICE, NOW, RATES)])
    prob, s = _solve_sale(term, np.array([gain]))
    assert prob.is_dpp()
    prob.solve(solver=cp.CLARABEL)
    assert prob.status == cp.OPTIMAL
    assert s.value[0] == pytest.approx(expected, abs=1e-6)
    # objective: T(s*) - g s*, e.g. g = 1,300: 300 - 2,600 = -2,300
    t_star = _optimal_walk(LOTS, expected, PRICE, NOW, RATES)
    assert prob.value == pytest.approx(t_star - gain * expected, abs=1e-5)


def test_weight_units_give_the_same_sale() -> None:
    # V = 2,000,000 USD; a benefit of g = 1,300 USD per BTC is 1,300 / 50,000 = 0.026 per USD sold;
    # the optimum sells 2 BTC = 100,000 USD = 0.05 of V and pays (300 - 2,600) / V
    v = 2e6
    term = TaxTerm.create(1, 4)
    term.update([breakpoints(LOTS, PRICE, NOW, RATES).in_weights(v)])
    prob, s = _solve_sale(term, np.array([1_300.0 / PRICE]))
    prob.solve(solver=cp.HIGHS)  # an LP: a simplex vertex is the breakpoint itself
    assert s.value[0] == pytest.approx(0.05, abs=1e-10)
    assert prob.value == pytest.approx(-2_300.0 / v, abs=1e-10)


def test_scalar_variable_and_no_sale_beyond_holdings() -> None:
    curve = breakpoints(LOTS, PRICE, NOW, RATES)
    a, b, h = curve_coefficients([curve], 4)
    s = cp.Variable()
    s.value = np.array(3.0)
    assert tax_expression(s, a, b).value[0] == pytest.approx(1_800.0)
    too_much = cp.Problem(cp.Minimize(cp.sum(tax_expression(s, a, b))), [*sale_limits(s, h), s >= 5.5])
    too_much.solve(solver=cp.CLARABEL)
    assert too_much.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE)
    with pytest.raises(ValidationError):
        tax_expression(s, a, b[:, :3])


def test_no_lots_means_no_sale() -> None:
    term = TaxTerm.create(2, 4)
    term.update([breakpoints([], PRICE, NOW, RATES), breakpoints(LOTS, PRICE, NOW, RATES)])
    prob, s = _solve_sale(term, np.array([10_000.0, 10_000.0]))
    prob.solve(solver=cp.CLARABEL)
    np.testing.assert_allclose(s.value, [0.0, 5.0], atol=1e-7)
    with pytest.raises(ValidationError):
        term.update([breakpoints(LOTS, PRICE, NOW, RATES)])


# ---------------------------------------------------------------- random books


def _random_book(rng: np.random.Generator) -> tuple[list[TaxLot], float, datetime, TaxRates]:
    n = int(rng.integers(1, 9))
    now = NOW + timedelta(days=float(rng.uniform(0, 400)))
    lots = [TaxLot(float(rng.uniform(0.01, 3.0)), float(rng.uniform(1_000, 90_000)),
                   now - timedelta(days=float(rng.uniform(0, 900)))) for _ in range(n)]
    return lots, float(rng.uniform(5_000, 100_000)), now, TaxRates(float(rng.uniform(0, 0.5)),
                                                                   float(rng.uniform(0, 0.3)))


def test_seeded_random_books_expression_equals_lot_walk() -> None:
    rng = np.random.default_rng(42)
    for _ in range(300):
        lots, price, now, rates = _random_book(rng)
        curve = breakpoints(lots, price, now, rates)
        held = total_quantity(lots)
        for q in (0.0, held, *(rng.uniform(0, held, size=5))):
            ref = _optimal_walk(lots, float(q), price, now, rates)
            assert _expression_value(curve, float(q), n_pieces=10) == pytest.approx(ref, rel=1e-9, abs=1e-9)


_LOT = st.tuples(st.floats(1e-3, 10.0), st.floats(0.0, 1e5), st.floats(0.0, 1_500.0))


@settings(derandomize=True, max_examples=300, deadline=None)
@given(lots=st.lists(_LOT, min_size=1, max_size=10), price=st.floats(1.0, 2e5),
       short=st.floats(0.0, 1.0), long=st.floats(0.0, 1.0), fraction=st.floats(0.0, 1.0),
       credit=st.booleans())
def test_property_convex_term_equals_lot_by_lot_sum(
        lots: list[tuple[float, float, float]], price: float, short: float, long: float,
        fraction: float, credit: bool) -> None:
    book = [TaxLot(q, basis, NOW - timedelta(days=age)) for q, basis, age in lots]
    rates = TaxRates(short, long)
    q = min(fraction * total_quantity(book), total_quantity(book))
    curve = breakpoints(book, price, NOW, rates, credit_losses=credit)
    # independent reference: tax per unit of every lot (losses as 0 when not credited), cheapest
    # first, summed lot by lot
    taus = [tax_per_unit(lot, price, NOW, rates) for lot in book]
    taus = taus if credit else [max(t, 0.0) for t in taus]
    ref, left = 0.0, q
    for i in np.argsort(taus, kind="stable"):
        take = min(left, book[i].quantity)
        ref += taus[i] * take
        left -= take
    scale = max(1.0, sum(abs(t) * lot.quantity for t, lot in zip(taus, book, strict=True)))
    assert _expression_value(curve, q, n_pieces=12) == pytest.approx(ref, rel=1e-9, abs=1e-12 * scale)
    if credit:
        assert _optimal_walk(book, q, price, NOW, rates) == pytest.approx(ref, rel=1e-9, abs=1e-12 * scale)


def test_dpp_term_re_solves_for_new_books_like_a_plain_lot_lp() -> None:
    """One compiled problem (3 assets, 8 pieces) re-solved for 30 random books; each optimum equals
    Moehle et al.'s lot-variable LP written afresh in plain cvxpy (no Parameters)."""
    rng = np.random.default_rng(3)
    n_assets = 3
    term = TaxTerm.create(n_assets, 8)
    gain = cp.Parameter(n_assets, name="gain")
    s = cp.Variable(n_assets)
    prob = cp.Problem(cp.Minimize(term.expression(s) - gain @ s), term.constraints(s))
    assert prob.is_dpp()
    for _ in range(30):
        books = [_random_book(rng) for _ in range(n_assets)]
        curves = [breakpoints(*book) for book in books]
        g = np.array([float(rng.uniform(-0.2, 0.6)) * book[1] * 0.3 for book in books])
        term.update(curves)
        gain.value = g
        prob.solve(solver=cp.CLARABEL)
        assert prob.status == cp.OPTIMAL
        ref_value, ref_sold = _lot_lp(books, g)
        assert prob.value == pytest.approx(ref_value, rel=1e-6, abs=1e-4)
        for i, curve in enumerate(curves):  # the tax at the solution is the curve's
            sold = float(np.clip(s.value[i], 0.0, curve.holdings))
            assert term.per_asset(s).value[i] == pytest.approx(curve.value(sold), rel=1e-6, abs=1e-4)
        assert np.all(s.value >= -1e-7) and np.all(s.value <= ref_sold + 1e-6)


def _lot_lp(books: list[tuple[list[TaxLot], float, datetime, TaxRates]],
            gain: np.ndarray) -> tuple[float, np.ndarray]:
    """min sum_i (sum_l tau_il x_il - g_i sum_l x_il), 0 <= x_il <= lot_il: the lot-variable LP."""
    total = 0.0
    objective: list[cp.Expression] = []
    constraints: list[cp.Constraint] = []
    held = []
    for (lots, price, now, rates), g in zip(books, gain, strict=True):
        tau = np.array([tax_per_unit(lot, price, now, rates) for lot in lots])
        size = np.array([lot.quantity for lot in lots])
        x = cp.Variable(len(lots))
        objective.append((tau - g) @ x)
        constraints += [x >= 0, x <= size]
        held.append(size.sum())
    prob = cp.Problem(cp.Minimize(cp.sum(cp.hstack(objective))), constraints)
    total = float(prob.solve(solver=cp.CLARABEL))
    return total, np.array(held)
