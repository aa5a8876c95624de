"""The legs a run is about to send, at the run's marks, and the USD safety limits
(:class:`executor.safety.Limits`) on them.

A plan's legs were checked when it was made, at that plan's marks; a run sends them later (a
resume after a crash, the market moved) or re-plans them from the account's positions. Either
way they are checked again here at the marks of the run: a leg's notional is
``sign x contracts x notional_per_contract(mark)`` (USD), and the per-plan limit counts what the
plan's legs filled so far, ``sum |filled| x notional_per_contract(mark)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from executor.journal import JournalOrder
from executor.plan import Instrument, OrderLeg, Side
from executor.price_band import limit_price
from executor.safety import Limits
from models.market import MarketSnapshot


def repriced(legs: Iterable[OrderLeg], instruments: Mapping[str, Instrument],
             market: MarketSnapshot) -> list[OrderLeg]:
    """``legs`` with their notional (USD, signed) at ``market``'s marks."""
    out: list[OrderLeg] = []
    for leg in legs:
        mark = market.mark_price(leg.symbol)
        npc = instruments[leg.symbol].contract.notional_per_contract(mark)
        sign = 1.0 if leg.side == Side.BUY else -1.0
        out.append(dataclasses.replace(leg, notional=sign * leg.contracts * npc, price=mark))
    return out


def at_marks(legs: Iterable[OrderLeg], instruments: Mapping[str, Instrument], market: MarketSnapshot,
             guard: float) -> list[OrderLeg]:
    """``legs`` priced at ``market``'s marks (:func:`repriced`), a limit leg's price again the
    slippage ``guard``'s from today's mark, held inside the exchange's band
    (:func:`executor.price_band.limit_price`), as a re-planned leg is: a plan resumed after the
    market moved sends no limit priced from the old marks (past today's band, or a guard that is
    no longer the user's)."""
    out: list[OrderLeg] = []
    for leg in repriced(legs, instruments, market):
        if leg.limit_price is not None:
            inst = instruments[leg.symbol]
            leg = dataclasses.replace(leg, limit_price=limit_price(
                leg.price, leg.side == Side.BUY, guard, inst.contract.tick, inst.price_band))
        out.append(leg)
    return out


def filled_usd(rows: Sequence[JournalOrder], instruments: Mapping[str, Instrument],
               market: MarketSnapshot) -> float:
    """What the journalled legs filled so far (USD at ``market``'s marks)."""
    return sum(abs(r.filled) * instruments[r.symbol].contract.notional_per_contract(
        market.mark_price(r.symbol)) for r in rows if r.symbol in instruments)


def check_leg_limits(limits: Limits, rows: Sequence[JournalOrder], legs: Sequence[OrderLeg],
                     instruments: Mapping[str, Instrument], market: MarketSnapshot) -> None:
    """Raise :class:`executor.safety.SafetyError` when a leg (at ``market``'s marks) breaks the
    per-order limit or the plan's fills plus these legs break the per-plan one."""
    limits.check((leg.notional for leg in repriced(legs, instruments, market)),
                 already_usd=filled_usd(rows, instruments, market))
