"""How ccxt failures are classified: transient (retry a read; an order's fate is open) or definite.

- :class:`ExchangeSetupError`: the exchange refused a setup call (leverage, margin mode), a read
  failed for good, or a contract is missing;
- :func:`exchange_code`: the exchange's numeric error code in a ccxt message (Binance ``{"code":
  -NNNN}``);
- :func:`transient`: ccxt's OperationFailed family (which holds every NetworkError: timeouts, 5xx,
  429, unparseable answers) and Binance's "status unknown" codes -1000, -1001, -1006, -1007;
- :func:`order_error`: a failed ``create_order`` as :class:`~executor.base.AmbiguousOrderError`
  (transient, or -4116: the client id is taken by an open order, so the order exists, ``exists=True``)
  or :class:`~executor.base.OrderRejectedError` (everything else; a limit price outside the
  exchange's band at its mark, -4016 / -4024, as :class:`~executor.base.PriceBandRefusedError`).

Every message goes through :func:`executor.safety.redact`.
"""

from __future__ import annotations

import re

import ccxt

from executor.base import AmbiguousOrderError, OrderRejectedError, PriceBandRefusedError
from executor.safety import redact
from models.errors import FbrError


class ExchangeSetupError(FbrError):
    """The exchange refused a setup call (leverage, margin mode) or lacks a contract."""


#: Binance answers that leave an order's execution status unknown (whatever ccxt maps them to).
AMBIGUOUS_CODES = frozenset({-1000, -1001, -1006, -1007})
#: Binance: "ClientOrderId is duplicated" (an open order has that id: the order exists).
DUPLICATE_CLIENT_ID = -4116
#: Binance: "Timestamp for this request is outside of the recvWindow" (refused before processing;
#: ccxt's InvalidNonce, a NetworkError, so an order so refused is reconciled like any transient one).
TIMESTAMP_REFUSED = -1021
#: Binance: a LIMIT BUY above mark x multiplierUp (-4016), a SELL below mark x multiplierDown
#: (-4024): refused before the book (ccxt: BadRequest), so definitely not placed.
PRICE_BAND_CODES = frozenset({-4016, -4024})
_CODE = re.compile(r'"code"\s*:\s*(-?\d+)')


def exchange_code(exc: BaseException) -> int | None:
    """The exchange's numeric error code in a ccxt error message (Binance ``{"code": -NNNN}``)."""
    m = _CODE.search(str(exc))
    return int(m.group(1)) if m else None


def transient(exc: BaseException) -> bool:
    """A failure worth retrying for a read (and ambiguous for an order): ccxt's OperationFailed
    family (timeouts, 5xx, 429, unparseable answers) or a Binance "status unknown" code."""
    return isinstance(exc, ccxt.OperationFailed) or exchange_code(exc) in AMBIGUOUS_CODES


def order_error(exc: Exception, wait_s: float = 0.0) -> FbrError:
    """A failed ``create_order`` as AmbiguousOrderError (fate open; ``wait_s`` the exchange's
    Retry-After, s) or OrderRejectedError."""
    code = exchange_code(exc)
    text = f"{type(exc).__name__}: {redact(str(exc))}"
    if code == DUPLICATE_CLIENT_ID:
        return AmbiguousOrderError(text, exists=True, wait_s=wait_s)
    if transient(exc):
        return AmbiguousOrderError(text, wait_s=wait_s)
    if code in PRICE_BAND_CODES:
        return PriceBandRefusedError(text)
    if isinstance(exc, ccxt.InsufficientFunds):
        return OrderRejectedError(f"insufficient margin: {redact(str(exc))}")
    return OrderRejectedError(text)
