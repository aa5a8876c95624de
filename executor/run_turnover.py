"""The traded notional of an account over a time window, read from the journal's orders (USD).

The daily loop's turnover limit and its daily summary count what the journal says was sent,
not what the run tables' cycle rows say: a row is written after the plan's execution (and its
alerts), so a crash in between, a leg in doubt settled by a later plan's execution, or a manual
``fbr execute`` left fills that no row carries. Per order of the account sent in the window
(``orders.sent_ms``, the executor's clock, ms UTC):

- a leg whose fate is settled counts |filled| at its average price;
- a leg still in doubt (``sending``, ``unknown``, ``open``) counts its whole size at the current
  mark, or its filled part when larger: it may have filled, and an order sent counts as sent.

A notional is |contracts| x the contract's notional per contract at that price (inverse contracts
included); a contract no longer in the book is taken as linear (contracts x price).
"""

from __future__ import annotations

from datetime import datetime

from executor.base import IN_DOUBT
from executor.journal import Journal, JournalOrder
from executor.run_cycle import View


def leg_notional(view: View, leg: JournalOrder) -> float:
    """|USD notional| the leg counts for (see the module docstring)."""
    inst = view.instruments.get(leg.symbol)
    mark = view.market.mark.get(leg.symbol) if inst is not None else None
    if leg.status in IN_DOUBT:
        size, price = max(abs(leg.contracts), abs(leg.filled)), mark or leg.average
    else:
        size, price = abs(leg.filled), leg.average
    if price is None or price <= 0 or size == 0:
        return 0.0
    if inst is None:
        return size * price
    return size * inst.contract.notional_per_contract(price)


def traded_notional(journal: Journal, account: str, since: datetime, until: datetime,
                    view: View) -> float:
    """Sum of :func:`leg_notional` over the account's orders sent in [since, until) (USD)."""
    legs = journal.sent_between(account, int(since.timestamp() * 1000), int(until.timestamp() * 1000))
    return float(sum(leg_notional(view, leg) for leg in legs))
