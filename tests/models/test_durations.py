"""models.durations: one grammar for the durations a user types (the run file's and the what-if's),
the units of a policy's period included. Hand values in seconds."""

from __future__ import annotations

import pytest

from models.durations import duration_seconds


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90.0), ("30m", 1800.0), ("30min", 1800.0), ("8h", 28_800.0), ("8H", 28_800.0),
    ("1d", 86_400.0), ("1D", 86_400.0), ("2W", 1_209_600.0), ("1w", 604_800.0),
    (" 1.5 h ", 5_400.0), (".5h", 1_800.0), ("1e3s", 1_000.0), ("0h", 0.0),
])
def test_units(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "8", "h", "-1h", "1h30m", "30mins", "1M", "1y", "1e999h",
                                  "nan h", "inf D"])
def test_refused(text: str) -> None:
    assert duration_seconds(text) is None
