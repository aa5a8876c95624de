"""Paper trading on an exchange's live prices (``fbr run`` with ``exchange = "paper"`` and
``prices = "binanceusdm"``).

At each read of the loop, :class:`LivePrices` moves the paper exchange to the source's market (its
marks, index prices as spot and funding rates: public endpoints, no keys; spreads and ADV from the
book file) and pays every funding settlement passed since the account's funding was last paid (a
time kept with the paper account, :meth:`PaperGateway.settle_funding_to`, so whichever process reads
it first pays each settlement once): for a perpetual j with interval h_j hours, the settlements are
the times k x h_j on the UTC epoch grid in (t_prev, t], n_j of them, each paid at its settled rate
r_jk where the source serves the exchange's funding-rate history (:class:`FundingRateHistory`:
Binance's public ``GET /fapi/v1/fundingRate``), else at the rate r_j read now (fraction per
settlement): cash -= sum_k r_jk x q_j x npc_j(mark_j) USD (q_j signed contracts, npc_j the USD
notional per contract at the mark now, :meth:`PaperGateway.settle_funding`). A 10 SOL short at mark
150 with r = 5e-4 and h = 4 over (01:00, 09:00] holds the 04:00 and 08:00 settlements:
2 x 5e-4 x 10 x 150 = 1.50 USD received.

h_j is the exchange's interval, not the book file's: Binance settles most perpetuals every 8 h and
moves some to 4 h or 1 h, listed in its public ``GET /fapi/v1/fundingInfo`` (read by
:func:`exchange_intervals`, as the exchange path reads it, ``executor.ccxt_funding``). The paper
venue's contracts carry that interval too (:meth:`PaperGateway.set_funding_intervals`), so the
instruments it reports and the account it reads give the loop's carry (rate per settlement x the
settlements in the horizon) and its next settlement the exchange's count, as
``executor.ccxt_metadata.with_instruments`` does on the exchange path. The intervals are read at
the feed's first read and whenever the loop reads the venue's instruments (:class:`LivePaperGateway`:
at its first read and once a UTC day). A perpetual the source states no interval for keeps the
book file's.

After the funding, the loop's feed applies the exchange's liquidation rule at the new marks
(:meth:`PaperGateway.liquidate_if_due`: collateral <= maintenance closes every position at its
mark, 1% penalty, the insurance fund covering a deficit; kept in ``paper.liquidations``); a one-off
read (``liquidate=False``: a manual trade, a status read, :mod:`fbr.paper_prices`) leaves that to
the loop, which alerts it.

The first read of an account pays nothing. A loop restarted, or run from cron (``--once``), pays the
settlements since the last read of any process, at their settled rates (the rate now for any the
exchange's history does not give): a paper account is an approximation, and each settlement is
paid on the positions held, at the marks, of the first read after it (a position opened between
a settlement and the next read pays none for it when the trade itself read the prices first, as
every paper trade does).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import pandas as pd

from executor.base import ExchangeGateway
from executor.paper import PaperGateway, PaperStore
from executor.plan import Instrument
from executor.safety import redact
from models.book import Book
from models.errors import FbrError
from models.instruments import ContractKind, FuturesContract
from models.market import MarketSnapshot, settlements_between

log = logging.getLogger("executor.paper_feed")


@runtime_checkable
class FundingIntervals(Protocol):
    """A price source that states its exchange's funding intervals (``executor.ccxt_gateway``:
    the exchange's symbols and its funding-info list)."""

    def exchange_symbol(self, contract: FuturesContract) -> str: ...

    def funding_hours(self, symbols: Iterable[str]) -> dict[str, float]: ...


@runtime_checkable
class FundingRateHistory(Protocol):
    """A price source that serves its exchange's settled funding rates (``executor.ccxt_funding``:
    the public funding-rate history)."""

    def exchange_symbol(self, contract: FuturesContract) -> str: ...

    def funding_rate_history(self, symbol: str, since_ms: int,
                             until_ms: int) -> list[tuple[int, float]]: ...


def exchange_intervals(source: ExchangeGateway, book: Book) -> dict[str, float]:
    """Hours between funding settlements of each of ``book``'s perpetuals on ``source``'s
    exchange (book symbol -> hours): the source's ``funding_hours`` of the contract's exchange
    symbol (a ccxt gateway: the exchange's funding-info list, a public endpoint, and 8 h for the
    Binance perpetuals it leaves out), else the book's ``funding_interval_h`` (a source that
    states none)."""
    perps = [c for c in book.contracts if c.kind == ContractKind.PERPETUAL]
    listed: dict[str, float] = {}
    if perps and isinstance(source, FundingIntervals):
        names = {c.symbol: source.exchange_symbol(c) for c in perps}
        hours = source.funding_hours(list(names.values()))
        listed = {s: float(hours[x]) for s, x in names.items() if x in hours}
    return {c.symbol: listed.get(c.symbol, c.funding_interval_h) for c in perps}


