"""What-if: apply a scenario (``scenarios.shocks``) to a book and report what happens.

Units: USD for money, fractions for weights, returns and rates; tracking error annualised.

Applying a scenario (book with spot q_i, positions x_j (signed USD at mark), cash, market):

- prices: spot'_i = spot_i (1 + r_i), r_i = the asset's own move, else ``common``, else 0; marks
  mark'_j = mark_j (1 + r_u(j)) (1 + b_j) with b_j the basis shock of contract j;
- PnL split: spot = sum_i q_i (spot'_i - spot_i); futures = uPnL' - uPnL (``Book.unrealized_pnl``,
  linear and inverse); funding = - sum_j n_j (f_j + df_j) x'_j over the scenario's n_j settlements
  (perpetuals; longs pay when the rate is > 0), paid from the wallet's cash;
- NAV' = NAV + spot + futures + funding; effective weights e' = (spot' + B x') / V';
- margin: the backtester's check (``models.margin.margin_state``, the one margin engine):
  liquidated when a position is open and collateral' <= sum_j MM_j(|x'_j|); then every position is
  closed at mark and ``liquidation_penalty`` x |x'| is paid, a wallet then below 0 is covered by
  pledged spot sold at the penalty, and the rest by the exchange's insurance fund (the wallet back
  at 0): the replay's rule (``scenarios.replay_steps.margin_step``), so the holder never loses
  more than the futures account;
- pledged spot (``Book.pledged``) is re-priced through its rule: collateral' = W' + sum_i
  C_i(u_i (1 + r_i)) (W' = cash + uPnL', u_i the pledged USD value before the shock, C_i the
  asset's rule, ``models.collateral``). A Portfolio Margin holding pushed across a tier edge by an
  up move gains collateral at the next tier's lower rate only: tiers [0, 1M, 0.95], [1M, 5M, 0.9]
  and u = 900k USD with r = +30% give C = 0.95 x 1M + 0.9 x 0.17M = 1,103,000 USD (not
  0.95 x 1.17M = 1,111,500). ``pledged_before`` / ``pledged_after`` report sum_i C_i (USD);
- funding until liquidation: settlement by settlement, h_j hours apart, stopped at the first
  settlement time at which the margin surplus goes below 0 (``scenarios.funding_run``); h_j is the
  spacing ``fbr solve``'s carry counts (``MarketSnapshot.funding_hours``: a data market's measured
  spacing where it differs from ``funding_interval_h``, ``scenarios.applied_shocks.
  settlement_hours``), so the what-if's funding a day is the carry's;
- risk: vol multipliers m_i and a correlation blend give Sigma' = D' C' D' (D' = diag(m_i sigma_i),
  C' = (1 - lam) C + lam (rho 11' + (1 - rho) I)); spread and liquidity multiply the half spreads and
  ADV the re-solve's cost model sees;
- next move: ``optimizer.rebalance.Rebalancer.solve`` on the shocked book, market and risk.

Shocks are resolved and applied by ``scenarios.applied_shocks``, the distance to liquidation
(``liquidation_moves``) is ``models.liquidation_distance``'s and the result types are
``scenarios.whatif_result``'s.
"""

from __future__ import annotations

import math

import numpy as np

from models.book import Book
from models.errors import FbrError
from models.liquidation_distance import liquidation_moves
from models.margin import LIQUIDATION_PENALTY, MarginModel, margin_state
from models.market import MarketSnapshot
from models.risk import RiskModel, tracking_error
from optimizer.rebalance import Rebalancer
from optimizer.settings import OptimizerSettings
from optimizer.solution import Solution
from optimizer.spot_book import book_after_spot
from scenarios.applied_shocks import AppliedShocks, resolve_shocks, shock_market, shock_risk
from scenarios.collateral import cover_deficit
from scenarios.funding_run import FundingRun, funding_until_liquidation
from scenarios.replay_state import ReplayState
from scenarios.shocks import Scenario
from scenarios.whatif_result import Closeout, Liquidation, PnLSplit, WhatIfResult


