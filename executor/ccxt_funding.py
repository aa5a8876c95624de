"""Funding paid and received, from a ccxt account's income history (part of
:class:`~executor.ccxt_gateway.CcxtGateway`).

Binance ``GET /fapi/v1/income``, incomeType FUNDING_FEE, through ccxt ``fetch_funding_history``,
paged forward from ``since`` (ms; :data:`FUNDING_PAGE` rows a call) and de-duplicated by
transaction id, as :class:`~executor.base.FundingPayment` rows (USD, > 0 received, < 0 paid).
Reads retry transient failures only (:meth:`~executor.ccxt_base.CcxtBase._read`).

The perpetuals' funding intervals (:meth:`CcxtFunding.funding_hours`, hours between settlements):
Binance settles most every 8 h and moves some to 4 h or 1 h (``GET /fapi/v1/fundingInfo`` lists
those, through ccxt ``fetch_funding_intervals``); the carry of a perpetual is its rate per
settlement times the settlements in the horizon, so a wrong interval scales it.

Every message that leaves this module goes through :func:`executor.safety.redact`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from executor.base import FundingPayment
from executor.ccxt_base import CcxtBase
from executor.ccxt_errors import ExchangeSetupError
from executor.plan import Instrument

log = logging.getLogger("executor.ccxt")

#: the funding interval (hours) of the perpetuals a venue's funding-info list leaves out (Binance
#: lists only the symbols whose settings differ from the default)
UNLISTED_FUNDING_HOURS: dict[str, float] = {"binanceusdm": 8.0}

#: Rows asked per income-history call (Binance's maximum).
FUNDING_PAGE = 1000


class CcxtFunding(CcxtBase):
    """The account's funding income history of a ccxt gateway."""

    @property
    def offers_funding_history(self) -> bool:
        """True when the exchange serves the account's funding income history."""
        return bool(self.ex.has.get("fetchFundingHistory"))

    def funding_hours(self, symbols: Iterable[str]) -> dict[str, float]:
        """Hours between funding settlements of the perpetuals ``symbols`` (ccxt symbols) where the
        exchange states them: its funding-info list, and :data:`UNLISTED_FUNDING_HOURS` for the
        ones it leaves out; {} where ccxt reads no such list."""
        if self.ex.has.get("fetchFundingIntervals") is not True:
            return {}
        rows: dict[str, Any] = self._read("fetch_funding_intervals", self.ex.fetch_funding_intervals)
        out: dict[str, float] = {}
        for sym in symbols:
            text = str((rows.get(sym) or {}).get("interval") or "")
            hours = float(text[:-1]) if text.endswith("h") and text[:-1].isdigit() else None
            if hours is None:
                hours = UNLISTED_FUNDING_HOURS.get(self.venue)
            if hours:
                out[sym] = hours
        return out

    def _funding_page(self, since_ms: int) -> list[dict[str, Any]]:
        """One income-history call (all symbols), through the gateway's reads with retry."""
        rows: list[dict[str, Any]] = self._read(
            "fetch_funding_history", self.ex.fetch_funding_history, None, since_ms, FUNDING_PAGE)
        return rows

    def funding_history(self, since_ms: int, instruments: Mapping[str, Instrument] | None = None
                        ) -> list[FundingPayment]:
        """Every funding payment at or after ``since_ms`` (ms), oldest first, all symbols.

        Paged forward (``FUNDING_PAGE`` rows a call, the next call from the last row's time) and
        de-duplicated by transaction id. Contracts are named through ``instruments`` (or the ones
        :meth:`instruments` loaded). Raises ReadFailedError when the exchange cannot answer
        (ExchangeBannedError when it asked for a long silence), or ExchangeSetupError when it has
        no income history or refuses the call."""
        if not self.offers_funding_history:
            raise ExchangeSetupError(f"{self.venue}: ccxt offers no funding history here")
        to_book = dict(self._to_book)
        if instruments is not None:
            to_book.update({inst.exchange_symbol: s for s, inst in instruments.items()})
        seen: dict[str, FundingPayment] = {}
        cursor = int(since_ms)
        while True:
            page = self._funding_page(cursor)
            last = cursor
            for r in page:
                t = int(r.get("timestamp") or 0)
                if t < since_ms:
                    continue
                sym = str(r.get("symbol"))
                tran = str(r.get("id") or f"{sym}@{t}")
                seen[tran] = FundingPayment(to_book.get(sym), sym, t, float(r.get("amount") or 0.0),
                                            tran)
                last = max(last, t)
            if len(page) < FUNDING_PAGE:
                break
            cursor = last if last > cursor else cursor + 1  # a full page at one instant: step on
        return sorted(seen.values(), key=lambda p: (p.time_ms, p.tran_id))

    def funding_since(self, since_ms: int,
                      instruments: Mapping[str, Instrument]) -> list[FundingPayment] | None:
        """The book contracts' funding since ``since_ms`` from the income history; None when the
        exchange has none (ReadFailedError when it has one but cannot answer)."""
        if not self.offers_funding_history:
            return None
        return [p for p in self.funding_history(since_ms, instruments) if p.contract is not None]

    def funding_rate_history(self, symbol: str, since_ms: int, until_ms: int
                             ) -> list[tuple[int, float]]:
        """The settled funding rates of the perpetual ``symbol`` (ccxt symbol) with since_ms <
        time <= until_ms (ms): (settlement time ms, rate per settlement, fraction), oldest first.
        A public read (Binance ``GET /fapi/v1/fundingRate`` through ccxt
        ``fetch_funding_rate_history``, no keys), paged forward :data:`FUNDING_PAGE` rows a call."""
        rates: dict[int, float] = {}
        cursor = int(since_ms) + 1
        while cursor <= until_ms:
            page: list[dict[str, Any]] = self._read(
                "fetch_funding_rate_history", self.ex.fetch_funding_rate_history, symbol, cursor,
                FUNDING_PAGE)
            times = [int(r.get("timestamp") or 0) for r in page]
            rates.update({t: float(r.get("fundingRate") or 0.0) for t, r in zip(times, page, strict=True)
                          if since_ms < t <= until_ms})
            if len(page) < FUNDING_PAGE:
                break
            cursor = max(max(times) + 1, cursor + 1)
        return sorted(rates.items())
