"""Paper trading on an exchange's live prices (``fbr run`` with ``exchange = "paper"`` and
``prices = "binanceusdm"``).

At each read of the loop, :class:`LivePrices` moves the paper exchange to the source's market (its
marks, index prices as spot and funding rates: public endpoints, no keys; spreads and ADV from the
book file) and pays every funding settlement passed since its previous read: for a contract with
interval h hours, the settlements are the times k x h on the UTC epoch grid in (t_prev, t], each
paid at the rate read now (cash -= n x r x q x npc(mark), :meth:`PaperGateway.settle_funding`).
The first read pays nothing, and neither does a restart for the time the loop was down (the paper
account has no record of it): a paper account is an approximation, its funding is the rate now.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime

import pandas as pd

from executor.base import ExchangeGateway
from executor.paper import PaperGateway
from models.book import Book
from models.instruments import ContractKind
from models.market import MarketSnapshot, settlements_between


class LivePrices:
    """The fallback market of a paper loop that follows ``source``'s prices (see the module
    docstring)."""

    def __init__(self, paper: PaperGateway, source: ExchangeGateway, book: Book,
                 fallback: MarketSnapshot) -> None:
        self.paper, self.source, self.book, self.fallback = paper, source, book, fallback
        self.last: datetime | None = None
        self.paid: float = 0.0

    def __call__(self, t: datetime) -> MarketSnapshot:
        """The market at ``t`` (the source's, stamped ``t``); the paper exchange moved to it and
        the funding since the previous call settled."""
        market = dataclasses.replace(self.source.market(self.book, self.fallback),
                                     time=pd.Timestamp(t))
        self.paper.set_market(market)
        if self.last is not None:
            self.paid += self.paper.settle_funding(self._rates(market, self.last, t))
        self.last = t
        return market

    def _rates(self, market: MarketSnapshot, t0: datetime, t1: datetime) -> Mapping[str, float]:
        """Per perpetual: the rate now x the settlements in (t0, t1]."""
        return {c.symbol: market.funding_rate(c.symbol) * settlements_between(
                    t0, t1, c.funding_interval_h)
                for c in self.book.contracts if c.kind == ContractKind.PERPETUAL}