def _weights(book: Book, market: MarketSnapshot) -> np.ndarray:
    v = book.valuation(market)
    if v.base == 0:
        return np.full(len(book.assets), math.nan)
    # e = (spot + B x) / V with x the USD exposure (inverse: face x mark / entry, not the face)
    return np.asarray((v.spot_values + book.exposure_matrix() @ v.exposure) / v.base, dtype=float)


def _te(book: Book, market: MarketSnapshot, weights: np.ndarray, risk: RiskModel) -> float:
    """sqrt(d' Sigma d + z' Sigma_b z), d = ``weights`` - w*, z = x / V (the basis term when the
    risk model has one for the book's contracts): the TE ``fbr status`` and the solution report."""
    d = weights - book.target_vector()
    cov = risk.subset(book.asset_symbols).covariance
    if risk.basis_cov is not None and risk.basis_cov.shape == (len(book.contracts),) * 2:
        z = book.futures_exposure(market) / book.base(market)
        return tracking_error(d, cov, z, risk.basis_cov)
    return tracking_error(d, cov)


def apply_solution(book: Book, market: MarketSnapshot, solution: Solution) -> Book:
    """``book`` holding what ``solution`` proposes: its spot trades (``book_after_spot``: units
    moved, the stablecoin paying the net buys and the spot trading costs), then its futures
    positions (traded at the mark, ``Book.with_futures``, no futures fees): the book to test
    before it is traded."""
    after = book_after_spot(book, solution)
    return after.with_futures({p.symbol: p.contracts for p in solution.target_positions}, market)


def _liquidations(book: Book, mm: MarginModel, notional: np.ndarray,
                  penalty_rate: float) -> tuple[Liquidation, ...]:
    """The positions closed, each charged ``penalty_rate`` x |x'_j| (the replay's rule)."""
    per_mm = mm.maintenance(notional)
    pen = penalty_rate * np.abs(np.asarray(notional, dtype=float))
    return tuple(Liquidation(c, float(notional[j]), float(per_mm[j]), float(pen[j]))
                 for j, c in enumerate(book.contract_symbols) if notional[j] != 0)


def _funding(book: Book, shocked: MarketSnapshot, applied: AppliedShocks,
             mm: MarginModel) -> FundingRun:
    """The scenario's funding on ``book`` at the ``shocked`` market (a_j = rate'_j x'_j USD per
    settlement, + = paid, every ``applied.hours`` h_j hours: the spacing the optimiser's carry
    counts), paid until the wallet is liquidated (``scenarios.funding_run``)."""
    v1 = book.valuation(shocked)
    rates = np.array([shocked.funding_rate(c) for c in book.contract_symbols], dtype=float)
    m_shock = margin_state(mm, v1.notional, v1.collateral)
    return funding_until_liquidation(rates * v1.notional, applied.settlements, applied.hours,
                                     m_shock.collateral - m_shock.maintenance,
                                     m_shock.has_positions)


def _close_all(book: Book, book1: Book, shocked: MarketSnapshot, mm: MarginModel,
               notional: np.ndarray, penalty_rate: float) -> tuple[Closeout, Book]:
    """The liquidation of ``book1`` (``book`` after funding) at the ``shocked`` marks: the positions
    closed (``notional`` x'_j, USD) with their penalties, the wallet's deficit covered by pledged
    spot sold at the penalty and then by the insurance fund (``scenarios.collateral.cover_deficit``,
    the replay's rule); and the book after all that."""
    closed = book1.with_futures(dict.fromkeys(book.contract_symbols, 0.0), shocked)
    liqs = _liquidations(book, mm, notional, penalty_rate)
    state = ReplayState(spot=dict(closed.spot), futures=dict(closed.futures),
                        cash=closed.cash - sum(x.penalty for x in liqs))
    # the what-if always lets the exchange sell what the book pledges (the replay's pledged rule)
    sale_penalty, absorbed = cover_deficit(book, state, shocked, penalty_rate, [], pledged=True)
    after = closed.evolve(spot=state.spot, cash=state.cash)
    return Closeout(liqs, sale_penalty, absorbed), after


