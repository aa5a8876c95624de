"""Loaders: the shared data layout (``shared_data`` tests, skipped when ../shared/data is absent)
and bad-input files."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.errors import ValidationError
from models.instruments import MarginTiers
from models.io import (
    default_data_dir,
    load_contract_spec,
    load_funding,
    load_leverage_tiers,
    load_mark_closes,
    load_spot_closes,
)

TIERS_FILE = "markets/binance_usdm_leverage_tiers_2026-05-07.csv.gz"
HISTORY_FILE = "markets/binance_usdm_leverage_tiers_history_majors.csv.gz"
SPECS_FILE = "markets/binance_usdm_contracts_2025-12-24.csv.gz"


@pytest.fixture
def data_dir(shared_data_dir: Path) -> Path:
    """The shared data folder (tests/conftest.py: only for tests marked ``shared_data``)."""
    return shared_data_dir


def _write_csv(path: Path, rows: dict[str, list[object]], *, gz: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = pd.DataFrame(rows).to_csv(index=False)
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _spot_file(root: Path, sym: str, start: str, n: int, *, folder: str = "spot_1d",
               close: list[float] | None = None, suffix: str = ".csv.gz") -> Path:
    ts = pd.date_range(start, periods=n, freq="D", tz="UTC")
    values: list[object] = list(close) if close is not None else [100.0 + k for k in range(n)]
    return _write_csv(root / folder / f"{sym}{suffix}",
                      {"timestamp": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in ts],
                       "close": values}, gz=suffix.endswith(".gz"))


# -- default_data_dir ------------------------------------------------------------------------------


def test_default_data_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FBR_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path


def test_default_data_dir_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FBR_DATA_DIR", raising=False)
    d = default_data_dir()
    expected = Path(__file__).resolve().parents[3] / "shared" / "data"
    assert d == (expected if expected.is_dir() else None)


# -- the real shared data --------------------------------------------------------------------------


@pytest.mark.shared_data
def test_spot_closes_real(data_dir: Path) -> None:
    with pytest.warns(UserWarning, match="SOL"):
        closes = load_spot_closes(data_dir, ["BTC", "SOL"])
    assert list(closes.columns) == ["BTC", "SOL"]
    assert str(pd.DatetimeIndex(closes.index).tz) == "UTC"
    assert closes.index[0] == pd.Timestamp("2020-08-11", tz="UTC")  # SOL starts the span
    assert closes.index[-1] == pd.Timestamp("2025-06-30", tz="UTC")
    raw = pd.read_csv(data_dir / "spot_1d" / "BTC.csv.gz", index_col="timestamp",
                      parse_dates=True)
    day = pd.Timestamp("2021-01-01", tz="UTC")
    assert float(closes["BTC"].loc[day]) == float(raw["close"].loc[day])
    assert (closes.to_numpy() > 0).all()


@pytest.mark.shared_data
def test_spot_4h_span_filter(data_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one symbol, nothing dropped: no warning
        closes = load_spot_closes(data_dir, ["ETH"], interval="4h", start="2024-01-01",
                                  end="2024-01-02")
    assert len(closes) == 7  # 00:00 .. 20:00 on Jan 1, then 00:00 on Jan 2 (end inclusive)
    assert closes.index[0] == pd.Timestamp("2024-01-01", tz="UTC")


@pytest.mark.shared_data
def test_mark_closes_real(data_dir: Path) -> None:
    mark = load_mark_closes(data_dir, ["BTC", "ETH"], start="2024-01-01", end="2024-01-31")
    spot = load_spot_closes(data_dir, ["BTC"], interval="4h", start="2024-01-01",
                            end="2024-01-31")
    common = mark.index.intersection(spot.index)
    basis = mark.loc[common, "BTC"] / spot.loc[common, "BTC"] - 1
    assert len(common) > 150
    assert basis.abs().max() < 0.01  # perp mark tracks spot


@pytest.mark.shared_data
def test_funding_real_sol_november_2022(data_dir: Path) -> None:
    f = load_funding(data_dir, ["BTC", "SOL"], start="2022-11-01", end="2022-11-30 23:59")
    sol = f["SOL"].dropna()
    per_day = sol.groupby(pd.DatetimeIndex(sol.index).floor("D")).size()
    assert per_day.max() > 3  # SOL settled every 2-4 h then
    assert sol.min() < -0.005  # with deeply negative rates
    # rows are the union: BTC has no value at SOL's extra settlement times
    assert f["BTC"].isna().any() and len(f) == len(f.index.unique())
    assert f.index.is_monotonic_increasing


@pytest.mark.shared_data
def test_btc_tiers_match_file_bracket_lookup(data_dir: Path) -> None:
    path = data_dir / TIERS_FILE
    tiers = load_leverage_tiers(path, "BTC/USDT:USDT")
    assert isinstance(tiers, MarginTiers) and len(tiers.brackets) > 5
    raw = pd.read_csv(path)
    raw = raw.loc[raw["symbol"] == "BTC/USDT:USDT"].sort_values("min_notional")
    assert tiers.brackets[0].mmr == raw["maintenance_margin_rate"].iloc[0]
    for n in [1e3, 2.9e5, 3e5, 5e5, 2e6, 5e7, 1.5e8, 5e8, 1.5e9]:
        row = raw.loc[(raw["min_notional"] <= n) & (raw["max_notional"] > n)].iloc[0]
        expected = row["maintenance_margin_rate"] * n - row["maint_amount_cum"]
        assert float(tiers.maintenance(n)) == pytest.approx(expected, rel=1e-12, abs=1e-9)
        assert tiers.bracket_lookup(n) == pytest.approx(expected, rel=1e-12, abs=1e-9)


@pytest.mark.shared_data
def test_tier_history_picks_snapshot(data_dir: Path) -> None:
    path = data_dir / HISTORY_FILE
    latest = load_leverage_tiers(path, "BTC/USDT:USDT")
    older = load_leverage_tiers(path, "BTC/USDT:USDT", as_of="2024-01-01")
    raw = pd.read_csv(path)
    raw = raw.loc[raw["symbol"] == "BTC/USDT:USDT"]
    dates = pd.to_datetime(raw["snapshot_commit_date"], utc=True)
    chosen = dates[dates <= pd.Timestamp("2024-01-01", tz="UTC")].max()
    assert len(older.brackets) == int((dates == chosen).sum())
    assert len(latest.brackets) == int((dates == dates.max()).sum())
    with pytest.raises(ValidationError, match="before the first snapshot"):
        load_leverage_tiers(path, "BTC/USDT:USDT", as_of="2010-01-01")


@pytest.mark.shared_data
def test_contract_spec_real(data_dir: Path) -> None:
    spec = load_contract_spec(data_dir / SPECS_FILE, "BTC/USDT:USDT")
    assert spec["lot_step"] == 0.001 and spec["min_qty"] == 0.001
    assert spec["tick"] == 0.1 and spec["min_notional"] == 100.0
    assert spec["contract_size"] == 1.0 and spec["max_qty"] > 0
    assert "delivery_epoch_s" not in spec
    dated = load_contract_spec(data_dir / SPECS_FILE, "BTC/USDT:USDT-260327")
    assert pd.Timestamp(dated["delivery_epoch_s"], unit="s", tz="UTC").date().isoformat() \
        == "2026-03-27"


@pytest.mark.shared_data
def test_unknown_ccxt_symbol_real(data_dir: Path) -> None:
    with pytest.raises(ValidationError) as err:
        load_leverage_tiers(data_dir / TIERS_FILE, "BTC/USD:USDT")
    assert TIERS_FILE.split("/")[1] in err.value.problem
    assert "BTC/USDT:USDT" in err.value.fix
    with pytest.raises(ValidationError, match="BTC/USDT:USDT-260626"):
        load_contract_spec(data_dir / SPECS_FILE, "BTC/USDT:USDT-261231")


# -- user files in the layout (tmp_path) -----------------------------------------------------------


def test_csv_and_plain_csv_are_read(tmp_path: Path) -> None:
    _spot_file(tmp_path, "AAA", "2024-01-01", 5)
    _spot_file(tmp_path, "BBB", "2024-01-01", 5, suffix=".csv")
    closes = load_spot_closes(tmp_path, ["AAA", "BBB"])
    assert closes.shape == (5, 2)
    assert closes.index.name == "timestamp"
    assert str(pd.DatetimeIndex(closes.index).tz) == "UTC"


def test_alignment_warns_naming_the_limiting_symbol(tmp_path: Path) -> None:
    _spot_file(tmp_path, "OLD", "2024-01-01", 10)
    _spot_file(tmp_path, "NEW", "2024-01-05", 3)
    with pytest.warns(UserWarning) as rec:
        closes = load_spot_closes(tmp_path, ["OLD", "NEW"])
    message = str(rec[0].message)
    assert "start is set by ['NEW']" in message and "end is set by ['NEW']" in message
    assert list(closes.index) == list(pd.date_range("2024-01-05", periods=3, tz="UTC"))


def test_parquet_is_read(tmp_path: Path) -> None:
    """pyarrow is a declared dependency: Parquet files are always readable."""
    frame = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=3, tz="UTC"),
                          "close": [1.0, 2.0, 3.0]})
    (tmp_path / "spot_1d").mkdir()
    frame.to_parquet(tmp_path / "spot_1d" / "PQ.parquet")
    assert load_spot_closes(tmp_path, ["PQ"])["PQ"].tolist() == [1.0, 2.0, 3.0]


def test_missing_file_names_path_and_layout(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        load_spot_closes(tmp_path, ["NOPE"])
    assert str(tmp_path / "spot_1d" / "NOPE.csv.gz") in err.value.problem
    assert "timestamp" in err.value.fix and "FBR_DATA_DIR" in err.value.fix
    with pytest.raises(ValidationError, match="perp_mark_4h"):
        load_mark_closes(tmp_path, ["NOPE"])
    with pytest.raises(ValidationError, match="funding"):
        load_funding(tmp_path, ["NOPE"])


@pytest.mark.parametrize("bad", [float("nan"), 0.0, -1.0])
def test_bad_price_names_symbol_and_time(tmp_path: Path, bad: float) -> None:
    _spot_file(tmp_path, "BAD", "2024-01-01", 4, close=[1.0, 2.0, bad, 4.0])
    with pytest.raises(ValidationError) as err:
        load_spot_closes(tmp_path, ["BAD"])
    assert err.value.field == "data.BAD"
    assert "2024-01-03" in err.value.problem


def test_bad_funding_rate(tmp_path: Path) -> None:
    _write_csv(tmp_path / "funding" / "F.csv.gz",
               {"timestamp": ["2024-01-01T00:00:00Z", "2024-01-01T08:00:00Z"],
                "funding_rate": [1e-4, 5.0]})
    with pytest.raises(ValidationError, match="2024-01-01 08:00"):
        load_funding(tmp_path, ["F"])


def test_funding_union_of_irregular_settlements(tmp_path: Path) -> None:
    _write_csv(tmp_path / "funding" / "A.csv.gz",
               {"timestamp": ["2024-01-01T00:00:00Z", "2024-01-01T08:00:00Z"],
                "funding_rate": [1e-4, 2e-4]})
    _write_csv(tmp_path / "funding" / "B.csv.gz",
               {"timestamp": ["2024-01-01T00:00:00Z", "2024-01-01T04:00:00Z",
                              "2024-01-01T08:00:00Z"], "funding_rate": [1e-4, -3e-4, 1e-4]})
    f = load_funding(tmp_path, ["A", "B"])
    assert len(f) == 3
    assert np.isnan(float(f["A"].loc[pd.Timestamp("2024-01-01 04:00", tz="UTC")]))
    assert f["B"].sum() == pytest.approx(-1e-4)


def test_file_without_timestamp_or_close(tmp_path: Path) -> None:
    _write_csv(tmp_path / "spot_1d" / "X.csv.gz", {"time": ["2024-01-01"], "close": [1.0]})
    with pytest.raises(ValidationError, match="timestamp"):
        load_spot_closes(tmp_path, ["X"])
    _write_csv(tmp_path / "spot_1d" / "Y.csv.gz", {"timestamp": ["2024-01-01"], "price": [1.0]})
    with pytest.raises(ValidationError, match="'close'"):
        load_spot_closes(tmp_path, ["Y"])


def test_duplicate_timestamps_and_no_overlap(tmp_path: Path) -> None:
    _write_csv(tmp_path / "spot_1d" / "D.csv.gz",
               {"timestamp": ["2024-01-01", "2024-01-01"], "close": [1.0, 2.0]})
    with pytest.raises(ValidationError, match="repeats"):
        load_spot_closes(tmp_path, ["D"])
    _spot_file(tmp_path, "P", "2024-01-01", 3)
    _spot_file(tmp_path, "Q", "2024-02-01", 3)
    with pytest.raises(ValidationError, match="no timestamp common"):
        load_spot_closes(tmp_path, ["P", "Q"])


def test_bad_arguments(tmp_path: Path) -> None:
    _spot_file(tmp_path, "A", "2024-01-01", 3)
    with pytest.raises(ValidationError, match="symbols"):
        load_spot_closes(tmp_path, [])
    with pytest.raises(ValidationError, match="interval"):
        load_spot_closes(tmp_path, ["A"], interval="daily")
    with pytest.raises(ValidationError, match="end"):
        load_spot_closes(tmp_path, ["A"], start="2024-02-01", end="2024-01-01")
    with pytest.raises(ValidationError, match="start"):
        load_spot_closes(tmp_path, ["A"], start="yesterday-ish")
    with pytest.raises(ValidationError, match="no rows"):
        load_spot_closes(tmp_path, ["A"], start="2025-01-01")


def _tiers_file(tmp_path: Path) -> Path:
    return _write_csv(tmp_path / "tiers.csv.gz", {
        "symbol": ["AAA/USDT:USDT", "AAA/USDT:USDT"], "tier": [1, 2],
        "min_notional": [0.0, 10000.0], "max_notional": [10000.0, 50000.0],
        "maintenance_margin_rate": [0.01, 0.02], "max_leverage": [50.0, 20.0],
        "maint_amount_cum": [0.0, 100.0]})


def test_tiers_from_user_file(tmp_path: Path) -> None:
    tiers = load_leverage_tiers(_tiers_file(tmp_path), "AAA/USDT:USDT")
    assert [b.max_leverage for b in tiers.brackets] == [50.0, 20.0]
    assert float(tiers.maintenance(20000.0)) == pytest.approx(0.02 * 20000 - 100)


def test_tier_and_spec_errors(tmp_path: Path) -> None:
    path = _tiers_file(tmp_path)
    with pytest.raises(ValidationError) as err:
        load_leverage_tiers(path, "AAA/USDC:USDC")
    assert str(path) in err.value.problem and "BASE/QUOTE:SETTLE" in err.value.fix
    with pytest.raises(ValidationError, match="BASE/QUOTE:SETTLE"):
        load_leverage_tiers(path, "AAAUSDT")
    with pytest.raises(ValidationError, match="no file"):
        load_leverage_tiers(tmp_path / "missing.csv.gz", "AAA/USDT:USDT")
    with pytest.raises(ValidationError, match="lacks the columns"):
        load_leverage_tiers(_write_csv(tmp_path / "x.csv", {"symbol": ["A"]}, gz=False),
                            "AAA/USDT:USDT")
    specs = _write_csv(tmp_path / "specs.csv.gz", {
        "symbol": ["AAAUSDT"], "baseAsset": ["AAA"], "quoteAsset": ["USDT"],
        "marginAsset": ["USDT"], "lot_stepSize": [0.1], "tickSize": [0.01],
        "minNotional": [5.0]})
    spec = load_contract_spec(specs, "AAA/USDT:USDT")
    assert spec == {"lot_step": 0.1, "tick": 0.01, "min_notional": 5.0, "contract_size": 1.0}
    with pytest.raises(ValidationError, match="AAA/USDT:USDT"):
        load_contract_spec(specs, "AAB/USDT:USDT")


# -- funding files that would give a silently wrong carry ------------------------------------------

def _funding_file(root: Path, sym: str, times: pd.DatetimeIndex, rate: float) -> Path:
    return _write_csv(root / "funding" / f"{sym}.csv.gz",
                      {"timestamp": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in times],
                       "funding_rate": [rate] * len(times)})


def test_funding_in_percent_is_refused(tmp_path: Path) -> None:
    """0.01 per settlement (0.01%, written in percent) is 1% a settlement, 1,095%/yr: the median
    check names the file and the fix; the same rates as fractions are read."""
    times = pd.date_range("2024-01-01", periods=30, freq="8h", tz="UTC")
    _funding_file(tmp_path, "AAA", times, 0.01)
    with pytest.raises(ValidationError, match="that is percent, not a fraction") as info:
        load_funding(tmp_path, ["AAA"])
    assert info.value.field == "data.funding.AAA" and "divide the funding_rate" in str(info.value)
    _funding_file(tmp_path, "AAA", times, 0.0001)
    assert float(load_funding(tmp_path, ["AAA"])["AAA"].sum()) == pytest.approx(0.003)


def test_a_gap_in_a_funding_file_is_named(tmp_path: Path) -> None:
    """Settlements every 8 h with two days missing: read as zero funding before; now refused with
    the first missing span. Four-hourly settlements (a symbol moved to 4 h) are read."""
    times = pd.date_range("2024-01-01", periods=30, freq="8h", tz="UTC")
    _funding_file(tmp_path, "AAA", times.delete(range(10, 16)), 0.0001)
    with pytest.raises(ValidationError,
                       match=r"between 2024-01-04 00:00:00\+00:00 and 2024-01-06 08:00:00"):
        load_funding(tmp_path, ["AAA"])
    _funding_file(tmp_path, "AAA", pd.date_range("2024-01-01", periods=30, freq="4h", tz="UTC"),
                  0.0001)
    assert len(load_funding(tmp_path, ["AAA"])) == 30


def test_two_files_for_one_symbol_are_refused(tmp_path: Path) -> None:
    _spot_file(tmp_path, "AAA", "2024-01-01", 5)
    _spot_file(tmp_path, "AAA", "2024-01-01", 5, suffix=".csv", close=[1.0] * 5)
    with pytest.raises(ValidationError, match="keep one file per symbol") as info:
        load_spot_closes(tmp_path, ["AAA"])
    assert "AAA.csv.gz and" in str(info.value) and info.value.field == "data.spot_1d.AAA"


def test_daily_bars_in_a_4h_folder_are_refused(tmp_path: Path) -> None:
    """Daily bars in spot_4h (a fetch with the wrong interval): each close would be stamped 4 h
    after its bar opened, 20 h before it was known. Refused, naming the spacing; daily bars in
    spot_1d with a missing day are read."""
    _spot_file(tmp_path, "AAA", "2024-01-01", 10, folder="spot_4h")
    with pytest.raises(ValidationError, match=r"has bars 1 days 00:00:00 apart .* holds 4h bars"):
        load_spot_closes(tmp_path, ["AAA"], interval="4h")
    _spot_file(tmp_path, "BBB", "2024-01-01", 10)
    daily = load_spot_closes(tmp_path, ["BBB"])
    assert len(daily) == 10
