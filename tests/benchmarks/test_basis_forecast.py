"""benchmarks/basis_forecast.py: forecasters, walk-forward causality and error metrics by hand, on
small synthetic series (the script itself reads the real data; these are its pure parts)."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scenarios.quarterly_basis import BasisTermStructure

ROOT = Path(__file__).resolve().parents[2]


BF = importlib.import_module("basis_forecast")
T0 = pd.Timestamp("2024-01-01", tz="UTC")


def _bars(values: list[float] | np.ndarray, hours: int = 4) -> pd.Series:
    idx = pd.DatetimeIndex([T0 + pd.Timedelta(hours=hours * k) for k in range(len(values))])
    return pd.Series(np.asarray(values, dtype=float), index=idx)


# ---------------------------------------------------------------------------------------------
# Error metrics
# ---------------------------------------------------------------------------------------------


def test_error_stats_by_hand() -> None:
    """e = (1, -3, NaN): n = 2, MAE = 2, RMSE = sqrt((1 + 9) / 2) = sqrt 5, bias = -1."""
    e = BF.error_stats(np.array([1.0, -3.0, np.nan]))
    assert e.n == 2
    assert e.mae == pytest.approx(2.0)
    assert e.rmse == pytest.approx(math.sqrt(5.0))
    assert e.bias == pytest.approx(-1.0)
    empty = BF.error_stats(np.empty(0))
    assert empty.n == 0 and math.isnan(empty.mae) and math.isnan(empty.rmse)


# ---------------------------------------------------------------------------------------------
# Part A: perpetual basis
# ---------------------------------------------------------------------------------------------


def test_perp_basis_aligns_on_common_timestamps() -> None:
    """mark / spot - 1 at the stamps both have: the mark's extra bar is dropped."""
    mark = _bars([101.0, 99.0, 100.5, 102.0])
    spot = _bars([100.0, 100.0, 100.0])
    b = BF.perp_basis(mark, spot)
    assert list(b.index) == list(spot.index)
    np.testing.assert_allclose(b.to_numpy(), [0.01, -0.01, 0.005])


def test_perp_forecasters_by_hand() -> None:
    """b = (1, 2, 3, 4) bp.

    - last: b; zero: 0;
    - EWMA with half-life 1 bar (lam = 1/2): m = 1, (2 + 1/2) / (3/2) = 5/3,
      (3 + 1 + 1/4) / (7/4) = 17/7, (4 + 3/2 + 1/2 + 1/8) / (15/8) = 49/15;
    - shrunk (L = 1, T = 1 bar, towards 0) over H = 1: m w, w = (1 - 1/2) / ln 2;
    - trailing mean over 2 bars: 1, 3/2, 5/2, 7/2.
    """
    b = np.array([1.0, 2.0, 3.0, 4.0]) * 1e-4
    np.testing.assert_allclose(BF.last_value(b, 1), b)
    np.testing.assert_allclose(BF.zero(b, 1), 0.0)
    m = np.array([1.0, 5 / 3, 17 / 7, 49 / 15]) * 1e-4
    np.testing.assert_allclose(BF.ewma(1.0)(b, 3), m)
    np.testing.assert_allclose(BF.ewma_shrunk(1.0, 1.0)(b, 1), m * 0.5 / math.log(2.0))
    np.testing.assert_allclose(BF.ewma_shrunk(1.0, math.inf)(b, 5), m)  # no reversion: the EWMA
    np.testing.assert_allclose(BF.trailing_mean(2)(b, 1), np.array([1.0, 1.5, 2.5, 3.5]) * 1e-4)


