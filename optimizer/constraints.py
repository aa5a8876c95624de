"""Constraints, one small class each, in weight units (USD / V).

Each builds its cvxpy constraints once with Parameters (DPP), optionally with a scalar elastic slack
added to its right-hand side (for the infeasibility diagnosis), sets its Parameter values per
rebalance, and re-checks itself with numpy: ``violation(z, d)`` is the largest amount (weight units)
by which z breaks it, 0 when satisfied. ``rows`` name each scalar row for the dual report, and
``per_unit`` converts a dual (objective per weight unit of right-hand side) to the user unit.
``explain`` turns a binding row's dual into a concrete loosening and its first-order effect in
user units (``predict``: tracking error in bp, trading cost in USD); it reads the solve from the
context's variables (after ``HedgeProblem.unpack``) and the data of the last ``update``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

import cvxpy as cp
import numpy as np

from models.margin import tier_maintenance
from optimizer.context import Context
from optimizer.cvxpy_adapter import assign
from optimizer.data import ProblemData, Structure
from optimizer.spot_leg import spot_trade
from optimizer.terms import BasisRisk, TrackingVariance, terms_for

#: An explanation's step predicts a fall of at most this share of the objective's size
#: (Constraint.predict)
PREDICTION_SHARE = 0.25
#: ... and loosens the row by at most this share of its current bound (Constraint.start_step)
STEP_SHARE = 0.1
#: a predicted fall below this share of the objective's size is solver noise: the row touches its
#: bound but holds nothing back (Constraint.explain says so)
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


def _fmt(x: float) -> str:
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
        return f"loosening it by {_fmt(step)} {self.unit}"

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
        solution; the spot leg's terms count 0 here), so it is never larger than the objective
        and first order stays close: for a value k (b* - b)^2 of the bound b (no other row
        starting or stopping to bind within the step) a fall of at most a quarter of it errs by
        at most 1/16. The optimal value is convex in the bound, so the actual fall never exceeds
        the prediction. TE is at the solve's positions and spot trades (before lot rounding).
        """
        d, ctx = self._data, self._ctx
        if d is None or ctx is None or ctx.z.value is None or not dual_user > 0:
            return None
        z = np.asarray(ctx.z.value, dtype=float)
        trade = spot_trade(ctx)
        if trade is not None and trade.value is not None:
            d = replace(d, s=d.s + np.asarray(trade.value, dtype=float))
        te2 = max(TrackingVariance().value(z, d) + BasisRisk().value(z, d), 0.0)
        size = sum(abs(t.value(z, d)) for t in terms_for(d.structure))
        rate = dual_user * self.collateral_factor()
        step = self.start_step(row, d)
        while step > 0 and rate * step > PREDICTION_SHARE * size:
            step = _next_down(step)
        if not step > 0:  # pragma: no cover - a zero objective with a positive dual
            return None
        fall = rate * step
        return Prediction(step=step, step_weight=step * self.per_unit(d) * self.collateral_factor(),
                          objective_change=-fall, objective_size=size,
                          tracking_error=math.sqrt(te2),
                          tracking_error_after=math.sqrt(te2 - fall) if fall <= te2 else None,
                          usd=fall * d.V / d.gamma_trade if d.gamma_trade > 0 else None)

    def explain(self, row: str, dual_user: float) -> str:
        """One line saying what a concrete loosening of ``row`` does, in user units: the predicted
        fall of the objective (first order, from the dual), as the cut of tracking error it equals
        at unchanged costs (TE^2 is the objective's risk part) and as USD of trading cost (the
        objective prices a USD of it at gamma_trade / V)."""
        note = self.note(row)
        head = f"{row} binds{' (' + note + ')' if note else ''}"
        p = self.predict(row, dual_user)
        if p is None:
            return f"{head}: loosening it lowers the objective by {dual_user:.3g} per {self.unit}"
        fall = -p.objective_change
        if fall < NEGLIGIBLE_SHARE * p.objective_size:
            return (f"{row} is at its bound but holds nothing back: {self.step_phrase(row, p.step)} "
                    f"would change the objective by less than {NEGLIGIBLE_SHARE:g} of its size "
                    f"(the dual is at solver precision)")
        out = (f"{head}: {self.step_phrase(row, p.step)} would lower the objective by {fall:.3g} "
               f"(first order; risk and costs now {p.objective_size:.3g})")
        worth = []
        if p.tracking_error_after is not None:
            bp = 1e4 * (p.tracking_error_after - p.tracking_error)
            worth.append(f"cutting tracking error from {p.tracking_error:.3%} to "
                         f"{p.tracking_error_after:.3%} ({bp:+.2f} bp) at the same costs")
        if p.usd is not None:
            worth.append(f"{p.usd:,.2f} USD less trading cost")
        return out + (": worth " + ", or ".join(worth) if worth else "")