class LivePrices:
    """The fallback market of a paper loop that follows ``source``'s prices (see the module
    docstring). ``hours``: the funding interval of each perpetual (book symbol -> hours), the
    exchange's, once read; ``paid``: the funding received so far (USD, signed)."""

    def __init__(self, paper: PaperGateway, source: ExchangeGateway, book: Book,
                 fallback: MarketSnapshot, *, liquidate: bool = True) -> None:
        self.paper, self.source, self.book, self.fallback = paper, source, book, fallback
        self.liquidate = liquidate
        self.paid: float = 0.0
        self.hours: dict[str, float] | None = None

    def refresh(self) -> dict[str, float]:
        """Read the exchange's funding intervals (:func:`exchange_intervals`) and give them to the
        paper venue (its instruments and account carry them from now on)."""
        self.hours = exchange_intervals(self.source, self.book)
        self.paper.set_funding_intervals(self.hours)
        return self.hours

    def __call__(self, t: datetime) -> MarketSnapshot:
        """The market at ``t`` (the source's, stamped ``t``); the paper exchange moved to it and
        the funding settlements since the account's were last paid settled at the exchange's
        intervals (:meth:`PaperGateway.settle_funding_to`: the time is kept with the account, so
        a cron run or a manual trade pays the settlements since the last read of any process,
        each once, and it never moves back after a wall clock stepped back), then, with
        ``liquidate``, the exchange's liquidation rule at the new marks."""
        hours = self.hours if self.hours is not None else self.refresh()
        market = dataclasses.replace(self.source.market(self.book, self.fallback),
                                     time=pd.Timestamp(t))
        self.paper.set_market(market)
        t_ms = int(t.timestamp() * 1000)
        paid_to = self.paper.funding_paid_to()
        settled = {} if paid_to is None else self._settled(paid_to, t_ms, hours)

        def rates(t0_ms: int, t1_ms: int) -> dict[str, float]:
            return _rates(market, hours, t0_ms, t1_ms, settled)

        self.paid += self.paper.settle_funding_to(t_ms, rates)
        if self.liquidate:
            self.paper.liquidate_if_due()  # the exchange's rule at the new marks
        return market

    def _settled(self, t0_ms: int, t1_ms: int,
                 hours: Mapping[str, float]) -> dict[str, list[tuple[int, float]]]:
        """The exchange's settled rates in (t0, t1] of each perpetual with a settlement there, when
        the source serves them (:class:`FundingRateHistory`; read before the payment's
        transaction, so no network read holds the journal); {} for a source that does not, or a
        contract whose read fails (logged: the rate now stands in)."""
        if not isinstance(self.source, FundingRateHistory):
            return {}
        out: dict[str, list[tuple[int, float]]] = {}
        for c in self.book.contracts:
            h = hours.get(c.symbol)
            if h is None or settlements_between(_utc(t0_ms), _utc(t1_ms), h) == 0:
                continue
            try:
                out[c.symbol] = self.source.funding_rate_history(self.source.exchange_symbol(c),
                                                                 t0_ms, t1_ms)
            except FbrError as exc:
                log.warning("funding rates of %s unread (%s): the rate now stands in", c.symbol,
                            redact(str(exc)))
        return out


def _rates(market: MarketSnapshot, hours: Mapping[str, float], t0_ms: int, t1_ms: int,
           settled: Mapping[str, list[tuple[int, float]]]) -> dict[str, float]:
    """Per perpetual j, the summed rate of its n_j settlements k x h_j hours on the UTC epoch grid
    in (t0, t1] (``hours``: h_j by book symbol): the exchange's settled rates where ``settled``
    holds them (at most n_j, those in (t0, t1]), and the rate now (fraction per settlement) for
    each of the others."""
    out: dict[str, float] = {}
    for s, h in hours.items():
        n = settlements_between(_utc(t0_ms), _utc(t1_ms), h)
        known = [r for t, r in settled.get(s, []) if t0_ms < t <= t1_ms][:n]
        out[s] = sum(known) + (n - len(known)) * market.funding_rate(s)
    return out


def _utc(t_ms: int) -> datetime:
    """``t_ms`` (ms since the epoch) as an aware UTC datetime."""
    return datetime.fromtimestamp(t_ms / 1000.0, tz=UTC)


class LivePaperGateway(PaperGateway):
    """The paper venue of a loop on an exchange's prices: a :class:`PaperGateway` whose
    instruments are read through its ``feed`` (:meth:`LivePrices.refresh`, the exchange's funding
    intervals) each time the loop asks for them, which it does before it reads the market (at its
    first read and once a UTC day), as the exchange path reads the exchange's instruments."""

    feed: LivePrices | None = None

    def instruments(self, book: Book) -> dict[str, Instrument]:
        """The exchange's funding intervals read, then the paper venue's instruments."""
        if self.feed is not None:
            self.feed.refresh()
        return super().instruments(book)


def live_paper(account: Book, book: Book, market: MarketSnapshot, source: ExchangeGateway, *,
               daily_vol: Mapping[str, float], store: PaperStore | None, liquidate: bool = True
               ) -> tuple[LivePaperGateway, LivePrices]:
    """The paper venue on ``source``'s prices and its feed: the paper account ``account`` (the
    journal's), the book file ``book`` (its contracts, spreads and ADV), ``market`` the book
    file's market (what the source does not give), ``daily_vol`` per contract (impact);
    ``liquidate``: the feed applies the liquidation rule (the loop's; not a one-off read's)."""
    gw = LivePaperGateway(account, market, daily_vol=daily_vol, store=store)
    feed = LivePrices(gw, source, book, market, liquidate=liquidate)
    gw.feed = feed
    return gw, feed
