"""The steps of one replay period (DESIGN.md "Backtest semantics"), each a small function.

Every step reads and mutates a :class:`~scenarios.replay_state.ReplayState` (spot quantities,
open positions, signed wallet cash, USD) and takes the state's current valuation
(:class:`~scenarios.replay_state.StepValuation`) when it needs one, returning the valuation after
it acted, so a caller never values the book twice. Numbers are USD unless said otherwise; rates and
fees are fractions. The reusable engine steps (for the replay, what-if and Monte Carlo alike):

- :func:`mark_to_market` (1): spot and futures PnL of the held book from one market to the next;
- :func:`pay_funding` (2): the funding of a block of settlements at the current marks;
- :func:`check_margin` and :func:`liquidate` (3): the one margin engine's rule and its penalty;
- :func:`futures_fill_costs`: the cost of futures trades (fee, half spread, 3/2-power impact).

The replay's own steps record what happened into a step row (:data:`Row`) and the event lists of a
:class:`ReplayLog`: :func:`first_step`, :func:`funding_step`, :func:`settlement_step` (2b),
:func:`margin_step` (3), :func:`policy_step` (4), the trades of step 4 in
:mod:`scenarios.replay_fills` (spot and futures fills, rolls), :func:`sweep_step` (5) and
:meth:`ReplayLog.record` (the end-of-step row). ``scenarios.replay.run_backtest`` chains them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.book import Book
from models.costs import CostModel
from models.margin import MarginModel, MarginState, margin_state
from models.market import MarketSnapshot
from models.tax import TaxLot
from optimizer.policies import OptimizedFutures, Policy, TargetHoldings
from scenarios.collateral import CollateralPolicy, cover_deficit, sweep_collateral
from scenarios.replay_inputs import ReplayInputs
from scenarios.replay_state import ReplayState, StepValuation, rebalance_futures, state_view, value_state
from scenarios.replay_tax import futures_gains
from scenarios.settlement import settle_expired, spot_at_expiry

#: One step's row of ``BacktestResult.steps`` (USD figures, ratios, the liquidated flag).
Row = dict[str, float | bool]
#: One event row of the trades, liquidations or rolls table.
Event = dict[str, object]

#: The columns of ``BacktestResult.steps``, in order.
STEP_COLUMNS = ["nav", "base", "cash", "wallet", "collateral", "spot_pnl", "futures_pnl", "fee_spot",
                "slippage_spot", "fee_futures", "slippage_futures", "funding", "liquidation_penalty",
                "insurance_fund", "margin_ratio", "margin_ratio_end", "liquidated", "traded_spot",
                "traded_futures", "sweep_in", "sweep_out", "sweep_fees", "solve_time_ms",
                "solver_fallbacks"]


def new_row() -> Row:
    """A step row before any step ran: every flow 0, not liquidated, no solve time (NaN)."""
    row: Row = dict.fromkeys(
        ("spot_pnl", "futures_pnl", "fee_spot", "slippage_spot", "fee_futures", "slippage_futures",
         "funding",
         "liquidation_penalty", "insurance_fund", "traded_spot", "traded_futures", "sweep_in",
         "sweep_out", "sweep_fees"), 0.0)
    row["liquidated"] = False
    row["solve_time_ms"] = math.nan
    row["solver_fallbacks"] = 0.0
    return row


@dataclass
class ReplayLog:
    """What a replay records: one row per step with the end-of-step spot values, signed futures
    notionals and effective weights (arrays, USD and fractions), the event tables and the NAV
    before the first step's trades (USD)."""

    rows: list[Row] = field(default_factory=list)
    spot_values: list[np.ndarray] = field(default_factory=list)
    notionals: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    trades: list[Event] = field(default_factory=list)
    liquidations: list[Event] = field(default_factory=list)
    rolls: list[Event] = field(default_factory=list)
    unsolved: list[Event] = field(default_factory=list)
    nav_open: float = math.nan

    def record(self, row: Row, cash: float, end: StepValuation, margin: MarginModel) -> None:
        """Close the step: ``margin_ratio_end`` = MM / C after the trades and sweeps, the end
        valuation (NAV, base V, wallet, collateral), the wallet cash; append row and arrays."""
        row["margin_ratio_end"] = margin_state(margin, end.notional, end.collateral).margin_ratio
        row.update(nav=end.nav, base=end.base, cash=cash, wallet=end.wallet,
                   collateral=end.collateral)
        self.rows.append(row)
        self.spot_values.append(end.spot_values.astype(float))
        self.notionals.append(end.notional.astype(float))
        self.weights.append(end.weights.astype(float))


# --- engine steps: mark, funding, margin, liquidation -------------------------------------------

def mark_to_market(book: Book, state: ReplayState, market: MarketSnapshot, before: StepValuation,
                   row: Row) -> StepValuation:
    """(1) Value the held book at ``market``; spot PnL = sum_i q_i (S_i' - S_i) and futures PnL =
    change of the unrealised PnL (it lands in the wallet), both against ``before``."""
    now = value_state(book, state, market)
    row["spot_pnl"] = float(now.spot_values.sum() - before.spot_values.sum())
    row["futures_pnl"] = now.upnl - before.upnl
    return now