def _s(slack: cp.Variable | None) -> cp.Expression | float:
    return slack if slack is not None else 0.0


class InitialMargin(Constraint):
    """sum_j |x_j| / L_j <= budget, i.e. inv_lev' a <= im_budget (weight units).

    The budget is collateral - buffer by default; with a relative buffer f and hysteresis it is
    the current positions' margin clipped into [(1 - f) collateral - buffer, collateral - buffer]
    (optimizer.data.MarginBudget): a Parameter value, so the row's form never changes.
    """

    name = "margin"
    holding: bool = False
    per_collateral: float = 1.0

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        self.inv_lev = ctx.param("inv_lev", ctx.structure.n_contracts, nonneg=True)
        self.budget = ctx.param("im_budget")
        self.cons = [self.inv_lev @ ctx.a <= self.budget + _s(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.inv_lev, d.inv_lev)
        assign(self.budget, d.im_budget)
        mb = d.margin_budget
        self.holding = mb is not None and mb.holding
        #: budget gained per unit of collateral (1 - f at the relative buffer's target)
        self.per_collateral = mb.per_collateral if mb is not None else 1.0

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        return np.array([max(float(d.inv_lev @ np.abs(z)) - d.im_budget, 0.0)])

    def bound(self, row: str, d: ProblemData) -> float:
        return d.im_budget * d.V

    def collateral_factor(self) -> float:
        """Budget per USD of collateral: 1 - f at a relative buffer's target, 1 otherwise; 1 while
        holding (the explained change is then 1 USD of budget)."""
        return 1.0 if self.holding else self.per_collateral

    def step_phrase(self, row: str, step: float) -> str:
        if self.holding:
            return f"{_fmt(step)} USD more margin budget"
        return f"{_fmt(step)} USD more collateral"

    def note(self, row: str) -> str:
        if self.holding:
            return ("at the margin the current positions hold (hysteresis: above the relative "
                    "buffer's target, below the hard limit)")
        return ""


class StressMargin(Constraint):
    """No liquidation in scenario s: C_s + g_s' z - sum_j MM_j(|z_j| (1 + g_sj)) >= 0, with
    MM_j(n) = max_k (mmr_jk n - cum_jk / V) >= 0, g_s = B' r_s, C_s = collateral(r_s) / V.
    The per-contract coefficients mmr_jk (1 + g_sj) are precomputed into one Parameter (DPP).
    """

    unit = "USD of collateral"

    def __init__(self, index: int, scenario: str) -> None:
        self.index = index
        self.name = f"stress[{scenario}]"

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        st = ctx.structure
        M, K = st.n_contracts, st.n_tiers
        self.coef = ctx.param(f"stress_coef_{self.index}", (M, K), nonneg=True)
        self.cum = ctx.param(f"stress_cum_{self.index}", (M, K))
        self.g = ctx.param(f"stress_g_{self.index}", M)
        self.coll = ctx.param(f"stress_coll_{self.index}")
        m = cp.Variable(M, name=f"mm_{self.index}")
        a_mat = cp.reshape(ctx.a, (M, 1), order="F") @ np.ones((1, K))
        self.cons = [self.coll + self.g @ ctx.z - cp.sum(m) + _s(slack) >= 0,
                     cp.reshape(m, (M, 1), order="F") @ np.ones((1, K))
                     >= cp.multiply(self.coef, a_mat) - self.cum]
        if st.mm_floor:
            # MM >= 0 is implied when every first bracket has cum <= 0 (then m >= mmr_0 |z| >= 0);
            # a row, not a variable attribute: the lean PIQP path passes no variable bounds
            self.cons.append(m >= 0)
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        g = d.stress_g[self.index]
        assign(self.coef, d.mmr * (1.0 + g)[:, None])
        assign(self.cum, d.cum)
        assign(self.g, g)
        assign(self.coll, float(d.stress_coll[self.index]))

    def surplus(self, z: np.ndarray, d: ProblemData) -> float:
        """Margin surplus after the shock (weight units); negative = liquidation."""
        g = d.stress_g[self.index]
        mm = tier_maintenance(d.mmr, d.cum, np.abs(z) * (1.0 + g))
        return float(d.stress_coll[self.index] + g @ z - mm.sum())

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        return np.array([max(-self.surplus(z, d), 0.0)])

    def bound(self, row: str, d: ProblemData) -> float:
        return float(d.stress_coll[self.index]) * d.V

    def step_phrase(self, row: str, step: float) -> str:
        return f"{_fmt(step)} USD more collateral"

    def note(self, row: str) -> str:
        return "the book would sit at its liquidation edge"


class GrossLeverage(Constraint):
    """sum_i |s_i + (B z)_i| <= L_max (gross effective exposure as a multiple of V; with the spot
    leg, e = s + b - q + B z through ``ctx.effective()``)."""

    name = "gross_leverage"
    unit = "x of leverage"

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        self.lmax = ctx.param("max_gross", nonneg=True)
        self.cons = [cp.sum(cp.abs(ctx.effective())) <= self.lmax + _s(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.lmax, d.max_gross)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        return np.array([max(float(np.abs(d.s + d.B @ z).sum()) - d.max_gross, 0.0)])

    def per_unit(self, d: ProblemData) -> float:
        return 1.0

    def nominal_step(self, d: ProblemData) -> float:
        return 0.1

    def bound(self, row: str, d: ProblemData) -> float:
        return d.max_gross

    def step_phrase(self, row: str, step: float) -> str:
        lmax = self._data.max_gross if self._data is not None else math.nan
        return f"allowing {step:g}x more gross leverage ({lmax:.2f}x -> {lmax + step:.2f}x)"


class PositionLimit(Constraint):
    """|x_j| <= cap_j for the capped contracts: a_j <= cap_j / V. The cap of each contract is the
    smallest of the user's cap, the tier limit at the chosen leverage and the proxy-correlation rule.
    """

    name = "position_limit"

    def __init__(self, capped: tuple[int, ...]) -> None:
        self.idx = list(capped)

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        self.cap = ctx.param("caps", len(self.idx), nonneg=True)
        self.cons = [ctx.a[self.idx] <= self.cap + _s(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.cap, d.caps[self.idx])

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        result: np.ndarray = np.maximum(np.abs(z[self.idx]) - d.caps[self.idx], 0.0)
        return result

    def rows(self, d: ProblemData) -> list[str]:
        return [f"{d.cap_source[j]}[{d.contracts[j]}]" for j in self.idx]

    def bound(self, row: str, d: ProblemData) -> float:
        return float(d.caps[self.idx[self.rows(d).index(row)]]) * d.V

    def step_phrase(self, row: str, step: float) -> str:
        return f"raising the cap by {_fmt(step)} USD"


class ClusterBands(Constraint):
    """For each cluster G: |sum_{i in G} (e_i - w*_i)| <= band_G (weights)."""

    name = "cluster_band"
    unit = "pp of band"

    def __init__(self, members: tuple[tuple[int, ...], ...], n_assets: int) -> None:
        self.S = np.zeros((len(members), n_assets))
        for g, mem in enumerate(members):
            self.S[g, list(mem)] = 1.0

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        self.band = ctx.param("cluster_band", self.S.shape[0], nonneg=True)
        dev = self.S @ ctx.deviation()
        self.cons = [dev <= self.band + _s(slack), -dev <= self.band + _s(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.band, d.cluster_bands)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        dev = self.S @ (d.s + d.B @ z - d.w)
        result: np.ndarray = np.maximum(np.abs(dev) - d.cluster_bands, 0.0)
        return result

    def rows(self, d: ProblemData) -> list[str]:
        return [f"cluster_band[{n}]" for n in d.cluster_names]

    def dual_rows(self) -> np.ndarray:
        """|y_up - y_dn| per band: the objective's rate per unit of band (both sides widened). One
        side binds when the band is > 0 (the other's dual is then 0, so this is their sum); at
        band 0 both bind and only their difference is determined (an interior-point solver may
        return any y_up = y_dn + c), the smallest sum being the difference."""
        up = np.atleast_1d(np.asarray(self.cons[0].dual_value, dtype=float))
        dn = np.atleast_1d(np.asarray(self.cons[1].dual_value, dtype=float))
        result: np.ndarray = np.abs(up - dn)
        return result

    def per_unit(self, d: ProblemData) -> float:
        return 0.01

    def nominal_step(self, d: ProblemData) -> float:
        return 1.0

    def bound(self, row: str, d: ProblemData) -> float:
        return 100.0 * float(d.cluster_bands[self.rows(d).index(row)])

    def step_phrase(self, row: str, step: float) -> str:
        return f"widening the band by {step:g} pp"


class VolatilityCap(Constraint):
    """sqrt(e' Sigma e) <= vol_max (annualised): ||[F' e; sqrt(d) * e]||_2 <= vol_max. Conic (SOC)."""

    name = "vol_cap"
    unit = "pp of volatility"

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        st = ctx.structure
        self.FtB = ctx.param("vol_FtB", (st.n_factors, st.n_contracts))
        self.Fts = ctx.param("vol_Fts", st.n_factors)
        self.vmax = ctx.param("vol_max", nonneg=True)
        spot = spot_trade(ctx)  # the spot leg: e = s + b - q + B z
        if spot is None:
            parts = [self.FtB @ ctx.z + self.Fts]
        else:
            self.Ft = ctx.param("vol_Ft", (st.n_factors, st.n_assets))
            parts = [self.FtB @ ctx.z + self.Ft @ spot + self.Fts]
        if st.idio:
            self.sd = ctx.param("vol_sqrt_idio", st.n_assets, nonneg=True)
            self.sd_s = ctx.param("vol_sqrt_idio_s", st.n_assets)
            moved = ctx.B @ ctx.z if spot is None else ctx.B @ ctx.z + spot
            parts.append(cp.multiply(self.sd, moved) + self.sd_s)
        self.cons = [cp.norm(cp.hstack(parts), 2) <= self.vmax + _s(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.FtB, d.FtB)
        assign(self.Fts, d.F.T @ d.s)
        assign(self.vmax, d.vol_cap)
        if hasattr(self, "Ft"):
            assign(self.Ft, d.F.T)
        if hasattr(self, "sd"):
            assign(self.sd, d.sqrt_idio)
            assign(self.sd_s, d.sqrt_idio * d.s)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        e = d.s + d.B @ z
        vol = np.sqrt(np.sum((d.F.T @ e) ** 2) + np.sum((d.sqrt_idio * e) ** 2))
        return np.array([max(float(vol) - d.vol_cap, 0.0)])

    def per_unit(self, d: ProblemData) -> float:
        return 0.01

    def nominal_step(self, d: ProblemData) -> float:
        return 1.0

    def bound(self, row: str, d: ProblemData) -> float:
        return 100.0 * d.vol_cap

    def step_phrase(self, row: str, step: float) -> str:
        return f"allowing {step:g} pp more volatility"


class FundingBudget(Constraint):
    """sum_j horizon_j r_j z_j <= budget / V: carry paid over the horizon stays within budget."""

    name = "funding_budget"

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        self.carry = ctx.param("budget_carry", ctx.structure.n_contracts)
        self.budget = ctx.param("funding_budget")
        self.cons = [self.carry @ ctx.z <= self.budget + _s(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.carry, d.carry)
        assign(self.budget, d.funding_budget)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        return np.array([max(float(d.carry @ z) - d.funding_budget, 0.0)])

    def bound(self, row: str, d: ProblemData) -> float:
        return d.funding_budget * d.V

    def step_phrase(self, row: str, step: float) -> str:
        return f"{_fmt(step)} USD more funding budget"


class TradeLimit(Constraint):
    """|t_j| <= tau_j (USD, e.g. a fraction of ADV): u_j <= tau_j / V on the limited contracts."""

    name = "trade_limit"

    def __init__(self, limited: tuple[int, ...]) -> None:
        self.idx = list(limited)

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        self.tau = ctx.param("trade_limit", len(self.idx), nonneg=True)
        self.cons = [ctx.u[self.idx] <= self.tau + _s(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.tau, d.trade_limits[self.idx])

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        result: np.ndarray = np.maximum(np.abs(z - d.z0)[self.idx] - d.trade_limits[self.idx], 0.0)
        return result

    def rows(self, d: ProblemData) -> list[str]:
        return [f"trade_limit[{d.contracts[j]}]" for j in self.idx]

    def bound(self, row: str, d: ProblemData) -> float:
        return float(d.trade_limits[self.idx[self.rows(d).index(row)]]) * d.V

    def step_phrase(self, row: str, step: float) -> str:
        return f"allowing {_fmt(step)} USD more trade"


class ExpiryGuard(Constraint):
    """A dated contract within ``min_days_to_expiry`` of its expiry is only reduced or closed:
    ``0 <= z_j / z0_j <= 1`` (``z_j = 0`` when ``z0_j = 0``), i.e. ``|x_j| <= |x0_j|`` with the
    same sign. On the dated contracts G (fixed per book), with ``m_j`` = 1 when j is near expiry
    and 0 otherwise (a Parameter, so the row's form never changes as contracts come near expiry):

        m_j z_j <= m_j max(z0_j, 0)   and   -m_j z_j <= m_j max(-z0_j, 0)    (weight units)

    For m_j = 0 both rows read 0 <= 0. ``m_j z_j`` is a Parameter times the variable (DPP).
    """

    name = "min_days_to_expiry"
    unit = "USD of position"

    def __init__(self, guarded: tuple[int, ...]) -> None:
        self.idx = list(guarded)

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        G = len(self.idx)
        self.m = ctx.param("expiry_near", G, nonneg=True)
        self.hi = ctx.param("expiry_hi", G, nonneg=True)
        self.lo = ctx.param("expiry_lo", G, nonneg=True)
        mz = cp.multiply(self.m, ctx.z[self.idx])
        self.cons = [mz <= self.hi + _s(slack), -mz <= self.lo + _s(slack)]
        return self.cons

    def _bounds(self, d: ProblemData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        near = d.near_expiry if d.near_expiry is not None else np.zeros(len(d.contracts))
        m = near[self.idx]
        z0 = d.z0[self.idx]
        return m, m * np.maximum(z0, 0.0), m * np.maximum(-z0, 0.0)

    def update(self, d: ProblemData) -> None:
        self._data = d
        m, hi, lo = self._bounds(d)
        assign(self.m, m)
        assign(self.hi, hi)
        assign(self.lo, lo)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        m, hi, lo = self._bounds(d)
        mz = m * z[self.idx]
        result: np.ndarray = np.maximum(np.maximum(mz - hi, -mz - lo), 0.0)
        return result

    def rows(self, d: ProblemData) -> list[str]:
        return [f"min_days_to_expiry[{d.contracts[j]}]" for j in self.idx]

    def dual_rows(self) -> np.ndarray:
        """m_j |y_up - y_dn| per guarded contract: 0 off the near-expiry ones (their rows read
        0 <= 0 and carry arbitrary duals), and the difference of the pair where both bind (z0_j = 0
        near expiry pins z_j = 0: only the difference is determined, see ClusterBands.dual_rows)."""
        up = np.atleast_1d(np.asarray(self.cons[0].dual_value, dtype=float))
        dn = np.atleast_1d(np.asarray(self.cons[1].dual_value, dtype=float))
        near = np.asarray(self.m.value, dtype=float) > 0
        return np.where(near, np.abs(up - dn), 0.0)

    def bound(self, row: str, d: ProblemData) -> float:
        return float(abs(d.z0[self.idx[self.rows(d).index(row)]])) * d.V

    def step_phrase(self, row: str, step: float) -> str:
        return f"{_fmt(step)} USD more of the contract"

    def note(self, row: str) -> str:
        return "within min_days_to_expiry of its expiry it may only be reduced or closed"


def constraints_for(st: Structure) -> list[Constraint]:
    """The constraints this problem's settings switch on, in a fixed order."""
    out: list[Constraint] = []
    if st.margin:
        out.append(InitialMargin())
    out.extend(StressMargin(k, n) for k, n in enumerate(st.stress_names))
    if st.leverage:
        out.append(GrossLeverage())
    if st.capped:
        out.append(PositionLimit(st.capped))
    if st.cluster_members:
        out.append(ClusterBands(st.cluster_members, st.n_assets))
    if st.vol_cap:
        out.append(VolatilityCap())
    if st.funding_budget:
        out.append(FundingBudget())
    if st.trade_limited:
        out.append(TradeLimit(st.trade_limited))
    if st.expiry_guarded:
        out.append(ExpiryGuard(st.expiry_guarded))
    return out