def test_perp_errors_target_and_origins_by_hand() -> None:
    """b = (0, 1, 2, 3, 4), H = 2: targets mean(b[t+1], b[t+2]) = 1.5, 2.5, 3.5 at t = 0, 1, 2;
    "last" errs by -1.5 each. With start = bar 1 and end = bar 4: origins 1 and 2 only."""
    s = _bars([0.0, 1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(BF.perp_errors(BF.last_value, s, 2, None, s.index[-1]), [-1.5] * 3)
    np.testing.assert_allclose(BF.perp_errors(BF.last_value, s, 2, s.index[1], s.index[4]), [-1.5] * 2)
    np.testing.assert_allclose(BF.perp_errors(BF.zero, s, 2, s.index[1], s.index[3]), [-2.5])
    res = BF.evaluate_perp({"X": s, "Y": s}, {"last": BF.last_value}, 2, s.index[0], s.index[-1])
    assert res["X"]["last"].n == 3 and res["all"]["last"].n == 6
    assert res["all"]["last"].mae == pytest.approx(1.5)


def test_perp_forecasts_use_no_future_data() -> None:
    """Changing every bar after the origin leaves each forecaster's forecast at the origin unchanged
    (and it equals the forecast computed on the history up to the origin alone)."""
    rng = np.random.default_rng(3)
    b = rng.normal(0.0, 5e-4, 400)
    t = 250
    later = b.copy()
    later[t + 1:] = rng.normal(0.01, 1e-2, later.size - t - 1)
    for label, f in BF.perp_forecasters([6.0, 42.0], 42.0, 180.0).items():
        for h in (6, 42, 180):
            base = f(b, h)[t]
            assert f(later, h)[t] == pytest.approx(base, rel=1e-12, abs=1e-15), (label, h)
            assert f(b[: t + 1], h)[-1] == pytest.approx(base, rel=1e-12, abs=1e-15), (label, h)


# ---------------------------------------------------------------------------------------------
# Part B: dated basis change
# ---------------------------------------------------------------------------------------------

DELIVERY = pd.Timestamp("2024-03-29 08:00", tz="UTC")


def _samples(basis: dict[pd.Timestamp, float], underlying: str = "BTC",
             delivery: pd.Timestamp = DELIVERY) -> pd.DataFrame:
    """Rows as ``scenarios.quarterly_basis.quarterly_basis_samples`` gives them."""
    t = pd.DatetimeIndex(list(basis))
    days = (delivery - t).total_seconds().to_numpy() / 86400.0
    c = np.array(list(basis.values()))
    return pd.DataFrame({"underlying": underlying, "delivery": delivery, "time": t, "days": days,
                         "basis": c, "basis_annual": c * 365.0 / days})


def test_linear_convergence_by_hand() -> None:
    """c = 1% with 10 days to expiry, h = 2 days: the basis falls by 1% x 2 / 10 = 0.2%; h beyond
    the expiry is capped at the whole basis."""
    np.testing.assert_allclose(BF.linear_convergence(np.array([0.01]), np.array([10.0]), 2), [-0.002])
    np.testing.assert_allclose(BF.linear_convergence(np.array([0.01]), np.array([1.0]), 2), [-0.01])


def test_curve_basis_by_hand() -> None:
    """a = 10%/yr, slope 0.1%/yr per day, tau = 10 days: (0.10 + 0.01) x 10 / 365; 0 at expiry."""
    term = BasisTermStructure(a=0.10, slope=0.001)
    np.testing.assert_allclose(BF.curve_basis(term, np.array([10.0, 0.0, -1.0])), [0.11 * 10 / 365, 0, 0])


def test_dated_pairs_by_hand() -> None:
    """Closes on 5 days at 1.0, 0.9, 0.8, 0.7, 0.6 %: with h = 2 the three origins that have a close
    2 days later, each with change -0.2 %; a second contract is never paired with the first."""
    days = [T0 + pd.Timedelta(days=k) for k in range(5)]
    s = _samples(dict(zip(days, [0.010, 0.009, 0.008, 0.007, 0.006], strict=True)))
    other = _samples({days[2]: 0.05}, delivery=DELIVERY + pd.Timedelta(days=91))
    pairs = BF.dated_pairs(pd.concat([s, other], ignore_index=True), 2)
    assert list(pairs["time"]) == days[:3]
    np.testing.assert_allclose(pairs["change"], [-0.002] * 3)
    np.testing.assert_allclose(pairs["basis_h"], [0.008, 0.007, 0.006])


def test_linear_and_term_forecasts_exact_when_basis_converges_linearly() -> None:
    """c_t = 0.1% x tau_t (a flat annual basis of 36.5%): the realised change over h days is
    -0.1% x h, which ``linear`` forecasts exactly, and so do the term structure's carry and level
    with a = 0.365, slope 0; "stays" errs by +0.1% x h."""
    days = [T0 + pd.Timedelta(days=k) for k in range(40)]
    tau = (DELIVERY - pd.DatetimeIndex(days)).total_seconds().to_numpy() / 86400.0
    s = _samples(dict(zip(days, 0.001 * tau, strict=True)))
    term = BasisTermStructure(a=0.365, slope=0.0)
    for h in (1, 7, 30):
        res, _rows = BF.evaluate_dated(s, h, T0, T0 + pd.Timedelta(days=60), {t: term for t in days})
        assert res["BTC"]["linear"].n == 40 - h
        for k in ("linear", "term_carry", "term_level"):
            assert res["all"][k].mae == pytest.approx(0.0, abs=1e-12), (h, k)
        assert res["all"]["stays"].mae == pytest.approx(0.001 * h)
        assert res["all"]["stays"].bias == pytest.approx(0.001 * h)


def test_walk_forward_term_fit_by_hand_and_causal() -> None:
    """Annual basis 5% + 0.1%/day x tau on 40 days of two underlyings: the fit at the last day
    recovers (0.05, 0.001); before TERM_MIN_OBS pooled closes there is none; changing every close
    after an origin leaves its fit and its forecasts unchanged."""
    days = [T0 + pd.Timedelta(days=k) for k in range(40)]
    tau = (DELIVERY - pd.DatetimeIndex(days)).total_seconds().to_numpy() / 86400.0
    c = (0.05 + 0.001 * tau) * tau / 365.0
    s = pd.concat([_samples(dict(zip(days, c, strict=True)), u) for u in ("BTC", "ETH")],
                  ignore_index=True)
    terms = BF.walk_forward_terms(s, [days[5], days[20], days[-1]])
    assert terms[days[5]] is None  # 12 closes < TERM_MIN_OBS = 30
    fit = terms[days[-1]]
    assert fit is not None and fit.n == 80
    assert (fit.a, fit.slope) == (pytest.approx(0.05), pytest.approx(0.001))

    origin = days[20]
    later = s.copy()
    after = later["time"] > origin
    later.loc[after, "basis"] = later.loc[after, "basis"] * 3.0 + 0.02
    later.loc[after, "basis_annual"] = later.loc[after, "basis"] * 365.0 / later.loc[after, "days"]
    t_base, t_later = BF.walk_forward_terms(s, [origin]), BF.walk_forward_terms(later, [origin])
    assert t_base[origin] == t_later[origin]
    for h in (1, 7):
        p_base, p_later = BF.dated_pairs(s, h), BF.dated_pairs(later, h)
        at = (p_base["time"] == origin).to_numpy()
        assert at.sum() == 2 and np.array_equal(at, (p_later["time"] == origin).to_numpy())
        f_base = BF.dated_forecasts(p_base[at], t_base, h)
        f_later = BF.dated_forecasts(p_later[at], t_later, h)
        pd.testing.assert_frame_equal(f_base, f_later)
        assert np.isfinite(f_base.to_numpy()).all()
        assert not np.allclose(p_base.loc[at, "change"], p_later.loc[at, "change"])  # the target did


# ---------------------------------------------------------------------------------------------
# The CLI
# ---------------------------------------------------------------------------------------------


def test_main_without_data_skips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert BF.main(["--data", str(tmp_path), "--no-write"]) == 0
    assert "skipped" in capsys.readouterr().out


def test_main_on_synthetic_files(tmp_path: Path) -> None:
    """A synthetic perp mark/spot pair and one quarterly: the script runs and writes both files."""
    data = tmp_path / "data"
    for folder in ("perp_mark_4h", "spot_4h", "spot_1d", "quarterly_1d"):
        (data / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    idx4 = pd.date_range("2024-01-01", periods=600, freq="4h", tz="UTC")
    spot4 = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, idx4.size)))
    mark4 = spot4 * (1.0 + rng.normal(0, 5e-4, idx4.size))
    for folder, values in (("spot_4h", spot4), ("perp_mark_4h", mark4)):
        pd.DataFrame({"timestamp": idx4.strftime("%Y-%m-%dT%H:%M:%SZ"), "close": values}).to_csv(
            data / folder / "BTC.csv.gz", index=False)
    idx1 = pd.date_range("2024-01-01", "2024-03-28", freq="1D", tz="UTC")
    spot1 = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.02, idx1.size)))
    tau = ((DELIVERY - (idx1 + pd.Timedelta(days=1))).total_seconds() / 86400.0).to_numpy()
    fut = spot1 * (1.0 + 0.1 * tau / 365.0 + rng.normal(0, 1e-3, idx1.size))
    stamp = idx1.strftime("%Y-%m-%dT%H:%M:%SZ")
    pd.DataFrame({"timestamp": stamp, "close": spot1}).to_csv(data / "spot_1d" / "BTC.csv.gz", index=False)
    pd.DataFrame({"timestamp": stamp, "close": fut}).to_csv(
        data / "quarterly_1d" / "BTCUSDT_240329.csv.gz", index=False)
    out = tmp_path / "res" / "basis.md"
    assert BF.main(["--data", str(data), "--start", "2024-01-20", "--end", "2024-03-31",
                    "--out", str(out)]) == 0
    text = out.read_text()
    assert "## A. Perpetual basis" in text and "## B. Quarterly basis change" in text
    report = pd.read_json(out.with_suffix(".json"), typ="series")
    assert set(report["perp"]) == {"6", "42", "180"} and set(report["dated"]) == {"1", "7", "30"}
    assert report["dated"]["7"]["all"]["linear"]["n"] > 0
