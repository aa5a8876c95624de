"""Risk estimators checked against independent references (numpy, pandas, scikit-learn)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.covariance import LedoitWolf

from models.errors import ValidationError
from models.risk import (
    RiskMethod,
    RiskModel,
    basis_covariance,
    default_pca_factors,
    estimate_risk,
    returns_from_prices,
)

PPY = 365.0


def _returns(n_rows: int = 400, n_assets: int = 5, seed: int = 11) -> pd.DataFrame:
    """Correlated daily returns (one common factor), ~3% daily vol."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal((n_rows, 1))
    x = 0.02 * (0.8 * common + 0.6 * rng.standard_normal((n_rows, n_assets)))
    index = pd.date_range("2024-01-01", periods=n_rows, freq="D", tz="UTC")
    return pd.DataFrame(x, index=index, columns=[f"A{i}" for i in range(n_assets)])


def _ewma_reference(x: np.ndarray, halflife: float) -> np.ndarray:
    """pandas ewm(alpha=1-d, adjust=True).cov() at the last row, written out by hand:
    weights (1-alpha)^age, weighted mean, bias factor (sum w)^2 / ((sum w)^2 - sum w^2)."""
    alpha = 1.0 - 0.5 ** (1.0 / halflife)
    t = x.shape[0]
    w = np.array([(1.0 - alpha) ** (t - 1 - k) for k in range(t)])
    mean = (w[:, None] * x).sum(axis=0) / w.sum()
    dev = x - mean
    cov = np.einsum("t,ti,tj->ij", w, dev, dev) / w.sum()
    return np.asarray(cov * w.sum() ** 2 / (w.sum() ** 2 - (w**2).sum()))


# -- the estimators -------------------------------------------------------------------------------


def test_sample_equals_numpy_cov_annualised() -> None:
    r = _returns()
    model = estimate_risk(r, RiskMethod.SAMPLE)
    expected = np.cov(r.to_numpy(), rowvar=False) * PPY
    np.testing.assert_allclose(model.covariance, expected, rtol=0, atol=1e-10)
    assert model.symbols == tuple(r.columns)
    assert model.method == "sample"


def test_periods_per_year_scales_linearly() -> None:
    r = _returns()
    daily = estimate_risk(r, "sample", periods_per_year=1.0).covariance
    np.testing.assert_allclose(estimate_risk(r, "sample", periods_per_year=52.0).covariance,
                               52.0 * daily, rtol=1e-12)


def test_ewma_matches_hand_written_reference() -> None:
    r = _returns(300, 4)
    model = estimate_risk(r, RiskMethod.EWMA, halflife=20.0)
    expected = _ewma_reference(r.to_numpy(), 20.0) * PPY
    np.testing.assert_allclose(model.covariance, expected, rtol=1e-9, atol=1e-13)


def test_ewma_large_universe_path_matches_reference_and_pandas() -> None:
    """Above 32 assets the EWMA is computed in numpy; it must equal pandas and the reference."""
    r = _returns(120, 40, seed=3)
    model = estimate_risk(r, "ewma", halflife=15.0)
    expected = _ewma_reference(r.to_numpy(), 15.0) * PPY
    np.testing.assert_allclose(model.covariance, expected, rtol=1e-9, atol=1e-13)
    alpha = 1.0 - 0.5 ** (1.0 / 15.0)
    pandas_cov = r.ewm(alpha=alpha).cov().loc[r.index[-1]].to_numpy() * PPY
    np.testing.assert_allclose(model.covariance, pandas_cov, rtol=1e-9, atol=1e-13)


def test_ewma_weights_recent_data_more() -> None:
    r = _returns(400, 3)
    r.iloc[-40:] *= 3.0  # the last 40 days are three times as volatile
    ewma_vol = estimate_risk(r, "ewma", halflife=10.0).vol
    sample_vol = estimate_risk(r, "sample").vol
    assert np.all(ewma_vol > 1.5 * sample_vol)


def test_ledoit_wolf_matches_sklearn() -> None:
    r = _returns(60, 20)  # few rows per asset: shrinkage matters
    model = estimate_risk(r)  # the default method
    expected = LedoitWolf().fit(r.to_numpy()).covariance_ * PPY
    np.testing.assert_allclose(model.covariance, expected, rtol=0, atol=1e-10)
    assert model.method == "ledoit_wolf"


@pytest.mark.parametrize(("method", "riskfolio_method", "n_assets"), [
    (RiskMethod.SAMPLE, "hist", 4), (RiskMethod.LEDOIT_WOLF, "ledoit", 20),
    (RiskMethod.EWMA, "ewma1", 6), (RiskMethod.SAMPLE, "hist", 1), (RiskMethod.LEDOIT_WOLF, "ledoit", 1)])
