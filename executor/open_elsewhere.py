"""fbr orders open on the exchange that this journal did not send.

fbr sends market and IOC orders only, so an fbr order that rests open was answered NEW under load
and can still fill. A journal settles its own such orders before it sends (the reconcile), so an
open one found then was sent by another journal on the account (another run, ``--journal``):
sending the same trade again would double it when that order fills. The executor reads the
account's open orders on the plan's contracts (``GET /fapi/v1/openOrders`` on Binance) before
its first send and stops while one is open.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from executor.base import ExchangeGateway
from executor.plan import Instrument
from executor.plan_ids import CLIENT_ID_PREFIX


def open_fbr_orders(gateway: ExchangeGateway,
                    instruments: Mapping[str, Instrument]) -> list[dict[str, Any]]:
    """The open orders on ``instruments`` whose client id is fbr's ({symbol, side, contracts,
    price, client_id}; ``ReadFailedError`` when the account cannot be read)."""
    return [o for o in gateway.open_orders(instruments)
            if str(o.get("client_id") or "").startswith(CLIENT_ID_PREFIX)]


def open_orders_message(rows: list[dict[str, Any]], venue: str, plan_id: str) -> str:
    """What was found, why nothing was sent, and the fix."""
    names = ", ".join(f"{o['client_id']} ({o['symbol']} {o['side']} {o['contracts']})"
                      for o in rows)
    return (f"an fbr order is open on {venue} on a contract this plan trades: {names}; it can "
            f"still fill, so nothing was sent (this journal did not send it: another run or "
            f"journal on this account did). Fix: wait until it fills or expires (or cancel it on "
            f"the exchange), then `fbr execute --resume {plan_id}`")
