"""The trades of a replay step (DESIGN.md "Backtest semantics", step 4): the policy's targets filled.

- :func:`fill_spot`: spot trades at the close, the fee, the half spread and (ADV of the spot
  market known) the 3/2-power impact paid from cash (a declared loss harvest fills as a sale and
  a buy-back);
- :func:`futures_orders` and :func:`fill_futures`: target exposures to contracts at the marks
  (reduce-only near expiry, no trade for a held target) and their fills at mark by the
  exchange's fill rule through ``Book.with_futures``, fee, half spread and impact paid from cash;
- :func:`roll_rows`: the rows of the declared rolls that traded.

Each reads and mutates the :class:`~scenarios.replay_state.ReplayState` and records into the
step's row and event lists (:mod:`scenarios.replay_steps`). Numbers are USD unless said otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.book import Book
from models.costs import CostModel
from models.errors import ValidationError
from models.fill_rule import contracts_after
from models.instruments import QTY_RTOL, reduce_only_quantity
from models.market import MarketSnapshot
from optimizer.policies import TargetHoldings
from scenarios.backtest_result import RollTargets
from scenarios.replay_inputs import ReplayInputs
from scenarios.replay_state import ReplayState, rebalance_futures
from scenarios.replay_steps import Event, Row, futures_fill_costs


@dataclass(frozen=True)
class SpotRates:
    """What a spot trade of n USD (|n|) costs in asset ``a`` at one step: the fee ``fee`` |n|, the
    half spread ``half`` |n| and the impact ``impact`` |n|^{3/2} (``impact`` = k sigma / sqrt(ADV)
    in USD^-1/2, ``models.costs`` on the spot market: sigma the asset's trailing daily vol, ADV
    its spot volume; 0 when either is unknown or the path has no ADV)."""

    fee: float
    half: float
    impact: float

    @staticmethod
    def at(inputs: ReplayInputs, k: int, i: int) -> SpotRates:
        """Asset i's rates at step k (its impact: ``ReplayInputs.spot_impact``)."""
        return SpotRates(float(inputs.fee_spot[i]), float(inputs.spot_half_spread[i]),
                         float(inputs.spot_impact[k, i]))

    def slippage(self, dq: float, px: float) -> float:
        """Half spread plus impact (USD) of a trade of ``dq`` units at ``px`` USD."""
        return self.half * abs(dq) * px + self.impact * float(abs(dq * px) ** 1.5)


def fill_spot(inputs: ReplayInputs, state: ReplayState, market: MarketSnapshot, k: int,
              target: TargetHoldings, row: Row, trades: list[Event]) -> bool:
    """(4) Spot trades dq_i = q_i* - q_i at the close S_i of step k: cash pays ``dq_i S_i`` plus
    the fee ``f_i |dq_i| S_i`` and the slippage ``h_i |dq_i| S_i + c_i |dq_i S_i|^{3/2}`` (half
    spread and impact, :class:`SpotRates`; ``slippage_spot``; the optimiser's spot leg prices the
    same h_i and, from its risk model's vol, the impact). Returns whether anything traded.

    An asset in ``target.spot_gross`` (sold and bought in one decision: a loss harvest) fills as
    two trades at S_i: a sale of s_i = min(sold_i, q_i) units, then a buy of
    b_i = q_i* - q_i + s_i units (so the holding ends at q_i*); each pays as above (the fee
    f_i (s_i + b_i) S_i in all), and ``state.sold_first`` keeps s_i for the lots
    (``scenarios.replay_tax.book_lots``). When b_i <= 0 the net trade fills as above."""
    traded = False
    state.sold_first.clear()
    for i, a in enumerate(inputs.assets):
        q_new = float(target.spot.get(a, state.spot[a]))
        if not (math.isfinite(q_new) and q_new >= 0):
            raise ValidationError(f"policy.spot.{a}", f"is {q_new} at {market.time}",
                                  "a policy must target finite spot quantities >= 0")
        if q_new == state.spot[a] and a not in target.spot_gross:
            continue
        rates = SpotRates.at(inputs, k, i)
        if a in target.spot_gross and _fill_round_trip(rates, a, q_new, state, market, target, row,
                                                       trades):
            traded = True
            continue
        dq = q_new - state.spot[a]
        if dq == 0:
            continue
        _spot_trade(rates, a, dq, market, state, row, trades)
        state.spot[a] = q_new
        traded = True
    return traded


