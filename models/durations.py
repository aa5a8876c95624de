"""Durations as input files and the command line write them: a number and one unit.

One grammar for every duration a user types outside a policy's period: the daily loop's
``interval``, ``check_every``, ``retry_every`` and ``funding_ahead`` (executor.schedule), and a
what-if's ``horizon=`` and ``funding=+x%/p`` (scenarios.shocks). Units: ``s``; ``min`` or ``m``
(minutes); ``h`` or ``H``; ``D`` or ``d`` (days); ``W`` or ``w`` (weeks), so the spellings of a
policy's period (``"7D"``, ``"90min"``, ``"2W"``; fbr.config_values.period) read the same here. A
period itself refuses ``m`` (a minute or a month?) because pandas reads "M" as a month end; a
duration has no months, so ``m`` stays a minute.
"""

from __future__ import annotations

import math
import re

#: Seconds per unit.
UNIT_SECONDS: dict[str, float] = {"s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "H": 3600.0,
                                  "D": 86400.0, "d": 86400.0, "W": 604800.0, "w": 604800.0}
#: The units as a fix names them.
UNITS_HINT = "s, min (or m), h, D (or d) or W"
_DURATION = re.compile(r"\s*((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(s|min|m|h|H|D|d|W|w)\s*")


def duration_seconds(text: str) -> float | None:
    """``text`` ("30min", "8h", "1D", "2W", "90s", " 1.5 h ") in seconds; None when it is not a
    non-negative number followed by one unit, or its value is not finite ("1e999h")."""
    m = _DURATION.fullmatch(str(text))
    if m is None:
        return None
    seconds = float(m.group(1)) * UNIT_SECONDS[m.group(2)]
    return seconds if math.isfinite(seconds) else None
