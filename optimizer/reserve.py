"""The stablecoin reserve as a number to size, and the default long/short stress scenarios.

Reserve. In stress scenario s (asset returns r_s, contract returns g_s = B' r_s) the margin surplus
at futures positions x (USD) with the wallet holding R (USD: stablecoin cash + uPnL) is

    surplus_s(R) = R + sum_i C_i(u_i (1 + r_s,i)) + g_s' x - sum_j MM_j(|x_j| (1 + g_sj)),

pledged spot re-priced through its rule (``Book.stressed_collateral``). It is affine in R with
slope 1, so with surplus_s the surplus at today's wallet R_now, the smallest reserve keeping
scenario s solvent is R_s = R_now - surplus_s. The exchange also needs the positions' initial
margin to open them, R + sum_i C_i(u_i) >= sum_j |x_j| / L_j: the row "initial margin", surplus
R + P_0 - IM(x), R_IM = R_now - surplus. The smallest reserve is R = max(0, R_IM, max_s R_s)
(closed form, no solve). Its opportunity cost is R x ``reserve_yield`` a year.
With ``costs.reserve_cost`` the objective prices it too (optimizer.reserve_term: the same R in
weights, times reserve_yield x horizon_days / 365), and this closed form reports the reserve of the
positions the solve returns, once the trade to them is paid (its fees, spread and impact come out
of the wallet; the objective's term leaves them out, a difference of those costs times
reserve_yield x horizon_days / 365 in the objective).

Preset scenarios. A long/short overlay barely moves under a common move; ``each_and_all`` also
moves each asset alone: for N assets and move X, "<asset> -X" and "<asset> +X" for each asset, then
"all -X" and "all +X" (2N + 2 scenarios).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from models.book import Book
from models.errors import ValidationError
from models.margin import MarginModel
from models.market import MarketSnapshot
from optimizer.prepare import _stress_returns as stress_returns
from optimizer.settings import OptimizerSettings, StressScenario
from optimizer.solution import ReserveSizing, ScenarioReserve, Solution
from optimizer.spot_book import book_after_spot

#: the presets ``constraints.stress_preset`` accepts
STRESS_PRESETS = ("each_and_all",)
#: the reserve's row for the positions' initial margin (beside the stress scenarios)
INITIAL_MARGIN = "initial margin"


def size_reserve(book: Book, market: MarketSnapshot, positions: np.ndarray,
                 scenarios: Sequence[StressScenario], reserve_yield: float = 0.04, *,
                 horizon_days: float | None = None, trade_cost_usd: float = 0.0) -> ReserveSizing:
    """The smallest wallet reserve R (USD) that opens futures positions ``positions`` (signed USD
    notional per contract, the book's contract order, at ``market``'s marks: their initial margin)
    and keeps every scenario's stress surplus >= 0: R = max(0, max_s (R_now - surplus_s)) over the
    scenarios and the "initial margin" row (module docstring). ``trade_cost_usd`` (>= 0): what the
    trade to those positions pays from the wallet (fees, spread, impact); every row's surplus is
    taken after it, so the reserve is enough once the trade is paid.

    ``horizon_days``: set when the objective priced the reserve (``costs.reserve_cost``, the
    optimizer.reserve_term term R x reserve_yield x horizon_days / 365); None when only reported."""
    x = np.asarray(positions, dtype=float)
    if x.shape != (len(book.contracts),):
        raise ValidationError("positions", f"has shape {x.shape}",
                              f"give one USD notional per contract ({len(book.contracts)})")
    if not (np.isfinite(reserve_yield) and reserve_yield >= 0):
        raise ValidationError("costs.reserve_yield", f"is {reserve_yield}",
                              'give a yearly yield >= 0, e.g. 0.04 or "4%"')
    val = book.valuation(market)
    B = book.exposure_matrix()
    mm = MarginModel.from_contracts(book.contracts)
    assets = list(book.asset_symbols)
    if not (np.isfinite(trade_cost_usd) and trade_cost_usd >= 0):
        raise ValidationError("trade_cost_usd", f"is {trade_cost_usd}", "give the trade's cost, >= 0 USD")
    # R + P_0 - IM(x), after the trade's cost
    initial = val.collateral - float(mm.initial(x).sum()) - trade_cost_usd
    rows: list[ScenarioReserve] = [ScenarioReserve(INITIAL_MARGIN, initial, val.wallet - initial)]
    for sc in scenarios:
        r = stress_returns(sc, assets)
        g = r @ B
        surplus = mm.stress_surplus(x, book.stressed_collateral(val, r), g) - trade_cost_usd
        rows.append(ScenarioReserve(sc.name, surplus, val.wallet - surplus))
    need = max((s.reserve_usd for s in rows), default=0.0)
    binding = max(rows, key=lambda s: s.reserve_usd).name if rows and need > 0 else None
    if horizon_days is not None and not (np.isfinite(horizon_days) and horizon_days > 0):
        raise ValidationError("costs.horizon_days", f"is {horizon_days}", "give a horizon > 0 days")
    return ReserveSizing(reserve_usd=max(0.0, need), reserve_yield=reserve_yield,
                         wallet_now=val.wallet, binding=binding, scenarios=tuple(rows),
                         horizon_days=horizon_days)


def with_reserve(sol: Solution, book: Book, market: MarketSnapshot,
                 settings: OptimizerSettings) -> Solution:
    """``sol`` with its reserve sized (``constraints.size_reserve`` or ``costs.reserve_cost``; else
    ``sol``) at its target positions, on the holdings its spot trades leave, once its trade is
    paid (:func:`size_reserve`), and a message for each stress scenario whose surplus the trade's
    own fees, spread and impact (USD, paid from the wallet) take to 0 or below: the optimiser's
    rows use the collateral before them (DESIGN.md's row), so such a book is stress-safe only
    once that much more collateral is there."""
    cs, cc = settings.constraints, settings.costs
    paid = sol.costs.trading
    short = [f"{s.name} ({s.surplus - paid:,.2f} USD)" for s in sol.margin.stress
             if s.surplus > 0 >= s.surplus - paid]
    if short:
        sol = dataclasses.replace(sol, messages=(*sol.messages, (
            f"this trade's fees, spread and impact ({paid:,.2f} USD, paid from the wallet) leave "
            f"no margin surplus in: {', '.join(short)}; the stress rows count the collateral "
            f"before them: add at least that much collateral to stay stress-safe")))
    if not (cs.size_reserve or cc.reserve_cost):
        return sol
    x = np.array([p.notional for p in sol.target_positions])
    return dataclasses.replace(sol, reserve=size_reserve(
        book_after_spot(book, sol), market, x, cs.stress, cc.reserve_yield,
        horizon_days=cc.horizon_days if cc.reserve_cost else None, trade_cost_usd=paid))


def each_and_all(assets: Sequence[str], move: float = 0.4) -> tuple[StressScenario, ...]:
    """Each asset alone -move and +move, then all assets together -move and +move (2N + 2)."""
    if not (np.isfinite(move) and 0 < move < 1):
        raise ValidationError("constraints.stress_preset_move", f"is {move}",
                              'give a move in (0, 1), e.g. 0.4 or "40%"')
    pct = f"{100 * move:g}%"
    out: list[StressScenario] = []
    for a in assets:
        out.append(StressScenario(f"{a} -{pct}", {a: -move}))
        out.append(StressScenario(f"{a} +{pct}", {a: move}))
    out.append(StressScenario(f"all -{pct}", {}, -move))
    out.append(StressScenario(f"all +{pct}", {}, move))
    return tuple(out)


def preset_scenarios(name: str, assets: Sequence[str], move: float) -> tuple[StressScenario, ...]:
    """The scenarios of preset ``name`` (one of :data:`STRESS_PRESETS`)."""
    if name == "each_and_all":
        return each_and_all(assets, move)
    raise ValidationError("constraints.stress_preset", f"is {name!r}",
                          f"use one of {', '.join(map(repr, STRESS_PRESETS))}")


def with_stress_preset(settings: OptimizerSettings, book: Book) -> OptimizerSettings:
    """``settings`` with its stress preset expanded into ``constraints.stress`` (appended after the
    listed scenarios; the preset is then cleared, so expanding twice adds nothing)."""
    cs = settings.constraints
    if cs.stress_preset is None:
        return settings
    extra = preset_scenarios(cs.stress_preset, book.asset_symbols, cs.stress_preset_move)
    cs = dataclasses.replace(cs, stress=(*cs.stress, *extra), stress_preset=None)
    return dataclasses.replace(settings, constraints=cs)
