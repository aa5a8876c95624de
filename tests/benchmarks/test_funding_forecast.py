"""benchmarks/funding_forecast.py builds its forecasters as the tool does: the long-run level
``--long-run`` is per 8 h settlement and each series is shrunk to it per settlement at its own
spacing, mu = long_run x h / 8 (models.funding_forecast.long_run_rate_per_settlement), not to the
8 h level whatever the spacing.

Small funding files in tmp_path, each settling at a constant rate equal to its scaled level: BTC
every 8 h at 1e-4, SOL every 4 h at 5e-5, XRP every 1 h at 1.25e-5. Every forecast of the level
(``const_mu``) and of the EWMA shrunk to it (``ewma_shrunk``) is then exact: MAE 0 (with the 8 h
level for every series, SOL's ``const_mu`` would be off by 5e-5 and XRP's by 8.75e-5)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pandas as pd
import pytest

FF = importlib.import_module("funding_forecast")
SERIES = {"BTC": ("8h", 1e-4), "SOL": ("4h", 5e-5), "XRP": ("1h", 1.25e-5)}


def _write(root: Path) -> Path:
    (root / "funding").mkdir(parents=True)
    for sym, (freq, rate) in SERIES.items():
        times = pd.date_range("2024-01-01", "2024-01-21", freq=freq, tz="UTC", inclusive="left")
        pd.DataFrame({"timestamp": times, "funding_rate": rate}).to_csv(
            root / "funding" / f"{sym}.csv.gz", index=False)
    return root


def test_each_series_is_shrunk_to_the_level_per_settlement_at_its_own_spacing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write(tmp_path / "data")
    code = FF.main(["--data", str(data), "--start", "2024-01-05", "--end", "2024-01-20",
                    "--horizons", "3,21", "--long-run", "1e-4", "--json", "--no-write"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    for h in ("3", "21"):
        results = report["horizons"][h]["results"]
        assert set(results) == {*SERIES, "all"}
        for sym in (*SERIES, "all"):
            for label in ("const_mu", "ewma_shrunk"):
                e = results[sym][label]
                assert e["n"] > 0
                assert e["mae"] == pytest.approx(0.0, abs=1e-15), (h, sym, label)


def test_the_level_follows_the_spacing_at_each_origin() -> None:
    """A series at 8 h, then at 4 h: the level per settlement is 1e-4 while the median of the last
    five gaps is 8 h and 5e-5 from the origin where it is 4 h (the third 4 h gap)."""
    slow = pd.date_range("2024-01-01", "2024-01-03", freq="8h", tz="UTC")
    fast = pd.date_range("2024-01-03 04:00", "2024-01-04", freq="4h", tz="UTC")
    rates = pd.Series(0.0, index=slow.append(fast))
    path = FF.forecast_path(FF.Named("const_mu", FF.ConstantForecaster), rates, 3, 1e-4)
    n_slow = len(slow)
    assert list(path[: n_slow + 2]) == [1e-4] * (n_slow + 2)
    assert list(path[n_slow + 2:]) == [5e-5] * (len(fast) - 2)
