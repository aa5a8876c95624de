"""The paper venue of a journal's paper account, at the prices that account follows.

An ``fbr run`` loop with ``[run] prices = "binanceusdm"`` moves its paper account to the exchange's
live marks at every read (:mod:`executor.paper_feed`) and records that it does
(:meth:`executor.paper_store.PaperStore.price_source`). Every other reader and trader of that
account (``fbr execute``/``--resume``, ``status``, ``solve`` and ``whatif --exchange paper``, the
dashboard) then reads the same source once, so a manual paper trade between two cycles fills at
the exchange's price now and the account is valued where the loop values it, not at the book file's
(possibly months old) market. An account no loop followed an exchange on stays on the book file's
market. A trade's read first pays the funding settlements since the account's were last paid (the
time kept with the account: :meth:`executor.paper.PaperGateway.settle_funding_to`), so its fill
comes after them, as on the exchange; a read that changes nothing (status, solve, what-if, the
dashboard: no store) pays none. None applies the liquidation rule: that is the loop's, which
records and alerts it; a trade on an account at or below maintenance is refused by the margin
checks of the plan.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from executor.base import ReadFailedError
from executor.safety import redact
from models.errors import FbrError

if TYPE_CHECKING:
    from executor.base import ExchangeGateway
    from executor.journal import Journal
    from executor.paper import PaperGateway, PaperStore
    from fbr.config_loader import LoadedBook
    from models.book import Book


def public_gateway(exchange: str, *, pledge_source: str = "multi_assets") -> ExchangeGateway:
    """A ccxt gateway without keys: public market data only (marks, index prices, funding);
    ``pledge_source`` is the book's ``[book] pledge_source``, as every gateway of a book gets it."""
    from executor.ccxt_gateway import CcxtGateway
    from executor.safety import Credentials
    from fbr.execute_wiring import BACKOFF_S, EXCHANGE_FACTORIES

    return CcxtGateway(EXCHANGE_FACTORIES[exchange](Credentials("", "")), base_delay_s=BACKOFF_S,
                       pledge_source=pledge_source)


def daily_vol(loaded: LoadedBook) -> dict[str, float]:
    """Daily vol of each contract's underlying (fraction; the paper impact term)."""
    vol = dict(zip(loaded.risk.symbols, map(float, loaded.risk.daily_vol), strict=True))
    return {c.symbol: vol.get(c.underlying, 0.0) for c in loaded.book.contracts}


def followed_prices(journal: Journal | None, book_name: str) -> str:
    """Whose prices the journal's paper account of ``book_name`` follows (``"book"`` without a
    journal or before a loop named an exchange)."""
    from contextlib import closing

    from executor.paper_store import BOOK_PRICES, PaperStore

    if journal is None:
        return BOOK_PRICES
    with closing(PaperStore(journal.path, book_name)) as store:
        return store.price_source()


def paper_gateway(loaded: LoadedBook, account: Book, source: str, *,
                  store: PaperStore | None = None) -> PaperGateway:
    """The paper venue over ``account`` (the journal's paper account; persisted in ``store`` when
    given) at ``source``'s market: the book file's for ``"book"``, else the exchange's marks,
    index prices and funding read now (public endpoints, no keys), spreads and ADV the book
    file's."""
    from executor.paper import PaperGateway
    from executor.paper_feed import live_paper
    from executor.paper_store import BOOK_PRICES

    vol = daily_vol(loaded)
    if source == BOOK_PRICES:
        return PaperGateway(account, loaded.market, daily_vol=vol, store=store)
    exchange = public_gateway(source, pledge_source=loaded.pledge_source)
    gw, feed = live_paper(account, loaded.book, loaded.market, exchange, daily_vol=vol, store=store,
                          liquidate=False)
    try:
        feed(datetime.now(UTC))
    except FbrError as exc:
        raise ReadFailedError(
            f"the paper account of book {loaded.book.name!r} follows {source}'s live prices (an "
            f"`fbr run` with [run] prices = \"{source}\" recorded it), and they could not be read: "
            f"{redact(str(exc))}. Fix: check the network and run again (the account is read and "
            f"traded at the book file's market again once a loop on it runs with prices = "
            f"\"book\"; such a loop trades as any loop does)") from None
    return gw
