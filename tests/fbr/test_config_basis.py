"""The basis risk of a [risk] estimated from a data folder (fbr.config_basis), against a plain
pandas computation on a seeded synthetic folder: daily marks are the 4 h bars that close at
00:00 UTC, daily spot the closes at the same times, the window the risk model's lookback up to
the market time. No network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbr.config import load_book_file

MARKET_TIME = pd.Timestamp("2024-04-01T00:00:00Z")
LOOKBACK = 60


def _write_data(root: Path, eth_mark_from: str = "2024-01-01") -> Path:
    """spot_1d for BTC, ETH and SOL (random walks, 2024-01-01 .. 2024-04-30), 4 h perp marks for
    BTC (the whole span) and ETH (from ``eth_mark_from``), none for SOL; marks are spot's walk
    interpolated times 1 + a noisy basis of a few bp."""
    rng = np.random.default_rng(11)
    days = pd.date_range("2024-01-01", "2024-04-30", freq="1D", tz="UTC")
    bars = pd.date_range("2024-01-01", "2024-04-30", freq="4h", tz="UTC", inclusive="left")
    (root / "spot_1d").mkdir(parents=True)
    (root / "perp_mark_4h").mkdir()
    (root / "funding").mkdir()
    settle = pd.date_range("2024-01-01", "2024-04-30", freq="8h", tz="UTC", inclusive="left")
    for sym, px0 in (("BTC", 60_000.0), ("ETH", 3_000.0), ("SOL", 100.0)):
        close = px0 * np.exp(np.cumsum(rng.normal(0.0, 0.03, len(days))))
        pd.DataFrame({"timestamp": days, "open": close, "high": close, "low": close, "close": close,
                      "volume": 1.0, "quote_volume": close}).to_csv(root / "spot_1d" / f"{sym}.csv.gz",
                                                                   index=False)
        pd.DataFrame({"timestamp": settle, "funding_rate": 1e-4}).to_csv(
            root / "funding" / f"{sym}.csv.gz", index=False)
        if sym == "SOL":
            continue
        # spot's walk at each bar's close time ((i + 1) x 4 h; the day-d close is at d + 1 day)
        level = np.interp((np.arange(len(bars)) + 1) / 6.0, np.arange(len(days)) + 1.0, close)
        basis = 5e-4 + rng.normal(0.0, 4e-4, len(bars))
        keep = bars >= pd.Timestamp(eth_mark_from if sym == "ETH" else "2024-01-01", tz="UTC")
        pd.DataFrame({"timestamp": bars[keep], "close": (level * (1 + basis))[keep]}).to_csv(
            root / "perp_mark_4h" / f"{sym}.csv.gz", index=False)
    return root


def _write_book(path: Path, data: Path, basis_risk: bool = True, contracts: str = "") -> Path:
    path.write_text(f"""[book]
name = "basis"
cash = 5000.0
[targets]
BTC = 0.5
ETH = 0.3
SOL = 0.2
[spot]
BTC = 0.2
ETH = 2.0
SOL = 30.0
[contract_defaults]
lot_step = 1e-6
min_notional = 0.0
{contracts}
[market]
source = "data"
data_dir = "{data.as_posix()}"
time = {MARKET_TIME.strftime("%Y-%m-%dT%H:%M:%SZ")}
[risk]
source = "data"
lookback_days = {LOOKBACK}
basis_risk = {"true" if basis_risk else "false"}
""", encoding="utf-8")
    return path


def _basis_by_hand(data: Path, asset: str, end: pd.Timestamp = MARKET_TIME,
                   lookback: int = LOOKBACK) -> pd.Series:
    """b = mark / spot - 1 at each 00:00 close up to the market time: the mark bar opened at
    20:00 the day before, the spot bar opened the day before (both close at 00:00)."""
    spot = pd.read_csv(data / "spot_1d" / f"{asset}.csv.gz")
    s = pd.Series(spot["close"].to_numpy(), index=pd.to_datetime(spot["timestamp"], utc=True)
                  + pd.Timedelta(days=1))
    mark = pd.read_csv(data / "perp_mark_4h" / f"{asset}.csv.gz")
    m = pd.Series(mark["close"].to_numpy(), index=pd.to_datetime(mark["timestamp"], utc=True)
                  + pd.Timedelta(hours=4))
    m = m[(pd.DatetimeIndex(m.index).hour == 0) & (m.index <= end)]
    return pd.Series((m / s.reindex(m.index) - 1.0).dropna().tail(lookback + 1))


def test_the_basis_covariance_is_the_daily_mark_vs_spot_change_annualised(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "data")
    lb = load_book_file(_write_book(tmp_path / "book.toml", data))
    cov = lb.risk.basis_cov
    assert cov is not None and cov.shape == (3, 3)
    changes = pd.DataFrame({a: _basis_by_hand(data, a) for a in ("BTC", "ETH")}).diff().dropna()
    assert len(changes) == LOOKBACK
    ref = 365.0 * np.cov(changes.to_numpy(), rowvar=False, ddof=1)
    np.testing.assert_allclose(cov[:2, :2], ref, rtol=1e-10, atol=0)
    assert np.all(cov[2] == 0.0) and np.all(cov[:, 2] == 0.0)  # SOL: no mark file
    (label,) = [x for x in lb.labels if x.startswith("basis risk:")]
    assert f"({LOOKBACK} common days)" in label and "SOL-PERP (no mark file)" in label
    assert 0.005 < np.sqrt(cov[0, 0]) < 0.02  # 4 bp of noise: 4e-4 x sqrt(2 x 365), 1.1% a year


def test_an_underlying_with_too_few_marks_gets_none_and_the_others_their_own(tmp_path: Path) -> None:
    """ETH's marks start 10 days before the market time: 9 daily changes, fewer than 30, so ETH-PERP
    gets no basis risk (and the label says why) while BTC's is estimated over the full window."""
    data = _write_data(tmp_path / "data", eth_mark_from="2024-03-22")
    lb = load_book_file(_write_book(tmp_path / "book.toml", data))
    cov = lb.risk.basis_cov
    assert cov is not None
    btc = _basis_by_hand(data, "BTC").diff().dropna()
    assert cov[0, 0] == pytest.approx(365.0 * btc.var(ddof=1), rel=1e-10)
    assert np.all(cov[1] == 0.0) and np.all(cov[:, 1] == 0.0)
    (label,) = [x for x in lb.labels if x.startswith("basis risk:")]
    assert "ETH-PERP (9 daily basis changes in the window)" in label


