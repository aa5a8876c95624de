"""A [market] taken from a data folder carries the perpetuals' state (issue 14 item 3): the last
funding settlement and the last 4 h perpetual mark close at or before the market time (hence the
basis), the EWMA funding forecast with `[costs] funding_forecast = "ewma"`, and spot marks and zero
funding, with a label naming the missing file, where the folder has no file. Small synthetic data
folders are written in tmp_path."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run_fbr

from fbr.config import LoadedBook, load_book_file
from fbr.config_market import data_funding_forecast
from fbr.config_sources import ParseContext
from models.funding_forecast import horizon_weight
from optimizer.settings import CostSettings, FundingForecastRule

#: The market time of the test books: the close of the 2024-02-29 daily bar.
MARKET_TIME = pd.Timestamp("2024-03-01T00:00:00Z")
SPOT = {"BTC": 60_000.0, "ETH": 3_000.0}


def _funding_rates(n: int) -> np.ndarray:
    """Distinct rates per settlement (fractions), so the last one is easy to tell apart."""
    return 1e-4 + 1e-6 * np.arange(n) * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)


def write_data(root: Path, *, funding_end: str = "2024-03-10", with_eth_perp: bool = False) -> Path:
    """spot_1d for BTC and ETH (2024-01-01 .. 2024-03-30, flat closes), funding and perp marks for
    BTC only (and ETH with ``with_eth_perp``): 8 h settlements from 2024-01-01 to ``funding_end``
    (exclusive), 4 h mark bars to 2024-03-10, the mark 0.5% above spot plus 1 USD per bar index."""
    days = pd.date_range("2024-01-01", "2024-03-30", freq="1D", tz="UTC")
    (root / "spot_1d").mkdir(parents=True)
    for sym, px in SPOT.items():
        pd.DataFrame({"timestamp": days, "open": px, "high": px, "low": px, "close": px,
                      "volume": 1.0, "quote_volume": px}).to_csv(
            root / "spot_1d" / f"{sym}.csv.gz", index=False)
    perps = ["BTC", "ETH"] if with_eth_perp else ["BTC"]
    settle = pd.date_range("2024-01-01", funding_end, freq="8h", tz="UTC", inclusive="left")
    bars = pd.date_range("2024-01-01", "2024-03-10", freq="4h", tz="UTC", inclusive="left")
    (root / "funding").mkdir()
    (root / "perp_mark_4h").mkdir()
    for sym in perps:
        pd.DataFrame({"timestamp": settle, "funding_rate": _funding_rates(len(settle))}).to_csv(
            root / "funding" / f"{sym}.csv.gz", index=False)
        pd.DataFrame({"timestamp": bars, "close": SPOT[sym] * 1.005 + np.arange(len(bars))}).to_csv(
            root / "perp_mark_4h" / f"{sym}.csv.gz", index=False)
    return root


def write_book(path: Path, data_dir: Path, *, costs: str = "", market: str = "") -> Path:
    """A BTC/ETH book (BTC overweight) on the data folder at MARKET_TIME; carry on, trading off."""
    path.write_text(f"""[book]
