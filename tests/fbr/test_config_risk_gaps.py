"""A risk estimate from a data folder where ETH lacks one daily bar (2024-05-10) inside the 90-day
window: the return across the gap spans two days and is left out (fbr.config_risk._data_returns);
before, the prices were inner-joined and the two-day return entered the daily sample covariance
as one day's (BTC's variance 1.1% too high). Independent: each symbol's returns over consecutive
days only (p_t / p_{t-1 day} - 1), inner-joined, the last 90 rows, np.cov x 365."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbr.config import load_book_file

T = pd.Timestamp("2024-06-01T00:00:00Z")
GAP = pd.Timestamp("2024-05-10T00:00:00Z")


def _folder(tmp: Path, src: Path) -> Path:
    d = tmp / "data"
    (d / "spot_1d").mkdir(parents=True)
    shutil.copy(src / "spot_1d" / "BTC.csv.gz", d / "spot_1d" / "BTC.csv.gz")
    eth = pd.read_csv(src / "spot_1d" / "ETH.csv.gz", index_col="timestamp", parse_dates=True)
    eth = eth[eth.index != GAP]
    eth.to_csv(d / "spot_1d" / "ETH.csv.gz", date_format="%Y-%m-%dT%H:%M:%SZ")
    return d


def _daily_returns(d: Path, sym: str) -> pd.Series:
    c = pd.read_csv(d / "spot_1d" / f"{sym}.csv.gz", index_col="timestamp", parse_dates=True)["close"]
    c.index = pd.DatetimeIndex(c.index) + pd.Timedelta(days=1)
    c = c[c.index <= T]
    prev = c.reindex(pd.DatetimeIndex(c.index) - pd.Timedelta(days=1)).to_numpy()
    return pd.Series(c.to_numpy() / prev - 1.0, index=c.index).dropna()


@pytest.mark.shared_data
def test_a_return_across_a_missing_bar_is_not_a_daily_return(tmp_path: Path,
                                                             shared_data_dir: Path) -> None:
    d = _folder(tmp_path, shared_data_dir)
    b = tmp_path / "b.toml"
    b.write_text(f"""
[book]
cash = 3000.0
[targets]
BTC = 0.6
ETH = 0.4
[spot_usd]
BTC = 6000.0
ETH = 4000.0
[market]
source = "data"
data_dir = "{d}"
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[risk]
source = "data"
method = "sample"
lookback_days = 90
basis_risk = false
""")
    loaded = load_book_file(b)
    r = pd.concat({s: _daily_returns(d, s) for s in ("BTC", "ETH")}, axis=1, join="inner").tail(90)
    exp = np.cov(r.to_numpy(), rowvar=False) * 365
    np.testing.assert_allclose(loaded.risk.covariance, exp, rtol=1e-6)
