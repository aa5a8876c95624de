"""The :class:`~optimizer.solution.Solution` report of one rebalance, assembled from the
lot-rounded positions: trades, target positions, costs, the margin and stress report, tracking
errors before and after, effective weights, the spot leg's trades and tax, and the note when lot
rounding removed most of the solution.

Units: USD for money (x = z V, z the weight-unit positions, V the target base), contracts for
lots, fractions for weights; tracking errors annualised.
"""

from __future__ import annotations

import math
import time

import numpy as np

from models.book import Book
from models.instruments import contract_arrays
from models.risk import tracking_error as models_tracking_error
from models.tax import realised_tax, total_quantity
from optimizer.constraint_base import Constraint
from optimizer.data import ProblemData
from optimizer.rounding import Rounded
from optimizer.solution import (
    Binding,
    ConflictReport,
    Costs,
    MarginReport,
    Plan,
    Position,
    Solution,
    SpotCosts,
    SpotTrade,
    StressResult,
    Trade,
)
from optimizer.spot_leg import after_spot_trade, base_ratio_after

#: spot trades below this (weights) are solver noise and dropped
SPOT_NOISE = 1e-9


def after_spot(d: ProblemData, spot: tuple[np.ndarray, np.ndarray] | None) -> ProblemData:
    """``d`` after the spot leg's trades (``optimizer.spot_leg.after_spot_trade``): the spot
    weights s' = s + b - q, the targets the base then gives, w' = w* + k 1'(b - q) (k = w* for an
    invested base, 0 for a NAV base), both in units of today's V, and the collateral, margin
    budget and stress collateral the trades' cash, fees and pledged value move (``d`` when
    None)."""
    if spot is None:
        return d
    buy, sell = spot
    return after_spot_trade(d, buy - sell, buy + sell)


def base_ratio(d: ProblemData, spot: tuple[np.ndarray, np.ndarray] | None) -> float:
    """V' / V: 1 + 1'(b - q) when the invested base follows the spot leg's net trade
    (optimizer.spot_leg), 1 for a NAV base or without spot trades. The weights and the tracking
    error after the trade are reported as fractions of V' (what the book shows then);
    ``after_spot`` keeps today's V as the unit for the re-checks."""
    return 1.0 if spot is None else base_ratio_after(d, spot[0] - spot[1])


def tracking_error(z: np.ndarray, d: ProblemData) -> float:
    """Annualised tracking error at ``z`` (``models.risk.tracking_error``): e - w* = s + B z - w*,
    Sigma = F F' + diag(sqrt_idio^2), Sigma_basis = Gb Gb' (the problem's own risk model)."""
    cov = d.F @ d.F.T + np.diag(d.sqrt_idio ** 2)
    return models_tracking_error(d.s + d.B @ z - d.w, cov, z, d.Gb @ d.Gb.T)



#: Lot rounding that removes at least this share of the solution's trade notional is reported.
ROUNDING_REPORT_SHARE = 0.5


def rounding_messages(book: Book, d: ProblemData, z_unrounded: np.ndarray,
                      z_rounded: np.ndarray) -> list[str]:
    """A note when lot rounding removed most of the solution: with t = (z - z0) V (USD), the share
    1 - sum|t_rounded| / sum|t_unrounded| >= ROUNDING_REPORT_SHARE (and over 1 USD removed); it
    names the contracts whose trade rounding cut (with one lot in USD) and gives the tracking
    error (annualised) before the trade, of the unrounded solution and left after rounding."""
    V = d.V
    t_u = np.abs((z_unrounded - d.z0) * V)
    t_r = np.abs((z_rounded - d.z0) * V)
    removed = float(t_u.sum() - t_r.sum())
    if t_u.sum() <= 0 or removed < 1.0 or removed / float(t_u.sum()) < ROUNDING_REPORT_SHARE:
        return []
    npc = notional_per_contract(book, d)
    cut = [f"{c.symbol} (one lot {c.lot_step * npc[j]:,.0f} USD, wanted {t_u[j]:,.0f} USD)"
           for j, c in enumerate(book.contracts) if t_u[j] - t_r[j] > 0.5 * max(t_u[j], 1e-12)]
    whole = t_r.sum() <= 1e-9 * max(V, 1.0)
    share = 100 * removed / float(t_u.sum())
    what = "the whole solution" if whole else f"{share:.0f}% of the solution"
    te_now = 100 * tracking_error(d.z0, d)
    return [f"lot rounding removed {what}: {', '.join(cut)}; tracking error {te_now:.3f}% "
            f"now, {100 * tracking_error(z_unrounded, d):.3f}% before rounding, "
            f"{100 * tracking_error(z_rounded, d):.3f}% left after it. Fix: trade a contract with "
            f"a smaller lot, or accept the tracking error left"]


def notional_per_contract(book: Book, d: ProblemData) -> np.ndarray:
    """USD notional of one contract of each of the book's contracts at the prices of ``d``."""
    return contract_arrays(book.contracts).notional_per_contract(d.prices)


