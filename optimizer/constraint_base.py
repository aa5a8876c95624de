"""What every constraint is: the :class:`Constraint` base, in weight units (USD / V).

Each builds its cvxpy constraints once with Parameters (DPP), optionally with a scalar elastic slack
added to its right-hand side (for the infeasibility diagnosis), sets its Parameter values per
rebalance, and re-checks itself with numpy: ``violation(z, d)`` is the largest amount (weight units)
by which z breaks it, 0 when satisfied. ``rows`` name each scalar row for the dual report, and
``per_unit`` converts a dual (objective per weight unit of right-hand side) to the user unit.
``explain`` turns a binding row's dual into a concrete loosening and its first-order effect in
user units (``predict``: tracking error in bp, trading cost in USD); it reads the solve from the
context's variables (after ``HedgeProblem.unpack``) and the data of the last ``update``.

The concrete rows live in optimizer.margin_constraints (initial and stress-safe margin) and
optimizer.constraints (the others, and ``constraints_for``, the set a problem's settings switch on).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from optimizer.context import Context
from optimizer.data import ProblemData
from optimizer.spot_leg import after_spot_weights, base_ratio_after, spot_objective_size, spot_trade
from optimizer.terms import BasisRisk, TrackingVariance, terms_for

__all__ = ["NEGLIGIBLE_SHARE", "PREDICTION_SHARE", "STEP_SHARE", "Constraint", "Prediction",
           "elastic", "fmt_step"]

#: An explanation's step predicts a fall of at most this share of the objective's size
#: (Constraint.predict)
PREDICTION_SHARE = 0.25
#: ... and loosens the row by at most this share of its current bound (Constraint.start_step)
STEP_SHARE = 0.1
#: a predicted fall below this share of the objective's size is solver noise: the row holds nothing
#: back, whether it touches its bound or not (Constraint.explain says so)
NEGLIGIBLE_SHARE = 1e-6


@dataclass(frozen=True)
class Prediction:
    """What loosening a binding row by ``step`` user units does, to first order (from its dual).

    ``step_weight``: the same step in the row's right-hand side (weight units, after the margin
    row's collateral factor); ``objective_change``: the predicted change of the unscaled objective
    (< 0, objective units: annualised variance and gamma-weighted costs / V); ``objective_size``:
    the sum of the objective terms' absolute values at the solution; ``tracking_error`` (annualised,
    0.01 = 1%) now and ``tracking_error_after`` if the whole fall came from TE^2 at unchanged costs
    (None when the fall exceeds TE^2); ``usd``: the fall as USD of trading cost (objective x V /
    gamma_trade; None when gamma_trade is 0).
    """

    step: float
    step_weight: float
    objective_change: float
    objective_size: float
    tracking_error: float
    tracking_error_after: float | None
    usd: float | None


def _round_down_125(x: float) -> float:
    """The largest 1, 2 or 5 x 10^k not above ``x`` > 0 (0 for x <= 0)."""
    if not x > 0 or not math.isfinite(x):
        return 0.0
    k = math.floor(math.log10(x))
    for m in (5.0, 2.0, 1.0):
        if m * 10.0**k <= x * (1 + 1e-12):
            return m * 10.0**k
    return 10.0 ** (k - 1) * 5.0  # pragma: no cover - floor(log10) rounding


def _next_down(x: float) -> float:
    """The next 1-2-5 value below ``x`` (which is one); 0 at or below 1e-12."""
    nxt = _round_down_125(x * 0.99)
    return nxt if nxt > 1e-12 else 0.0


def fmt_step(x: float) -> str:
    """A step for the text: thousands separators from 1 up, else the short form."""
    return f"{x:,.0f}" if x >= 1 and float(x).is_integer() else f"{x:g}"


class Constraint(ABC):
    """A named, switchable constraint."""

    name: str = "constraint"
    unit: str = "USD"
    #: how many user units one weight unit of right-hand side is (V for USD limits)
    cons: list[cp.Constraint]

    @abstractmethod
    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        """cvxpy constraints (right-hand side relaxed by ``slack`` >= 0 when given)."""

    @abstractmethod
    def update(self, d: ProblemData) -> None:
        """Set the Parameter values from ``d``."""

    @abstractmethod
    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        """Per-row violation at ``z`` (weight units, >= 0 means broken by that much)."""

    def rows(self, d: ProblemData) -> list[str]:
        """A label per row of :meth:`violation`."""
        return [self.name]

    def per_unit(self, d: ProblemData) -> float:
        """Weight units of right-hand side per user unit (1/V for USD limits)."""
        return 1.0 / d.V

    def dual_rows(self) -> np.ndarray:
        """The dual value per row from the last cvxpy solve (>= 0), aligned with :meth:`rows`."""
        return np.atleast_1d(np.asarray(self.cons[0].dual_value, dtype=float))

    #: the state the explanation reads: the context (its variables hold the solve after
    #: ``HedgeProblem.unpack``) and the data of the last :meth:`update`
    _ctx: Context | None = None
    _data: ProblemData | None = None

    def nominal_step(self, d: ProblemData) -> float:
        """The concrete loosening an explanation starts from, in user units: 1% of the base V
        rounded down to 1, 2 or 5 x 10^k USD (shrunk by :meth:`predict` when first order would
        promise too much)."""
        return _round_down_125(0.01 * d.V)

    def bound(self, row: str, d: ProblemData) -> float:
        """The row's current bound in user units (nan when it has no useful size)."""
        return math.nan

    def start_step(self, row: str, d: ProblemData) -> float:
        """:meth:`nominal_step`, or ``STEP_SHARE`` of the row's :meth:`bound` when smaller (both
        rounded down to 1-2-5 values): a step small against the bound keeps first order close
        (a band of 1 pp is explained by 0.1 pp, not by doubling it)."""
        step = self.nominal_step(d)
        b = abs(self.bound(row, d))
        if math.isfinite(b) and b > 0:
            step = min(step, _round_down_125(STEP_SHARE * b))
        return step

    def collateral_factor(self) -> float:
        """Right-hand side gained per user unit of the explained change (1; the margin row's
        collateral buys 1 - f of budget at a relative buffer's target)."""
        return 1.0

    def step_phrase(self, row: str, step: float) -> str:
        """What loosening ``row`` by ``step`` user units means, e.g. "1,000 USD more cap"."""
        return f"loosening it by {fmt_step(step)} {self.unit}"

    def note(self, row: str) -> str:
        """Why ``row`` binds, when that needs saying ("" otherwise)."""
        return ""

    def predict(self, row: str, dual_user: float) -> Prediction | None:
        """The first-order effect of a concrete loosening of ``row`` (None before a solve).

        ``dual_user`` is d objective / d bound per user unit (objective units: the unscaled
        objective TE^2 + basis + gamma_trade x trading cost / V + ...). The step starts at
        :meth:`start_step` (at most ``STEP_SHARE`` of the bound) and goes down a 1-2-5 ladder
        until the predicted fall dual_user x step x :meth:`collateral_factor` is at most
        ``PREDICTION_SHARE`` of the objective's size (the sum of its terms' absolute values at the
        solution, the spot leg's trading cost and tax at its solved trades included), so it is never
        larger than the objective
        and first order stays close: for a value k (b* - b)^2 of the bound b (no other row
        starting or stopping to bind within the step) a fall of at most a quarter of it errs by
        at most 1/16. The optimal value is convex in the bound, so the actual fall never exceeds
        the prediction: the explanation says "at most" (where the dual is not unique, at a bound
        of 0 say, the solver's may be far above the slope a re-solve shows). TE is at the solve's
        positions and spot trades (before lot rounding).
        """
        d, ctx = self._data, self._ctx
        if d is None or ctx is None or ctx.z.value is None or not dual_user > 0:
            return None
        z = np.asarray(ctx.z.value, dtype=float)
        trade = spot_trade(ctx)
        ratio = 1.0  # V' / V: TE is reported as a fraction of the base after the spot trades
        if trade is not None and trade.value is not None:
            moved = np.asarray(trade.value, dtype=float)
            d, ratio = after_spot_weights(d, moved), base_ratio_after(d, moved)
        te2 = max(TrackingVariance().value(z, d) + BasisRisk().value(z, d), 0.0)
        size = sum(abs(t.value(z, d)) for t in terms_for(d.structure)) + spot_objective_size(ctx, d)
        rate = dual_user * self.collateral_factor()
        step = self.start_step(row, d)
        while step > 0 and rate * step > PREDICTION_SHARE * size:
            step = _next_down(step)
        if not step > 0:  # pragma: no cover - a zero objective with a positive dual
            return None
        fall = rate * step
        return Prediction(step=step, step_weight=step * self.per_unit(d) * self.collateral_factor(),
                          objective_change=-fall, objective_size=size,
                          tracking_error=math.sqrt(te2) / ratio,
                          tracking_error_after=(math.sqrt(te2 - fall) / ratio if fall <= te2
                                                else None),
                          usd=fall * d.V / d.gamma_trade if d.gamma_trade > 0 else None)

    def holds_back(self, row: str, dual_user: float) -> bool:
        """False when :meth:`predict`'s loosening of ``row`` moves the objective by less than
        ``NEGLIGIBLE_SHARE`` of its size (a dual at solver precision: the row holds nothing back,
        whether it touches its bound or not); True otherwise, also without a prediction."""
        p = self.predict(row, dual_user)
        return p is None or -p.objective_change >= NEGLIGIBLE_SHARE * p.objective_size

    def explain(self, row: str, dual_user: float) -> str:
        """One line saying what a concrete loosening of ``row`` does, in user units: the predicted
        fall of the objective (first order, from the dual), as the cut of tracking error it equals
        at unchanged costs (TE^2 is the objective's risk part) and as USD of trading cost (the
        objective prices a USD of it at gamma_trade / V). The tracking error is the optimiser's
        answer's, before lot rounding (the report's 'after' is the rounded book's)."""
        note = self.note(row)
        head = f"{row} binds{' (' + note + ')' if note else ''}"
        p = self.predict(row, dual_user)
        if p is None:
            return f"{head}: loosening it lowers the objective by {dual_user:.3g} per {self.unit}"
        fall = -p.objective_change
        if fall < NEGLIGIBLE_SHARE * p.objective_size:
            return (f"{row} holds nothing back: {self.step_phrase(row, p.step)} would change the "
                    f"objective by less than {NEGLIGIBLE_SHARE:g} of its size (its dual is at "
                    f"solver precision: the row may touch its bound or be well inside it)")
        out = (f"{head}: {self.step_phrase(row, p.step)} would lower the objective by at most "
               f"{fall:.3g} (first order, an upper bound; the objective's terms now total "
               f"{p.objective_size:.3g} in absolute value)")
        worth = []
        if p.tracking_error_after is not None:
            bp = 1e4 * (p.tracking_error_after - p.tracking_error)
            worth.append(f"cutting tracking error (before lot rounding) from "
                         f"{p.tracking_error:.3%} to {p.tracking_error_after:.3%} ({bp:+.2f} bp) "
                         "at the same costs")
        if p.usd is not None:
            worth.append(f"{p.usd:,.2f} USD less trading cost")
        return out + (": worth at most " + ", or ".join(worth) if worth else "")


def elastic(slack: cp.Variable | None) -> cp.Expression | float:
    """What a row adds to its right-hand side: the scalar elastic slack of the infeasibility
    diagnosis's re-solve, else 0 (weight units)."""
    return slack if slack is not None else 0.0