def test_the_estimators_equal_riskfolios_covar_matrix_bit_for_bit(
        method: RiskMethod, riskfolio_method: str, n_assets: int) -> None:
    """The per-period covariance is riskfolio-lib's ``covar_matrix`` (its reference, imported here
    only: it takes seconds to import), to the last bit, so estimates and replays are unchanged."""
    from riskfolio.src.ParamsEstimation import covar_matrix

    from models.risk import _period_covariance

    r = _returns(90, n_assets, seed=5)
    kwargs = {"d": 0.5 ** (1.0 / 12.0)} if method == RiskMethod.EWMA else {}
    ref = np.asarray(covar_matrix(r, method=riskfolio_method, **kwargs), dtype=float)
    ours = _period_covariance(r, method, 12.0)
    assert ours.shape == ref.shape == (n_assets, n_assets)
    assert np.array_equal(ours, ref)


def test_pca_is_pd_and_matches_numpy_eigh() -> None:
    r = _returns(250, 30, seed=5)
    k = 3
    model = estimate_risk(r, RiskMethod.PCA, n_factors=k)
    lw = LedoitWolf().fit(r.to_numpy()).covariance_ * PPY
    lam, vec = np.linalg.eigh(lw)
    top = vec[:, -k:] @ np.diag(lam[-k:]) @ vec[:, -k:].T
    assert model.loadings.shape == (30, k)
    np.testing.assert_allclose(model.loadings @ model.loadings.T, top, atol=1e-10)
    np.testing.assert_allclose(np.sort(np.sum(model.loadings**2, axis=0)), np.sort(lam[-k:]),
                               rtol=1e-10)
    assert np.linalg.eigvalsh(model.covariance).min() > 0
    assert np.all(model.idio > 0)
    # d = diag(Sigma - F F'), so every asset keeps its variance
    np.testing.assert_allclose(np.diag(model.covariance), np.diag(lw), rtol=1e-9)


def test_pca_default_factor_count_and_full_rank_case() -> None:
    assert default_pca_factors(3) == 1
    assert default_pca_factors(50) == 5
    assert default_pca_factors(1000) == 20
    r = _returns(200, 4)
    assert estimate_risk(r, "pca").loadings.shape == (4, 1)
    full = estimate_risk(r, "pca", n_factors=4)  # all factors: idio only at the floor
    assert np.linalg.eigvalsh(full.covariance).min() > 0
    lw = LedoitWolf().fit(r.to_numpy()).covariance_ * PPY
    np.testing.assert_allclose(full.covariance, lw, rtol=1e-5)


def test_method_accepts_strings_case_insensitively() -> None:
    r = _returns(50, 3)
    a = estimate_risk(r, "SAMPLE").covariance
    b = estimate_risk(r, RiskMethod.SAMPLE).covariance
    np.testing.assert_array_equal(a, b)


def test_returns_a_risk_model_usable_downstream() -> None:
    model = estimate_risk(_returns(100, 3), "ewma")
    assert isinstance(model, RiskModel)
    g = model.sqrt_factor()
    np.testing.assert_allclose(g @ g.T, model.covariance, atol=1e-14)


# -- bad input -------------------------------------------------------------------------------------


def test_too_few_rows() -> None:
    with pytest.raises(ValidationError, match="at least 2"):
        estimate_risk(_returns(1, 3))


def test_nan_names_column_and_suggests_dropna() -> None:
    r = _returns(30, 3)
    r.iloc[7, 2] = np.nan
    with pytest.raises(ValidationError) as err:
        estimate_risk(r)
    assert err.value.field == "returns.A2"
    assert "dropna" in err.value.fix and "align" in err.value.fix


def test_inf_is_rejected() -> None:
    r = _returns(30, 3)
    r.iloc[3, 0] = np.inf
    with pytest.raises(ValidationError, match=r"returns\.A0"):
        estimate_risk(r, "sample")


def test_unknown_method_lists_valid_ones() -> None:
    with pytest.raises(ValidationError) as err:
        estimate_risk(_returns(30, 3), "garch")
    for m in ("sample", "ewma", "ledoit_wolf", "pca"):
        assert m in err.value.fix


@pytest.mark.parametrize("kwargs", [{"halflife": 0.0}, {"periods_per_year": -1.0},
                                    {"halflife": float("nan")}])
def test_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        estimate_risk(_returns(30, 3), "ewma", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [0, 4])
def test_pca_factor_count_out_of_range(k: int) -> None:
    with pytest.raises(ValidationError, match="n_factors"):
        estimate_risk(_returns(30, 3), "pca", n_factors=k)


def test_not_a_dataframe_and_no_columns() -> None:
    with pytest.raises(ValidationError):
        estimate_risk(np.zeros((5, 2)))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="no columns"):
        estimate_risk(pd.DataFrame(index=range(5)))


