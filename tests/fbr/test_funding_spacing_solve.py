"""`fbr solve` on a `[market] source = "data"` book counts the settlements the data holds, as
`fbr backtest` does (README, `funding_interval_h`): where a perpetual's measured spacing at the
market time (the median of its last five gaps, scenarios.funding_run.settlement_hours) differs
from its `funding_interval_h`, the market carries that spacing (MarketSnapshot.funding_interval_h)
and a label says so; the carry then counts horizon_days x 24 / spacing settlements. With
`funding_forecast = "ewma"` the forecast counts the same settlements and its long-run level, quoted
per 8 h, is scaled to the spacing (mu h / 8).

Small data folders are written in tmp_path: BTC settles every 8 h throughout; SOL every 8 h, then
every 2 h from ``SOL_FAST_FROM``. Expected values are computed by hand with pandas / numpy."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run_fbr

from fbr.config import load_book_file
from fbr.config_market import data_funding_forecast
from fbr.config_sources import ParseContext
from optimizer.carry import _carry_per_horizon
from optimizer.settings import CostSettings, FundingForecastRule

SPOT = {"BTC": 60_000.0, "SOL": 100.0}
#: the first 2 h settlement of SOL (its 8 h grid stops at 2024-02-29 16:00)
SOL_FAST_FROM = pd.Timestamp("2024-02-29 20:00", tz="UTC")


def _sol_times() -> pd.DatetimeIndex:
    slow = pd.date_range("2024-01-01", "2024-02-29 16:00", freq="8h", tz="UTC")
    fast = pd.date_range(SOL_FAST_FROM, pd.Timestamp("2024-03-10", tz="UTC"), freq="2h",
                         inclusive="left")
    return pd.DatetimeIndex(slow.append(fast))


def write_data(root: Path) -> Path:
    """spot_1d of BTC and SOL (flat), funding of BTC (8 h) and SOL (8 h, then 2 h), distinct rates
    per settlement; no mark files (the marks fall back to spot)."""
    days = pd.date_range("2024-01-01", "2024-03-30", freq="1D", tz="UTC")
    (root / "spot_1d").mkdir(parents=True)
    (root / "funding").mkdir()
    for sym, px in SPOT.items():
        pd.DataFrame({"timestamp": days, "open": px, "high": px, "low": px, "close": px,
                      "volume": 1.0, "quote_volume": px}).to_csv(root / "spot_1d" / f"{sym}.csv.gz",
                                                                  index=False)
    btc = pd.date_range("2024-01-01", "2024-03-10", freq="8h", tz="UTC", inclusive="left")
    for sym, times, base in (("BTC", btc, 1e-4), ("SOL", _sol_times(), -3e-4)):
        rates = base + 1e-6 * (np.arange(len(times)) % 7)
        pd.DataFrame({"timestamp": times, "funding_rate": rates}).to_csv(
            root / "funding" / f"{sym}.csv.gz", index=False)
    return root


def write_book(path: Path, data_dir: Path, *, time: str = "2024-03-02T00:00:00Z", costs: str = "",
               market: str = "") -> Path:
    """A BTC/SOL book (BTC overweight) on the data folder; carry on, trading and margin off."""
    path.write_text(f"""[book]
name = "spacing"
cash = 5000.0
[targets]
BTC = 0.5
SOL = 0.5
[spot]
BTC = 0.2
SOL = 20.0
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
[market]
source = "data"
data_dir = "{data_dir.as_posix()}"
time = {time}
{market}
[risk]
correlation = 0.7
basis_risk = false
[risk.vols]
BTC = 0.6
SOL = 0.9
[costs]
trading = false
carry = true
{costs}
[constraints]
margin = false
""", encoding="utf-8")
    return path


def settlements(root: Path, asset: str, at: pd.Timestamp) -> pd.Series:
    """The funding file's settlements at or before ``at`` (read with pandas alone)."""
    raw = pd.read_csv(root / "funding" / f"{asset}.csv.gz")
    s = pd.Series(raw["funding_rate"].to_numpy(), index=pd.to_datetime(raw["timestamp"], utc=True))
    return s.loc[s.index <= at]


def spacing_by_hand(s: pd.Series) -> float:
    """The median of the last five gaps between settlements, hours."""
    gaps = s.index.to_series().diff().dt.total_seconds().div(3600.0).iloc[-5:]
    return float(gaps.median())


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_data(tmp_path / "data")