def pay_funding(state: ReplayState, val: StepValuation, rates: np.ndarray
                ) -> tuple[float, StepValuation]:
    """(2) Pay the funding of settlements ``rates`` (S x M, fraction per settlement) at the
    current signed notionals x (USD): ``paid = (sum_s r_s) . x`` (longs pay when r > 0) leaves the
    cash. Returns (paid, the valuation after it)."""
    paid = float(rates.sum(axis=0) @ val.notional)
    state.cash -= paid
    return paid, val.with_cash(-paid)


def check_margin(margin: MarginModel, val: StepValuation) -> MarginState:
    """(3) The one margin engine on the valuation: maintenance MM(|x|) against the collateral C
    (cash + unrealised PnL + haircut x pledged spot); liquidated when a position is open and
    C <= MM."""
    return margin_state(margin, val.notional, val.collateral)


def liquidate(book: Book, state: ReplayState, market: MarketSnapshot, val: StepValuation,
              penalty_rate: float) -> tuple[float, list[Event]]:
    """(3) Close every position at mark (PnL realised into cash) and take
    ``penalty_rate x |x_j|`` per contract from cash. Returns (penalty, one event per position)."""
    per = penalty_rate * np.abs(val.notional)
    events: list[Event] = []
    for j, c in enumerate(book.contract_symbols):
        pos = state.futures.get(c)
        if pos is not None and pos.contracts != 0:
            events.append({"time": market.time, "contract": c, "contracts": pos.contracts,
                           "mark": market.mark_price(c), "notional": float(val.notional[j]),
                           "penalty": float(per[j])})
    rebalance_futures(book, state, market, dict.fromkeys(book.contract_symbols, 0.0))
    penalty = float(per.sum())
    state.cash -= penalty
    return penalty, events


