"""The backtest's trailing re-estimate of the risk model uses the book's [risk] estimator.

fbr.backtest_risk.risk_input re-estimates the book's model without look-ahead
(models.trailing_risk.TrailingRisk): with the book's method, its EWMA ``halflife`` (days, converted
to the path's bars), ``n_factors`` and, unless the entry gives ``risk_lookback_days``, its
``lookback_days`` as the window. So at t = the book's market time, on the book's own data, the
trailing estimate is the book's model. Expected values are computed here by hand from the CSVs
(numpy; the EWMA with weights (1 - a)^(T-1-t), a = 1 - 0.5^(1/hl), bias-corrected), not by
models.risk. Before the fix the estimate used a 30-period half-life (30 bars, whatever the step),
the default PCA K, and a 365-day window. A seeded synthetic data folder; no network.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbr.backtest_config import BacktestConfig
from fbr.backtest_policies import PolicyParam
from models.risk import RiskModel
from models.trailing_risk import TrailingRisk

SYMS = ("BTC", "ETH", "SOL")
T_BOOK = pd.Timestamp("2024-06-01T00:00:00Z")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """spot_1d and spot_4h random walks (correlated, different vols) for BTC, ETH and SOL,
    2024-01-01 .. 2024-06-30; files stamp bars by open time."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(7)
    mix = np.array([[0.04, 0.0, 0.0], [0.03, 0.02, 0.0], [0.04, 0.01, 0.05]])
    for folder, freq, scale in (("spot_1d", "1D", 1.0), ("spot_4h", "4h", 6 ** -0.5)):
        (root / folder).mkdir()
        stamps = pd.date_range("2024-01-01", "2024-06-30", freq=freq, tz="UTC", inclusive="left")
        walks = np.exp(np.cumsum(rng.standard_normal((len(stamps), 3)) @ mix.T * scale, axis=0))
        for i, (sym, px0) in enumerate(zip(SYMS, (60_000.0, 3_000.0, 100.0), strict=True)):
            close = px0 * walks[:, i]
            pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), "open": close,
                          "high": close, "low": close, "close": close, "volume": 1.0,
                          "quote_volume": 1e9}).to_csv(root / folder / f"{sym}.csv.gz", index=False)
    return root


def _config(tmp_path: Path, data: Path, risk: str, *, book_time: pd.Timestamp = T_BOOK,
            step: str = "1d", start: str = "2024-03-01", end: str = "2024-06-10") -> BacktestConfig:
    from fbr.backtest_config import load_backtest_file

    book = tmp_path / "book.toml"
    book.write_text(f"""[book]
cash = 3000.0
[targets]
BTC = 0.5
ETH = 0.3
SOL = 0.2
[spot_usd]
BTC = 6000.0
ETH = 2500.0
SOL = 1500.0
[market]
source = "data"
data_dir = "{data.as_posix()}"
time = {book_time:%Y-%m-%dT%H:%M:%SZ}
mark_from_spot = true
[risk]
source = "data"
basis_risk = false
{risk}
""", encoding="utf-8")
    f = tmp_path / "bt.toml"
    f.write_text(f'book = "{book.as_posix()}"\n[data]\nsource = "data"\n'
                 f'data_dir = "{data.as_posix()}"\nstart = "{start}"\nend = "{end}"\nstep = "{step}"\n'
                 f'[[policies]]\nkind = "optimized"\n[backtest]\nreport = "{tmp_path.as_posix()}/r.html"\n',
                 encoding="utf-8")
    return load_backtest_file(f)


def _trailing(cfg: BacktestConfig, p: Mapping[str, PolicyParam]) -> TrailingRisk:
    from fbr.backtest_config import build_path
    from fbr.backtest_risk import risk_input

    risk = risk_input(p, cfg, build_path(cfg))
    assert isinstance(risk, TrailingRisk)
    return risk


def _returns(data: Path, folder: str, end: pd.Timestamp, rows: int) -> np.ndarray:
    """The last ``rows`` simple returns of ``folder``'s closes (stamped at bar close) up to ``end``."""
    bar = pd.Timedelta(days=1) if folder == "spot_1d" else pd.Timedelta(hours=4)
    closes = {}
    for sym in SYMS:
        df = pd.read_csv(data / folder / f"{sym}.csv.gz")
        c = pd.Series(df["close"].to_numpy(), index=pd.to_datetime(df["timestamp"], utc=True) + bar)
        closes[sym] = c[c.index <= end]
    frame = pd.concat(closes, axis=1, join="inner").sort_index()
    r = frame.to_numpy()[1:] / frame.to_numpy()[:-1] - 1.0
    assert len(r) >= rows
    return np.asarray(r[-rows:])