def _spot_trade(rates: SpotRates, a: str, dq: float, market: MarketSnapshot,
                state: ReplayState, row: Row, trades: list[Event]) -> None:
    """Pay for dq units of asset ``a`` at the close S: cash -= dq S + fee + slippage
    (:class:`SpotRates`); the row's fee_spot, slippage_spot and traded_spot and one trade event
    record it (the holding is the caller's to set)."""
    px = market.spot_price(a)
    fee = rates.fee * abs(dq) * px
    slip = rates.slippage(dq, px)
    state.cash -= dq * px + fee + slip
    row["fee_spot"] = float(row["fee_spot"]) + fee
    row["slippage_spot"] = float(row["slippage_spot"]) + slip
    row["traded_spot"] = float(row["traded_spot"]) + abs(dq) * px
    trades.append({"time": market.time, "kind": "spot", "symbol": a, "quantity": dq,
                   "price": px, "notional": dq * px, "fee": fee, "slippage": slip})


def _fill_round_trip(rates: SpotRates, a: str, q_new: float, state: ReplayState,
                     market: MarketSnapshot, target: TargetHoldings, row: Row,
                     trades: list[Event]) -> bool:
    """Fill asset ``a``'s gross sale and buy-back (see :func:`fill_spot`): sell
    s = min(sold, q) units, buy b = q* - q + s units at the close S; False (nothing done) when
    s <= 0 or b <= 0, the net trade then fills alone."""
    sold, _ = target.spot_gross[a]
    held = state.spot[a]
    s = min(float(sold), held)
    b = q_new - held + s
    if not (math.isfinite(s) and s > 0 and b > 0):
        return False
    for dq in (-s, b):
        _spot_trade(rates, a, dq, market, state, row, trades)
    state.spot[a] = q_new
    state.sold_first[a] = s
    return True


@dataclass(frozen=True)
class FuturesOrders:
    """The futures trades of a step: new quantities (contracts) of the contracts that move, and per
    contract (book order) the quantity traded dq and its notional at mark t = dq x npc (USD)."""

    new_q: dict[str, float]
    dq: np.ndarray
    trade_usd: np.ndarray


def futures_orders(inputs: ReplayInputs, state: ReplayState, market: MarketSnapshot,
                   target: TargetHoldings, k: int) -> FuturesOrders:
    """(4) Target exposure x_j* (USD) -> contracts q_j* = x_j* / npc_j at step k's marks (held
    position when the target omits j; 0 once a dated contract has expired); |q* - q| within
    ``QTY_RTOL`` relative is no trade. A contract within ``min_days_to_expiry`` of its expiry
    (``ReplayInputs.near_expiry``, the order planner's rule) is only reduced: q* becomes
    ``reduce_only_quantity(q, q*)`` (same sign and |q*| <= |q|; an increase keeps q, a flip
    closes to 0), as the planner sends only the reduce-only part there.

    The fill (:func:`fill_futures`, ``Book.with_futures``) re-strikes a changed linear position at
    the mark, so its exposure is its notional q* x npc = x*: the plain conversion is exact. An
    inverse position struck at entry E away from the mark holds the exposure x = q x size x mark /
    E (``Book.futures_exposure``), not q x npc, and moves by the exchange's fill rule
    (``models.fill_rule.contracts_after``: grows by npc a contract, shrinks in proportion, re-opens
    past a flip); a target within ``QTY_RTOL`` of its exposure is no trade."""
    new_q: dict[str, float] = {}
    dq = np.zeros(len(inputs.cons))
    trade_usd = np.zeros(len(inputs.cons))
    npc = inputs.arrays.notional_per_contract(inputs.mark[k])
    expiries, held, wanted = inputs.expiries, state.futures, target.futures
    for j, c in enumerate(inputs.cons):
        pos = held.get(c)
        q_old = pos.contracts if pos is not None else 0.0
        x_old = q_old * float(npc[j])  # the held exposure: face x mark / entry for an inverse
        if pos is not None and q_old != 0 and inputs.arrays.inverse[j]:
            x_old *= float(inputs.mark[k][j]) / pos.entry_price
        x_new = float(wanted.get(c, x_old))
        if c in expiries and inputs.step_ns[k] >= expiries[c]:
            x_new = 0.0  # an expired dated contract cannot be held
        if not math.isfinite(x_new):
            raise ValidationError(f"policy.futures.{c}", f"is {x_new} at {market.time}",
                                  "a policy must target finite futures notional (USD)")
        q_new = x_new / float(npc[j])
        if pos is not None and q_old != 0 and inputs.arrays.inverse[j]:
            q_new = contracts_after(x_new, q_old, x_old, float(npc[j]))
        if inputs.near_expiry[k, j]:
            q_new = reduce_only_quantity(q_old, q_new)  # no opening or increase near expiry
        if math.isclose(q_new, q_old, rel_tol=QTY_RTOL, abs_tol=0.0):
            continue  # the same position (notional round trip): no trade, no re-strike
        if (pos is not None and q_old != 0 and inputs.arrays.inverse[j]
                and math.isclose(x_new, x_old, rel_tol=QTY_RTOL, abs_tol=0.0)):
            continue  # the inverse position's exposure q size mark / entry is the target already
        new_q[c] = q_new
        dq[j] = q_new - q_old
        trade_usd[j] = dq[j] * npc[j]
    return FuturesOrders(new_q=new_q, dq=dq, trade_usd=trade_usd)


