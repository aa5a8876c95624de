"""A policy's ``period`` needs an explicit unit (fbr.config_values.period).

pandas reads a bare number as nanoseconds: period = "30" was pd.Timedelta(30 ns), so a 30-"day"
calendar fired at every daily step; "1m" is one minute to pandas (a month to a reader). Now a
period is a number and one unit, D (days), h (hours), min (minutes) or W (weeks), of at least one
minute, returned in pandas' spelling.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fbr.backtest_policies import parse_policy
from fbr.config_values import period
from models.errors import ValidationError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.mark.parametrize(("text", "spelled", "hand"), [
    ("7D", "7D", pd.Timedelta(days=7)),
    ("7d", "7D", pd.Timedelta(days=7)),
    ("8h", "8h", pd.Timedelta(hours=8)),
    ("8H", "8h", pd.Timedelta(hours=8)),
    ("90min", "90min", pd.Timedelta(minutes=90)),
    ("2W", "2W", pd.Timedelta(days=14)),
    ("1.5D", "1.5D", pd.Timedelta(hours=36)),
    ("1min", "1min", pd.Timedelta(seconds=60)),
])
def test_period_with_a_unit(text: str, spelled: str, hand: pd.Timedelta) -> None:
    """Accepted and spelled as pandas keeps it: 2W = 14 days, 1.5D = 36 hours, 90min = 1.5 h."""
    got = period(text, "policies[0].period")
    assert got == spelled
    assert pd.Timedelta(got) == hand


def test_bare_number_is_refused_in_a_policy() -> None:
    """period = "30": pandas' 30 ns; refused naming policies[0].period (it used to pass)."""
    with pytest.raises(ValidationError) as exc:
        parse_policy({"kind": "calendar_spot", "period": "30"}, "policies[0]")
    assert exc.value.field == "policies[0].period"
    assert "'30'" in exc.value.problem
    assert "D (days)" in exc.value.fix


@pytest.mark.parametrize("text", ["1m", "1M", "30m"])
def test_m_is_refused_with_a_month_hint(text: str) -> None:
    """"1m" is one minute to pandas, "1M" an error: both refused, the fix says 30D for a month."""
    with pytest.raises(ValidationError) as exc:
        period(text, "policies[1].period")
    assert exc.value.field == "policies[1].period"
    assert "month" in exc.value.problem
    assert '"30D" for a month' in exc.value.fix


@pytest.mark.parametrize(("text", "why"), [
    ("30s", "unit"), ("0.5min", "under one minute"), ("0D", "under one minute"),
    ("-1D", "unit"), ("1e3D", "unit"), ("weekly", "unit"),
])
def test_other_periods_refused(text: str, why: str) -> None:
    """Seconds are not a unit of the list; 0.5 min = 30 s and 0 D are below one minute."""
    with pytest.raises(ValidationError) as exc:
        period(text, "p")
    assert why in exc.value.problem


def test_backtest_file_with_a_bare_period_is_refused(tmp_path: Path) -> None:
    """End to end: the file is refused at load time, before any path or run (the 10-day replay
    used to trade spot at all 10 steps; a 30-day calendar trades at the first only)."""
    from fbr.backtest_config import load_backtest_file

    f = tmp_path / "bt.toml"
    f.write_text(f'book = "{(EXAMPLES / "backtest_book.toml").as_posix()}"\n'
                 '[data]\nsource = "synthetic"\nseed = 12\ndays = 10\nstart = "2024-01-01"\n'
                 '[[policies]]\nkind = "calendar_spot"\nperiod = "30"\n')
    with pytest.raises(ValidationError) as exc:
        load_backtest_file(f)
    assert exc.value.field == "policies[0].period"


def test_example_files_still_load() -> None:
    """examples/backtest_demo.toml (periods "30D", "7D") and montecarlo_demo.toml still load."""
    from fbr.backtest_config import load_backtest_file
    from fbr.montecarlo_config import load_montecarlo_file

    cfg = load_backtest_file(EXAMPLES / "backtest_demo.toml")
    assert [p.params["period"] for p in cfg.policies if "period" in p.params] == ["30D", "7D"]
    assert load_montecarlo_file(EXAMPLES / "montecarlo_demo.toml").backtest.policies
