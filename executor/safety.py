"""Safety: notional limits per order and per plan, API keys from the environment, redaction.

Units: limits in USD notional (absolute). Keys are read from ``FBR_<EXCHANGE>_API_KEY`` and
``FBR_<EXCHANGE>_SECRET`` (exchange id upper-cased, e.g. ``FBR_BINANCEUSDM_API_KEY``) and never leave
this process: :class:`Credentials` hides them from ``repr``, and :class:`RedactingFilter` scrubs them
from every log record; :func:`redact` scrubs any text before it is printed, journalled or raised.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from models.errors import FbrError, ValidationError

#: Registered secrets of this process (filled by :func:`load_credentials`), scrubbed everywhere.
_SECRETS: set[str] = set()
REDACTED = "***"


class SafetyError(FbrError):
    """A plan breaks a safety limit, or live trading is not set up (keys missing)."""


@dataclass(frozen=True)
class Limits:
    """Largest |notional| (USD) of one order and of a whole plan (sum of |order notional|)."""

    max_order_usd: float = 50_000.0
    max_plan_usd: float = 250_000.0

    def __post_init__(self) -> None:
        for name in ("max_order_usd", "max_plan_usd"):
            v = float(getattr(self, name))
            if math.isnan(v) or v <= 0:
                raise ValidationError(f"limits.{name}", f"is {v}", "give a USD limit > 0")

    def check(self, order_notionals: Iterable[float], already_usd: float = 0.0) -> None:
        """Raise :class:`SafetyError` if one order or the sum exceeds its limit (USD); the sum
        starts at ``already_usd``, what the plan has traded before these orders (legs re-planned
        while a plan is sent count against the same per-plan limit as its first legs)."""
        total = already_usd
        for n in order_notionals:
            if abs(n) > self.max_order_usd + 1e-9:
                raise SafetyError(f"an order of {abs(n):,.2f} USD exceeds the per-order limit "
                                  f"{self.max_order_usd:,.2f} USD. Fix: raise --max-order-usd "
                                  f"(fbr run: [run] max_order_usd) or rebalance in smaller steps")
            total += abs(n)
        if total > self.max_plan_usd + 1e-9:
            raise SafetyError(f"the plan trades {total:,.2f} USD, above the per-plan limit "
                              f"{self.max_plan_usd:,.2f} USD. Fix: raise --max-plan-usd (fbr run: "
                              f"[run] max_plan_usd) or rebalance in smaller steps")


@dataclass(frozen=True)
class Credentials:
    """An API key pair. ``repr`` and ``str`` never show the values."""

    api_key: str = field(repr=False)
    secret: str = field(repr=False)

    def __str__(self) -> str:
        return "Credentials(***)"


def env_names(exchange_id: str) -> tuple[str, str]:
    """The environment variables holding the key and the secret of ``exchange_id``."""
    up = exchange_id.upper()
    return f"FBR_{up}_API_KEY", f"FBR_{up}_SECRET"


def register_secret(value: str) -> None:
    """Scrub ``value`` from everything :func:`redact` and :class:`RedactingFilter` see."""
    if value:
        _SECRETS.add(value)


def load_credentials(exchange_id: str, environ: dict[str, str] | None = None) -> Credentials:
    """Keys of ``exchange_id`` from the environment; registered for redaction at once."""
    env = os.environ if environ is None else environ
    key_name, secret_name = env_names(exchange_id)
    key, secret = env.get(key_name, ""), env.get(secret_name, "")
    register_secret(key)
    register_secret(secret)
    missing = [n for n, v in ((key_name, key), (secret_name, secret)) if not v]
    if missing:
        raise SafetyError(f"live trading on {exchange_id} needs API keys: {', '.join(missing)} "
                          f"not set. Fix: export {key_name} and {secret_name}")
    return Credentials(key, secret)


#: a request signature in a URL an exchange's error echoes (``...&signature=37d4...``): valid for
#: its recvWindow, so never shown
_SIGNATURE = re.compile(r"(signature=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``, and any ``signature=`` value of a
    signed request's URL too."""
    for s in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(s, REDACTED)
    return _SIGNATURE.sub(rf"\g<1>{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs registered secrets from a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


_FACTORY_INSTALLED: list[bool] = []


def install_log_redaction() -> None:
    """Scrub registered secrets from every log record of this process, whatever logger or handler
    it goes through: the record factory redacts a record's message when it is created (once)."""
    if _FACTORY_INSTALLED:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _SECRETS:
            try:
                message = record.getMessage()
            except Exception:  # a malformed record: leave it to logging's own error path
                return record
            record.msg = redact(message)
            record.args = None
        return record

    logging.setLogRecordFactory(factory)
    _FACTORY_INSTALLED.append(True)
