"""Making ccxt exchange instances and retrying reads safely.

- :func:`make_exchange` builds one ccxt instance with the settings fbr relies on: ccxt's own rate
  limiter on (``enableRateLimit``), ccxt's own resend-on-failure off (``maxRetriesOnFailure`` 0: it
  would re-POST an order after a timeout), no private currency call on ``load_markets``
  (``fetchCurrencies`` False), the local clock's offset to the exchange's measured when the
  markets load (``adjustForTimeDifference``: signed requests carry the exchange's time, so a
  skewed local clock is not refused). Pass ``session`` to route HTTP elsewhere (the tests'
  loopback emulator). Keys are optional (public data needs none) and never logged.
- :func:`retry_read` retries a *read* on transient failures only (ccxt's OperationFailed family:
  RequestTimeout, DDoSProtection / RateLimitExceeded, ExchangeNotAvailable / OnMaintenance,
  InvalidNonce, BadResponse; Binance's "status unknown" codes) with exponential backoff:
  delay_k = min(max_delay, base_delay * 2**k) seconds before attempt k+2, or longer when the
  exchange asked for it (:func:`retry_after_s`).
- :func:`retry_after_s`: the wait a rate-limited answer (HTTP 429, or 418 for an IP banned after
  ignoring one) asks for in its ``Retry-After`` header, in seconds. Binance bans an IP that does
  not back off that long, so every retry and every reconciliation read waits at least this.
  ``ExchangeError`` subclasses (bad symbol, auth, insufficient funds, invalid order) are raised at
  once. Never wrap an order placement in it: a timeout there is ambiguous (the order may exist).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import ccxt

from executor.ccxt_errors import transient
from models.errors import ValidationError

T = TypeVar("T")

#: A factory: ccxt exchange id ("binanceusdm", "binance", ...) -> a ready ccxt instance.
ExchangeFactory = Callable[[str], Any]


def make_exchange(exchange_id: str, *, api_key: str | None = None, secret: str | None = None,
                  session: Any = None, options: Mapping[str, object] | None = None,
                  timeout_ms: int = 10_000) -> Any:
    """A ccxt instance of ``exchange_id`` (rate limited, no automatic resends); see the module doc.

    Raises ValidationError when ccxt has no such exchange."""
    cls = getattr(ccxt, exchange_id, None) if exchange_id in ccxt.exchanges else None
    if cls is None:
        raise ValidationError("exchange", f"is {exchange_id!r}, not a ccxt exchange id",
                              "give a ccxt id such as 'binanceusdm' (Binance USD-M futures)")
    config: dict[str, object] = {
        "enableRateLimit": True,
        "timeout": int(timeout_ms),
        "options": {"fetchCurrencies": False, "maxRetriesOnFailure": 0, "adjustForTimeDifference": True,
                    **dict(options or {})},
    }
    if api_key:
        config["apiKey"] = api_key
    if secret:
        config["secret"] = secret
    if session is not None:
        config["session"] = session
    return cls(config)


#: Longest ``Retry-After`` (s) a wait honours. A gateway asked for longer stops sending
#: (executor.ccxt_base.CcxtBase, ExchangeBannedError); ``retry_read`` waits this long per retry.
MAX_RETRY_AFTER_S = 300.0


def asked_wait_s(exchange: Any, exc: BaseException) -> float:
    """Seconds the exchange asked to wait before the next request: the ``Retry-After`` header of
    the answer that raised ``exc`` when it is a rate-limit refusal (ccxt ``RateLimitExceeded`` or
    ``DDoSProtection``: HTTP 429 or 418); 0 otherwise, or when the header is absent or not a
    number."""
    if not isinstance(exc, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
        return 0.0
    headers = getattr(exchange, "last_response_headers", None) or {}
    value = next((v for k, v in dict(headers).items() if str(k).lower() == "retry-after"), None)
    try:
        wait = float(value) if value is not None else 0.0
    except ValueError:
        return 0.0
    return wait if math.isfinite(wait) and wait > 0.0 else 0.0


def retry_after_s(exchange: Any, exc: BaseException) -> float:
    """:func:`asked_wait_s` capped at ``MAX_RETRY_AFTER_S``: the wait a retry makes."""
    return min(asked_wait_s(exchange, exc), MAX_RETRY_AFTER_S)


def retry_read(fn: Callable[[], T], *, attempts: int = 4, base_delay_s: float = 0.5,
               max_delay_s: float = 8.0, sleep: Callable[[float], None] = time.sleep,
               on_retry: Callable[[int, BaseException], bool] | None = None,
               exchange: Any = None) -> T:
    """``fn()``, retried up to ``attempts`` calls in all on a transient ccxt failure
    (:func:`executor.ccxt_errors.transient`: the OperationFailed family, which holds every
    NetworkError, and Binance's "status unknown" codes); any other error is raised at once.

    Between calls k and k+1 (k = 0, 1, ...) it calls ``on_retry(k + 1, error)``, then sleeps
    min(max_delay_s, base_delay_s * 2**k) s, or the ``exchange``'s :func:`retry_after_s` when
    longer, unless ``on_retry`` returned True (the request was refused unprocessed and its cause is
    fixed: retry at once). The last error is re-raised when attempts run out (after waiting out a
    Retry-After: the caller's next request must not come inside it either), or at once when the
    exchange asked for more than ``MAX_RETRY_AFTER_S`` seconds of silence (retrying inside a long
    limit or a ban would lengthen it).
    """
    if attempts < 1:
        raise ValidationError("attempts", f"is {attempts}", "give at least 1")
    for k in range(attempts):
        try:
            return fn()
        except ccxt.BaseError as exc:
            if not transient(exc) or asked_wait_s(exchange, exc) > MAX_RETRY_AFTER_S:
                raise
            wait = retry_after_s(exchange, exc)
            if k == attempts - 1:
                if wait > 0:
                    sleep(wait)
                raise
            if on_retry is not None and on_retry(k + 1, exc):
                continue
            sleep(max(min(max_delay_s, base_delay_s * 2.0**k), wait))
    raise AssertionError("unreachable")  # pragma: no cover
