"""An order's fee from the account's trades.

Binance's order answer (and its order lookup) carries no commission, so a filled order's fee is
first the contract's taker fee on the filled notional (``OrderState.fee_estimated``). What the
account paid can be less (a BNB fee discount: 10% off, paid in BNB) and is in its trade history
(``GET /fapi/v1/userTrades``): before a fill is journalled, the fees of the order's own trades
(by exchange order id, since the send) replace the estimate when those trades add up to the
filled quantity. A read that fails (or a history the exchange does not offer), or trades that do
not (yet) show the whole fill, keep the estimate, and the journal's message says so.
"""

from __future__ import annotations

import dataclasses
import logging

from executor.base import ExchangeGateway, OrderState
from executor.plan import Instrument
from executor.safety import redact
from models.errors import FbrError

log = logging.getLogger("executor.order_fees")


def with_traded_fee(gateway: ExchangeGateway, instrument: Instrument, state: OrderState,
                    since_ms: int) -> tuple[OrderState, str]:
    """``state`` with the fee (USD) of its trades since ``since_ms`` (ms, UTC) when the answer
    had none and the trades show the whole fill; and a note for the journal ("" when nothing was
    estimated)."""
    if not state.fee_estimated or state.exchange_id is None:
        return state, ""
    try:
        trades = [t for t in gateway.trades_since(instrument, since_ms)
                  if t.order_id == state.exchange_id]
    except FbrError as exc:  # unreadable, or a history the exchange does not offer this key
        log.warning("fee of %s: trades unreadable (%s)", state.client_id, redact(str(exc)))
        return state, "fee estimated at the taker fee (the account's trades could not be read)"
    seen = sum(abs(t.contracts) for t in trades)
    if abs(seen - state.filled) > 1e-9 * max(state.filled, 1.0) or any(t.fee_estimated
                                                                       for t in trades):
        return state, "fee estimated at the taker fee (the account's trades do not show it all)"
    return dataclasses.replace(state, fee=sum(t.fee for t in trades), fee_estimated=False), ""
