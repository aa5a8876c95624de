"""A long silence the exchange asks ``fbr data fetch`` for.

Binance answers a client that sends too much with HTTP 429 and a ``Retry-After`` (seconds), and
bans the IP (HTTP 418, minutes to days) when it calls again before that. :func:`read_or_silence`
retries a read as :func:`executor.ccxt_wiring.retry_read` does (waiting at least a Retry-After of
up to ``MAX_RETRY_AFTER_S`` seconds), and turns an answer asking for longer into a
:class:`FetchSilenceError`: the seconds asked and the UTC time the wait ends, for the message and
for the record that keeps a later fetch from calling inside it (``fbr.data_cli``, the journal's
IP-level silence: ``executor.silence.ip_scope``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import ccxt

from executor.base import ExchangeBannedError
from executor.ccxt_wiring import MAX_RETRY_AFTER_S, asked_wait_s, retry_read

T = TypeVar("T")


class FetchSilenceError(ExchangeBannedError):
    """The exchange asked for more than ``MAX_RETRY_AFTER_S`` seconds without requests (a long
    rate limit, HTTP 429, or an IP ban, HTTP 418, with its Retry-After): the fetch stopped at once.
    ``exchange_id``: the exchange that asked (the silence is the IP's on it); ``wait_s``: the
    seconds asked; ``until_ms``: when the wait ends (wall clock, ms since the epoch)."""

    def __init__(self, exchange_id: str, wait_s: float, until_ms: int, cause: str) -> None:
        super().__init__(silence_message(exchange_id, wait_s, until_ms, cause=cause), wait_s=wait_s)
        self.exchange_id = exchange_id
        self.until_ms = until_ms


def silence_message(exchange_id: str, wait_s: float, until_ms: int, *, cause: str | None) -> str:
    """The message of a silence ``exchange_id`` asked for: the seconds (of the wait asked for, or
    left of it when ``cause`` is None: a fetch refused inside a silence an earlier one met) and the
    UTC time it ends."""
    when = datetime.fromtimestamp(until_ms / 1000, tz=UTC)
    seconds = (f"{math.ceil(wait_s):,d} s without requests ({cause})" if cause is not None else
               f"{math.ceil(wait_s):,d} s more without requests (met by an earlier fetch)")
    sent = "nothing more was sent" if cause is not None else "nothing was sent"
    return (f"{exchange_id} is rate-limiting this IP: it asked for {seconds}, until "
            f"{when:%Y-%m-%d %H:%M:%S} UTC; {sent}. Fix: run the fetch again after that time (a "
            f"request before it earns an IP ban, or lengthens one)")


def read_or_silence(fn: Callable[[], T], exchange: Any, sleep: Callable[[float], None]) -> T:
    """``fn()`` through :func:`~executor.ccxt_wiring.retry_read` (``exchange``'s Retry-After
    honoured); an answer asking for more than ``MAX_RETRY_AFTER_S`` seconds without requests
    raises FetchSilenceError (wait and its end on the wall clock) at once, nothing retried."""
    try:
        return retry_read(fn, sleep=sleep, exchange=exchange)
    except ccxt.BaseError as exc:
        asked = asked_wait_s(exchange, exc)
        if asked <= MAX_RETRY_AFTER_S:
            raise
        until_ms = int(time.time() * 1000) + math.ceil(1000 * asked)
        raise FetchSilenceError(str(exchange.id), asked, until_ms,
                                f"the Retry-After of its {type(exc).__name__} answer") from exc