def _next_move(after: Book, shocked: MarketSnapshot, risk1: RiskModel,
               settings: OptimizerSettings | None,
               rebalancer: Rebalancer | None) -> tuple[Solution | None, str | None]:
    """The optimiser's re-solve of the shocked book, or None and why it failed."""
    try:
        return (rebalancer or Rebalancer()).solve(after, shocked, risk1,
                                                 settings or OptimizerSettings()), None
    except FbrError as exc:
        return None, str(exc)


def run_whatif(book: Book, market: MarketSnapshot, risk: RiskModel, scenario: Scenario,
               settings: OptimizerSettings | None = None, *, resolve: bool = True,
               positions: str = "current", rebalancer: Rebalancer | None = None,
               liquidation_penalty: float = LIQUIDATION_PENALTY,
               distances: bool = True) -> WhatIfResult:
    """Apply ``scenario`` to ``book`` at ``market`` (see the module docstring).

    ``resolve``: re-solve the shocked book with ``settings`` (a failure is reported in
    ``next_error``, not raised); ``positions`` (the result's ``positions_tested``) labels the
    positions tested ("current" or "solution", see :func:`apply_solution`); ``distances``:
    compute the liquidation moves.
    """
    applied = resolve_shocks(scenario, book, market)
    mm = MarginModel.from_contracts(book.contracts)
    v0 = book.valuation(market)
    shocked = shock_market(book, market, applied)
    run = _funding(book, shocked, applied, mm)
    paid = run.paid
    book1 = book.evolve(cash=book.cash - paid)
    v1 = book1.valuation(shocked)
    m_before = margin_state(mm, v0.notional, v0.collateral)
    m_after = margin_state(mm, v1.notional, v1.collateral)
    liquidated = m_after.liquidated
    out, after = (_close_all(book, book1, shocked, mm, v1.notional, liquidation_penalty)
                  if liquidated else (Closeout(), book1))
    risk1 = shock_risk(risk, book, applied)
    w0, w1 = _weights(book, market), _weights(after, shocked)
    assets = book.asset_symbols
    nxt, err = _next_move(after, shocked, risk1, settings, rebalancer) if resolve else (None, None)
    return WhatIfResult(
        scenario=scenario, positions_tested=positions, nav_before=v0.nav,
        nav_after=after.valuation(shocked).nav,
        pnl=PnLSplit(spot=float(v1.spot_values.sum() - v0.spot_values.sum()),
                     futures=v1.upnl - v0.upnl, funding=0.0 - paid),
        targets=dict(zip(assets, map(float, book.target_vector()), strict=True)),
        weights_before=dict(zip(assets, map(float, w0), strict=True)),
        weights_after=dict(zip(assets, map(float, w1), strict=True)),
        tracking_error_before=_te(book, market, w0, risk),
        tracking_error_after=_te(after, shocked, w1, risk1),
        margin_before=m_before, margin_after=m_after, liquidated=liquidated,
        liquidations=out.liquidations, collateral_sale_penalty=out.collateral_sale_penalty,
        insurance_fund=out.insurance_fund,
        distance_before=liquidation_moves(book, market) if distances else (),
        distance_after=liquidation_moves(after, shocked) if distances else (),
        settlements={c: float(n) for c, n in zip(book.contract_symbols, run.settled,
                                                 strict=True) if n},
        next_solution=nxt, next_error=err, shocked_book=after, shocked_market=shocked,
        settlements_asked={c: float(n) for c, n in zip(book.contract_symbols, applied.settlements,
                                                       strict=True) if n},
        liquidated_after_h=run.liquidated_after_h if liquidated else None,
        has_pledged=bool(book.pledged),
        pledged_before=book.pledged_collateral(v0.spot_values) if book.pledged else 0.0,
        pledged_after=book.pledged_collateral(v1.spot_values) if book.pledged else 0.0,
    )
