"""Tax lots of a spot holding: the tax of a sale, lot by lot, and as a convex piecewise-linear curve.

Units: quantities in units of the asset (e.g. BTC); prices and cost bases in USD per unit; taxes and
PnL in USD; rates are fractions (0.30 = 30% of the gain); time is UTC (tz-aware ``datetime``).

A lot l holds ``q_l`` units bought at ``basis_l`` USD/unit on date ``acquired_l``. Selling one unit of
it at price ``p`` on date ``now`` realises the gain ``p - basis_l`` and costs the tax

    tau_l = rate_l * (p - basis_l)     (USD per unit sold)

where ``rate_l`` is the long-term rate when the lot was held more than ``long_term_days`` and the
short-term rate otherwise, counted on UTC calendar dates (:func:`is_long_term`): with
``long_term_days`` = 365 y + d, long-term when the sale date is after the acquisition date plus y
calendar years and d days (365, the default: "more than a year", so a lot bought 2024-01-02 is
still short-term on 2025-01-02, though 366 days have passed, and long-term from 2025-01-03).
``tau_l < 0`` for a loss: a credit (the loss offsets other gains; fbr counts it at the same rate,
a simplification).

**Which lots a sale consumes.** The user's lot method fixes that in the books (and in the replay):

- HIFO (the default): highest cost basis first;
- FIFO: oldest acquisition first;
- SPECIFIC (specific identification): the seller names the lots at each sale; fbr names them
  tax-optimally, i.e. in ascending tax per unit (losses first).

**The convex term.** Sold in ascending tax per unit, the tax of selling ``q`` units,

    T(q) = sum_k tau_(k) * min(max(q - Q_(k-1), 0), q_(k)),   Q_(k) = q_(1) + ... + q_(k),

has ascending slopes, so it is convex piecewise linear in ``q`` and equals a max of affine pieces,
T(q) = max_k (a_k + tau_(k) q) on 0 <= q <= Q_K. It is the minimum of sum_l tau_l q_l over every
split of the sale into lots (0 <= q_l <= lot_l, sum_l q_l = q): the lot-variable formulation of
Moehle, Kochenderfer, Boyd and Ang, "Tax-aware portfolio construction via convex optimization" (2021),
whose linear programme the greedy ascending order solves. HIFO equals this order when every lot is
taxed at one rate (tau_l then falls as basis_l rises); with short and long lots, or under FIFO, the
user's method can realise more tax than T(q).

**What the optimiser uses, and why.** A convex solver cannot take falling slopes, and the tax of
a FIFO or mixed-rate HIFO sale can have them, so the optimiser's curve (:func:`breakpoints`)
depends on the lot method:

- SPECIFIC and HIFO: T(q), the ascending-tax curve above: exact for SPECIFIC and for
  single-rate HIFO, and for mixed-rate HIFO a lower bound of the tax the sale really realises;
- FIFO: the lots in FIFO order with each slope raised to the running maximum of the slopes so
  far, b_k = max(tau_1..tau_k): convex, exact while the FIFO slopes ascend, and otherwise an upper
  bound of the tax the FIFO books realise (the integral of b is at least that of tau).

The replay charges :func:`realised_tax` with the user's method, so reports show the tax actually
due.

Realised futures PnL is taxed by :func:`futures_tax`: ``rates.futures`` times the PnL, a loss credited
at the same rate (one flat rate, no holding periods, no wash-sale or carry-forward rules).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from enum import Enum

import numpy as np

from models.errors import ValidationError, check_finite_positive, check_fraction

#: A lot whose remaining quantity is below this fraction of its size after a sale is used up.
_DUST = 1e-12


def _check_utc(field: str, when: datetime) -> datetime:
    """``when`` converted to UTC; a naive datetime is refused (fbr's time is tz-aware UTC)."""
    if not isinstance(when, datetime):
        raise ValidationError(field, f"is {when!r}", "give a tz-aware datetime")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValidationError(field, f"{when} has no time zone", "give a tz-aware UTC datetime")
    return when.astimezone(UTC)


@dataclass(frozen=True)
class TaxLot:
    """One purchase still held: ``quantity`` units (> 0) bought at ``cost_basis`` USD per unit (>= 0)
    on ``acquired`` (a tz-aware datetime, stored in UTC)."""

    quantity: float
    cost_basis: float
    acquired: datetime

    def __post_init__(self) -> None:
        check_finite_positive("lot.quantity", self.quantity)
        check_finite_positive("lot.cost_basis", self.cost_basis, allow_zero=True)
        object.__setattr__(self, "quantity", float(self.quantity))
        object.__setattr__(self, "cost_basis", float(self.cost_basis))
        object.__setattr__(self, "acquired", _check_utc("lot.acquired", self.acquired))


#: the longest holding period (days) ``TaxRates.long_term_days`` may give: 100 years (no tax code
#: waits longer; a far longer one dates a lot's long-term day past datetime's year 9999)
MAX_LONG_TERM_DAYS = 36_500


@dataclass(frozen=True)
class TaxRates:
    """Tax rates as fractions of a realised gain.

    - ``short_term``: lots held ``long_term_days`` or less;
    - ``long_term``: lots held more than ``long_term_days`` (365: "more than a year"; a whole
      number in [0, MAX_LONG_TERM_DAYS]), counted on UTC calendar dates with whole years for each
      365 days (see :func:`is_long_term`);
    - ``futures``: realised futures PnL (None: the short-term rate, as for ordinary income).
    """

    short_term: float
    long_term: float
    long_term_days: int = 365
    futures: float | None = None

    def __post_init__(self) -> None:
        check_fraction("tax.short_term", self.short_term)
        check_fraction("tax.long_term", self.long_term)
        if self.futures is not None:
            check_fraction("tax.futures", self.futures)
        if isinstance(self.long_term_days, bool) or not isinstance(self.long_term_days, int) \
                or not 0 <= self.long_term_days <= MAX_LONG_TERM_DAYS:
            raise ValidationError("tax.long_term_days", f"is {self.long_term_days!r}",
                                  f"give a whole number of days in [0, {MAX_LONG_TERM_DAYS}]")

    @property
    def futures_rate(self) -> float:
        """The rate applied to realised futures PnL (a fraction)."""
        return self.short_term if self.futures is None else self.futures


class LotMethod(Enum):
    """Which lots a spot sale consumes (see the module docstring)."""

    HIFO = "hifo"
    FIFO = "fifo"
    SPECIFIC = "specific"


def _check_price(price: float) -> float:
    """The sale price (USD per unit), finite and > 0."""
    return check_finite_positive("price", price)


def holding_days(lot: TaxLot, now: datetime) -> float:
    """How long ``lot`` has been held at ``now``, in days (fractional); a lot from the future is refused."""
    held = _check_utc("now", now) - lot.acquired
    if held < timedelta(0):
        raise ValidationError("lot.acquired", f"{lot.acquired} is after now ({now})",
                              "give lots acquired on or before the sale date")
    return held / timedelta(days=1)


def long_term_after(lot: TaxLot, rates: TaxRates) -> date:
    """The last UTC date on which a sale of ``lot`` is still short-term: the acquisition date plus
    y calendar years and d days, (y, d) = divmod(``rates.long_term_days``, 365). A lot bought on
    29 February counts its years to 28 February."""
    years, days = divmod(rates.long_term_days, 365)
    start = lot.acquired.date()
    year = start.year + years
    try:
        anniversary = start.replace(year=year)
    except ValueError:  # 29 February in a year without one
        anniversary = start.replace(year=year, day=28)
    return anniversary + timedelta(days=days)


def is_long_term(lot: TaxLot, now: datetime, rates: TaxRates) -> bool:
    """True when ``lot`` sold at ``now`` was held more than ``rates.long_term_days``: the UTC sale
    date is after :func:`long_term_after` (calendar dates, the time of day ignored; 365 days count
    as one calendar year, so a lot held exactly one year, 365 or 366 days, is short-term).
    A lot from the future is refused."""
    holding_days(lot, now)  # checks now and the order of the dates
    return _check_utc("now", now).date() > long_term_after(lot, rates)


def lot_rate(lot: TaxLot, now: datetime, rates: TaxRates) -> float:
    """The rate (fraction) on a gain from ``lot`` sold at ``now``: long-term when held more than
    ``rates.long_term_days`` (:func:`is_long_term`, on calendar dates), short-term otherwise."""
    return rates.long_term if is_long_term(lot, now, rates) else rates.short_term


def tax_per_unit(lot: TaxLot, price: float, now: datetime, rates: TaxRates) -> float:
    """Tax in USD per unit of ``lot`` sold at ``price`` (USD/unit) on ``now``:
    rate(holding period) * (price - cost_basis). Negative for a loss: a credit."""
    return lot_rate(lot, now, rates) * (_check_price(price) - lot.cost_basis)


def _order_key(method: LotMethod, lot: TaxLot, tau: float) -> tuple[float, ...]:
    """Sort key of a lot under ``method``; ties break by tax per unit, then age (deterministic)."""
    age = lot.acquired.timestamp()
    if method is LotMethod.HIFO:
        return (-lot.cost_basis, tau, age)
    if method is LotMethod.FIFO:
        return (age, tau)
    return (tau, age)


def sale_order(lots: Sequence[TaxLot], method: LotMethod, price: float, now: datetime,
               rates: TaxRates) -> list[int]:
    """Indices into ``lots`` in the order a sale consumes them.

    HIFO: highest cost basis first; FIFO: oldest first; SPECIFIC: the tax-optimal order, ascending
    tax per unit (losses first), the order behind the convex curve of :func:`breakpoints`. HIFO and
    FIFO are what the user's books realise; the optimiser's convex term uses the ascending order
    for HIFO and SPECIFIC (equal to HIFO when every lot has one rate) and the FIFO order with
    running-maximum slopes for FIFO (see the module docstring and :func:`breakpoints`). Ties keep a fixed,
    deterministic order (then by the lots' position in ``lots``).
    """
    taus = [tax_per_unit(lot, price, now, rates) for lot in lots]
    return sorted(range(len(lots)), key=lambda i: (*_order_key(method, lots[i], taus[i]), i))


def total_quantity(lots: Sequence[TaxLot]) -> float:
    """Units held across ``lots``."""
    return math.fsum(lot.quantity for lot in lots)


def _check_sale(lots: Sequence[TaxLot], quantity: float) -> float:
    """The units to sell, finite, >= 0 and no more than the lots hold (else a ValidationError)."""
    q = check_finite_positive("sale quantity", quantity, allow_zero=True)
    held = total_quantity(lots)
    if q > held * (1.0 + _DUST):
        raise ValidationError("sale quantity", f"{q} units exceed the {held} units held in the tax lots",
                              "sell at most the units held (short spot sales are not modelled)")
    return min(q, held)


def realised_tax(lots: Sequence[TaxLot], quantity: float, method: LotMethod, price: float,
                 now: datetime, rates: TaxRates) -> tuple[float, list[TaxLot]]:
    """Sell ``quantity`` units at ``price`` on ``now``, consuming lots in ``method``'s order.

    Returns (tax in USD, lots left). The tax is sum_l tau_l * sold_l over the lots touched, the last
    one possibly split (it stays with its basis and date and the unsold quantity). A negative tax is
    a credit. The lots left keep their order in ``lots``; used-up lots are dropped. Raises
    ValidationError when ``quantity`` is negative or exceeds the units held.
    """
    left = _check_sale(lots, quantity)
    sold: dict[int, float] = {}
    tax_parts: list[float] = []
    for i in sale_order(lots, method, price, now, rates):
        if left <= 0.0:
            break
        take = min(left, lots[i].quantity)
        sold[i] = take
        tax_parts.append(tax_per_unit(lots[i], price, now, rates) * take)
        left -= take
    return math.fsum(tax_parts), _remaining(lots, sold)


def _remaining(lots: Sequence[TaxLot], sold: dict[int, float]) -> list[TaxLot]:
    """``lots`` less the units ``sold`` from each (by index); lots reduced to dust are dropped."""
    out: list[TaxLot] = []
    for i, lot in enumerate(lots):
        rest = lot.quantity - sold.get(i, 0.0)
        if rest > _DUST * lot.quantity:
            out.append(lot if i not in sold else replace(lot, quantity=rest))
    return out


@dataclass(frozen=True)
class TaxCurve:
    """The convex piecewise-linear tax T(q) (USD) of selling q units (0 <= q <= holdings).

    Piece k covers Q_(k-1) <= q <= Q_k with slope ``slopes[k]`` (USD per unit, ascending);
    ``cum_quantity[k]`` = Q_k (units, non-decreasing, Q_0 = 0 implied); ``price`` the sale price the
    curve was built at (USD/unit). Empty arrays: nothing held, T(0) = 0.
    """

    cum_quantity: np.ndarray
    slopes: np.ndarray
    price: float

    @property
    def holdings(self) -> float:
        """Units held: the largest sale allowed."""
        return float(self.cum_quantity[-1]) if self.cum_quantity.size else 0.0

    @property
    def starts(self) -> np.ndarray:
        """Q_(k-1) for each piece (units)."""
        return np.concatenate(([0.0], self.cum_quantity[:-1]))

    @property
    def values(self) -> np.ndarray:
        """T(Q_k) at each breakpoint (USD)."""
        return np.cumsum(self.slopes * np.diff(np.concatenate(([0.0], self.cum_quantity))))

    @property
    def intercepts(self) -> np.ndarray:
        """a_k with T(q) = max_k (a_k + slopes[k] * q) on [0, holdings] (USD):
        a_k = T(Q_(k-1)) - slopes[k] * Q_(k-1), so piece k passes through its left breakpoint."""
        starts = self.starts
        at_start = np.concatenate(([0.0], self.values[:-1]))
        result: np.ndarray = at_start - self.slopes * starts
        return result

    def value(self, quantity: float) -> float:
        """T(quantity) in USD, summed piece by piece (numpy, no solver)."""
        q = float(quantity)
        if q < 0 or q > self.holdings * (1.0 + _DUST):
            raise ValidationError("sale quantity", f"{q} is outside [0, {self.holdings}]",
                                  "sell between 0 and the units held")
        widths = np.diff(np.concatenate(([0.0], self.cum_quantity)))
        filled = np.clip(q - self.starts, 0.0, widths)
        return math.fsum((self.slopes * filled).tolist())

    def padded(self, n_pieces: int) -> tuple[np.ndarray, np.ndarray]:
        """(intercepts, slopes) of exactly ``n_pieces`` affine pieces with the same max on
        [0, holdings]: the last piece repeated (a fixed shape for cvxpy Parameters). With no lots
        the pieces are all 0 (T = 0; the sale limit then forces q = 0)."""
        k = self.slopes.size
        if n_pieces < max(k, 1):
            raise ValidationError("tax pieces", f"{n_pieces} < the curve's {k} pieces",
                                  "allow at least as many pieces as tax lots")
        if k == 0:
            return np.zeros(n_pieces), np.zeros(n_pieces)
        a, b = self.intercepts, self.slopes
        return (np.concatenate((a, np.full(n_pieces - k, a[-1]))),
                np.concatenate((b, np.full(n_pieces - k, b[-1]))))

    def capped(self, n_pieces: int) -> TaxCurve:
        """At most ``n_pieces`` pieces: the first n - 1 kept, the rest replaced by their chord from
        (Q_(n-1), T(Q_(n-1))) to (holdings, T(holdings)). Exact for sales up to Q_(n-1) and at the
        whole holding; in between the chord lies on or above the convex curve (a sale of the
        dearest lots is never under-priced), and its slope, the mean of ascending slopes, is at
        least the last kept one, so the capped curve stays convex. ``self`` when already short."""
        if n_pieces < 1:
            raise ValidationError("tax pieces", f"is {n_pieces}", "allow at least 1 piece")
        k = self.slopes.size
        if k <= n_pieces:
            return self
        keep = n_pieces - 1
        start = float(self.cum_quantity[keep - 1]) if keep else 0.0
        width = self.holdings - start
        rest = self.values[-1] - (self.values[keep - 1] if keep else 0.0)
        chord = rest / width if width > 0 else float(self.slopes[-1])
        return TaxCurve(cum_quantity=np.append(self.cum_quantity[:keep], self.holdings),
                        slopes=np.append(self.slopes[:keep], chord), price=self.price)

    def in_weights(self, base: float) -> TaxCurve:
        """The same curve with the sale measured as USD sold / ``base`` (weight units) and the tax
        as USD / ``base``: T_w(w) = T(w * base / price) / base. Slopes become tax per USD sold
        (fractions), breakpoints Q_k * price / base; ``price`` becomes 1 (a weight's price)."""
        v = check_finite_positive("base", base)
        return TaxCurve(cum_quantity=self.cum_quantity * self.price / v,
                        slopes=self.slopes / self.price, price=1.0)


def breakpoints(lots: Sequence[TaxLot], price: float, now: datetime, rates: TaxRates, *,
                credit_losses: bool = True, method: LotMethod = LotMethod.SPECIFIC) -> TaxCurve:
    """The convex tax curve T(q) for selling q >= 0 units at ``price`` on ``now``.

    Lots sorted by ascending tax per unit (``sale_order`` with SPECIFIC); lots with equal tax per unit
    are merged into one piece. ``credit_losses=False`` takes a loss lot's tax per unit as 0 (loss
    harvesting off): max(tau, 0) keeps the slopes ascending, so the curve stays convex.

    ``method``: the books' lot method. HIFO and SPECIFIC give the ascending curve above (HIFO's own
    order is the same when every lot has one rate). FIFO books sell the oldest lots first, whose
    tax per unit need not ascend, so their curve is not convex; the curve returned then takes the
    lots in FIFO order with slopes replaced by their running maximum, ``b_k = max(tau_1..tau_k)``:
    convex, exact while the FIFO slopes ascend, and never below the tax the FIFO books realise
    (T(q) = integral of b >= integral of tau).
    """
    fifo = method is LotMethod.FIFO
    order = sale_order(lots, LotMethod.FIFO if fifo else LotMethod.SPECIFIC, price, now, rates)
    slopes: list[float] = []
    widths: list[float] = []
    for i in order:
        tau = tax_per_unit(lots[i], price, now, rates)
        if not credit_losses:
            tau = max(tau, 0.0)
        if fifo and slopes:
            tau = max(tau, slopes[-1])
        if slopes and tau == slopes[-1]:
            widths[-1] += lots[i].quantity
        else:
            slopes.append(tau)
            widths.append(lots[i].quantity)
    return TaxCurve(cum_quantity=np.cumsum(np.asarray(widths, dtype=float)),
                    slopes=np.asarray(slopes, dtype=float), price=_check_price(price))


def futures_tax(realised_pnl: float, rates: TaxRates) -> float:
    """Tax in USD on realised futures PnL (USD): ``rates.futures_rate * pnl``; a loss gives a credit
    (negative tax) at the same rate. The caller decides what it passes as realised (closed or
    reduced positions, funding). A reported cost, not an optimiser term."""
    pnl = float(realised_pnl)
    if not math.isfinite(pnl):
        raise ValidationError("realised futures pnl", f"is {pnl}", "give a finite number")
    return rates.futures_rate * pnl
