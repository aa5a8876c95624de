"""The scenario library: shipped hypothetical files, scenario files, historical scenarios measured
from ../shared/data (skipped without it) and the book's own stress scenarios."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.errors import FbrError, ValidationError
from models.io import default_data_dir
from optimizer.settings import StressScenario
from scenarios.library import (
    book_scenarios,
    historical_scenarios,
    hypothetical_scenarios,
    load_library,
    load_scenario_file,
)
from scenarios.shocks import ShockKind

ROOT = Path(__file__).resolve().parents[2]
DATA = default_data_dir()


def values(name: str) -> dict[str, float]:
    sc = next(s for s in hypothetical_scenarios() if s.name == name)
    return {s.key: s.value for s in sc.shocks}


def test_hypothetical_library() -> None:
    names = [s.name for s in hypothetical_scenarios()]
    assert {"crash-30", "alt-crash", "funding-spike-week", "basis-5", "rally-30",
            "stress-regime"} <= set(names)
    assert values("crash-30") == {"common": pytest.approx(-0.3)}
    assert values("alt-crash") == {"common": pytest.approx(-0.5), "BTC": pytest.approx(-0.2),
                                   "ETH": pytest.approx(-0.3)}
    # +0.3% per 8 h for a week: a rate per 8 h (scaled to each contract's interval) and a
    # duration (168 h; its settlement count is per contract, so the value is NaN)
    spike = next(s for s in hypothetical_scenarios() if s.name == "funding-spike-week")
    assert [(s.key, s.per_hours, s.hours) for s in spike.shocks] == [("funding", 8.0, None),
                                                                     ("horizon", None, 168.0)]
    assert spike.shocks[0].value == pytest.approx(0.003) and np.isnan(spike.shocks[1].value)
    assert values("basis-5") == {"basis": pytest.approx(-0.05)}
    assert all(not s.strict and s.source == "library" for s in hypothetical_scenarios())


def test_example_file_and_both_layouts(tmp_path: Path) -> None:
    ex = load_scenario_file(ROOT / "examples" / "scenarios" / "eth_squeeze.toml")
    assert [s.name for s in ex] == ["eth squeeze", "deleveraging"]
    single = tmp_path / "mine.toml"
    single.write_text('description = "d"\nshocks = ["BTC=-10%", "vol=x2"]\n')
    [sc] = load_scenario_file(single)
    assert sc.name == "mine" and sc.strict and sc.description == "d"
    assert [s.kind for s in sc.shocks] == [ShockKind.PRICE, ShockKind.VOL]


@pytest.mark.parametrize(("text", "needle"), [
    ("shocks = [", "not valid TOML"),
    ("name = 'x'\n", "shocks"),
    ("shocks = 'BTC=-10%'\n", "list of KEY=VALUE"),
    ("shocks = ['BTC=-10%']\nseverity = 3\n", "not a scenario key"),
    ("shocks = ['BTC=-200%']\n", "above -100%"),
    ("[[scenario]]\nname='a'\nshocks=['BTC=1%']\n[[scenario]]\nname='a'\nshocks=['BTC=2%']\n",
     "unique name"),
    ("name = 'x'\n[[scenario]]\nshocks=['BTC=1%']\n", "outside the [[scenario]]"),
])
def test_malformed_files(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(FbrError) as info:
        load_scenario_file(p)
    assert needle in str(info.value) and "Fix:" in str(info.value)


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(FbrError, match="does not exist"):
        load_scenario_file(tmp_path / "nope.toml")
    lib = load_library(data_dir=tmp_path)
    with pytest.raises(ValidationError, match="crash-30"):
        lib.find("crash-31")


def test_without_data_there_are_no_historical_scenarios(tmp_path: Path) -> None:
    scen, notes = historical_scenarios(tmp_path)
    assert scen == [] and len(notes) == 1 and "FBR_DATA_DIR" in notes[0]
    lib = load_library(data_dir=tmp_path)
    assert not any(n.startswith("hist-") for n in lib.names)
    with pytest.raises(ValidationError, match="historical scenarios unavailable"):
        lib.find("hist-nov-2022-day")


def test_book_stress_scenarios() -> None:
    [sc] = book_scenarios((StressScenario("alt crash", {"BTC": -0.2}, common=-0.5),))
    assert sc.name == "book:alt crash" and sc.strict
    assert {s.key: s.value for s in sc.shocks} == {"common": -0.5, "BTC": -0.2}


def _closes(sym: str) -> pd.Series:
    assert DATA is not None
    frame = pd.read_csv(DATA / "spot_1d" / f"{sym}.csv.gz", index_col="timestamp", parse_dates=True)
    return frame["close"].astype(float)


@pytest.mark.shared_data
def test_historical_scenarios_from_data() -> None:
    scen, _notes = historical_scenarios()
    by_name = {s.name: s for s in scen}
    for ep in ("mar-2020", "may-2021", "jun-2022", "nov-2022", "worst"):
        assert f"hist-{ep}-day" in by_name and f"hist-{ep}-week" in by_name
    # independent reference: the FTX month's worst day by the mean BTC/ETH/SOL daily return
    closes = pd.concat({s: _closes(s) for s in ("BTC", "ETH", "SOL")}, axis=1)
    daily = closes.pct_change(fill_method=None)
    nov = daily.loc["2022-11-01":"2022-11-30"]  # a bar dated d closes at d + 1 day
    worst_day = nov.mean(axis=1).idxmin()
    assert isinstance(worst_day, pd.Timestamp)  # a DatetimeIndex label
    sc = by_name["hist-nov-2022-day"]
    got = {s.key: s.value for s in sc.shocks}
    for sym in ("BTC", "ETH", "SOL"):
        assert got[sym] == pytest.approx(float(nov[sym].loc[worst_day]), rel=1e-12)
    worst_row = nov.loc[worst_day]
    assert isinstance(worst_row, pd.Series)  # the index is unique: one row
    assert got["common"] == pytest.approx(float(worst_row.mean()), rel=1e-12)
    assert f"{worst_day:%Y-%m-%d}" in sc.description
    # March 2020: SOL has no data yet, so the reference is the BTC/ETH mean; 12 March is the day
    mar = by_name["hist-mar-2020-day"]
    assert "2020-03-12" in mar.description and "SOL" not in {s.key for s in mar.shocks}
    # a week is 7 closes apart
    wk = {s.key: s.value for s in by_name["hist-jun-2022-week"].shocks}
    weekly = closes / closes.shift(7) - 1.0
    assert np.isclose(weekly["BTC"].loc["2022-06-01":"2022-06-30"], wk["BTC"], rtol=1e-12).any()
    assert all(-1 < v < 0 for v in wk.values())