name = "perp data"
cash = 5000.0
[targets]
BTC = 0.5
ETH = 0.5
[spot]
BTC = 0.2
ETH = 2.0
[contract_defaults]
lot_step = 1e-6
min_notional = 0.0
[market]
source = "data"
data_dir = "{data_dir.as_posix()}"
time = 2024-03-01T00:00:00Z
{market}
[risk]
correlation = 0.7
basis_risk = false
[risk.vols]
BTC = 0.6
ETH = 0.7
[costs]
trading = false
carry = true
{costs}
[constraints]
margin = false
""", encoding="utf-8")
    return path


def _settlements(root: Path, sym: str) -> pd.Series:
    raw = pd.read_csv(root / "funding" / f"{sym}.csv.gz")
    return pd.Series(raw["funding_rate"].to_numpy(), index=pd.to_datetime(raw["timestamp"], utc=True))


@pytest.fixture
def loaded(tmp_path: Path) -> tuple[LoadedBook, Path]:
    data = write_data(tmp_path / "data")
    return load_book_file(write_book(tmp_path / "book.toml", data)), data


def test_funding_is_the_last_settlement_at_or_before_the_market_time(
        loaded: tuple[LoadedBook, Path]) -> None:
    lb, data = loaded
    assert lb.market.time == MARKET_TIME
    # settlements every 8 h from 2024-01-01: 2024-03-01 00:00 is number 60 x 3 = 180 (0-based)
    k = ((MARKET_TIME - pd.Timestamp("2024-01-01", tz="UTC")) // pd.Timedelta(hours=8))
    assert k == 180
    expected = 1e-4 + 1e-6 * 180  # even index: + sign
    assert lb.market.funding_rate("BTC-PERP") == pytest.approx(expected, rel=1e-12)
    assert _settlements(data, "BTC")[MARKET_TIME] == pytest.approx(expected)  # and later ones exist
    assert lb.market.funding_forecast == {}  # the default "last" rule: no forecast


def test_mark_is_the_perp_close_of_the_bar_ending_at_the_market_time(
        loaded: tuple[LoadedBook, Path]) -> None:
    lb, data = loaded
    raw = pd.read_csv(data / "perp_mark_4h" / "BTC.csv.gz")
    closes = pd.Series(raw["close"].to_numpy(), index=pd.to_datetime(raw["timestamp"], utc=True))
    # the bar opened 2024-02-29 20:00 closes at the market time; the 2024-03-01 00:00 bar is later
    assert lb.market.mark_price("BTC-PERP") == closes[pd.Timestamp("2024-02-29T20:00Z")]
    assert lb.market.mark_price("BTC-PERP") != closes[MARKET_TIME]
    basis = lb.market.mark_price("BTC-PERP") / lb.market.spot_price("BTC") - 1.0
    assert basis > 0.005  # 0.5% plus the bar index over 60,000


def test_missing_files_fall_back_to_spot_and_no_funding_with_labels(
        loaded: tuple[LoadedBook, Path]) -> None:
    lb, data = loaded
    assert lb.market.mark_price("ETH-PERP") == lb.market.spot_price("ETH")
    assert lb.market.funding_rate("ETH-PERP") == 0.0 and "ETH-PERP" not in lb.market.funding
    text = " / ".join(lb.labels)
    assert str(data / "perp_mark_4h" / "ETH.csv.gz") in text
    assert str(data / "funding" / "ETH.csv.gz") in text
    assert "mark = spot price (no basis) for ETH-PERP" in text


def test_a_stale_funding_file_is_labelled(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data", funding_end="2024-02-20")
    lb = load_book_file(write_book(tmp_path / "book.toml", data))
    last = _settlements(data, "BTC").iloc[-1]
    assert lb.market.funding_rate("BTC-PERP") == pytest.approx(last)
    assert any("2024-02-19 16:00" in label and "before the market time" in label
               for label in lb.labels)


def test_pinned_funding_and_marks_win(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    lb = load_book_file(write_book(tmp_path / "book.toml", data, market=(
        '[market.funding]\n"BTC-PERP" = "0.05%"\n[market.mark]\n"BTC-PERP" = 61000.0\n')))
    assert lb.market.funding_rate("BTC-PERP") == pytest.approx(5e-4)
    assert lb.market.mark_price("BTC-PERP") == 61_000.0


def _ewma_by_hand(rates: np.ndarray, half_life: float) -> float:
    """sum lam^i r_{t-i} / sum lam^i, lam = 2^(-1/L), over every settlement (a plain loop)."""
    lam = 2.0 ** (-1.0 / half_life)
    num = den = 0.0
    for r in rates:
        num = r + lam * num
        den = 1.0 + lam * den
    return num / den


def test_ewma_forecast_from_the_settlements_up_to_the_market_time(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data", with_eth_perp=True)
    lb = load_book_file(write_book(tmp_path / "book.toml", data,
                                   market='[market.funding]\n"ETH-PERP" = 0.0002\n'))
    costs = CostSettings(funding_forecast=FundingForecastRule.EWMA, horizon_days=2.0,
                         funding_half_life=10.0, funding_reversion_half_life=50.0,
                         funding_long_run_rate=1e-4)
    table: dict[str, Any] = {"source": "data", "data_dir": str(data),
                             "funding": {"ETH-PERP": 0.0002}}
    ctx = ParseContext(tmp_path)
    market = data_funding_forecast(table, lb.market, lb.book.contracts, costs, ctx)
    series = _settlements(data, "BTC")
    past = series.loc[series.index <= MARKET_TIME].to_numpy()
    assert len(past) == 181  # the settlement at the market time counts, the later ones do not
    m = _ewma_by_hand(past, 10.0)
    w = horizon_weight(2.0 ** (-1.0 / 50.0), 6.0)  # 2 days of 8 h settlements
    assert market.funding_forecast["BTC-PERP"] == pytest.approx(1e-4 + (m - 1e-4) * w, rel=1e-9)
    assert market.carry_rate("BTC-PERP") == market.funding_forecast["BTC-PERP"]
    assert "ETH-PERP" not in market.funding_forecast  # pinned in [market.funding]
    assert market.funding == lb.market.funding and market.mark == lb.market.mark
    assert any(label.startswith("funding forecast: EWMA") for label in ctx.labels)
    # the "last" rule, or a market that is not from data: unchanged
    assert data_funding_forecast(table, lb.market, lb.book.contracts, CostSettings(), ctx) is lb.market
    explicit = {**table, "source": "explicit"}
    assert data_funding_forecast(explicit, lb.market, lb.book.contracts, costs, ctx) is lb.market


def test_a_perpetual_with_no_settlement_yet_is_forecast_at_the_long_run_level_and_says_so(
        tmp_path: Path) -> None:
    """Before the funding file's first settlement the EWMA has nothing to average: the forecast
    is mu (models.funding_forecast), and the label names the contract and the level assumed."""
    import dataclasses

    data = write_data(tmp_path / "data")
    lb = load_book_file(write_book(tmp_path / "book.toml", data))
    first = _settlements(data, "BTC").index[0]
    early = dataclasses.replace(lb.market, time=first - pd.Timedelta(hours=1))
    costs = CostSettings(funding_forecast=FundingForecastRule.EWMA, funding_long_run_rate=3e-4)
    ctx = ParseContext(tmp_path)
    market = data_funding_forecast({"source": "data", "data_dir": str(data)}, early,
                                   lb.book.contracts, costs, ctx)
    assert market.funding_forecast["BTC-PERP"] == pytest.approx(3e-4, rel=1e-12)
    (label,) = [x for x in ctx.labels if x.startswith("funding forecast: EWMA")]
    assert label.endswith("no settlement yet for BTC-PERP: the long-run level 0.0003 per 8 h "
                          "settlement (h / 8 of it per settlement h hours apart)")


def test_solve_reports_the_funding_carry_of_a_data_market(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    book = write_book(tmp_path / "book.toml", data)
    res = run_fbr("solve", str(book), "--json")
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    rate = 1e-4 + 1e-6 * 180
    btc = {p["symbol"]: p["notional"] for p in doc["target_positions"]}["BTC-PERP"]
    assert btc < -1000.0  # BTC is overweight: short it
    # carry over 1 day = 3 settlements of the last rate on BTC-PERP; ETH-PERP has no funding file
    assert doc["costs"]["funding_carry"] == pytest.approx(btc * 3 * rate, rel=1e-6)
    assert doc["costs"]["funding_carry"] != 0.0
    # the same book with funding pinned to 0 (what a data market carried before): no carry
    zero = write_book(tmp_path / "zero.toml", data, market='[market.funding]\n"BTC-PERP" = 0.0\n')
    res0 = run_fbr("solve", str(zero), "--json")
    assert res0.returncode == 0, res0.stderr
    assert json.loads(res0.stdout)["costs"]["funding_carry"] == 0.0


@pytest.mark.shared_data
def test_the_shared_data_market_carries_funding_and_marks(tmp_path: Path,
                                                          shared_data_dir: Path) -> None:
    path = tmp_path / "book.toml"
    path.write_text(f"""[targets]
