"""Settlement of dated futures at expiry (backtest step 2b).

On the first step at or after a contract's expiry (:func:`expiry_ns`, UTC ns) its position is
closed at the settlement price S, not the mark: the PnL is realised into cash, the
settlement-vs-mark PnL ``q x size x (S - mark)`` (linear) is reported, and a settlement fee
``taker_fee x |notional at S|`` is paid from cash (:func:`settle_expired`; trade kind "settle").

S is the underlying's spot at the expiry T: the step's spot when T is a step's time (or before
the path starts), else, T strictly between steps t0 < T < t1, the spot linearly interpolated in
time, ``S(T) = S0 + (S1 - S0) (T - t0) / (t1 - t0)`` (:func:`spot_at_expiry`): the contract's PnL
stops at its expiry, not hours later at the next step's close. The exchange's own delivery price
(a real delivery close) is not used: the path carries no price between its steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pandas as pd

from models.book import Book
from models.instruments import ContractKind, FuturesContract
from models.market import MarketSnapshot
from scenarios.replay_state import ReplayState, rebalance_futures, value_state


def expiry_ns(contract: FuturesContract) -> int | None:
    """A dated contract's expiry as UTC int64 ns (a naive expiry is read as UTC); None for a
    perpetual."""
    if contract.kind != ContractKind.DATED or contract.expiry is None:
        return None
    t = pd.Timestamp(contract.expiry)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return int(t.as_unit("ns").value)


def spot_at_expiry(expiry: int, t0: int, t1: int, s0: float, s1: float) -> float:
    """The underlying's spot (USD) at ``expiry`` (UTC ns) from the closes ``s0`` at ``t0`` and
    ``s1`` at ``t1`` (t0 < t1): ``s0 + (s1 - s0) (expiry - t0) / (t1 - t0)`` for t0 < expiry < t1
    (linear in time), else ``s1``."""
    if not t0 < expiry < t1:
        return s1
    return s0 + (s1 - s0) * (expiry - t0) / (t1 - t0)


def settle_expired(book: Book, state: ReplayState, market: MarketSnapshot, t_ns: int,
                   expiries: Mapping[str, int], trades: list[dict[str, object]],
                   prices: Mapping[str, float] | None = None) -> tuple[float, float]:
    """Close every open dated position with expiry <= t at its settlement price S (step 2b):
    ``prices[symbol]`` when given (the spot at expiry, :func:`spot_at_expiry`), else the
    underlying's spot at ``market``.

    The PnL is realised into cash at S; returns (PnL of S against the mark, USD: the NAV change of
    re-marking the settled positions from mark to S; fees, USD: ``taker_fee x |q x size x S|``
    for linear, ``taker_fee x |q x size|`` for inverse, paid from cash). Appends "settle" trades.
    """
    due = [c for c in book.contract_symbols if c in expiries and t_ns >= expiries[c]
           and c in state.futures and state.futures[c].contracts != 0]
    if not due:
        return 0.0, 0.0
    cons = {c.symbol: c for c in book.contracts}
    given = prices if prices is not None else {}
    at_spot = replace(market, mark={**market.mark, **{
        c: float(given[c]) if c in given else market.spot_price(cons[c].underlying) for c in due}})
    pnl = value_state(book, state, at_spot).nav - value_state(book, state, market).nav
    fees = 0.0
    for c in due:
        q = state.futures[c].contracts
        px = at_spot.mark_price(c)
        notional = q * cons[c].notional_per_contract(px)
        fee = cons[c].taker_fee * abs(notional)
        fees += fee
        trades.append({"time": market.time, "kind": "settle", "symbol": c, "quantity": -q,
                       "price": px, "notional": -notional, "fee": fee, "slippage": 0.0})
    rebalance_futures(book, state, at_spot, dict.fromkeys(due, 0.0))
    state.cash -= fees
    return pnl, fees

