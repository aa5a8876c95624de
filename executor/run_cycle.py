"""One cycle of the daily loop: read the account, ask the policy, decide whether to trade, plan.

1. **read** (:func:`read_view`): the exchange's instruments (cached by the caller), market and
   account, as :func:`executor.workflow.account_view` does, with the market's time set to the
   loop's clock; the view carries NAV (USD), the largest drift max_i |e_i - w*_i| (fraction of the
   base), the margin ratio MM / collateral (liquidation at 1; ``inf`` when no collateral backs an
   open position) and the tracking error (annualised);
2. **decide**: the policy (any :class:`optimizer.policies.Policy`, the very object ``fbr backtest``
   replays) gives target futures notionals (USD per contract); an optimiser's solution that is
   infeasible or breaks a hard margin row is never traded (:func:`check_orderable`);
3. **de-risk** (:func:`derisk`): when the margin ratio after the targets would still exceed the
   de-risk threshold m*, every target notional is scaled by the largest s in [0, 1] whose ratio,
   on the collateral left after the trade's fees and half spreads, is at most 0.9 m* (bisection);
4. **plan**: :func:`executor.plan.plan_orders` on the targets (lots, min notional, flips, limits);
5. **gate** (:func:`gate`): trade only when the fall in squared tracking error beats the cost,
   TE_before^2 - TE_after^2 > gamma_trade x C / V, C the plan's trading cost (USD: fees, half
   spread and 3/2-power impact of ``models.costs.CostModel`` on the legs' notionals) and V the base
   (USD); the same rule as ``fbr status``'s "rebalance due". A de-risk skips the gate, and so
   does a plan of an optimising policy that mends a broken hard margin row by more than it costs
   (:func:`repair_check`, ``fbr status``'s other "due").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import pandas as pd

from executor.base import ExchangeGateway
from executor.ccxt_metadata import with_instruments, with_status
from executor.plan import Instrument, OrderPlan, tracking_error_of
from executor.repair import Repair, repair_of
from executor.workflow import require_tradeable
from models.book import Book
from models.costs import CostModel
from models.fill_rule import contracts_after
from models.margin import MarginModel, margin_state
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.policies import OptimizedFutures, Policy, TargetHoldings
from optimizer.prepare import prepare
from optimizer.settings import CostSettings

#: A de-risk aims at this share of the threshold, so the next mark does not trigger it again.
DERISK_AIM = 0.9


@dataclass(frozen=True)
class View:
    """The account now (see the module docstring for the units)."""

    book: Book
    market: MarketSnapshot
    instruments: dict[str, Instrument]
    nav: float
    max_drift: float
    margin_ratio: float
    tracking_error: float

    @property
    def positions(self) -> dict[str, float]:
        """Signed contracts per book contract."""
        return dict(zip(self.book.contract_symbols, map(float, self.book.contracts_vector()),
                        strict=True))


def read_view(gateway: ExchangeGateway, book: Book, fallback: MarketSnapshot, now: datetime,
              risk: RiskModel, instruments: dict[str, Instrument]) -> View:
    """Step 1: the account's book (exchange units) and market at ``now``."""
    book_x = with_instruments(book, instruments)
    market = with_status(gateway.market(book_x, fallback), instruments)
    market = replace(market, time=pd.Timestamp(now))
    acc = gateway.account(book_x, market)
    e = acc.effective_weights(market) - acc.target_vector()
    ratio = margin_ratio(acc, market, acc.futures_notional(market))
    q = dict(zip(acc.contract_symbols, map(float, acc.contracts_vector()), strict=True))
    return View(acc, market, instruments, acc.nav(market),
                float(np.max(np.abs(e), initial=0.0)), ratio,
                tracking_error_of(acc, market, risk, q))


def check_orderable(policy: Policy, target: TargetHoldings, book: Book,
                    market: MarketSnapshot) -> None:
    """Raise :class:`models.errors.InfeasibleError` when an optimising policy's solution may not be
    traded: infeasible, or its positions break a hard margin row (the rule of
    :func:`executor.workflow.orderable_solution`, which every execution path applies), and
    :class:`models.errors.RefusedError` when it also trades spot, which the executor does not send
    (``executor.workflow.require_tradeable``). Other policies, and an optimiser that attached no
    solution, pass."""
    sol = target.solution
    if sol is None or not isinstance(policy, OptimizedFutures):
        return
    risk = policy.risk(pd.Timestamp(market.time)) if callable(policy.risk) else policy.risk
    require_tradeable(sol, prepare(book, market, risk, policy.settings))


def notional_after(book: Book, market: MarketSnapshot, x: np.ndarray) -> np.ndarray:
    """The exchange's notional (USD, signed; ``Book.futures_notional``) of the positions that hold
    the exposures ``x`` (USD) once traded at the mark by the exchange's fill rule
    (``models.fill_rule.contracts_after``; linear: x itself)."""
    q0, held = book.contracts_vector(), book.futures_exposure(market)
    npc = np.array([c.notional_per_contract(market.mark_price(c.symbol)) for c in book.contracts])
    return np.array([contracts_after(float(x[j]), float(q0[j]), float(held[j]), float(npc[j]))
                     * npc[j] for j in range(len(x))])


def margin_ratio(book: Book, market: MarketSnapshot, notional: np.ndarray) -> float:
    """MM / collateral (fraction) of positions ``notional`` (USD, signed) against the book's
    collateral at ``market``."""
    model = MarginModel.from_contracts(book.contracts)
    return float(margin_state(model, notional, book.collateral(market)).margin_ratio)


