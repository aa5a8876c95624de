"""A silence the exchange asked for, kept across runs.

An answer asking for more than ``executor.ccxt_wiring.MAX_RETRY_AFTER_S`` seconds without requests
(a long rate limit, an IP ban: executor.base.ExchangeBannedError) stops the run; whatever met it
(an execution, a resume, the settling of an earlier plan's legs, ``fbr status``, the dashboard, a
wake-up of ``fbr run``) records the time it ends in the journal (``Journal.set_silence``, per
account), and a later run of that account started before then is refused here, before it sends
anything: a request inside a ban lengthens it. A silence of the IP rather than of an account (a
rate limit on public endpoints, met by ``fbr data fetch``) is kept under :func:`ip_scope`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from executor.base import ExchangeBannedError
from executor.journal import Journal
from models.errors import RefusedError


def wall_ms() -> int:
    """The wall clock, ms since the epoch."""
    return int(time.time() * 1000)


def ip_scope(exchange_id: str) -> str:
    """The journal key of a silence ``exchange_id`` asked of this IP, whatever the account (an
    account key is ``<venue>:<16 hex>``, so the two never meet): ``<exchange id>:ip``."""
    return f"{exchange_id}:ip"


def refuse_in_silence(journal: Journal, account: str, now_ms: int) -> None:
    """Raise RefusedError when ``account``'s runs were asked for silence until after ``now_ms``."""
    until = journal.silence_until(account)
    if until is not None and now_ms < until:
        when = datetime.fromtimestamp(until / 1000, tz=UTC)
        raise RefusedError(f"the exchange asked this account's runs for silence until "
                           f"{when:%Y-%m-%d %H:%M:%S} UTC (a rate limit or an IP ban met by an "
                           f"earlier run); nothing was sent. Fix: run it again after that time")


def record_silence(journal: Journal, account: str, now_ms: int, exc: ExchangeBannedError) -> None:
    """Keep in the journal the end of the silence ``exc`` asked for: ``now_ms`` + its wait (ms,
    rounded up)."""
    journal.set_silence(account, now_ms + math.ceil(1000 * exc.wait_s))


@contextmanager
def silence_kept(journal: Journal | None, account: str,
                 clock_ms: Callable[[], int] = wall_ms) -> Iterator[None]:
    """Around work that reads or trades ``account``: refused before it starts while the journal
    holds a silence not yet over; an ExchangeBannedError that escapes it is recorded, then
    re-raised. Without a journal (a dry run with none) the block just runs."""
    if journal is None:
        yield
        return
    refuse_in_silence(journal, account, clock_ms())
    try:
        yield
    except ExchangeBannedError as exc:
        record_silence(journal, account, clock_ms(), exc)
        raise