# -- returns_from_prices ---------------------------------------------------------------------------


def test_returns_from_prices_values() -> None:
    idx = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    prices = pd.DataFrame({"BTC": [100.0, 110.0, 99.0], "ETH": [10.0, 10.0, 12.5]}, index=idx)
    r = returns_from_prices(prices)
    assert list(r.index) == list(idx[1:])
    np.testing.assert_allclose(r["BTC"], [0.1, -0.1])
    np.testing.assert_allclose(r["ETH"], [0.0, 0.25])


@pytest.mark.parametrize("bad", [0.0, -5.0, np.nan])
def test_returns_from_prices_rejects_bad_prices(bad: float) -> None:
    idx = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")
    prices = pd.DataFrame({"BTC": [1.0, 2.0, 3.0, 4.0], "SOL": [1.0, 1.0, bad, 1.0]}, index=idx)
    with pytest.raises(ValidationError) as err:
        returns_from_prices(prices)
    assert err.value.field == "prices.SOL"
    assert "2024-01-03" in err.value.problem


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=-0.5, max_value=0.5), min_size=2, max_size=40))
def test_returns_from_prices_inverts_compounding(rets: list[float]) -> None:
    r = np.array(rets)
    prices = pd.DataFrame({"X": 100.0 * np.concatenate([[1.0], np.cumprod(1.0 + r)])})
    np.testing.assert_allclose(returns_from_prices(prices)["X"].to_numpy(), r, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=2, max_value=8),
       st.sampled_from(list(RiskMethod)))
def test_every_method_gives_symmetric_psd_model(seed: int, n: int, method: RiskMethod) -> None:
    r = _returns(40, n, seed=seed)
    cov = estimate_risk(r, method).covariance
    np.testing.assert_allclose(cov, cov.T, atol=1e-15)
    assert np.linalg.eigvalsh(cov).min() > -1e-12


# -- basis_covariance ------------------------------------------------------------------------------


def test_basis_covariance_matches_manual_and_aligns() -> None:
    rng = np.random.default_rng(2)
    idx = pd.date_range("2024-01-01", periods=100, freq="D", tz="UTC")
    spot = pd.DataFrame({"BTC": 60000 * np.exp(np.cumsum(rng.normal(0, 0.03, 100))),
                         "ETH": 3000 * np.exp(np.cumsum(rng.normal(0, 0.04, 100))),
                         "SOL": 150.0}, index=idx)
    basis = pd.DataFrame(rng.normal(0, 5e-4, (100, 2)), index=idx, columns=["ETH", "BTC"])
    mark = spot[["ETH", "BTC"]] * (1 + basis)
    expected = np.cov(np.diff(basis.to_numpy(), axis=0), rowvar=False) * PPY
    np.testing.assert_allclose(basis_covariance(mark, spot), expected, rtol=1e-8, atol=1e-16)
    # only the common index counts: drop rows from one side and extend the other
    got = basis_covariance(mark.iloc[10:], spot.iloc[:90])
    expected_common = np.cov(np.diff(basis.to_numpy()[10:90], axis=0), rowvar=False) * PPY
    np.testing.assert_allclose(got, expected_common, rtol=1e-8, atol=1e-16)


def test_basis_covariance_single_column_is_2d() -> None:
    idx = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    spot = pd.DataFrame({"BTC": [100.0, 101, 102, 103, 104]}, index=idx)
    mark = spot * np.array([1.0, 1.001, 0.999, 1.002, 1.0])[:, None]
    assert basis_covariance(mark, spot, periods_per_year=1.0).shape == (1, 1)


def test_basis_covariance_errors() -> None:
    idx = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    spot = pd.DataFrame({"BTC": np.arange(1.0, 6.0)}, index=idx)
    with pytest.raises(ValidationError, match="ETH"):
        basis_covariance(pd.DataFrame({"ETH": np.ones(5)}, index=idx), spot)
    with pytest.raises(ValidationError, match="common"):
        basis_covariance(spot.shift(10, freq="D"), spot)


def test_tracking_error_by_hand() -> None:
    """d = (0.1, -0.05), Sigma = [[0.04, 0.01], [0.01, 0.09]]: d' Sigma d = 0.0004 - 0.0001 +
    0.000225 = 0.000525; one contract z = 0.2 with basis variance 0.0025 adds 0.0001."""
    from models.risk import tracking_error

    d = np.array([0.1, -0.05])
    cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    assert tracking_error(d, cov) == pytest.approx(math.sqrt(0.000525), rel=1e-12)
    assert tracking_error(d, cov, np.array([0.2]), np.array([[0.0025]])) == pytest.approx(
        math.sqrt(0.000625), rel=1e-12)
    # a covariance that is only numerically PSD never gives a NaN
    assert tracking_error(np.array([1.0]), np.array([[-1e-18]])) == 0.0