BTC = 0.5
ETH = 0.3
SOL = 0.2
[spot]
BTC = 0.1
ETH = 1.0
SOL = 10.0
[market]
source = "data"
data_dir = "{shared_data_dir.as_posix()}"
time = 2024-06-01T00:00:00Z
[risk]
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
SOL = 0.95
""", encoding="utf-8")
    with pytest.warns(UserWarning):  # SOL's spot history starts later: the loader says so
        lb = load_book_file(path)
    t = pd.Timestamp("2024-06-01T00:00:00Z")
    assert lb.market.time == t
    rates = _settlements(shared_data_dir, "BTC")
    assert lb.market.funding_rate("BTC-PERP") == pytest.approx(rates.loc[rates.index <= t].iloc[-1])
    raw = pd.read_csv(shared_data_dir / "perp_mark_4h" / "BTC.csv.gz")
    closes = pd.Series(raw["close"].to_numpy(), index=pd.to_datetime(raw["timestamp"], utc=True))
    assert lb.market.mark_price("BTC-PERP") == pytest.approx(closes[pd.Timestamp("2024-05-31T20:00Z")])
    assert abs(lb.market.mark_price("BTC-PERP") / lb.market.spot_price("BTC") - 1.0) < 0.01
    assert math.isfinite(lb.market.funding_rate("SOL-PERP"))
    if not (shared_data_dir / "perp_mark_4h" / "SOL.csv.gz").exists():  # SOL: spot marks
        assert lb.market.mark_price("SOL-PERP") == lb.market.spot_price("SOL")
        assert any("perp_mark_4h/SOL.csv.gz" in label for label in lb.labels)