def futures_fill_costs(cost: CostModel, trade_usd: np.ndarray, with_impact: bool
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Cost of futures trades t (USD, signed) per contract: fee ``f_j |t_j|`` and slippage
    ``h_j |t_j|`` (half spread) plus ``k_j sigma_j |t_j|^{3/2} / sqrt(ADV_j)`` when ADV is known."""
    fee_j = cost.fee * np.abs(trade_usd)
    slip_j = cost.half_spread * np.abs(trade_usd)
    if with_impact:
        slip_j = slip_j + cost.impact * np.abs(trade_usd) ** 1.5
    return fee_j, slip_j


# --- replay steps: the above on the replay's inputs, recorded ---------------------------------------

def first_step(book: Book, inputs: ReplayInputs, state: ReplayState, market: MarketSnapshot,
               row: Row, trades: list[Event]) -> StepValuation:
    """Step 0 (no t_prev: no PnL, no funding): dated positions already expired settle at spot
    (2b), and the margin ratio MM / C is recorded; no liquidation check."""
    pnl_s, fee_s = settle_expired(book, state, market, int(inputs.step_ns[0]), inputs.expiries,
                                  trades)
    row["futures_pnl"], row["fee_futures"] = pnl_s, fee_s
    first = value_state(book, state, market)
    row["margin_ratio"] = check_margin(inputs.margin, first).margin_ratio
    return first


def initial_reserve(first: StepValuation) -> float:
    """The default reserve target tau = wallet / NAV of the first valuation, clipped to [0, 1]
    (0 when NAV <= 0)."""
    tau = first.wallet / first.nav if first.nav > 0 else 0.0
    return min(max(tau, 0.0), 1.0)


def funding_step(inputs: ReplayInputs, state: ReplayState, now: StepValuation, k: int,
                 row: Row) -> StepValuation:
    """(2) Pay every settlement with timestamp in (t_{k-1}, t_k] at step k's marks (none: no-op)."""
    lo, hi = int(inputs.settled[k - 1]), int(inputs.settled[k])
    if hi <= lo:
        return now
    paid, now = pay_funding(state, now, inputs.settle_r[lo:hi])
    row["funding"] = paid
    return now


def settlement_step(book: Book, inputs: ReplayInputs, state: ReplayState, market: MarketSnapshot,
                    k: int, now: StepValuation, row: Row, trades: list[Event]) -> StepValuation:
    """(2b) Dated positions at or past expiry settle at the underlying's spot at expiry S
    (:func:`expiry_prices`): their PnL of S against the mark joins ``futures_pnl`` and the
    settlement fee is ``fee_futures``."""
    n_trades = len(trades)
    pnl_s, fee_s = settle_expired(book, state, market, int(inputs.step_ns[k]), inputs.expiries,
                                  trades, expiry_prices(book, inputs, k))
    row["futures_pnl"] = float(row["futures_pnl"]) + pnl_s
    row["fee_futures"] = fee_s
    return value_state(book, state, market) if len(trades) != n_trades else now


def expiry_prices(book: Book, inputs: ReplayInputs, k: int) -> dict[str, float]:
    """Per dated contract, its underlying's spot at its expiry T as seen from step k >= 1
    (``scenarios.settlement.spot_at_expiry``: interpolated linearly in time between steps k - 1
    and k when T falls strictly between them, else step k's close), USD."""
    t0, t1 = int(inputs.step_ns[k - 1]), int(inputs.step_ns[k])
    out: dict[str, float] = {}
    for c in book.contracts:
        if c.symbol in inputs.expiries:
            i = inputs.assets.index(c.underlying)
            out[c.symbol] = spot_at_expiry(inputs.expiries[c.symbol], t0, t1,
                                           float(inputs.spot[k - 1, i]), float(inputs.spot[k, i]))
    return out


def margin_step(book: Book, inputs: ReplayInputs, state: ReplayState, market: MarketSnapshot,
                now: StepValuation, row: Row, liquidations: list[Event],
                trades: list[Event] | None = None, *, pledged: bool = False) -> StepValuation:
    """(3) Record MM / C; below maintenance, liquidate everything at the penalty. ``pledged``:
    a wallet left negative is then covered by selling pledged spot at the close, the penalty on
    the collateral sold (``scenarios.collateral.cover_with_pledged``; trades to ``trades``). What
    the account still lacks is the exchange's insurance fund's (``models.margin.
    insurance_fund_cover``; the cash goes up by it and the step's ``insurance_fund`` records it):
    the account is the wallet cash once the pledged spot has paid what it could; with ``pledged``
    off (the pledges still count in the margin check) the cash plus the pledged spot's value,
    which still backs the debt."""
    ms = check_margin(inputs.margin, now)
    row["margin_ratio"] = ms.margin_ratio
    if not ms.liquidated:
        return now
    penalty, events = liquidate(book, state, market, now, inputs.liquidation_penalty)
    liquidations.extend(events)
    sale_penalty, absorbed = cover_deficit(book, state, market, inputs.liquidation_penalty,
                                           trades if trades is not None else [], pledged=pledged)
    row["liquidation_penalty"] = penalty + sale_penalty
    row["insurance_fund"] = absorbed
    row["liquidated"] = True
    return value_state(book, state, market)


def policy_step(policy: Policy, book: Book, state: ReplayState, market: MarketSnapshot,
                row: Row) -> TargetHoldings:
    """(4) The policy's target holdings for the book as it stands; its solve time (ms) and solver
    fallbacks are recorded when it gives them. An optimiser that trades spot is handed the tax lots
    as they stand when the replay tracks them and, when it prices the futures tax, each position's
    unrealised PnL against its average-cost tax entry."""
    t = pd.Timestamp(market.time)
    if state.lots is not None and isinstance(policy, OptimizedFutures) and policy.trades_spot:
        lots: dict[str, tuple[TaxLot, ...]] = {a: ls for a, ls in state.lots.items() if ls}
        if policy.settings.spot.futures_tax and state.futures_basis is not None:
            target = policy(state_view(book, state), market, t, lots=lots,
                            futures_gains=futures_gains(book, state.futures_basis, market))
        else:
            target = policy(state_view(book, state), market, t, lots=lots)
    else:
        target = policy(state_view(book, state), market, t)
    if target.solve_time_ms is not None:
        row["solve_time_ms"] = float(target.solve_time_ms)
        row["solver_fallbacks"] = float(target.solver_fallbacks)
    return target


def hold_step(state: ReplayState, market: MarketSnapshot, k: int, reason: str,
              unsolved: list[Event]) -> TargetHoldings:
    """(4, no answer) The step's policy got no answer to trade (no solver answered, or its answer
    was infeasible or broke a hard margin row): record it in ``unsolved`` (time, step k,
    ``reason``) and hold the book as it stands (spot as held; no futures target, so every
    position stays: ``futures_orders``), as a daily loop sends no order without such an answer."""
    unsolved.append({"time": market.time, "step": k, "reason": reason})
    return TargetHoldings(spot=dict(state.spot), futures={})


def sweep_step(book: Book, inputs: ReplayInputs, state: ReplayState, market: MarketSnapshot,
               k: int, collateral: CollateralPolicy, tau: float, current: StepValuation | None,
               row: Row, trades: list[Event], *, pledged: bool = False) -> StepValuation | None:
    """(5) Bring a wallet outside ``[tau (1 - b) V, tau (1 + b) V]`` back to ``tau V``
    (``scenarios.collateral.sweep_collateral``, each sale or purchase of step k paying the spot
    fee, half spread and impact of a policy's spot trade, ``ReplayInputs.spot_impact``); records
    sweep_in / sweep_out / sweep_fees (USD, fee, half spread and impact).
    Returns the valuation when still current, None when a sweep traded."""
    if current is None:
        current = value_state(book, state, market)
    n_trades = len(trades)
    sw = sweep_collateral(book, state, market, tau, collateral.band,
                          inputs.fee_spot + inputs.spot_half_spread, trades, current,
                          pledged=pledged, width=collateral.width,
                          impact=inputs.spot_impact[k])
    row.update(sweep_in=sw.sweep_in, sweep_out=sw.sweep_out, sweep_fees=sw.fees)
    return None if len(trades) != n_trades else current
