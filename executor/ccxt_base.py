"""The state every part of :class:`~executor.ccxt_gateway.CcxtGateway` shares: the ccxt instance,
symbol mapping, settings, and reads with retry.

- :class:`CcxtBase` switches ccxt's own resend off (``maxRetriesOnFailure`` = 0) and holds the
  settings (margin mode, quote asset, read attempts, backoff base delay in seconds, pledge source);
- :meth:`CcxtBase._read` retries transient failures (:func:`executor.ccxt_errors.transient`)
  through the one retry loop, :func:`executor.ccxt_wiring.retry_read`, with ``base_delay_s`` x
  2^k seconds of backoff, or the exchange's ``Retry-After`` when longer; other ``ExchangeError``
  subclasses (InsufficientFunds, InvalidOrder, BadRequest, AuthenticationError) are never retried
  (ExchangeSetupError);
- :meth:`CcxtBase.hedge_mode`: the account's position mode (asked once);
- :meth:`CcxtBase.check_silence`: an answer asking for more than ``MAX_RETRY_AFTER_S`` seconds of
  silence (a long rate-limit wait, an IP ban) stops the gateway: this and every later call raise
  :class:`~executor.base.ExchangeBannedError` without a request (a request inside the wait would
  lengthen a ban), naming the time the exchange gave;
- :meth:`CcxtBase.resync_clock`: a signed request refused for its timestamp (Binance -1021, ccxt
  ``InvalidNonce``: the local clock is off the exchange's by more than the receive window, or
  drifted since the last sync) was not processed; the offset to the exchange's clock is measured
  again (``load_time_difference``, one public ``GET time``) before the request is retried.

Every message that leaves this module goes through :func:`executor.safety.redact`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import ccxt

from executor.base import ExchangeBannedError, ReadFailedError
from executor.ccxt_errors import TIMESTAMP_REFUSED, ExchangeSetupError, exchange_code, transient
from executor.ccxt_wiring import MAX_RETRY_AFTER_S, asked_wait_s, retry_read
from executor.plan import default_exchange_symbol
from executor.safety import redact
from models.collateral import PLEDGE_SOURCES
from models.errors import ValidationError
from models.instruments import FuturesContract

log = logging.getLogger("executor.ccxt")
_T = TypeVar("_T")


class CcxtBase:
    """One ccxt exchange instance with fbr's settings and reads with retry (see
    :class:`~executor.ccxt_gateway.CcxtGateway` for the arguments)."""

    def __init__(self, exchange: Any, *, symbols: Mapping[str, str] | None = None,
                 margin_mode: str = "cross", quote: str = "USDT", read_attempts: int = 4,
                 base_delay_s: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                 pledge_source: str = "multi_assets",
                 clock: Callable[[], float] = time.time) -> None:
        if pledge_source not in PLEDGE_SOURCES:
            raise ValidationError("pledge_source", f"is {pledge_source!r}",
                                  f"use one of {', '.join(map(repr, PLEDGE_SOURCES))}")
        self._pledge_source = pledge_source
        exchange.options["maxRetriesOnFailure"] = 0  # never let ccxt resend an order itself
        exchange.options["maxRetriesOnFailureDelay"] = 0
        exchange.options.setdefault("fetchCurrencies", False)
        exchange.options.setdefault("adjustForTimeDifference", True)  # synced when markets load
        self.ex = exchange
        self.venue = str(exchange.id)
        self._symbols = dict(symbols or {})
        self._margin_mode = margin_mode
        self._quote = quote
        self._attempts = read_attempts
        self._delay = base_delay_s
        self._sleep = sleep
        self._clock = clock
        self._to_book: dict[str, str] = {}
        self._contracts: dict[str, FuturesContract] = {}
        self._hedged: bool | None = None
        self._silenced: tuple[str, float] | None = None  # why, and until when (clock s)

    def account_key(self) -> str:
        """``<venue>:<first 16 hex of sha256(api key)>``: names the account, reveals no secret."""
        key = str(getattr(self.ex, "apiKey", "") or "")
        return f"{self.venue}:{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def hedge_mode(self) -> bool:
        """True when the account is in hedge (dual-side) position mode (asked once)."""
        if self._hedged is None:
            if not self.ex.has.get("fetchPositionMode"):
                self._hedged = False
            else:
                mode = self._read("fetch_position_mode", self.ex.fetch_position_mode)
                self._hedged = bool(mode.get("hedged"))
        return self._hedged

    def check_silence(self, exc: BaseException | None = None) -> None:
        """Raise ExchangeBannedError while a silence the exchange asked for (now, in ``exc``'s
        answer, or before) of more than ``MAX_RETRY_AFTER_S`` seconds lasts; else return. The
        silence ends at the time asked for (``clock``, seconds): a long-running loop's gateway
        reads again after it, without a restart."""
        now = self._clock()
        if exc is not None and self._silenced is None:
            asked = asked_wait_s(self.ex, exc)
            if asked > MAX_RETRY_AFTER_S:
                until = datetime.now(UTC) + timedelta(seconds=asked)
                self._silenced = (f"{self.venue} asked for {asked:,.0f} s without requests "
                                  f"({type(exc).__name__}: a rate limit or an IP ban), until about "
                                  f"{until:%Y-%m-%d %H:%M} UTC", now + asked)
        if self._silenced is None:
            return
        why, until_s = self._silenced
        if now >= until_s:
            log.warning("the silence %s asked for is over: requests resume", self.venue)
            self._silenced = None
            return
        raise ExchangeBannedError(why, wait_s=until_s - now)

    def after_failure(self, exc: BaseException) -> None:
        """What any failed call does before its caller goes on: stop on a long wait asked for
        (:meth:`check_silence`), resync the clock on a timestamp refusal (:meth:`resync_clock`)."""
        self.check_silence(exc)
        self.resync_clock(exc)

    def resync_clock(self, exc: BaseException) -> bool:
        """When ``exc`` is a timestamp refusal (``InvalidNonce`` / -1021), measure the offset to the
        exchange's clock again (ccxt's ``load_time_difference``, which its nonce subtracts) and
        return True; False for any other error, or when the exchange's time cannot be read."""
        if not (isinstance(exc, ccxt.InvalidNonce) or exchange_code(exc) == TIMESTAMP_REFUSED):
            return False
        try:
            offset = self.ex.load_time_difference()
        except ccxt.BaseError as err:
            log.warning("clock resync failed (%s)", type(err).__name__)
            return False
        log.warning("request refused for its timestamp: clock resynced (local - exchange = %s ms)",
                    offset)
        return True

    def now_ms(self) -> int:
        """The exchange's time now (ms, UTC): the local clock less the offset ccxt measured to the
        exchange's (``timeDifference``, local - exchange, which its signed requests subtract; 0
        before it is measured). The journaled executor stamps its sends with it, so a send time
        compares with the exchange's own fill times (the reconcile nets fills of other orders
        after the send) however far the local clock is off."""
        return int(self.ex.milliseconds() - float(self.ex.options.get("timeDifference") or 0))

    # --- reads with retry ----------------------------------------------------------------------
    def _read(self, what: str, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` through :func:`~executor.ccxt_wiring.retry_read` with this gateway's
        attempts, backoff and sleep: a timestamp refusal resyncs the clock and is retried at once,
        a long wait asked for stops the gateway (ExchangeBannedError), a definite refusal is an
        ExchangeSetupError, running out of attempts a ReadFailedError."""
        self.check_silence()

        def on_retry(k: int, exc: BaseException) -> bool:
            log.warning("%s failed (%s), retry %d", what, type(exc).__name__, k)
            return self.resync_clock(exc)

        try:
            return retry_read(lambda: fn(*args), attempts=self._attempts, base_delay_s=self._delay,
                              max_delay_s=math.inf, sleep=self._sleep, on_retry=on_retry,
                              exchange=self.ex)
        except ccxt.BaseError as exc:
            self.check_silence(exc)
            text = f"{type(exc).__name__}: {redact(str(exc))}"
            if not transient(exc):
                raise ExchangeSetupError(f"{self.venue}: {what} failed: {text}") from None
            self.resync_clock(exc)  # the last try's refusal: the next call goes out synced
            raise ReadFailedError(f"{self.venue}: {what} failed {self._attempts} times: "
                                  f"{text}") from None

    def asset_index_rows(self, asset: str | None = None) -> list[dict[str, Any]]:
        """The rows of Binance's ``GET /fapi/v1/assetIndex`` (one per collateral asset, symbol
        ``<ASSET>USD``, with its USD ``index`` and ``bidBuffer``); ``asset``'s row only when given.
        Where ccxt has no such endpoint the attribute lookup fails (callers check first)."""
        args = ({"symbol": f"{asset.upper()}USD"},) if asset else ()
        answer = self._read("asset_index", self.ex.fapiPublicGetAssetIndex, *args)
        return answer if isinstance(answer, list) else [answer]

    def exchange_symbol(self, contract: FuturesContract) -> str:
        """The ccxt symbol of a book contract."""
        return self._symbols.get(contract.symbol, default_exchange_symbol(contract, self._quote))