def derisk(book: Book, market: MarketSnapshot, targets: Mapping[str, float],
           threshold: float, daily_vol: Mapping[str, float] | None = None,
           impact_k: float = 1.0) -> tuple[dict[str, float], float]:
    """Step 3: (targets scaled by s, s); s = 1 when the targets' margin ratio is within
    ``threshold``. A contract the targets leave out is held (as :func:`plan_orders` holds it), so
    its notional now counts and is scaled too. The ratio of a scaled book counts the collateral
    after the trade's own cost: fees, half spreads and, where the market gives a daily volume and
    ``daily_vol`` the underlying's daily vol, the 3/2-power impact (:func:`plan_cost`'s model,
    whatever the objective prices: a de-risk must not spend the collateral it is saving); lot
    rounding to the nearest lot may still move it by up to half a lot's margin. Targets are USD
    exposure (``Book.futures_exposure``); the margin is on the exchange's notional of the target
    position (:func:`notional_after`: s x_j for linear; an inverse position held away from its
    entry moves by the exchange's fill rule)."""
    held = book.futures_exposure(market)
    off = book.exposure_offset(market)
    x = np.array([float(targets.get(s, held[j])) for j, s in enumerate(book.contract_symbols)])
    model = MarginModel.from_contracts(book.contracts)
    vol = np.array([(daily_vol or {}).get(c.symbol, 0.0) for c in book.contracts])
    costs = CostModel.build(book.contracts, market, vol, impact_k)
    collateral = book.collateral(market)

    def ratio(s: float) -> float:
        paid = costs.total(s * x - held)
        face = notional_after(book, market, s * x) if np.any(off) else s * x
        return float(margin_state(model, face, collateral - paid).margin_ratio)

    if ratio(1.0) <= threshold:
        return {s: float(v) for s, v in zip(book.contract_symbols, x, strict=True)}, 1.0
    aim = DERISK_AIM * threshold
    lo, hi = 0.0, 1.0
    if ratio(0.0) > aim:
        hi = 0.0
    for _ in range(50):
        if hi - lo < 1e-9:
            break
        mid = 0.5 * (lo + hi)
        if ratio(mid) <= aim:
            lo = mid
        else:
            hi = mid
    return {s: lo * float(v) for s, v in zip(book.contract_symbols, x, strict=True)}, lo


def plan_cost(book: Book, market: MarketSnapshot, plan: OrderPlan,
              daily_vol: Mapping[str, float], impact_k: float = 1.0) -> float:
    """The plan's trading cost C (USD): fees + half spread + impact of its legs' notionals."""
    t = np.zeros(len(book.contracts))
    for leg in plan.legs:
        t[book.contract_symbols.index(leg.symbol)] += abs(leg.notional)
    vol = np.array([daily_vol.get(c.symbol, 0.0) for c in book.contracts])
    return CostModel.build(book.contracts, market, vol, impact_k).total(t)


@dataclass(frozen=True)
class Gate:
    """The gate's figures: ``benefit`` = TE_before^2 - TE_after^2 and ``cost`` = gamma x C / V
    (both squared annualised fractions), ``open`` when benefit > cost."""

    benefit: float
    cost: float
    te_before: float
    te_after: float
    #: the plan's trading cost C (USD)
    cost_usd: float = 0.0

    @property
    def open(self) -> bool:
        """True when the fall in TE^2 beats the cost."""
        return self.benefit > self.cost


def gate(view: View, plan: OrderPlan, risk: RiskModel, costs: CostSettings,
         daily_vol: Mapping[str, float]) -> Gate:
    """Step 5 (see the module docstring): the cost as the book's objective prices it
    (``costs.gamma_trade``; impact at ``costs.impact_k`` only when ``costs.impact`` is on), so the
    gate and ``fbr status`` agree on whether a rebalance pays."""
    te0 = tracking_error_of(view.book, view.market, risk, plan.start)
    te1 = tracking_error_of(view.book, view.market, risk, plan.reachable)
    base = view.book.base(view.market)
    gamma_trade = costs.gamma_trade
    c = plan_cost(view.book, view.market, plan, daily_vol if costs.impact else {},
                  costs.impact_k)
    cost = gamma_trade * c / base if base > 0 else math.inf
    return Gate(te0 ** 2 - te1 ** 2, cost, te0, te1, c)


def repair_check(policy: Policy, book: Book, market: MarketSnapshot, plan: OrderPlan,
                 trading_cost_usd: float) -> Repair | None:
    """The repair the plan makes to the hard margin rows of an optimising policy's book
    (:mod:`executor.repair`: due when it mends more shortfall than its trading cost, USD), so a
    gate shut on tracking error still lets a plan through that restores a broken stress row;
    None for other policies (their targets keep no such rows)."""
    if not isinstance(policy, OptimizedFutures):
        return None
    risk = policy.risk(pd.Timestamp(market.time)) if callable(policy.risk) else policy.risk
    d = prepare(book, market, risk, policy.settings)
    return repair_of(d, book, market, plan.start, plan.reachable, trading_cost_usd)


def plan_turnover(plan: OrderPlan) -> float:
    """Sum of |leg notional| (USD)."""
    return float(sum(abs(leg.notional) for leg in plan.legs))
