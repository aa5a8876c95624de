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
    only (fbr.backtest_risk.trailing_basis), over the book's lookback_days (60, as the book's own
    basis): at t = 2024-03-15 it is the hand estimate of the 60 daily changes up to t."""
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
    changes = pd.DataFrame({a: _basis_by_hand(data, a, end=t)  # the book's lookback_days
                            for a in ("BTC", "ETH")}).diff().dropna()
    assert len(changes) == LOOKBACK and changes.index[-1] == t  # the last 60 up to t, none after
    np.testing.assert_allclose(cov[:2, :2], 365.0 * np.cov(changes.to_numpy(), rowvar=False, ddof=1),
                               rtol=1e-10, atol=0)
    book_cov = cfg.loaded.risk.basis_cov
    assert book_cov is not None and not np.allclose(cov, book_cov)  # the book's reads past t


def test_a_dated_contract_takes_its_underlyings_perpetual_basis(tmp_path: Path) -> None:
    """A dated BTC contract beside the BTC perpetual gets the perpetual's basis variance (not 0:
    it would be priced as basis-free beside the perpetual), and the label says so."""
    data = _write_data(tmp_path / "data")
    lb = load_book_file(_write_book(tmp_path / "book.toml", data, contracts=DATED_BOOK))
    assert [c.symbol for c in lb.book.contracts] == ["BTC-PERP", "BTC-240628"]
    cov = lb.risk.basis_cov
    assert cov is not None
    btc = _basis_by_hand(data, "BTC").diff().dropna()
    np.testing.assert_allclose(cov, np.full((2, 2), 365.0 * btc.var(ddof=1)), rtol=1e-10, atol=0)
    (label,) = [x for x in lb.labels if x.startswith("basis risk:")]
    assert "dated contracts at their underlying's perpetual basis: BTC-240628 (no quarterly file)" in label


DATED_BOOK = """[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
[[contracts]]
symbol = "BTC-240628"
underlying = "BTC"
kind = "dated"
expiry = 2024-06-28T08:00:00Z
"""


def _write_quarterlies(data: Path) -> dict[pd.Timestamp, pd.Series]:
    """BTC quarterlies delivering 2024-03-29 and 2024-06-28 08:00 UTC, daily bars from 2024-01-01
    (the March one up to its delivery-day bar), each close spot's close x (1 + b) with
    b = 10% x tau / 365 + a noise of 0.3% (tau days to delivery at the close); returns b by
    delivery at the 00:00 closes, as the test computes it."""
    rng = np.random.default_rng(5)
    spot = pd.read_csv(data / "spot_1d" / "BTC.csv.gz")
    close = pd.Series(spot["close"].to_numpy(), index=pd.to_datetime(spot["timestamp"], utc=True))
    (data / "quarterly_1d").mkdir()
    out: dict[pd.Timestamp, pd.Series] = {}
    for code, delivery in (("240329", "2024-03-29T08:00Z"), ("240628", "2024-06-28T08:00Z")):
        when = pd.Timestamp(delivery)
        opens = pd.DatetimeIndex(close.index[close.index < when])
        stamps = opens + pd.Timedelta(days=1)
        tau = (when - stamps) / pd.Timedelta(days=1)
        b = 0.10 * tau / 365.0 + rng.normal(0.0, 3e-3, len(opens))
        px = close.reindex(opens).to_numpy() * (1.0 + b)
        pd.DataFrame({"timestamp": opens, "open": px, "high": px, "low": px, "close": px}).to_csv(
            data / "quarterly_1d" / f"BTCUSDT_{code}.csv.gz", index=False)
        out[when] = pd.Series(b, index=stamps)[stamps < when]  # the delivery-day close is at 08:00
    return out


def _chain_by_hand(bases: dict[pd.Timestamp, pd.Series], tau0: float, end: pd.Timestamp,
                   lookback: int) -> pd.Series:
    """Day by day up to ``end``: among the quarterlies with a close that day and the day before,
    the change of the one whose days to expiry are nearest ``tau0``; the last ``lookback``."""
    days = sorted({t for b in bases.values() for t in b.index if t <= end})
    out = {}
    for t in days:
        prev = t - pd.Timedelta(days=1)
        live = [(abs((d - t) / pd.Timedelta(days=1) - tau0), d) for d, b in sorted(bases.items())
                if t in b.index and prev in b.index]
        if live:
            _, d = min(live, key=lambda x: x[0])
            out[t] = bases[d][t] - bases[d][prev]
    return pd.Series(out).tail(lookback)


def test_a_dated_contract_is_estimated_on_its_quarterlies_at_constant_maturity(tmp_path: Path) -> None:
    """With quarterly files, BTC-240628 (88.3 days to expiry at the market time) gets the
    covariance of a chain of quarterly basis changes: each day the contract nearest 88.3 days
    out (the March one early in the window, the June one later), with the perpetual's changes on
    the common days; the dated variance is the chain's, far above the perpetual's."""
    data = _write_data(tmp_path / "data")
    bases = _write_quarterlies(data)
    lb = load_book_file(_write_book(tmp_path / "book.toml", data, contracts=DATED_BOOK))
    tau0 = (pd.Timestamp("2024-06-28T08:00Z") - MARKET_TIME) / pd.Timedelta(days=1)
    chain = _chain_by_hand(bases, tau0, MARKET_TIME, LOOKBACK)
    perp = _basis_by_hand(data, "BTC").diff().dropna()
    both = pd.DataFrame({"perp": perp, "dated": chain}).dropna()
    assert len(both) == LOOKBACK
    cov = lb.risk.basis_cov
    assert cov is not None
    np.testing.assert_allclose(cov, 365.0 * np.cov(both.to_numpy(), rowvar=False, ddof=1),
                               rtol=1e-10, atol=0)
    assert cov[1, 1] > 10 * cov[0, 0]
    (label,) = [x for x in lb.labels if x.startswith("basis risk:")]
    assert "dated contracts on their quarterly closes at constant maturity: BTC-240628" in label
    assert "perpetual basis" not in label


def test_the_quarterly_chain_follows_the_contracts_maturity_at_each_end(tmp_path: Path) -> None:
    """The estimate at an earlier end (a trailing risk model's refresh) picks the chain at the
    contract's days to expiry then (117.3 at 2024-03-03: the June contract throughout), and an
    expired contract falls back to the perpetual's basis, saying so."""
    from fbr.config_basis import BasisHistory

    data = _write_data(tmp_path / "data")
    bases = _write_quarterlies(data)
    lb = load_book_file(_write_book(tmp_path / "book.toml", data, contracts=DATED_BOOK))
    history = BasisHistory.load(lb.book, data)
    end = pd.Timestamp("2024-03-03T00:00Z")
    tau0 = (pd.Timestamp("2024-06-28T08:00Z") - end) / pd.Timedelta(days=1)
    est = history.estimate(end, 40)
    chain = _chain_by_hand(bases, tau0, end, 40)
    assert len(chain) == 40 and chain.index.min() >= pd.Timestamp("2024-01-23T00:00Z")
    june = bases[pd.Timestamp("2024-06-28T08:00Z")].diff().reindex(chain.index)
    np.testing.assert_array_equal(chain.to_numpy(), june.to_numpy())  # nearest is June all along
    assert est.cov[1, 1] == pytest.approx(365.0 * chain.var(ddof=1), rel=1e-10)
    late = history.estimate(pd.Timestamp("2024-06-29T00:00Z"), 40)
    assert late.dated_own == () and late.dated_fallback == {"BTC-240628": "expired"}
    assert late.cov[1, 1] == pytest.approx(late.cov[0, 0], rel=1e-12)


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


def test_a_bad_quarterly_file_is_one_clear_message(tmp_path: Path) -> None:
    """A quarterly file with a bar opening after its delivery, under a data book holding a dated
    contract: `fbr solve` exits 2 with one line naming the file and the fix, no traceback."""
    from cli_helpers import run_fbr

    data = _write_data(tmp_path / "data")
    _write_quarterlies(data)
    bad = data / "quarterly_1d" / "BTCUSDT_240329.csv.gz"
    late = pd.DataFrame({"timestamp": ["2024-03-30 00:00:00+00:00"], "open": [1.0], "high": [1.0],
                         "low": [1.0], "close": [1.0]})
    pd.concat([pd.read_csv(bad), late]).to_csv(bad, index=False)
    book = _write_book(tmp_path / "book.toml", data, contracts=DATED_BOOK)
    res = run_fbr("solve", str(book))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "BTCUSDT_240329.csv.gz" in errors[0]
    assert "Fix: drop the post-delivery rows" in errors[0]


def test_a_basis_change_across_a_missing_mark_day_is_left_out(tmp_path: Path) -> None:
    """BTC's marks lack the bars of 2024-03-10 (the 00:00 close of 03-11 among them): the basis
    change from 03-10 to 03-12 spans two days and is left out of the estimate, not counted as one
    day's (fbr.config_basis.daily_changes). Independent: b by hand per asset (its last 61 closes),
    changes b_t - b_{t - 1 day} on consecutive days only, the days both assets have, cov x 365."""
    data = _write_data(tmp_path / "data")
    marks_file = data / "perp_mark_4h" / "BTC.csv.gz"
    marks = pd.read_csv(marks_file)
    ts = pd.to_datetime(marks["timestamp"], utc=True)
    gap = (ts >= pd.Timestamp("2024-03-10T20:00Z")) & (ts < pd.Timestamp("2024-03-11T20:00Z"))
    marks[~gap.to_numpy()].to_csv(marks_file, index=False)
    lb = load_book_file(_write_book(tmp_path / "book.toml", data))
    cov = lb.risk.basis_cov
    assert cov is not None

    def one_day_changes(asset: str) -> pd.Series:
        b = _basis_by_hand(data, asset)
        prev = b.reindex(pd.DatetimeIndex(b.index) - pd.Timedelta(days=1)).to_numpy()
        return pd.Series(b.to_numpy() - prev, index=b.index).dropna()

    btc = one_day_changes("BTC")
    assert pd.Timestamp("2024-03-12T00:00Z") not in btc.index and len(btc) == LOOKBACK - 1
    both = pd.concat({"BTC": btc, "ETH": one_day_changes("ETH")}, axis=1, join="inner")
    np.testing.assert_allclose(cov[:2, :2], 365.0 * np.cov(both.to_numpy(), rowvar=False, ddof=1),
                               rtol=1e-10, atol=0)