def _hand_ewma(X: np.ndarray, hl: float) -> np.ndarray:
    a = 1 - 0.5 ** (1 / hl)
    w = (1 - a) ** np.arange(len(X) - 1, -1, -1)
    Xc = X - w @ X / w.sum()
    c = (Xc * w[:, None]).T @ Xc / w.sum()
    return np.asarray(c * w.sum() ** 2 / (w.sum() ** 2 - (w ** 2).sum()))


def _book_and_trailing(risk: RiskModel, book: RiskModel, expected: np.ndarray) -> None:
    np.testing.assert_allclose(book.covariance, expected, rtol=1e-9)  # the book's own estimate
    np.testing.assert_allclose(risk.covariance, expected, rtol=1e-9)  # the replay's at T_book


def test_the_trailing_ewma_keeps_the_books_halflife(tmp_path: Path, data: Path) -> None:
    """An ewma book, halflife = 10 days, lookback 90; the entry pins the window to 90: at T_book
    the trailing estimate is the hand EWMA with half-life 10 (was 30), i.e. the book's model."""
    cfg = _config(tmp_path, data, 'method = "ewma"\nlookback_days = 90\nhalflife = 10')
    risk = _trailing(cfg, {"risk_lookback_days": 90})
    expected = _hand_ewma(_returns(data, "spot_1d", T_BOOK, 90), 10.0) * 365
    _book_and_trailing(risk(T_BOOK), cfg.loaded.risk, expected)


def test_the_trailing_window_is_the_books_lookback(tmp_path: Path, data: Path) -> None:
    """No risk_lookback_days: the window is the book's lookback_days (90, was 365)."""
    cfg = _config(tmp_path, data, 'method = "sample"\nlookback_days = 90')
    risk = _trailing(cfg, {})
    assert risk.rows == 90
    expected = np.cov(_returns(data, "spot_1d", T_BOOK, 90), rowvar=False) * 365
    _book_and_trailing(risk(T_BOOK), cfg.loaded.risk, expected)


def test_the_trailing_pca_keeps_the_books_n_factors(tmp_path: Path, data: Path) -> None:
    """A pca book with n_factors = 2 of 3 assets (the default K is 1): the trailing estimate has
    the book's 2 factors, the top two eigen-factors of the Ledoit-Wolf covariance, computed here
    with sklearn and numpy."""
    from sklearn.covariance import LedoitWolf

    cfg = _config(tmp_path, data, 'method = "pca"\nlookback_days = 90\nn_factors = 2')
    model = _trailing(cfg, {})(T_BOOK)
    cov = LedoitWolf().fit(_returns(data, "spot_1d", T_BOOK, 90)).covariance_ * 365
    lam, vec = np.linalg.eigh(cov)
    f = vec[:, -2:] * np.sqrt(lam[-2:])
    expected = f @ f.T + np.diag(np.maximum(np.diag(cov) - (f * f).sum(axis=1),
                                            1e-6 * np.mean(np.diag(cov))))
    assert model.loadings.shape == (3, 2) and cfg.loaded.risk.loadings.shape == (3, 2)
    _book_and_trailing(model, cfg.loaded.risk, expected)


@pytest.mark.parametrize("entry", [{}, {"risk_method": "ewma"}])
def test_the_halflife_is_in_days_on_a_4h_path(tmp_path: Path, data: Path,
                                               entry: dict[str, PolicyParam]) -> None:
    """A 4 h path and risk_lookback_days = 10 (the book's model does not look ahead: its time is
    the path's start): the estimate on the path's returns is the book's ewma with its halflife,
    2 days = 12 bars (was 30 bars, and ledoit_wolf without risk_method), over 60 bars,
    annualised at 6 x 365 bars a year."""
    cfg = _config(tmp_path, data, 'method = "ewma"\nlookback_days = 30\nhalflife = 2',
                  book_time=pd.Timestamp("2024-03-01T00:00:00Z"), step="4h", end="2024-04-01")
    risk = _trailing(cfg, {"risk_lookback_days": 10, **entry})
    t = pd.Timestamp("2024-03-20T00:00:00Z")
    expected = _hand_ewma(_returns(data, "spot_4h", t, 60), 12.0) * 365 * 6
    np.testing.assert_allclose(risk(t).covariance, expected, rtol=1e-9)
    assert risk.method == "ewma" and risk.halflife == pytest.approx(12.0)


def test_the_entrys_risk_method_overrides_the_books(tmp_path: Path, data: Path) -> None:
    """risk_method = "sample" on an ewma book: the sample covariance over the book's window."""
    cfg = _config(tmp_path, data, 'method = "ewma"\nlookback_days = 60\nhalflife = 10')
    risk = _trailing(cfg, {"risk_method": "sample"})
    expected = np.cov(_returns(data, "spot_1d", T_BOOK, 60), rowvar=False) * 365
    np.testing.assert_allclose(risk(T_BOOK).covariance, expected, rtol=1e-9)
