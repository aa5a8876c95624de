"""A silence the exchange asked for, kept across runs.

An answer asking for more than ``executor.ccxt_wiring.MAX_RETRY_AFTER_S`` seconds without requests
(a long rate limit, an IP ban: executor.base.ExchangeBannedError) stops the run; the executor
records the time it ends in the journal (``Journal.set_silence``, per account), and a later run
of that account started before then is refused here, before it sends anything: a request inside a
ban lengthens it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from executor.journal import Journal
from models.errors import RefusedError


def refuse_in_silence(journal: Journal, account: str, now_ms: int) -> None:
    """Raise RefusedError when ``account``'s runs were asked for silence until after ``now_ms``."""
    until = journal.silence_until(account)
    if until is not None and now_ms < until:
        when = datetime.fromtimestamp(until / 1000, tz=UTC)
        raise RefusedError(f"the exchange asked this account's runs for silence until "
                           f"{when:%Y-%m-%d %H:%M:%S} UTC (a rate limit or an IP ban met by an "
                           f"earlier run); nothing was sent. Fix: run it again after that time")
