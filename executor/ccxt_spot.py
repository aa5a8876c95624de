"""Spot wallet balances through ccxt (Binance spot first: ``ccxt.binance``, ``GET /api/v3/account``).

:class:`SpotBalances` reads the account's balances once per call of :meth:`SpotBalances.totals`
with the reads-with-retry of :class:`~executor.ccxt_base.CcxtBase` (network errors retried with
backoff; ccxt's own resend off; other errors raised at once, redacted). Quantities are base units of
each asset: total = free + locked (``used`` in ccxt: held by open orders). Read only: nothing here
places or cancels orders.

Every message that leaves this module goes through :func:`executor.safety.redact`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from executor.ccxt_base import CcxtBase

__all__ = ["SpotBalances", "spot_totals"]


def _number(value: Any) -> float:
    """A ccxt balance field as a float (None and "" are 0)."""
    return 0.0 if value in (None, "") else float(value)


def spot_totals(balance: Mapping[str, Any]) -> dict[str, float]:
    """Asset -> free + locked (base units, > 0 only) from a ccxt balance structure: the unified
    ``{asset: {free, used, total}}`` rows, else Binance's raw ``info.balances`` rows
    (``{asset, free, locked}``)."""
    out: dict[str, float] = {}
    info = balance.get("info")
    raw = info.get("balances") if isinstance(info, Mapping) else None
    if isinstance(raw, list):
        for row in raw:
            if isinstance(row, Mapping) and row.get("asset"):
                qty = _number(row.get("free")) + _number(row.get("locked"))
                if qty > 0:
                    out[str(row["asset"])] = qty
        return out
    skip = {"info", "free", "used", "total", "timestamp", "datetime", "debt"}
    for asset, row in balance.items():
        if asset not in skip and isinstance(row, Mapping):
            qty = _number(row.get("free")) + _number(row.get("used"))
            if qty > 0:
                out[str(asset)] = qty
    return out


class SpotBalances(CcxtBase):
    """Spot wallet balances of one ccxt spot exchange instance (keys needed: a signed read).

    The instance is set to read spot only: ``defaultType`` spot and no margin markets on
    ``load_markets`` (``fetchMargins`` False: Binance's ``/sapi/v1/margin/allPairs`` is not needed,
    and read-only keys may lack the margin permission)."""

    def __init__(self, exchange: Any, **settings: Any) -> None:
        super().__init__(exchange, **settings)
        self.ex.options["fetchMargins"] = False
        self.ex.options["defaultType"] = "spot"

    def totals(self) -> dict[str, float]:
        """Every asset held: asset -> free + locked (base units, > 0), one ``fetch_balance``."""
        return spot_totals(self._read("fetch_balance", self.ex.fetch_balance))

    def balances(self, assets: Iterable[str]) -> dict[str, float]:
        """``assets`` -> free + locked (base units; 0 for an asset not held), one ``fetch_balance``."""
        held = self.totals()
        return {a: held.get(a, 0.0) for a in assets}
