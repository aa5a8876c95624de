"""The settings of the daily loop (``fbr run``): triggers, daily limits, files.

Units: fractions for drift and rates, USD for limits, durations as ``timedelta``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from executor.schedule import Schedule
from models.errors import ValidationError
from optimizer.settings import CostSettings


@dataclass(frozen=True)
class Triggers:
    """What makes the loop act between scheduled cycles (each None = off).

    ``drift_band``: a cycle runs at once when some asset's |e_i - w*_i| exceeds it (fraction of
    the base); ``margin_ratio``: above this MM / collateral the loop de-risks at once (a cycle
    without the cost gate whose targets are scaled down until the ratio is at most 0.9 x it) and
    alerts; ``margin_warn``: an alert (no trade) above this ratio; ``funding_alert``: an alert
    when a contract's funding rate per settlement exceeds it in absolute value;
    ``funding_ahead``: when carry matters (the book's ``gamma_fund`` > 0) a cycle runs this long
    before each funding settlement (once per settlement); ``check_every``: how often the account
    is read between cycles to test these; ``retry_every``: how soon a cycle that could not run
    (the account unreadable) is tried again (at most ``check_every``)."""

    drift_band: float | None = None
    margin_ratio: float | None = 0.5
    margin_warn: float | None = 0.3
    funding_alert: float | None = 0.001
    funding_ahead: timedelta | None = None
    check_every: timedelta = timedelta(hours=1)
    retry_every: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        for name in ("drift_band", "margin_ratio", "margin_warn", "funding_alert"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and 0 < v < 1):
                raise ValidationError(f"triggers.{name}", f"is {v}",
                                      'give a fraction in (0, 1), e.g. "5%", or leave it out')
        for name in ("check_every", "retry_every"):
            if getattr(self, name) <= timedelta(0):
                raise ValidationError(f"triggers.{name}", f"is {getattr(self, name)}",
                                      'give a positive duration, e.g. "1h"')


@dataclass(frozen=True)
class DailyLimits:
    """Per UTC day: ``turnover_usd`` caps the sum of |order notional| sent (a plan that would pass
    it is refused, a de-risk excepted); ``loss_usd`` stops trading for the rest of the day once
    NAV is this far below the day's first reading (USD)."""

    turnover_usd: float = math.inf
    loss_usd: float = math.inf

    def __post_init__(self) -> None:
        for name in ("turnover_usd", "loss_usd"):
            v = getattr(self, name)
            if math.isnan(v) or v <= 0:
                raise ValidationError(f"limits.{name}", f"is {v}", "give a USD amount > 0")


#: the gate's costs when a caller gives none: gamma_trade 1, the impact term on at k = 1 (fbr run
#: passes the book's [costs])
GATE_COSTS = CostSettings(impact=True)


@dataclass(frozen=True)
class RunSettings:
    """Everything the loop needs besides the venue and the policy.

    ``mode``: ``"dry-run"`` (plans shown, nothing sent), ``"paper"`` or ``"live"``; ``gate``: apply
    the cost gate (off: trade whatever the policy asks, as ``fbr backtest`` does);
    ``health_file``, ``kill_file``: paths (the kill file's existence stops the loop before any
    further order); ``costs``: the book's cost settings the gate prices a plan with (gamma_trade,
    and impact only when the book's objective has it); ``max_cycles``: stop after this
    many cycles (None: run until stopped); ``once``: stop after the first wake-up (a cron job)."""

    schedule: Schedule
    mode: str
    health_file: Path
    kill_file: Path
    triggers: Triggers = Triggers()
    limits: DailyLimits = DailyLimits()
    gate: bool = True
    costs: CostSettings = GATE_COSTS
    max_cycles: int | None = None
    once: bool = False
