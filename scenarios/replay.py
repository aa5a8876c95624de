"""The backtest replay loop: replay a market path under a policy and record what the book does.

Per step t (UTC timestamps of ``MarketPath.spot``), see DESIGN.md "Backtest semantics":

1. **mark to market**: spot value at the new closes; futures unrealised PnL at the new marks (it
   lands in the futures wallet: wallet = cash + unrealised PnL);
2. **funding**: every settlement with timestamp in (t_prev, t] pays ``rate x notional`` at this
   step's mark: ``cash -= rate * notional`` for signed notional (longs pay when rate > 0). All the
   settlements in the interval are summed; nothing assumes three a day;
2b. **settlement** of dated futures (``ContractKind.DATED``): on the first step at or after a
   contract's expiry its position is closed at the underlying's spot S at the expiry (not the
   mark; interpolated linearly in time between the two steps around an expiry that falls between
   steps, ``scenarios.settlement.spot_at_expiry``, so the PnL stops at the expiry): the PnL
   realised into cash, ``q x size x (S - mark)`` (linear) added to ``futures_pnl`` on top of the
   mark-to-market, and a settlement fee ``taker_fee x |notional at S|`` in ``fee_futures``; trade
   kind "settle". From its expiry on, a contract's policy target is taken as 0 (it cannot be held);
3. **margin check** (``models.margin.MarginModel.maintenance`` on |notional| against the collateral
   cash + unrealised PnL + haircut x pledged spot): below maintenance every futures position is
   closed at mark (PnL realised into cash) and ``liquidation_penalty x |notional|`` is taken from cash;
   a wallet then below 0 is covered by pledged spot sold at the penalty, and what is still missing
   by the exchange's insurance fund (the wallet back at 0: ``insurance_fund``);
4. **policy** -> target holdings; trades fill at the close (spot) and at mark (futures). A dated
   contract within ``min_days_to_expiry`` days of its expiry (an optimising policy's setting, else
   2 days) is only reduced or closed, never opened or increased, as the order planner does
   (``FuturesContract.near_expiry``). Spot cost: the fee
   ``spot_fee`` (or each asset's ``SpotAsset.fee``) x |notional|, the half spread x |notional|
   and, when the path gives the asset's spot ADV, the 3/2-power impact
   k sigma |notional|^{3/2} / sqrt(ADV) (``scenarios.replay_fills.SpotRates``); futures cost:
   the linear part of ``models.costs.CostModel`` (taker fee + half spread) plus its 3/2-power
   impact when an ADV is given. Futures trades go through ``Book.with_futures``; every cost is paid from cash.
   A step where an optimising policy has no answer to trade (no solver answers,
   ``optimizer.problem.NoAnswerError``; or the answer is infeasible or breaks a hard margin row,
   ``models.errors.InfeasibleError``, which no execution path sends; or the wallet cannot carry
   the smallest hedge, ``optimizer.rebalance.InsufficientCollateralError``) holds the book as it
   stands and is listed in ``BacktestResult.unsolved``, as a daily loop's cycle trades nothing
   then and alerts;
5. **collateral sweeps** (``CollateralPolicy``, on by default for a book that lists futures
   contracts): while positions are open, a wallet balance outside its band around the reserve
   target ``tau x NAV`` is brought back to the target by selling spot pro rata to spot values
   (top-up) or buying spot pro rata to the target weights (excess), at the close, paying what a
   policy's spot trade pays (fee, half spread, impact).
   The default target is the book's initial wallet / NAV, so a book that starts with no reserve
   keeps none: give it a ``CollateralPolicy(target_fraction=...)``. A policy that trades spot
   itself on a NAV base manages its wallet itself: no sweeps (:func:`own_cash`).

6. **taxes** (off by default; ``scenarios.replay_tax``): with tax settings (``tax=``, or an optimising
   policy whose spot leg prices tax) the lots follow each asset's net spot change of the step
   (sales realise tax with the book's lot method, buys add a lot at the close and time) and, with
   a futures rate, the futures PnL realised in the step is taxed; both paid from cash, recorded
   in ``tax_spot``, ``tax_futures``, ``tax`` and ``tax_cumulative``.

Pledged collateral (``pledged=True``, off by default; ``scenarios.collateral``): the top-up sweep
is not needed while the wallet plus the pledged spot's collateral value covers the reserve band,
and a maintenance breach that leaves the wallet negative sells pledged spot at the close, the
liquidation penalty taken on the collateral sold.

The first timestamp only runs steps 4, 5 and 6 (no t_prev: settlements at or before it are ignored).

Cash: spot sales credit cash, purchases debit it, and fees, funding and penalties are paid from it,
so cash may go negative: a negative balance is a stablecoin debt (no interest), counted as such in
NAV, the wallet and the collateral (``Book`` allows it; a book file's only with pledged spot).

Market paths come from the embedded generator (``MarketPath.from_synthetic``) or from real data in
the shared layout (``MarketPath.from_data``: 4 h / 8 h / 1 d steps, irregular funding kept, ADV
lagged one step), see ``scenarios.market_path``. No lot rounding.
Same inputs -> identical results: everything iterates in book order, nothing is random (only the
recorded wall-clock solve times of an optimising policy differ between runs).

Each step is a small function of ``scenarios.replay_steps`` on the typed
``scenarios.replay_state.ReplayState`` (the engine steps there, funding, margin check and
liquidation, serve what-if and Monte Carlo too); the path is read once as
``scenarios.replay_inputs.ReplayInputs``. This module chains them: :func:`run_backtest`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from models.book import Book, TargetsBase
from models.errors import InfeasibleError, ValidationError
from models.instruments import QTY_RTOL
from models.margin import LIQUIDATION_PENALTY
from models.market import MarketSnapshot
from optimizer.policies import Policy
from optimizer.problem import NoAnswerError
from optimizer.rebalance import InsufficientCollateralError
from optimizer.settings import CostSettings, SpotLegSettings
from scenarios.backtest_result import (
    LIQUIDATION_COLUMNS,
    ROLL_COLUMNS,
    TRADE_COLUMNS,
    UNSOLVED_COLUMNS,
    BacktestResult,
    RollTargets,
)
from scenarios.collateral import NO_SWEEPS, CollateralPolicy
from scenarios.market_path import MarketPath
from scenarios.replay_fills import fill_futures, fill_spot, futures_orders, roll_rows
from scenarios.replay_inputs import ReplayInputs, market_at, policy_min_days, read_inputs
from scenarios.replay_state import FuturesTaxBasis, ReplayState, StepValuation, value_state
from scenarios.replay_steps import (
    STEP_COLUMNS,
    ReplayLog,
    Row,
    first_step,
    funding_step,
    hold_step,
    initial_reserve,
    margin_step,
    mark_to_market,
    new_row,
    policy_step,
    settlement_step,
    sweep_step,
)
from scenarios.replay_tax import (
    TAX_COLUMNS,
    ReplayTax,
    book_lots,
    deferred_tax,
    futures_realised,
    pay_futures_tax,
    start_futures_basis,
    start_taxes,
    tax_settings,
)

__all__ = ["QTY_RTOL", "run_backtest"]


def policy_costs(policy: Policy) -> CostSettings | None:
    """An optimising policy's cost settings (its funding-forecast rule reaches the snapshots),
    also through a wrapper (``Policy.optimiser``)."""
    opt = policy.optimiser()
    return opt.settings.costs if opt is not None else None


def run_backtest(book: Book, history: MarketPath, policy: Policy, *,
                 liquidation_penalty: float = LIQUIDATION_PENALTY, spot_fee: float | None = None,
                 collateral: CollateralPolicy | None = None,
                 impact_k: float = 1.0, tax: SpotLegSettings | None = None,
                 pledged: bool = False,
                 on_step: Callable[[], None] | None = None) -> BacktestResult:
    """Replay ``history`` from ``book`` under ``policy`` (see the module docstring for the steps).

    ``liquidation_penalty``: fraction of |notional| charged at a liquidation; ``impact_k``: the
    coefficient k of the impact on futures fills (when ADV is known, as models.costs.CostModel);
    ``spot_fee``: spot fee, a fraction of notional, for every asset (default: each asset's
    ``SpotAsset.fee``). Policies with state (calendar triggers) should be fresh.
    ``collateral``: the wallet's reserve band (step 5); None means ``CollateralPolicy()`` (target =
    the initial wallet / NAV, band 0.5) for a book that lists futures contracts, and no sweeps for
    a spot-only book; ``NO_SWEEPS`` switches them off.
    ``tax``: the [tax] rates, [[lots]] and lot method (``SpotLegSettings``; step 6); None: those
    of an optimising policy whose spot leg prices tax, else no taxes.
    ``pledged``: count pledged spot in the sweeps and sell it after a liquidation (see above).
    ``on_step``: called once after each step (a progress bar); the policy is never wrapped, so
    its costs, tax settings, spot leg and lots reach the steps."""
    _check_options(book, history, liquidation_penalty, spot_fee, impact_k)
    inputs = read_inputs(book, history, spot_fee=spot_fee, impact_k=impact_k,
                         liquidation_penalty=liquidation_penalty, costs=policy_costs(policy),
                         min_days_to_expiry=policy_min_days(policy))
    if collateral is None:
        collateral = CollateralPolicy() if book.contracts else NO_SWEEPS
    collateral = own_cash(collateral, book, policy)
    tau = collateral.target_fraction
    state = ReplayState(spot={a: float(book.spot.get(a, 0.0)) for a in inputs.assets},
                        futures={s: p for s, p in book.futures.items() if p.contracts != 0},
                        cash=float(book.cash))
    taxes: ReplayTax | None = None
    settings = tax_settings(tax, policy)
    if settings is not None:
        taxes, state.lots = start_taxes(book, settings)
    log = ReplayLog()
    prev_end: StepValuation | None = None
    for k in range(len(inputs.index)):
        market = market_at(inputs, k)
        row = new_row()
        if taxes is not None:
            row.update(dict.fromkeys(TAX_COLUMNS[:3], 0.0))
        if prev_end is None:
            if taxes is not None:
                state.futures_basis = start_futures_basis(book, market)
            now = first_step(book, inputs, state, market, row, log.trades)
            log.nav_open = now.nav
            if tau is None:
                tau = initial_reserve(now)
        else:
            now = _carry(book, inputs, state, market, k, prev_end, row, log, pledged, taxes)
        prev_end = _act(book, inputs, policy, collateral, tau, state, market, k, now, row, log,
                        pledged)
        if taxes is not None:
            assert state.futures_basis is not None
            prev_end = _tax(book, taxes, state.futures_basis, state, market, prev_end, row)
        log.record(row, state.cash, prev_end, inputs.margin)
        if on_step is not None:
            on_step()
    return _result(book, history, policy, log, taxes is not None)


def own_cash(collateral: CollateralPolicy, book: Book, policy: Policy) -> CollateralPolicy:
    """``collateral``, or no sweeps when ``policy`` trades spot itself on a NAV base.

    On a NAV base the wallet's stablecoin is part of the target base, and a policy with a spot
    leg chooses how much of the base it holds as spot and how much as stablecoin behind futures
    (selling spot and going long a perpetual whose funding pays, say), with its margin and stress
    rows seeing what its spot trades do to the collateral (optimizer.margin_constraints). A
    sweep-out would buy spot at the target weights on top of the futures it bought instead, and a
    top-up would sell the spot it bought with the wallet: each undoing its plan, which it would
    redo at the next step (43 pp off target, or TE 4% and 7% of NAV a year in fees, on the demo).
    On an invested base (the spot value) the stablecoin is the reserve, the optimiser makes no net
    spot sale and prices a net buy as raising every target (optimizer.spot_leg), and a sweep,
    trading at the target weights or pro rata, leaves the deviation as it was: they stay."""
    opt = policy.optimiser()
    if (book.targets_base == TargetsBase.NAV and opt is not None and opt.trades_spot
            and collateral.enabled):
        return NO_SWEEPS
    return collateral


def _check_options(book: Book, history: MarketPath, liquidation_penalty: float,
                   spot_fee: float | None, impact_k: float) -> None:
    """Reject a penalty or spot fee outside [0, 1), an impact k < 0 and a path without the spot of
    every asset of the book."""
    if not (math.isfinite(liquidation_penalty) and 0 <= liquidation_penalty < 1):
        raise ValidationError("liquidation_penalty", f"is {liquidation_penalty}",
                              "give a fraction of notional in [0, 1)")
    if spot_fee is not None and not (math.isfinite(spot_fee) and 0 <= spot_fee < 1):
        raise ValidationError("spot_fee", f"is {spot_fee}", "give a fraction of notional in [0, 1)")
    if not (math.isfinite(impact_k) and impact_k >= 0):
        raise ValidationError("impact_k", f"is {impact_k}", "give the impact coefficient k >= 0")
    missing = [a for a in book.asset_symbols if a not in history.spot.columns]
    if missing:
        raise ValidationError("market_path.spot", f"has no prices for {missing}",
                              "give a spot column for every asset of the book")


def _carry(book: Book, inputs: ReplayInputs, state: ReplayState, market: MarketSnapshot, k: int,
           before: StepValuation, row: Row, log: ReplayLog, pledged: bool,
           taxes: ReplayTax | None = None) -> StepValuation:
    """Steps 1-3 of step k > 0: mark to market against the previous step's end valuation (nothing
    changed the state since), funding, settlement of expired dated futures, margin check. With
    ``taxes``, a margin check that sold spot (pledged collateral after a liquidation) has its sale
    booked against the lots at once (:func:`_book_forced_sale`), before the policy sees them."""
    now = mark_to_market(book, state, market, before, row)
    now = funding_step(inputs, state, now, k, row)
    now = settlement_step(book, inputs, state, market, k, now, row, log.trades)
    held = dict(state.spot)
    now = margin_step(book, inputs, state, market, now, row, log.liquidations, log.trades,
                      pledged=pledged)
    if taxes is None or state.spot == held:
        return now
    return _book_forced_sale(book, taxes, state, market, row)


def _book_forced_sale(book: Book, taxes: ReplayTax, state: ReplayState, market: MarketSnapshot,
                      row: Row) -> StepValuation:
    """Book the spot the margin check sold (``scenarios.collateral.cover_with_pledged``) against
    the lots by the lot method at ``market``'s closes (``book_lots``: tax = sum over the lots
    consumed of q_l x rate_l x (S - basis_l), USD, a loss credited), pay it from cash and add it
    to the step's ``tax_spot``: the policy then gets lots that add up to the spot held. Returns
    the valuation after the tax left the cash (a forced sale is rare: valued afresh)."""
    row["tax_spot"] = float(row["tax_spot"]) + book_lots(taxes, state, market)
    return value_state(book, state, market)


def _act(book: Book, inputs: ReplayInputs, policy: Policy, collateral: CollateralPolicy,
         tau: float | None, state: ReplayState, market: MarketSnapshot, k: int, now: StepValuation,
         row: Row, log: ReplayLog, pledged: bool) -> StepValuation:
    """Steps 4-5: the policy, its spot and futures fills (and declared rolls), the collateral sweep.
    ``current`` stays the state's valuation at ``market`` until a trade changes the state; returns
    the end-of-step valuation."""
    current: StepValuation | None = now
    try:
        target = policy_step(policy, book, state, market, row)
    except (NoAnswerError, InfeasibleError, InsufficientCollateralError) as exc:
        target = hold_step(state, market, k, str(exc), log.unsolved)
    if fill_spot(inputs, state, market, k, target, row, log.trades):
        current = None
    orders = futures_orders(inputs, state, market, target, k)
    fee_j, slip_j = fill_futures(book, inputs, state, market, k, orders, row, log.trades)
    if orders.new_q:
        current = None
    if isinstance(target, RollTargets):
        log.rolls.extend(roll_rows(target, inputs.cons, market, k, orders.trade_usd, fee_j, slip_j))
    if collateral.enabled and tau is not None:
        current = sweep_step(book, inputs, state, market, k, collateral, tau, current, row,
                             log.trades, pledged=pledged)
    return current if current is not None else value_state(book, state, market)


def _tax(book: Book, taxes: ReplayTax, basis: FuturesTaxBasis, state: ReplayState,
         market: MarketSnapshot, end: StepValuation, row: Row) -> StepValuation:
    """Step 6: book the lots (spot tax, added to that of a forced sale booked at step 3) and tax
    the futures PnL realised in the step (the futures PnL less the change of unrealised PnL
    against the average-cost tax entries, ``basis``); returns the valuation after the taxes left
    the cash. A loss the exchange's insurance fund
    bore (its cover less the liquidation penalty, which it absorbs first as in
    ``scenarios.metrics``) is not the holder's: it is taken out of the realised loss."""
    spot_tax = float(row["tax_spot"]) + book_lots(taxes, state, market)
    realised = futures_realised(book, basis, state, market, float(row["futures_pnl"]))
    realised += max(float(row["insurance_fund"]) - float(row["liquidation_penalty"]), 0.0)
    fut_tax = pay_futures_tax(taxes, state, realised)
    row.update(tax_spot=spot_tax, tax_futures=fut_tax, tax=spot_tax + fut_tax,
               tax_deferred=deferred_tax(taxes, state, market, basis))
    return value_state(book, state, market) if spot_tax != 0 or fut_tax != 0 else end