def test_basis_risk_off_reads_no_marks(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "data")
    lb = load_book_file(_write_book(tmp_path / "book.toml", data, basis_risk=False))
    assert lb.risk.basis_cov is None
    assert not [x for x in lb.labels if x.startswith("basis risk:")]


def test_a_backtest_from_before_the_books_time_re_estimates_the_basis_without_look_ahead(
        tmp_path: Path) -> None:
    """The book's basis is estimated up to its market time (2024-04-01); a backtest from
    2024-03-01 re-estimates it at each refresh t of its trailing risk model from the marks up to t
    only (fbr.backtest_risk.trailing_basis): at t = 2024-03-15 it is the hand estimate up to t."""
    from fbr.backtest_config import build_path, load_backtest_file
    from fbr.backtest_risk import risk_input
    from models.trailing_risk import TrailingRisk

    data = _write_data(tmp_path / "data")
    _write_book(tmp_path / "book.toml", data)
    cfg_file = tmp_path / "bt.toml"
    cfg_file.write_text(f"""book = "book.toml"
[data]
source = "data"
data_dir = "{data.as_posix()}"
start = "2024-03-01"
end = "2024-04-20"
[[policies]]
kind = "optimized"
""", encoding="utf-8")
    cfg = load_backtest_file(cfg_file)
    risk = risk_input({}, cfg, build_path(cfg))
    assert isinstance(risk, TrailingRisk) and risk.basis is not None
    t = pd.Timestamp("2024-03-15T00:00:00Z")
    cov = risk(t).basis_cov
    assert cov is not None and risk(t).basis_method == "estimated"
    changes = pd.DataFrame({a: _basis_by_hand(data, a, end=t, lookback=365)
                            for a in ("BTC", "ETH")}).diff().dropna()
    assert len(changes) == 73  # closes 2024-01-02 .. 2024-03-15: every one up to t, none after
    np.testing.assert_allclose(cov[:2, :2], 365.0 * np.cov(changes.to_numpy(), rowvar=False, ddof=1),
                               rtol=1e-10, atol=0)
    book_cov = cfg.loaded.risk.basis_cov
    assert book_cov is not None and not np.allclose(cov, book_cov)  # the book's reads past t


def test_a_dated_contract_takes_its_underlyings_perpetual_basis(tmp_path: Path) -> None:
    """A dated BTC contract beside the BTC perpetual gets the perpetual's basis variance (not 0:
    it would be priced as basis-free beside the perpetual), and the label says so."""
    data = _write_data(tmp_path / "data")
    contracts = """[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
[[contracts]]
symbol = "BTC-240628"
underlying = "BTC"
kind = "dated"
expiry = 2024-06-28T08:00:00Z
"""
    lb = load_book_file(_write_book(tmp_path / "book.toml", data, contracts=contracts))
    assert [c.symbol for c in lb.book.contracts] == ["BTC-PERP", "BTC-240628"]
    cov = lb.risk.basis_cov
    assert cov is not None
    btc = _basis_by_hand(data, "BTC").diff().dropna()
    np.testing.assert_allclose(cov, np.full((2, 2), 365.0 * btc.var(ddof=1)), rtol=1e-10, atol=0)
    (label,) = [x for x in lb.labels if x.startswith("basis risk:")]
    assert "dated contracts at their underlying's perpetual basis: BTC-240628" in label


def test_a_bad_basis_risk_value_is_one_clear_message(tmp_path: Path) -> None:
    """`fbr solve` on a data book with ``basis_risk = "yes"``: exit 2, one line naming the field
    and the fix, no traceback."""
    from cli_helpers import run_fbr

    data = _write_data(tmp_path / "data")
    book = _write_book(tmp_path / "book.toml", data)
    book.write_text(book.read_text().replace("basis_risk = true", 'basis_risk = "yes"'), encoding="utf-8")
    res = run_fbr("solve", str(book))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: risk.basis_risk: is 'yes' (in {book}). Fix: write true or false (no quotes)"]