def test_the_market_carries_the_measured_spacing_and_the_carry_counts_it(tmp_path: Path,
                                                                         data: Path) -> None:
    t = pd.Timestamp("2024-03-02T00:00Z")
    lb = load_book_file(write_book(tmp_path / "book.toml", data))
    assert lb.market.time == t
    sol, btc = settlements(data, "SOL", t), settlements(data, "BTC", t)
    assert spacing_by_hand(sol) == 2.0 and spacing_by_hand(btc) == 8.0
    assert dict(lb.market.funding_interval_h) == {"SOL-PERP": 2.0}  # BTC keeps its own 8 h
    carry = _carry_per_horizon(lb.book, lb.market, 1.0)
    syms = list(lb.book.contract_symbols)
    assert carry[syms.index("SOL-PERP")] == pytest.approx(12 * sol.iloc[-1], rel=1e-12)
    assert carry[syms.index("BTC-PERP")] == pytest.approx(3 * btc.iloc[-1], rel=1e-12)
    (label,) = [x for x in lb.labels if "settled every" in x]
    assert label.startswith("market data: SOL-PERP settled every 2 h") and "not every 8 h" in label


def test_the_spacing_is_the_median_of_the_last_five_gaps_up_to_the_market_time(
        tmp_path: Path, data: Path) -> None:
    """At 2024-03-01 00:00 SOL's last five gaps are 8, 8, 4, 2, 2 h (the 8 h grid ends at 16:00,
    the 2 h one starts at 20:00): the median is 4 h. A day earlier every gap is 8 h: no spacing
    and no label. Nothing after the market time is read (the 2 h settlements that follow)."""
    t = pd.Timestamp("2024-03-01T00:00Z")
    sol = settlements(data, "SOL", t)
    gaps = sol.index.to_series().diff().dt.total_seconds().div(3600.0).iloc[-5:].tolist()
    assert gaps == [8.0, 8.0, 4.0, 2.0, 2.0]
    lb = load_book_file(write_book(tmp_path / "b1.toml", data, time="2024-03-01T00:00:00Z"))
    assert dict(lb.market.funding_interval_h) == {"SOL-PERP": 4.0}
    syms = list(lb.book.contract_symbols)
    carry = _carry_per_horizon(lb.book, lb.market, 1.0)
    assert carry[syms.index("SOL-PERP")] == pytest.approx(6 * sol.iloc[-1], rel=1e-12)
    early = load_book_file(write_book(tmp_path / "b0.toml", data, time="2024-02-29T00:00:00Z"))
    assert dict(early.market.funding_interval_h) == {}
    assert not [x for x in early.labels if "settled every" in x]


def test_a_pinned_rate_keeps_the_book_s_interval_and_other_overrides_keep_the_spacing(
        tmp_path: Path, data: Path) -> None:
    """[market.funding] replaces the data's funding of that contract: its rate is the user's, per
    funding_interval_h (README). A [market.mark] override leaves the measured spacing in place."""
    pinned = load_book_file(write_book(tmp_path / "p.toml", data,
                                       market='[market.funding]\n"SOL-PERP" = "0.01%"\n'))
    assert dict(pinned.market.funding_interval_h) == {}
    syms = list(pinned.book.contract_symbols)
    carry = _carry_per_horizon(pinned.book, pinned.market, 1.0)
    assert carry[syms.index("SOL-PERP")] == pytest.approx(3e-4, rel=1e-12)
    marked = load_book_file(write_book(tmp_path / "m.toml", data,
                                       market='[market.mark]\n"SOL-PERP" = 101.0\n'))
    assert marked.market.mark_price("SOL-PERP") == 101.0
    assert dict(marked.market.funding_interval_h) == {"SOL-PERP": 2.0}


def _ewma(rates: np.ndarray, half_life: float) -> float:
    """sum lam^i r_{t-i} / sum lam^i, lam = 2^(-1/L) (a plain loop)."""
    lam, num, den = 2.0 ** (-1.0 / half_life), 0.0, 0.0
    for r in rates:
        num, den = r + lam * num, 1.0 + lam * den
    return num / den


