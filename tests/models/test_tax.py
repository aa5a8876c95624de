"""Tax lots: hand-computed sales to the cent (HIFO, FIFO, losses first, short and long holdings, a
partial lot), the convex curve's breakpoints, input errors, the futures rule, and seeded property
tests against independent references (a plain-Python lot walk and scipy's LP over lot variables).

The book used by the hand computations: BTC at 50,000 USD on 2025-01-01, rates 30% short / 15% long.

| lot | units | basis  | acquired   | held     | rate | tax per unit               |
|-----|-------|--------|------------|----------|------|----------------------------|
| A   | 1.0   | 20,000 | 2023-06-01 | 580 days | 15%  | 0.15 x 30,000 = 4,500      |
| B   | 0.5   | 60,000 | 2024-09-01 | 122 days | 30%  | 0.30 x -10,000 = -3,000    |
| C   | 2.0   | 45,000 | 2024-06-15 | 200 days | 30%  | 0.30 x 5,000 = 1,500       |
| D   | 1.5   | 42,000 | 2023-11-28 | 400 days | 15%  | 0.15 x 8,000 = 1,200       |

HIFO order B, C, D, A; FIFO order A, D, C, B; ascending tax B, D, C, A (D's long rate beats C's
higher basis, so HIFO is not tax-optimal here).
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pytest
from scipy.optimize import linprog

from models.errors import ValidationError
from models.tax import (
    LotMethod,
    TaxCurve,
    TaxLot,
    TaxRates,
    breakpoints,
    futures_tax,
    holding_days,
    is_long_term,
    long_term_after,
    realised_tax,
    sale_order,
    tax_per_unit,
    total_quantity,
)

NOW = datetime(2025, 1, 1, tzinfo=UTC)
PRICE = 50_000.0
RATES = TaxRates(short_term=0.30, long_term=0.15)
A = TaxLot(1.0, 20_000.0, datetime(2023, 6, 1, tzinfo=UTC))
B = TaxLot(0.5, 60_000.0, datetime(2024, 9, 1, tzinfo=UTC))
C = TaxLot(2.0, 45_000.0, datetime(2024, 6, 15, tzinfo=UTC))
D = TaxLot(1.5, 42_000.0, datetime(2023, 11, 28, tzinfo=UTC))
LOTS = [A, B, C, D]


def _cents(x: float) -> float:
    return round(x, 2)


# ---------------------------------------------------------------- hand computations


def test_holding_periods_of_the_hand_book() -> None:
    assert [holding_days(lot, NOW) for lot in LOTS] == [580.0, 122.0, 200.0, 400.0]


def test_short_and_long_holding_200_vs_400_days() -> None:
    short = TaxLot(1.0, 40_000.0, NOW - timedelta(days=200))
    long = TaxLot(1.0, 40_000.0, NOW - timedelta(days=400))
    assert _cents(tax_per_unit(short, PRICE, NOW, RATES)) == 3_000.00  # 0.30 x 10,000
    assert _cents(tax_per_unit(long, PRICE, NOW, RATES)) == 1_500.00  # 0.15 x 10,000


@pytest.mark.parametrize(("acquired", "sold", "long"), [
    # 2024 is a leap year: 366 days, but exactly one year: short-term; the day after: long-term
    (datetime(2024, 1, 2, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC), False),
    (datetime(2024, 1, 2, tzinfo=UTC), datetime(2025, 1, 3, tzinfo=UTC), True),
    # 365.04 days by the clock (15:00 -> 16:00 a year later): exactly one year, short-term
    (datetime(2023, 1, 1, 15, tzinfo=UTC), datetime(2024, 1, 1, 16, tzinfo=UTC), False),
    (datetime(2023, 1, 1, 15, tzinfo=UTC), datetime(2024, 1, 2, 0, 30, tzinfo=UTC), True),
    # 23:00 New York on 2023-03-10 is 04:00 UTC on 2023-03-11: the UTC date counts
    (datetime(2023, 3, 10, 23, tzinfo=timezone(timedelta(hours=-5))),
     datetime(2024, 3, 11, 12, tzinfo=UTC), False),
    # bought on 29 February: a year on is 28 February
    (datetime(2024, 2, 29, tzinfo=UTC), datetime(2025, 2, 28, tzinfo=UTC), False),
    (datetime(2024, 2, 29, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC), True),
])
def test_more_than_a_year_is_counted_on_calendar_dates(acquired: datetime, sold: datetime,
                                                         long: bool) -> None:
    """A gain of 10,000 per unit: 0.15 x 10,000 = 1,500 long-term, 0.30 x 10,000 = 3,000 short.
    The old rule (holding_days > 365) called the first and third cases long-term."""
    lot = TaxLot(1.0, 40_000.0, acquired)
    assert is_long_term(lot, sold, RATES) is long
    assert _cents(tax_per_unit(lot, PRICE, sold, RATES)) == (1_500.00 if long else 3_000.00)


def test_a_long_term_threshold_in_days_counts_years_then_days() -> None:
    """long_term_days = 400 = 1 year + 35 days: bought 2024-01-02, short-term through
    2025-01-02 + 35 days = 2025-02-06, long-term from 2025-02-07; 30 days: plain days."""
    lot = TaxLot(1.0, 40_000.0, datetime(2024, 1, 2, tzinfo=UTC))
    r400 = TaxRates(0.30, 0.15, long_term_days=400)
    assert long_term_after(lot, r400) == date(2025, 2, 6)
    assert not is_long_term(lot, datetime(2025, 2, 6, 23, tzinfo=UTC), r400)
    assert is_long_term(lot, datetime(2025, 2, 7, tzinfo=UTC), r400)
    r30 = TaxRates(0.30, 0.15, long_term_days=30)
    assert long_term_after(lot, r30) == date(2024, 2, 1)
    assert is_long_term(lot, datetime(2024, 2, 2, tzinfo=UTC), r30)
    assert not is_long_term(lot, datetime(2024, 2, 1, 23, 59, tzinfo=UTC), r30)
    r0 = TaxRates(0.30, 0.15, long_term_days=0)
    assert not is_long_term(lot, datetime(2024, 1, 2, 23, tzinfo=UTC), r0)
    assert is_long_term(lot, datetime(2024, 1, 3, tzinfo=UTC), r0)


def test_long_term_starts_after_the_threshold_day() -> None:
    lot = TaxLot(1.0, 40_000.0, NOW - timedelta(days=365))  # 2024-01-02 (2024 is a leap year)
    assert tax_per_unit(lot, PRICE, NOW, RATES) == pytest.approx(3_000.0)  # 365 days: still short
    later = NOW + timedelta(seconds=1)  # the same date: still short
    assert tax_per_unit(lot, PRICE, later, RATES) == pytest.approx(3_000.0)
    year = NOW + timedelta(days=1)  # 2025-01-02: exactly one year (366 days): still short
    assert tax_per_unit(lot, PRICE, year, RATES) == pytest.approx(3_000.0)
    assert tax_per_unit(lot, PRICE, NOW + timedelta(days=2), RATES) == pytest.approx(1_500.0)


def test_per_unit_taxes_and_a_loss_is_a_credit() -> None:
    taxes = [_cents(tax_per_unit(lot, PRICE, NOW, RATES)) for lot in LOTS]
    assert taxes == [4_500.00, -3_000.00, 1_500.00, 1_200.00]


def test_orders() -> None:
    names = "ABCD"

    def order(method: LotMethod) -> str:
        return "".join(names[i] for i in sale_order(LOTS, method, PRICE, NOW, RATES))

    assert order(LotMethod.HIFO) == "BCDA"
    assert order(LotMethod.FIFO) == "ADCB"
    assert order(LotMethod.SPECIFIC) == "BDCA"


def test_hifo_sale_of_3_units() -> None:
    # B 0.5 x -3,000 = -1,500; C 2.0 x 1,500 = 3,000; D 0.5 of 1.5 x 1,200 = 600 -> 2,100.00
    tax, left = realised_tax(LOTS, 3.0, LotMethod.HIFO, PRICE, NOW, RATES)
    assert _cents(tax) == 2_100.00
    assert left == [A, TaxLot(1.0, 42_000.0, D.acquired)]


def test_fifo_sale_of_3_units() -> None:
    # A 1.0 x 4,500 = 4,500; D 1.5 x 1,200 = 1,800; C 0.5 of 2.0 x 1,500 = 750 -> 7,050.00
    tax, left = realised_tax(LOTS, 3.0, LotMethod.FIFO, PRICE, NOW, RATES)
    assert _cents(tax) == 7_050.00
    assert left == [B, TaxLot(1.5, 45_000.0, C.acquired)]


def test_tax_optimal_sale_of_3_units() -> None:
    # B 0.5 x -3,000 = -1,500; D 1.5 x 1,200 = 1,800; C 1.0 of 2.0 x 1,500 = 1,500 -> 1,800.00
    tax, left = realised_tax(LOTS, 3.0, LotMethod.SPECIFIC, PRICE, NOW, RATES)
    assert _cents(tax) == 1_800.00
    assert left == [A, TaxLot(1.0, 45_000.0, C.acquired)]


def test_losses_first_partial_loss_lot_is_a_credit() -> None:
    # 0.4 of B's 0.5 units at -3,000 -> -1,200.00 under HIFO and the optimal order alike
    for method in (LotMethod.HIFO, LotMethod.SPECIFIC):
        tax, left = realised_tax(LOTS, 0.4, method, PRICE, NOW, RATES)
        assert _cents(tax) == -1_200.00
        assert left[1].quantity == pytest.approx(0.1)
        assert left[1].cost_basis == 60_000.0


def test_whole_holding_and_nothing() -> None:
    # every lot: 4,500 - 1,500 + 3,000 + 1,800 = 7,800.00 whatever the method
    for method in LotMethod:
        tax, left = realised_tax(LOTS, 5.0, method, PRICE, NOW, RATES)
        assert _cents(tax) == 7_800.00
        assert left == []
        assert realised_tax(LOTS, 0.0, method, PRICE, NOW, RATES) == (0.0, LOTS)


def test_breakpoints_of_the_hand_book() -> None:
    curve = breakpoints(LOTS, PRICE, NOW, RATES)
    np.testing.assert_allclose(curve.cum_quantity, [0.5, 2.0, 4.0, 5.0])
    np.testing.assert_allclose(curve.slopes, [-3_000.0, 1_200.0, 1_500.0, 4_500.0])
    np.testing.assert_allclose(curve.values, [-1_500.0, 300.0, 3_300.0, 7_800.0])
    # a_k = T(Q_(k-1)) - b_k Q_(k-1): 0; -1,500 - 1,200 x 0.5; 300 - 1,500 x 2; 3,300 - 4,500 x 4
    np.testing.assert_allclose(curve.intercepts, [0.0, -2_100.0, -2_700.0, -14_700.0])
    assert curve.holdings == 5.0
    assert _cents(curve.value(3.0)) == 1_800.00


def test_breakpoints_without_loss_credit_and_merged_equal_slopes() -> None:
    curve = breakpoints(LOTS, PRICE, NOW, RATES, credit_losses=False)
    np.testing.assert_allclose(curve.slopes, [0.0, 1_200.0, 1_500.0, 4_500.0])
    twin = TaxLot(0.25, 42_000.0, D.acquired)
    merged = breakpoints([*LOTS, twin], PRICE, NOW, RATES)
    np.testing.assert_allclose(merged.cum_quantity, [0.5, 2.25, 4.25, 5.25])


def test_curve_in_weight_units() -> None:
    # V = 1,000,000 USD: selling w = 0.1 of V is 100,000 USD = 2 BTC -> T(2) / V = 300 / 1e6
    curve = breakpoints(LOTS, PRICE, NOW, RATES).in_weights(1e6)
    np.testing.assert_allclose(curve.slopes, [-0.06, 0.024, 0.03, 0.09])
    assert curve.value(0.1) == pytest.approx(300.0 / 1e6, rel=1e-12)
    assert curve.holdings == pytest.approx(0.25)


def test_padding_repeats_the_last_piece() -> None:
    a, b = breakpoints(LOTS, PRICE, NOW, RATES).padded(6)
    np.testing.assert_allclose(b, [-3_000.0, 1_200.0, 1_500.0, 4_500.0, 4_500.0, 4_500.0])
    assert a[-1] == a[-2] == a[3]
    empty = breakpoints([], PRICE, NOW, RATES)
    assert empty.holdings == 0.0 and empty.value(0.0) == 0.0
    np.testing.assert_array_equal(empty.padded(2)[1], [0.0, 0.0])
    with pytest.raises(ValidationError):
        breakpoints(LOTS, PRICE, NOW, RATES).padded(3)


def test_futures_pnl_rule() -> None:
    rates = TaxRates(0.30, 0.15, futures=0.20)
    assert futures_tax(10_000.0, rates) == pytest.approx(2_000.0)
    assert futures_tax(-10_000.0, rates) == pytest.approx(-2_000.0)  # a loss is credited
    assert futures_tax(1_000.0, RATES) == pytest.approx(300.0)  # default: the short-term rate


# ---------------------------------------------------------------- errors


def test_selling_more_than_held_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"exceed the 5\.0 units held"):
        realised_tax(LOTS, 5.01, LotMethod.HIFO, PRICE, NOW, RATES)
    with pytest.raises(ValidationError):
        realised_tax(LOTS, -0.1, LotMethod.HIFO, PRICE, NOW, RATES)
    with pytest.raises(ValidationError):
        breakpoints(LOTS, PRICE, NOW, RATES).value(5.5)


@pytest.mark.parametrize("make", [
    lambda: TaxLot(0.0, 1.0, NOW),
    lambda: TaxLot(1.0, -1.0, NOW),
    lambda: TaxLot(float("nan"), 1.0, NOW),
    lambda: TaxLot(1.0, 1.0, datetime(2024, 1, 1)),  # naive datetime
    lambda: TaxRates(1.5, 0.1),
    lambda: TaxRates(0.3, 0.1, long_term_days=-1),
    lambda: TaxRates(0.3, 0.1, futures=-0.1),
])
def test_bad_inputs(make: object) -> None:
    with pytest.raises(ValidationError):
        make()  # type: ignore[operator]


def test_lot_from_the_future_and_bad_price() -> None:
    with pytest.raises(ValidationError, match="after now"):
        tax_per_unit(TaxLot(1.0, 1.0, NOW + timedelta(days=1)), PRICE, NOW, RATES)
    with pytest.raises(ValidationError):
        tax_per_unit(A, 0.0, NOW, RATES)


def test_other_time_zones_are_converted_to_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    lot = TaxLot(1.0, 40_000.0, datetime(2024, 1, 1, 9, tzinfo=tokyo))
    assert lot.acquired == datetime(2024, 1, 1, tzinfo=UTC)
    assert lot.acquired.tzinfo == UTC


# ---------------------------------------------------------------- seeded property tests


def _random_book(rng: np.random.Generator) -> tuple[list[TaxLot], float, datetime, TaxRates]:
    n = int(rng.integers(1, 9))
    now = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=float(rng.uniform(0, 400)))
    lots = [TaxLot(float(rng.uniform(0.01, 3.0)), float(rng.uniform(1_000, 90_000)),
                   now - timedelta(days=float(rng.uniform(0, 900)))) for _ in range(n)]
    rates = TaxRates(float(rng.uniform(0, 0.5)), float(rng.uniform(0, 0.3)))
    return lots, float(rng.uniform(5_000, 100_000)), now, rates


def _reference_tax(lots: list[TaxLot], q: float, order: list[int], price: float, now: datetime,
                   rates: TaxRates) -> float:
    """An independent lot walk: the rate from the holding period on calendar dates (more than a
    year: the sale's (year, month, day) after the purchase's one year on), no library helpers."""
    assert rates.long_term_days == 365
    total, left = 0.0, q
    for i in order:
        lot = lots[i]
        a = lot.acquired
        long = (now.year, now.month, now.day) > (a.year + 1, a.month, a.day)
        rate = rates.long_term if long else rates.short_term
        take = min(left, lot.quantity)
        total += take * rate * (price - lot.cost_basis)
        left -= take
    return total


def _lp_minimum(lots: list[TaxLot], q: float, price: float, now: datetime, rates: TaxRates) -> float:
    """min sum_l tau_l x_l s.t. sum_l x_l = q, 0 <= x_l <= lot_l (Moehle et al.'s lot variables)."""
    tau = [tax_per_unit(lot, price, now, rates) for lot in lots]
    res = linprog(c=tau, A_eq=np.ones((1, len(lots))), b_eq=[q],
                  bounds=[(0.0, lot.quantity) for lot in lots], method="highs")
    assert res.status == 0
    return float(res.fun)


def test_random_sales_match_independent_references() -> None:
    rng = np.random.default_rng(20250101)
    for _ in range(300):
        lots, price, now, rates = _random_book(rng)
        q = float(rng.uniform(0, 1)) * total_quantity(lots)
        curve = breakpoints(lots, price, now, rates)
        taxes = {}
        for method in LotMethod:
            tax, left = realised_tax(lots, q, method, price, now, rates)
            order = sale_order(lots, method, price, now, rates)
            assert tax == pytest.approx(_reference_tax(lots, q, order, price, now, rates), abs=1e-7)
            assert total_quantity(left) == pytest.approx(total_quantity(lots) - q, abs=1e-12)
            taxes[method] = tax
        best = taxes[LotMethod.SPECIFIC]
        assert best == pytest.approx(_lp_minimum(lots, q, price, now, rates), rel=1e-9, abs=1e-6)
        assert best <= min(taxes.values()) + 1e-7
        assert curve.value(q) == pytest.approx(best, rel=1e-12, abs=1e-8)
        assert np.all(np.diff(curve.slopes) > 0)  # strictly ascending after merging: convex


def test_one_rate_makes_hifo_the_tax_optimal_order() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        lots, price, now, _ = _random_book(rng)
        rate = float(rng.uniform(0.01, 0.5))
        rates = TaxRates(rate, rate)
        q = float(rng.uniform(0, 1)) * total_quantity(lots)
        hifo, _ = realised_tax(lots, q, LotMethod.HIFO, price, now, rates)
        best, _ = realised_tax(lots, q, LotMethod.SPECIFIC, price, now, rates)
        assert math.isclose(hifo, best, rel_tol=1e-12, abs_tol=1e-8)


def test_curve_is_the_tax_optimal_lot_walk_at_breakpoints() -> None:
    rng = np.random.default_rng(11)
    for _ in range(100):
        lots, price, now, rates = _random_book(rng)
        curve = breakpoints(lots, price, now, rates)
        assert isinstance(curve, TaxCurve)
        for qk, tk in zip(curve.cum_quantity, curve.values, strict=True):
            ref, _ = realised_tax(lots, min(float(qk), total_quantity(lots)), LotMethod.SPECIFIC,
                                  price, now, rates)
            assert tk == pytest.approx(ref, rel=1e-12, abs=1e-8)


def test_a_capped_curve_is_exact_up_to_its_last_kept_lot_and_at_the_whole_holding() -> None:
    """TaxCurve.capped(n): the first n - 1 pieces as they were, the rest one chord; by hand: lots
    of 1 unit with tax per unit 1, 2, 3, 4, 5 (USD) capped at 3 pieces keep slopes 1, 2 and the
    chord (3 + 4 + 5) / 3 = 4 over [2, 5]; T(5) = 15 either way, and
    T(3.5) = 3 + 1.5 x 4 = 9 >= 1 + 2 + 3 + 0.5 x 4 = 8."""
    curve = TaxCurve(cum_quantity=np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
                     slopes=np.array([1.0, 2.0, 3.0, 4.0, 5.0]), price=10.0)
    capped = curve.capped(3)
    np.testing.assert_allclose(capped.slopes, [1.0, 2.0, 4.0])
    np.testing.assert_allclose(capped.cum_quantity, [1.0, 2.0, 5.0])
    assert capped.value(1.5) == pytest.approx(curve.value(1.5)) == pytest.approx(2.0)
    assert capped.value(5.0) == pytest.approx(curve.value(5.0)) == pytest.approx(15.0)
    assert capped.value(3.5) == pytest.approx(9.0) and curve.value(3.5) == pytest.approx(8.0)
    assert curve.capped(5) is curve and curve.capped(9) is curve
    one = curve.capped(1)
    np.testing.assert_allclose(one.slopes, [3.0])  # the chord of the whole curve: 15 / 5
    with pytest.raises(ValidationError, match="tax pieces"):
        curve.capped(0)


def test_capped_random_curves_stay_convex_and_never_under_price() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        k = int(rng.integers(2, 40))
        slopes = np.sort(rng.normal(0.0, 1.0, k))
        curve = TaxCurve(cum_quantity=np.cumsum(rng.uniform(0.01, 2.0, k)), slopes=slopes, price=1.0)
        n = int(rng.integers(1, k + 1))
        capped = curve.capped(n)
        assert capped.slopes.size == min(n, k)
        assert np.all(np.diff(capped.slopes) >= -1e-12)
        kept = float(curve.cum_quantity[n - 2]) if n >= 2 else 0.0
        for q in rng.uniform(0.0, curve.holdings, 25):
            if q <= kept:
                assert capped.value(q) == pytest.approx(curve.value(q), abs=1e-9)
            assert capped.value(q) >= curve.value(q) - 1e-9
        assert capped.value(curve.holdings) == pytest.approx(curve.value(curve.holdings), abs=1e-9)


def test_fifo_curve_is_convex_and_never_below_what_fifo_books_realise() -> None:
    """breakpoints(method=FIFO): lots in FIFO order, slopes running max; for random lots and sales
    the curve is >= realised_tax(FIFO), and equal when the FIFO slopes already ascend."""
    rng = np.random.default_rng(5)
    now = datetime(2025, 6, 1, tzinfo=UTC)
    rates = TaxRates(short_term=0.35, long_term=0.15)
    for _ in range(150):
        k = int(rng.integers(1, 8))
        lots = [TaxLot(float(rng.uniform(0.1, 2.0)), float(rng.uniform(20.0, 200.0)),
                       now - timedelta(days=float(rng.uniform(1.0, 1500.0)))) for _ in range(k)]
        curve = breakpoints(lots, 100.0, now, rates, method=LotMethod.FIFO)
        assert np.all(np.diff(curve.slopes) >= 0)
        taus = [tax_per_unit(lots[i], 100.0, now, rates)
                for i in sale_order(lots, LotMethod.FIFO, 100.0, now, rates)]
        ascending = all(b >= a for a, b in itertools.pairwise(taus))
        for q in rng.uniform(0.0, curve.holdings, 10):
            fifo = realised_tax(lots, float(q), LotMethod.FIFO, 100.0, now, rates)[0]
            assert curve.value(float(q)) >= fifo - 1e-9
            if ascending:
                assert curve.value(float(q)) == pytest.approx(fifo, abs=1e-9)
