"""Path generators against independent references: the stationary bootstrap copies whole joint rows
of the history in blocks of geometric length; the GARCH-t model has fat tails, volatility
clustering and the fitted correlation; everything is reproducible from the seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fbr.config import load_book_file
from models.errors import ValidationError
from models.synthetic import generate_history
from scenarios.market_path import MarketPath
from scenarios.path_bootstrap import BlockBootstrap, stationary_indices
from scenarios.path_garch import GarchParams, GarchT
from scenarios.path_history import JointHistory, PathFrame

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "examples" / "backtest_book.toml"


@pytest.fixture(scope="module")
def setup() -> tuple[JointHistory, PathFrame, MarketPath]:
    loaded = load_book_file(BOOK)
    book = loaded.book
    hist = generate_history(tuple(book.asset_symbols), days=400, start="2022-01-01", seed=5)
    src = MarketPath.from_synthetic(hist, book.contracts)
    history = JointHistory.from_market_path(src, book.contracts, book.asset_symbols)
    frame = PathFrame(start=pd.Timestamp("2024-01-01", tz="UTC"),
                      start_prices={a: loaded.market.spot_price(a) for a in book.asset_symbols},
                      contracts=tuple(book.contracts))
    return history, frame, src


def test_history_rows_match_the_source(setup: tuple[JointHistory, PathFrame, MarketPath]) -> None:
    history, _frame, src = setup
    spot = src.spot[list(history.assets)].to_numpy()
    assert history.rows == len(spot) - 1
    np.testing.assert_allclose(history.returns[10], spot[11] / spot[10] - 1.0)
    # a daily step holds the three 8 h settlements at t, t - 8 h, t - 16 h
    assert history.settle_offsets == (pd.Timedelta(0), pd.Timedelta(hours=8), pd.Timedelta(hours=16))
    t = src.spot.index[11]
    assert src.funding is not None
    for s, hours in enumerate((0, 8, 16)):
        np.testing.assert_allclose(history.funding[10, s, 0],
                                   src.funding.loc[t - pd.Timedelta(hours=hours), "BTC-PERP"])
    assert src.mark is not None
    np.testing.assert_allclose(history.basis[10, 0], src.mark["BTC-PERP"].iloc[11] / spot[11, 0] - 1)


def test_bootstrap_emits_only_joint_rows_of_the_history(
        setup: tuple[JointHistory, PathFrame, MarketPath]) -> None:
    history, frame, _src = setup
    gen = BlockBootstrap(history, frame, mean_block=5.0)
    path = gen.generate(11, 150)
    assets = list(history.assets)
    spot = path.spot[assets].to_numpy()
    np.testing.assert_allclose(spot[0], [frame.start_prices[a] for a in assets])
    ret = spot[1:] / spot[:-1] - 1.0
    assert path.funding is not None and path.mark is not None
    perps = [f"{a}-PERP" for a in assets]
    prev = None
    restarts = 0
    for k in range(1, len(spot)):
        # the source row with these returns (independent search, not the generator's indices)
        dist = np.abs(history.returns - ret[k - 1]).max(axis=1)
        j = int(np.argmin(dist))
        assert dist[j] < 1e-9, f"step {k}: returns not a row of the history"
        t = path.spot.index[k]
        for s, off in enumerate(history.settle_offsets):
            np.testing.assert_allclose(path.funding.loc[t - off, perps].to_numpy(dtype=float),
                                       history.funding[j, s], rtol=0, atol=1e-15)
        np.testing.assert_allclose(path.mark[perps].iloc[k].to_numpy() / spot[k] - 1.0,
                                   history.basis[j], atol=1e-12)
        if prev is not None and j != (prev + 1) % history.rows:
            restarts += 1
        prev = j
    # blocks: about 150 / 5 restarts, far fewer than an iid draw (~150)
    assert 10 <= restarts <= 60


def test_block_lengths_are_geometric_with_the_mean() -> None:
    rows, n, mean_block = 10_000, 200_000, 8.0
    idx = stationary_indices(np.random.default_rng(3), rows, n, mean_block)
    starts = np.flatnonzero(np.r_[True, idx[1:] != (idx[:-1] + 1) % rows])
    lengths = np.diff(np.r_[starts, n])[:-1]
    p = 1.0 / mean_block
    assert abs(lengths.mean() - mean_block) < 0.03 * mean_block
    # geometric on {1, 2, ...}: P(L = 1) = p and Var(L) = (1 - p) / p^2
    assert abs((lengths == 1).mean() - p) < 0.01
    assert abs(lengths.var() - (1 - p) / p**2) < 0.08 * (1 - p) / p**2
    assert idx.min() >= 0 and idx.max() < rows


def test_bootstrap_reproducible_from_the_seed(setup: tuple[JointHistory, PathFrame, MarketPath]) -> None:
    history, frame, _src = setup
    gen = BlockBootstrap(history, frame, mean_block=10.0)
    a, b, c = gen.generate(7, 60), gen.generate(7, 60), gen.generate(8, 60)
    pd.testing.assert_frame_equal(a.spot, b.spot)
    assert a.funding is not None and b.funding is not None
    pd.testing.assert_frame_equal(a.funding, b.funding)
    assert not np.allclose(a.spot.to_numpy(), c.spot.to_numpy())
    ss = np.random.SeedSequence([1, 2])
    pd.testing.assert_frame_equal(gen.generate(ss, 20).spot,
                                  gen.generate(np.random.SeedSequence([1, 2]), 20).spot)
    assert len(a.spot.index) == 61 and a.synthetic


def _acf(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float((x[lag:] * x[:-lag]).sum() / (x * x).sum())


def test_garch_t_known_parameters_fat_tails_clustering_correlation(
        setup: tuple[JointHistory, PathFrame, MarketPath]) -> None:
    history, frame, _src = setup
    n = len(history.assets)
    rho = 0.6
    corr = np.full((n, n), rho) + (1 - rho) * np.eye(n)
    params = GarchParams(mu=np.zeros(n), omega=np.full(n, 0.1), alpha=np.full(n, 0.1),
                         beta=np.full(n, 0.85), nu=np.full(n, 5.0))
    gen = GarchT(history, frame, params, corr)
    steps = 40_000
    lr = gen.log_returns(np.random.default_rng(1), steps)
    se = 1.0 / np.sqrt(steps)
    for i in range(n):
        assert stats.kurtosis(lr[:, i], fisher=False) > 3.5
        assert _acf(lr[:, i] ** 2, 1) > 5 * se  # volatility clustering
        assert abs(_acf(lr[:, i], 1)) < 4 * se  # but no linear predictability
    # long-run variance omega / (1 - alpha - beta) = 2 (percent^2 per step)
    np.testing.assert_allclose((100 * lr).var(axis=0), 2.0, rtol=0.15)
    sample = np.corrcoef(lr, rowvar=False)
    off = ~np.eye(n, dtype=bool)
    assert np.abs(sample[off] - rho).max() < 0.06


def test_garch_t_fitted_to_a_long_history(setup: tuple[JointHistory, PathFrame, MarketPath]) -> None:
    _history, frame, _src = setup
    loaded = load_book_file(BOOK)
    book = loaded.book
    hist = generate_history(tuple(book.asset_symbols)[:3], days=1500, start="2019-01-01", seed=9)
    src = MarketPath.from_synthetic(hist, book.contracts[:3])
    history = JointHistory.from_market_path(src, book.contracts[:3], book.asset_symbols[:3])
    sub = PathFrame(start=frame.start, start_prices={a: frame.start_prices[a] for a in history.assets},
                    contracts=tuple(book.contracts[:3]))
    gen = GarchT.fit(history, sub, mean_block=10.0)
    assert np.all(gen.params.alpha > 0) and np.all(gen.params.nu < 30)
    path = gen.generate(4, 20_000)
    lr = np.diff(np.log(path.spot[list(history.assets)].to_numpy()), axis=0)
    se = 1.0 / np.sqrt(len(lr))
    for i in range(lr.shape[1]):
        assert stats.kurtosis(lr[:, i], fisher=False) > 3.0
        assert _acf(lr[:, i] ** 2, 1) > 3 * se
    # the copula's innovations carry the fitted correlation R ...
    fitted = np.corrcoef(np.log1p(history.returns), rowvar=False)  # independent of the fit
    off = ~np.eye(3, dtype=bool)
    assert np.abs(gen.correlation - fitted)[off].max() < 0.05
    z = gen.innovations(np.random.default_rng(2), 20_000)
    assert np.abs(np.corrcoef(z, rowvar=False) - gen.correlation)[off].max() < 0.04
    # ... and the returns keep it approximately (per-asset variances lower it a little)
    gap = (np.corrcoef(lr, rowvar=False) - fitted)[off]
    assert np.abs(gap).max() < 0.12 and np.abs(gap).mean() < 0.08
    assert np.all(gen.params.alpha + gen.params.beta <= 0.98 + 1e-12)
    np.testing.assert_allclose((100 * np.log1p(history.returns)).var(axis=0),
                               gen.params.long_run_variance, rtol=0.35)
    # funding and basis are rows of the history, reproducible from the seed
    pd.testing.assert_frame_equal(gen.generate(4, 50).spot, gen.generate(4, 50).spot)
    assert path.funding is not None
    rates = path.funding.to_numpy()[:, 0]
    assert np.isin(rates, history.funding[:, :, 0].ravel()).all()


def test_bad_inputs_name_the_field(setup: tuple[JointHistory, PathFrame, MarketPath]) -> None:
    history, frame, _src = setup
    with pytest.raises(ValidationError, match="mean_block"):
        BlockBootstrap(history, frame, mean_block=0.5)
    with pytest.raises(ValidationError, match="steps"):
        BlockBootstrap(history, frame).generate(1, 0)
    with pytest.raises(ValidationError, match="alpha"):
        GarchParams(mu=np.zeros(1), omega=np.ones(1), alpha=np.full(1, 0.5), beta=np.full(1, 0.6),
                    nu=np.full(1, 5.0))
    with pytest.raises(ValidationError, match="start_prices"):
        PathFrame(start=frame.start, start_prices={"BTC": -1.0})
