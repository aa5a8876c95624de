"""The market snapshot: what the optimiser needs to know about prices, funding and liquidity now.

Units: prices in USD; funding rates are fractions per funding interval (positive: longs pay shorts);
half spreads are fractions of notional; average daily volume (ADV) is USD per day.
A funding forecast (optional, per perpetual) is the expected *mean* rate per settlement over the
optimiser's cost horizon (fraction per funding interval, as ``funding``); see
``models.funding_forecast`` for the forecaster and ``optimizer.carry._carry_per_horizon`` for its use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from models.errors import ValidationError

if TYPE_CHECKING:  # pandas stays off the import path of a plain solve (fbr solve's start-up time)
    pass


def _check_prices(kind: str, prices: Mapping[str, float]) -> None:
    for sym, p in prices.items():
        v = float(p)
        if math.isnan(v):
            raise ValidationError(f"market.{kind}.{sym}", "is NaN",
                                  "give a finite positive price (USD)")
        if not math.isfinite(v) or v <= 0:
            raise ValidationError(f"market.{kind}.{sym}", f"is {v}",
                                  "give a finite positive price (USD)")


#: the half spread (fraction of the USD traded) of a contract or spot asset the market does not give
DEFAULT_HALF_SPREAD = 0.0001


@dataclass(frozen=True)
class MarketSnapshot:
    """Prices and market conditions at one instant (UTC).

    ``spot`` by asset symbol; ``mark``, ``funding``, ``half_spread`` and ``adv`` by contract symbol
    (``adv`` also by asset symbol: the spot market's volume, which prices the spot leg's impact).
    Missing half spreads default to 1 bp, missing ADV to infinity (no impact), missing funding to 0.
    ``synthetic`` marks data from the embedded generator, so reports can label it.
    ``funding_forecast`` (by contract symbol, optional): the expected mean funding rate per
    settlement over the cost horizon; the optimiser's carry uses it instead of ``funding`` for the
    contracts it names (none named, the default: the current rate, today's behaviour).
    ``halted`` (by contract symbol, optional): the exchange's status of a contract it does not
    trade now (``SETTLING``, ``DELIVERING``, ``CLOSE`` ...); the optimiser holds its position where
    it is and hedges with the others (optimizer.constraints.Halted). None named: all trade.
    ``funding_interval_h`` (by contract symbol, hours, optional): the spacing of its settlements
    when it differs from the contract's own ``funding_interval_h`` (a replay measures it on the
    path); the optimiser's carry counts horizon x 24 / that many settlements.
    """

    time: datetime
    spot: Mapping[str, float]
    mark: Mapping[str, float]
    funding: Mapping[str, float] = field(default_factory=dict)
    half_spread: Mapping[str, float] = field(default_factory=dict)
    adv: Mapping[str, float] = field(default_factory=dict)
    spot_half_spread: Mapping[str, float] = field(default_factory=dict)
    synthetic: bool = False
    funding_forecast: Mapping[str, float] = field(default_factory=dict)
    halted: Mapping[str, str] = field(default_factory=dict)
    funding_interval_h: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_prices("spot", self.spot)
        _check_prices("mark", self.mark)
        for kind, rates in (("funding", self.funding), ("funding_forecast", self.funding_forecast)):
            for sym, r in rates.items():
                if not math.isfinite(float(r)) or abs(float(r)) >= 1:
                    raise ValidationError(f"market.{kind}.{sym}", f"is {r}",
                                          "give the funding rate per interval as a fraction in "
                                          "(-1, 1)")
        for sym, h in self.half_spread.items():
            if not math.isfinite(float(h)) or not 0 <= float(h) < 0.5:
                raise ValidationError(f"market.half_spread.{sym}", f"is {h}",
                                      "give the half spread as a fraction in [0, 0.5)")
        for sym, h in self.funding_interval_h.items():
            if not math.isfinite(float(h)) or float(h) <= 0:
                raise ValidationError(f"market.funding_interval_h.{sym}", f"is {h}",
                                      "give the hours between settlements (> 0)")
        for sym, a in self.adv.items():
            if math.isnan(float(a)) or float(a) <= 0:
                raise ValidationError(f"market.adv.{sym}", f"is {a}",
                                      "give the average daily volume in USD (> 0)")

    def spot_price(self, asset: str) -> float:
        """Spot price of ``asset`` (USD); a clear error if the market has none."""
        try:
            return float(self.spot[asset])
        except KeyError:
            raise ValidationError(f"market.spot.{asset}", "is missing",
                                  f"give a spot price for {asset}") from None

    def mark_price(self, contract: str) -> float:
        """Mark price of ``contract`` (USD); a clear error if the market has none."""
        try:
            return float(self.mark[contract])
        except KeyError:
            raise ValidationError(f"market.mark.{contract}", "is missing",
                                  f"give a mark price for contract {contract}") from None

    def funding_rate(self, contract: str) -> float:
        """Funding rate per interval of ``contract`` (0 when not given)."""
        return float(self.funding.get(contract, 0.0))

    def funding_hours(self, contract: str, default: float) -> float:
        """Hours between ``contract``'s funding settlements: the market's (a replay measures them
        on the path, ``scenarios.funding_run.settlement_hours``) when it names the contract, else
        ``default`` (the contract's ``funding_interval_h``)."""
        return float(self.funding_interval_h.get(contract, default))

    def carry_rate(self, contract: str) -> float:
        """The funding rate per interval the optimiser's carry assumes for ``contract``: its
        forecast mean rate over the horizon when ``funding_forecast`` names it, else the current
        rate (0 when neither is given)."""
        if contract in self.funding_forecast:
            return float(self.funding_forecast[contract])
        return self.funding_rate(contract)

    def contract_half_spread(self, contract: str) -> float:
        """Half spread of ``contract`` as a fraction (:data:`DEFAULT_HALF_SPREAD` when not given)."""
        return float(self.half_spread.get(contract, DEFAULT_HALF_SPREAD))

    def asset_half_spread(self, asset: str) -> float:
        """Half spread of spot ``asset`` as a fraction (:data:`DEFAULT_HALF_SPREAD` when not given)."""
        return float(self.spot_half_spread.get(asset, DEFAULT_HALF_SPREAD))

    def contract_adv(self, contract: str) -> float:
        """ADV of ``contract`` in USD/day (infinite when not given: no impact)."""
        return float(self.adv.get(contract, math.inf))


def as_datetime(t: datetime) -> datetime:
    """``t`` as a plain ``datetime`` (a ``pd.Timestamp``, which subclasses it, converted; its
    nanoseconds dropped): a market's time is either."""
    return datetime.combine(t.date(), t.timetz())


def settlements_between(t0: datetime, t1: datetime, interval_h: float) -> int:
    """Number of funding times k x ``interval_h`` hours on the UTC epoch grid (00/08/16 UTC for
    8 h, as exchanges settle) in (t0, t1]."""
    step = interval_h * 3600.0
    return max(0, math.floor(t1.timestamp() / step) - math.floor(t0.timestamp() / step))
