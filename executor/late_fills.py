"""Orders journalled "not placed" that the exchange executed later: found, journalled, said.

A send answered "execution status unknown" (Binance -1006/-1007, a timeout) is judged not placed
only when nothing shows it ``settle_s`` after the send (:mod:`executor.reconcile`), and its leg
is then re-planned with a fresh client id. The exchange bounds nothing: an order its backend
executes later still than that is a second order on the contract, which no client can rule out.
What a run can do is find it. Before a run sends anything, every leg of the account journalled
``not_placed`` in the last :data:`WATCH_MS` (sent at least ``settle_s`` ago) is looked up by its
client id (one ``fetch_order`` each; such legs are rare). One the exchange shows filled is
journalled with its fills (status, exchange id, quantity, average price, fee; the fill row's time
is the time it was found) and named in the run's messages: the account held more (or less) than
that plan meant, and the new plan starts from the account as it is, so it trades the difference
back. The positions are the account's at every plan; this keeps the journal's fills, fees and
turnover true to what the exchange did.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from executor.base import ExchangeGateway, OrderStatus
from executor.journal import Journal
from executor.order_fees import with_traded_fee
from executor.plan import Instrument
from executor.resumable import journalled_leg
from models.market import MarketSnapshot

log = logging.getLogger("executor.late_fills")

#: How long (ms) after its send a leg journalled not placed is looked up again: three days, the
#: age past which Binance no longer finds an order that ended without a fill (an order it executed
#: stays found), and longer than any backend delay reported.
WATCH_MS = 3 * 86_400_000


def find_late_fills(gateway: ExchangeGateway, journal: Journal, account: str, now_ms: int,
                    settle_ms: int, instruments: Mapping[str, Instrument],
                    market: MarketSnapshot) -> list[str]:
    """Look up ``account``'s legs journalled not placed and sent in [now - WATCH_MS, now -
    ``settle_ms``) (ms, UTC) on the contracts of ``instruments``; journal each the exchange shows
    filled (see the module doc) and return one message per such leg."""
    out: list[str] = []
    for row in journal.sent_between(account, now_ms - WATCH_MS, now_ms - settle_ms):
        if row.status != OrderStatus.NOT_PLACED or row.symbol not in instruments:
            continue
        inst = instruments[row.symbol]
        state = gateway.find_order(journalled_leg(row, inst, market))
        if state is None or state.filled <= 0:
            continue
        assert row.sent_ms is not None  # sent_between selects the rows by their send time
        state, note = with_traded_fee(gateway, inst, state, row.sent_ms)
        why = ("executed by the exchange after it was proven not placed (nothing showed it "
               f"{settle_ms / 1000:g} s after the send): a second order on the contract")
        journal.record_state(row.plan_id, row.leg, state, "; ".join(x for x in (why, note) if x))
        price = "an unreported price" if state.average is None else f"{state.average:,.10g}"
        msg = (f"leg {row.leg} of plan {row.plan_id} ({row.symbol}, {row.side} {row.contracts:g}), "
               f"journalled not placed, was executed late: {state.filled:g} contracts at {price}. "
               f"The account held that much more than the plan meant; this run starts from the "
               f"account as it is")
        log.warning("%s", msg)
        out.append(msg)
    return out