def assemble_solution(book: Book, d: ProblemData, rounded: Rounded, z_unrounded: np.ndarray,
              cons: list[Constraint], *, status: str, solver: str,
              tried: tuple[tuple[str, str], ...], solve_s: float, t0: float,
              bindings: tuple[Binding, ...], conflicts: tuple[ConflictReport, ...],
              messages: tuple[str, ...], labels: tuple[str, ...],
              blockers: tuple[str, ...] = (), opposing: tuple[str, ...] = (),
              spot: tuple[np.ndarray, np.ndarray] | None = None,
              plan: Plan | None = None) -> Solution:
    V = d.V
    dp = after_spot(d, spot)
    x = rounded.z * V
    t = x - d.z0 * V
    q0 = book.contracts_vector()
    trades = tuple(Trade(c.symbol, c.underlying, float(t[j]), float(rounded.contracts[j] - q0[j]),
                         float(d.prices[j]))
                   for j, c in enumerate(book.contracts) if abs(t[j]) > 1e-9 * max(V, 1.0))
    positions = tuple(Position(c.symbol, c.underlying, float(x[j]), float(rounded.contracts[j]))
                      for j, c in enumerate(book.contracts))
    costs = Costs(fees=d.costs.fees(t), spread=d.costs.spread(t),
                  impact=d.costs.impact_cost(t) if d.settings.costs.impact else 0.0,
                  funding_carry=float(d.carry @ x), horizon_days=d.settings.costs.horizon_days)
    mm = d.margin_model
    stress = []
    for k, name in enumerate(d.stress_names):  # after the spot trade's cash and pledged value
        stress.append(StressResult(name, mm.stress_surplus(x, dp.stress_coll[k] * V, d.stress_g[k])))
    im, maint = float(mm.initial(x).sum()), float(mm.maintenance(x).sum())
    coll = dp.collateral
    margin = MarginReport(collateral=coll, initial=im, maintenance=maint,
                          initial_utilisation=im / coll if coll > 0 else math.inf,
                          maintenance_ratio=maint / coll if coll > 0 else math.inf,
                          stress=tuple(stress))
    e_before = d.s + d.B @ d.z0
    ratio = base_ratio(d, spot)  # V' / V: the weights after are fractions of the base then
    e_after = (dp.s + d.B @ rounded.z) / ratio
    spot_trades, spot_costs = _spot_report(d, spot)
    return Solution(
        status=status, solver=solver, solvers_tried=tried, solve_time_ms=1e3 * solve_s,
        total_time_ms=1e3 * (time.perf_counter() - t0), nav=d.nav, base=V,
        tracking_error_before=tracking_error(d.z0, d),
        tracking_error_after=tracking_error(rounded.z, dp) / ratio,
        tracking_error_unrounded=tracking_error(z_unrounded, dp) / ratio,
        trades=trades, target_positions=positions, costs=costs, margin=margin,
        gross_leverage=float(np.abs(e_after).sum()), net_exposure=float(e_after.sum()),
        effective_weights_before=dict(zip(d.assets, map(float, e_before), strict=True)),
        effective_weights_after=dict(zip(d.assets, map(float, e_after), strict=True)),
        targets=dict(zip(d.assets, map(float, d.w), strict=True)),
        binding_constraints=bindings, conflicts=conflicts, rounding_repairs=rounded.repairs,
        rounding_broken=rounded.broken, messages=messages, labels=labels, blockers=blockers,
        opposing=opposing, spot_trades=spot_trades, spot_costs=spot_costs, plan=plan,
    )


def _spot_report(d: ProblemData,
                 spot: tuple[np.ndarray, np.ndarray] | None) -> tuple[tuple[SpotTrade, ...],
                                                                      SpotCosts | None]:
    """The spot leg's trades (USD, units) and costs (USD), the tax realised lot by lot with the
    book's lot method (models.tax.realised_tax) and as the optimiser's curve priced it."""
    sd = d.spot
    if sd is None:
        return (), None
    V, n = d.V, len(d.assets)
    buy, sell = spot if spot is not None else (np.zeros(n), np.zeros(n))
    bought, sold = buy * V, sell * V
    gross = bought + sold
    impact = (float(sd.impact_cost @ (buy ** 1.5 + sell ** 1.5)) * V
              if d.settings.costs.impact else 0.0)
    taxes, taxes_opt = np.zeros(n), np.zeros(n)
    if sd.rates is not None and sd.curves is not None:
        for i in np.flatnonzero(sell > 0):
            units = min(float(sold[i] / sd.prices[i]), total_quantity(sd.lots[i]))
            taxes[i] = realised_tax(sd.lots[i], units, sd.settings.lot_method, float(sd.prices[i]),
                                    sd.now, sd.rates)[0]
            curve = sd.curves[i]
            taxes_opt[i] = curve.value(min(float(sell[i]), curve.holdings)) * V
    trades = tuple(
        SpotTrade(asset=a, notional=float(bought[i] - sold[i]),
                  units=float((bought[i] - sold[i]) / sd.prices[i]), price=float(sd.prices[i]),
                  bought=float(bought[i]), sold=float(sold[i]), tax=float(taxes[i]),
                  tax_optimiser=float(taxes_opt[i]))
        for i, a in enumerate(d.assets) if gross[i] > SPOT_NOISE * V)
    costs = SpotCosts(fees=float(sd.fee @ gross), spread=float(sd.half_spread @ gross), impact=impact,
                      tax=math.fsum(taxes.tolist()), tax_optimiser=math.fsum(taxes_opt.tolist()),
                      lot_method=sd.settings.lot_method.value)
    return trades, costs