def test_the_ewma_forecast_counts_the_measured_settlements_and_scales_the_long_run_level(
        tmp_path: Path, data: Path) -> None:
    """SOL at 2 h: H = 2 x 24 / 2 = 24 settlements over a 2-day horizon and mu = 1e-4 x 2 / 8 per
    settlement; BTC at 8 h: H = 6 and mu = 1e-4 (unchanged). rbar = mu + (m - mu) w(H),
    w(H) = (1 - phi^H) / (H ln(1/phi)), phi = 2^(-1/50), m the EWMA (half-life 10)."""
    t = pd.Timestamp("2024-03-02T00:00Z")
    lb = load_book_file(write_book(tmp_path / "book.toml", data))
    costs = CostSettings(funding_forecast=FundingForecastRule.EWMA, horizon_days=2.0,
                         funding_half_life=10.0, funding_reversion_half_life=50.0,
                         funding_long_run_rate=1e-4)
    ctx = ParseContext(tmp_path)
    market = data_funding_forecast({"source": "data", "data_dir": str(data)}, lb.market,
                                   lb.book.contracts, costs, ctx)
    phi = 2.0 ** (-1.0 / 50.0)
    for sym, asset, hours in (("SOL-PERP", "SOL", 2.0), ("BTC-PERP", "BTC", 8.0)):
        big_h, mu = 48.0 / hours, 1e-4 * hours / 8.0
        w = (1.0 - phi ** big_h) / (big_h * math.log(1.0 / phi))
        m = _ewma(settlements(data, asset, t).to_numpy(), 10.0)
        assert market.funding_forecast[sym] == pytest.approx(mu + (m - mu) * w, rel=1e-9), sym
    syms = list(lb.book.contract_symbols)
    carry = _carry_per_horizon(lb.book, market, 2.0)
    assert carry[syms.index("SOL-PERP")] == pytest.approx(24 * market.funding_forecast["SOL-PERP"])


def test_solve_json_reports_the_carry_of_the_measured_settlements(tmp_path: Path,
                                                                  data: Path) -> None:
    t = pd.Timestamp("2024-03-02T00:00Z")
    res = run_fbr("solve", str(write_book(tmp_path / "book.toml", data)), "--json")
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    x = {p["symbol"]: p["notional"] for p in doc["target_positions"]}
    hand = sum(x[f"{a}-PERP"] * settlements(data, a, t).iloc[-1] * 24.0
               / spacing_by_hand(settlements(data, a, t)) for a in ("BTC", "SOL"))
    assert abs(x["SOL-PERP"]) > 100.0  # a real SOL position, so its 12 settlements matter
    assert doc["costs"]["funding_carry"] == pytest.approx(hand, rel=1e-6)


SHARED_BOOK = """[book]
name = "sol data"
cash = 3000.0
[targets]
BTC = 0.5
SOL = 0.5
[spot]
BTC = 0.1
SOL = 100.0
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
[market]
source = "data"
data_dir = "{data}"
time = 2022-11-12T00:00:00Z
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
SOL = 0.95
[costs]
trading = false
carry = true
impact = false
gamma_fund = 1e-9
horizon_days = 1
[constraints]
margin = false
"""


@pytest.mark.shared_data
def test_solve_on_the_shared_data_counts_sol_s_2h_settlements_as_the_backtest_does(
        tmp_path: Path, shared_data_dir: Path) -> None:
    """SOL settled every 2 h around 2022-11-12 in the shared data: 12 settlements a day, not the
    book's 3 (a review measured carry -0.0326 USD with 3, -0.1155 with 12). The backtest's
    snapshot at that step carries the same spacing."""
    from scenarios.market_path import path_from_data
    from scenarios.replay_inputs import market_at, read_inputs

    t = pd.Timestamp("2022-11-12T00:00Z")
    book = tmp_path / "book.toml"
    book.write_text(SHARED_BOOK.format(data=shared_data_dir.as_posix()), encoding="utf-8")
    res = run_fbr("solve", str(book), "--json")
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    x = {p["symbol"]: p["notional"] for p in doc["target_positions"]}
    assert spacing_by_hand(settlements(shared_data_dir, "SOL", t)) == 2.0
    hand = sum(x[f"{a}-PERP"] * settlements(shared_data_dir, a, t).iloc[-1] * 24.0
               / spacing_by_hand(settlements(shared_data_dir, a, t)) for a in ("BTC", "SOL"))
    assert doc["costs"]["funding_carry"] == pytest.approx(hand, rel=1e-6)
    with pytest.warns(UserWarning):  # SOL's spot starts later; SOL's spacing differs
        lb = load_book_file(book)
        path = path_from_data(shared_data_dir, lb.book.contracts, start="2022-11-05",
                              end="2022-11-12", step="1d")
        inp = read_inputs(lb.book, path, spot_fee=None, impact_k=1.0, liquidation_penalty=0.01)
    snap = market_at(inp, len(inp.times) - 1)
    assert snap.time == t == lb.market.time
    assert dict(lb.market.funding_interval_h) == dict(snap.funding_interval_h) == {"SOL-PERP": 2.0}
