"""A limit leg refused at the exchange's price band because the mark moved after the plan.

Binance USD-M checks a LIMIT order's price against its mark M when the order arrives: a BUY above
M x multiplierUp is refused (-4016), a SELL below M x multiplierDown too (-4024); the order never
reaches the book, so it was definitely not placed. fbr prices limits inside the band at the mark
it read (:mod:`executor.price_band`), so such a refusal means the mark moved since, in the leg's
favour (a buy's mark fell, a sell's rose). The run then:

- skips that contract's other legs of the round (each would be refused at the same price);
- reads the marks again before the next round and takes the refused contracts' new marks
  (:func:`marks_now`; every other contract keeps the marks the run started with);
- re-plans the contract from the account's position at that mark, with fresh client ids, its
  limit held to the refused one (:func:`held_to_refused`): a buy never above it, a sell never
  below, so the plan's slippage guard still bounds what the run pays if the mark moves back.

The rounds' bound (``RetryPolicy.max_rounds``) bounds the retries; a contract still short of its
target at the end is a gap of the report, as any other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from executor.base import ExchangeGateway
from executor.plan import OrderLeg, Side
from models.book import Book
from models.market import MarketSnapshot

#: The journal's note on a leg skipped in the round of its contract's refusal.
SKIPPED_NOTE = ("an earlier leg on this contract was refused at the exchange's price band; "
                "re-planned in the next round at the contract's mark now")


@dataclass
class BandRefusals:
    """A run's legs refused at the price band, by contract (the latest refusal's leg), and the
    contracts whose mark is to be read again before the next round."""

    refused: dict[str, OrderLeg] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)

    def add(self, leg: OrderLeg) -> None:
        """Record ``leg``'s refusal: its contract's mark is read again before the next round."""
        self.refused[leg.symbol] = leg
        self.stale.add(leg.symbol)


def marks_now(gateway: ExchangeGateway, book: Book, market: MarketSnapshot,
              symbols: Iterable[str]) -> MarketSnapshot:
    """``market`` with the marks of ``symbols`` (USD) read from the exchange now; every other
    field and contract as it was."""
    wanted = set(symbols)
    if not wanted:
        return market
    now = gateway.market(book, market)
    mark = {s: (now.mark_price(s) if s in wanted else p) for s, p in market.mark.items()}
    return dataclasses.replace(market, mark=mark)


def held_to_refused(legs: Iterable[OrderLeg], refused: Mapping[str, OrderLeg]) -> list[OrderLeg]:
    """``legs`` with each limit held to its contract's refused limit on the same side (USD):
    min(limit, refused) for a buy, max(limit, refused) for a sell. Other legs unchanged."""
    out: list[OrderLeg] = []
    for leg in legs:
        old = refused.get(leg.symbol)
        if old is None or old.side != leg.side or leg.limit_price is None or old.limit_price is None:
            out.append(leg)
            continue
        buy = leg.side == Side.BUY
        held = min(leg.limit_price, old.limit_price) if buy else max(leg.limit_price, old.limit_price)
        out.append(dataclasses.replace(leg, limit_price=held))
    return out