def _result(book: Book, history: MarketPath, policy: Policy, log: ReplayLog,
            taxed: bool = False) -> BacktestResult:
    """The recorded rows and events as a :class:`BacktestResult` (frames on the path's index);
    ``taxed``: the tax columns follow the others."""
    assets, cons = book.asset_symbols, book.contract_symbols
    index = history.spot.index
    spot_px = history.spot[assets].astype(float)
    columns = STEP_COLUMNS + TAX_COLUMNS[:3] + TAX_COLUMNS[4:] if taxed else STEP_COLUMNS
    steps = pd.DataFrame(log.rows, index=index, columns=columns)
    steps["liquidated"] = steps["liquidated"].astype(bool)
    if taxed:
        steps.insert(len(STEP_COLUMNS) + 3, "tax_cumulative", steps["tax"].cumsum())
    return BacktestResult(
        steps=steps,
        spot_value=pd.DataFrame(np.array(log.spot_values), index=index, columns=assets),
        futures_notional=pd.DataFrame(np.array(log.notionals).reshape(len(index), len(cons)),
                                      index=index, columns=cons),
        weights=pd.DataFrame(np.array(log.weights), index=index, columns=assets),
        trades=pd.DataFrame(log.trades, columns=TRADE_COLUMNS),
        liquidations=pd.DataFrame(log.liquidations, columns=LIQUIDATION_COLUMNS),
        targets=pd.Series(book.target_vector(), index=assets, dtype=float),
        spot_returns=spot_px / spot_px.shift(1) - 1.0,
        policy=policy.name,
        rolls=pd.DataFrame(log.rolls, columns=ROLL_COLUMNS),
        nav_open=log.nav_open,
        unsolved=pd.DataFrame(log.unsolved, columns=UNSOLVED_COLUMNS),
    )
