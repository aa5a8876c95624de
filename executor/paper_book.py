"""A book's paper account as the journal holds it (:func:`paper_book`), every reader's entry to it,
and the check that it holds only contracts the book lists (:func:`check_listed`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path

from executor.journal import Journal
from executor.journal_schema import JournalError
from executor.paper_store import VENUE, PaperStore
from models.book import Book, FuturesPosition
from models.errors import spoken_list
from models.instruments import ContractKind


def check_listed(book: Book, futures: Mapping[str, FuturesPosition], journal_path: Path) -> None:
    """Refuse a paper account (journal ``journal_path``) holding a position on a contract the book
    no longer lists: its exposure and PnL would be dropped from the book's NAV, and no plan could
    close it. Raises :class:`JournalError` naming the contracts (signed contracts) and the fix."""
    known = set(book.contract_symbols)
    stray = [f"{s} {p.contracts:.12g} contracts" for s, p in sorted(futures.items())
             if s not in known and p.contracts != 0]
    if stray:
        one = len(stray) == 1
        held = spoken_list(stray)
        raise JournalError(
            f"the paper account (journal {journal_path}) holds {held}, which the book no longer "
            f"lists. Fix: add the {'contract' if one else 'contracts'} back to the book and close "
            f"{'it' if one else 'them'}, or start a new journal (--journal)")


def with_funding_intervals(book: Book, hours: Mapping[str, float]) -> Book:
    """``book`` whose perpetuals named in ``hours`` (book symbol -> hours between settlements)
    carry that ``funding_interval_h``; ``book`` itself when none is named."""
    if not any(c.symbol in hours and c.kind == ContractKind.PERPETUAL for c in book.contracts):
        return book
    return dataclasses.replace(book, contracts=tuple(
        dataclasses.replace(c, funding_interval_h=float(hours[c.symbol]))
        if c.symbol in hours and c.kind == ContractKind.PERPETUAL else c for c in book.contracts))


def paper_book(book: Book, journal: Journal) -> tuple[Book, bool]:
    """``book`` with its paper account (positions and cash) from the journal file; (book, found).

    The paper exchange's own tables come first; a journal written before they existed falls back
    to its latest position snapshot for the book. An account holding a position on a contract the
    book does not list is refused (:func:`check_listed`), as every reader of the paper account for
    a book (status, solve, whatif, execute, resume, run, the dashboard) comes through here. The
    perpetuals carry the funding intervals the paper venue uses (:meth:`PaperStore.
    funding_intervals`: those an ``fbr run`` loop on an exchange's prices read from the exchange,
    :mod:`executor.paper_feed`), else the book file's.
    """
    with closing(PaperStore(journal.path, book.name)) as store:
        saved = store.load()
        book = with_funding_intervals(book, store.funding_intervals())
    if saved is not None:
        check_listed(book, saved[0], journal.path)
        return book.evolve(futures=saved[0], cash=saved[1]), True
    snap = journal.latest_positions(VENUE, book.name)
    if snap is None:
        return book, False
    positions, cash = snap
    futures = {s: FuturesPosition(q, e) for s, (q, e) in positions.items() if q != 0}
    check_listed(book, futures, journal.path)
    return book.evolve(futures=futures, cash=cash), True