def fill_futures(book: Book, inputs: ReplayInputs, state: ReplayState, market: MarketSnapshot,
                 k: int, orders: FuturesOrders, row: Row, trades: list[Event]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(4) Fill the orders at mark through ``Book.with_futures`` (the exchange's fill rule; a
    linear position re-struck, its PnL realised into cash); fee and slippage
    (:func:`futures_fill_costs`) are paid from cash. Returns them per
    contract (USD; zeros when nothing trades)."""
    if not orders.new_q:
        return np.zeros(len(inputs.cons)), np.zeros(len(inputs.cons))
    daily_vol = inputs.vol[k] if inputs.vol is not None else np.zeros(len(inputs.cons))
    cost = CostModel.build(book.contracts, market, daily_vol, inputs.impact_k)
    fee_j, slip_j = futures_fill_costs(cost, orders.trade_usd, inputs.with_impact)
    rebalance_futures(book, state, market, orders.new_q)
    state.cash -= float(fee_j.sum()) + float(slip_j.sum())
    row["fee_futures"] = float(row["fee_futures"]) + float(fee_j.sum())
    row["slippage_futures"] = float(slip_j.sum())
    row["traded_futures"] = float(np.abs(orders.trade_usd).sum())
    for j, c in enumerate(inputs.cons):
        if c in orders.new_q:
            trades.append({"time": market.time, "kind": "futures", "symbol": c,
                           "quantity": float(orders.dq[j]), "price": market.mark_price(c),
                           "notional": float(orders.trade_usd[j]), "fee": float(fee_j[j]),
                           "slippage": float(slip_j[j])})
    return fee_j, slip_j


def roll_rows(target: RollTargets, cons: Sequence[str], market: MarketSnapshot, k: int,
              trade_usd: np.ndarray, fee_j: np.ndarray, slip_j: np.ndarray) -> list[Event]:
    """``BacktestResult.rolls`` rows for the declared (from, to) pairs with a leg traded; basis =
    opened x (P_to - P_from) / P_to (USD, > 0 a cost). Pairs rolling into one contract share its
    leg (notional, fee, slippage) in proportion to their closed legs' |notional| (equally when
    none closed), so the table's fees add up to the step's."""
    out: list[Event] = []
    for a, b in target.rolls:
        for sym in (a, b):
            if sym not in cons:
                raise ValidationError(f"policy.rolls.{sym}", f"is not a contract of the book at "
                                      f"{market.time}", f"roll between {list(cons)}")
    pairs = [(cons.index(a), cons.index(b)) for a, b in target.rolls
             if trade_usd[cons.index(a)] != 0 or trade_usd[cons.index(b)] != 0]
    for ja, jb in pairs:
        peers = [abs(float(trade_usd[i])) for i, j in pairs if j == jb]
        w = abs(float(trade_usd[ja])) / sum(peers) if sum(peers) > 0 else 1.0 / len(peers)
        a, b = cons[ja], cons[jb]
        pa, pb = market.mark_price(a), market.mark_price(b)
        opened = w * float(trade_usd[jb])
        out.append({"time": market.time, "step": k, "from": a, "to": b, "from_price": pa,
                    "to_price": pb, "notional": -float(trade_usd[ja]), "opened": opened,
                    "fee": float(fee_j[ja] + w * fee_j[jb]),
                    "slippage": float(slip_j[ja] + w * slip_j[jb]),
                    "basis": opened * (pb - pa) / pb})
    return out
