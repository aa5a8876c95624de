"""Out-of-sample error of basis forecasts on real Binance perpetual marks and quarterly futures.

Two quantities a planner forecasts, each measured walk-forward: a forecast made at origin ``t``
reads data stamped at or before ``t`` only; its target reads the future on purpose.

Part A: perpetual basis (``perp``)
----------------------------------
``b_k = mark_k / spot_k - 1`` (fraction of spot), from the close of each 4 h bar of
``perp_mark_4h/<SYM>`` and ``spot_4h/<SYM>`` at the same timestamps (inner join; bars are counted
as they are, one missing 4 h bar in five years for most symbols). Symbols: every one with both files
(BTC, ETH, XRP, ADA, LTC from Dec 2019 / Jan 2020; LINK, AVAX from May 2025). Target at origin ``t``
over ``H`` bars: the realised mean ``mean(b_{t+1} .. b_{t+H})``. Forecasters (``PERP`` labels):

- ``last``: ``b_t``; ``zero``: 0;
- ``ewma_<L>``: the bias-free EWMA of ``b`` with half-life ``L`` bars (``models.funding_forecast.ewma_path``);
- ``ewma_shrunk``: the funding model's form with long-run level 0,
  ``m_t (1 - phi^H) / (H ln(1/phi))``, ``phi = 2^(-1/T)`` (``EwmaShrinkForecaster``), ``m_t`` the
  EWMA with half-life ``L_s``;
- ``mean_30d``: the mean of ``b`` over the last 180 bars (30 days; the window ``scenarios.
  dated_basis.BasisModel.fit`` averages the premium over when a path has perp marks but no funding).

Defaults fixed before any evaluation: ``L`` = 6 and 42 bars (1 day, 1 week), ``L_s`` = 42 bars and
``T`` = 180 bars (7 and 30 days, the funding model's defaults in days). Horizons 6, 42, 180 bars
(1 day, 1 week, 30 days). Errors in bp of spot (1 bp = 1e-4).

Part B: dated (quarterly) basis change (``dated``)
--------------------------------------------------
Per BTC/ETH quarterly contract, ``c_t = F_t / S_t - 1`` with ``F_t`` the daily close of
``quarterly_1d/<U>USDT_<YYMMDD>`` and ``S_t`` the ``spot_1d`` close of the same day, both stamped at
the bar close (00:00 UTC; ``scenarios.quarterly_basis.quarterly_basis_samples``), ``tau_t`` days to delivery
(08:00 UTC on the suffix date). Target over ``h`` days: the basis change
``d = c_{t+h} - c_t`` (a long future's PnL beyond its spot exposure per unit notional; the carry it
pays is ``-d``), for origins whose contract still has a close at ``t + h`` (so ``h < tau_t``; the
delivery close itself has no same-day spot close and is never a target). Forecasters (``DATED``):

- ``stays``: 0 (the basis stays where it is);
- ``linear``: ``-c_t h / tau_t`` (linear convergence to 0 at expiry: the carry the optimiser charges
  a dated contract, ``optimizer.carry._carry_per_horizon``);
- ``term_carry`` / ``term_level``: ``scenarios.quarterly_basis.BasisTermStructure`` (annualised basis
  ``a + s tau``, so ``C(tau) = (a + s tau) tau / 365``) refitted at every origin on the pooled BTC and
  ETH closes stamped at or before it (``tau >= 7`` days, at least ``TERM_MIN_OBS`` of them).
  ``term_carry = C(tau_t - h) - C(tau_t)`` (today's deviation from the curve persists),
  ``term_level = C(tau_t - h) - c_t`` (the basis returns to the curve). The repo's own fit
  (``fit_quarterly_term_structure``, used by ``with_quarterly_marks``) pools the whole span, so it
  reads the future and is not evaluated as such.

All four are compared on the same origins: those after the term model's warm-up (its first
``TERM_MIN_OBS`` pooled closes, about two weeks after the first contract's listing on 2023-06-25).
Horizons 1, 7, 30 days. Errors in bp of spot.

Figures: ``n`` origins, ``n/H`` (non-overlapping windows; the origins overlap, the errors are
autocorrelated), MAE and RMSE of forecast minus realised (``bias``, the mean error, in the JSON).
``all`` pools every symbol's origins.

Run: ``python benchmarks/basis_forecast.py [--data DIR] [--start 2023-01-01] [--end 2025-06-30]
[--symbols BTC,ETH] [--horizons 6,42,180] [--dated-horizons 1,7,30] [--half-lives 6,42]
[--shrink-half-life 42] [--reversion-half-life 180] [--json] [--out benchmarks/results/basis_forecast.md]
[--no-write]``. The evaluation period defaults to ``funding_forecast.py``'s (origins from 2023-01-01,
targets up to 2025-06-30); the perp history before it (from Dec 2019 / Jan 2020) warms the EWMAs up.
Without the data folder (``--data``, ``FBR_DATA_DIR`` or ``../shared/data``) it prints why and
exits 0. Writes the markdown file and a JSON file beside it (``.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.funding_forecast import origin_mask  # noqa: E402
from models.data_layout import MARK_FOLDER, SUFFIXES, spot_folder  # noqa: E402
from models.funding_forecast import (  # noqa: E402
    EwmaShrinkForecaster,
    ewma_path,
    realised_mean_path,
)
from models.io import default_data_dir  # noqa: E402
from scenarios.dated_basis import DAYS_PER_YEAR  # noqa: E402
from scenarios.quarterly_basis import (  # noqa: E402
    MIN_FIT_DAYS,
    BasisTermStructure,
    quarterly_basis_samples,
    quarterly_underlyings,
)

BP = 1e4
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "basis_forecast.md"
#: Bars of 4 h in 30 days: the trailing window of ``mean_30d`` (``scenarios.dated_basis.BASIS_WINDOW``).
MEAN_WINDOW_BARS = 180
#: Pooled closes (tau >= 7 days) the walk-forward term-structure fit needs before it forecasts.
TERM_MIN_OBS = 30
DATED_LABELS = ("stays", "linear", "term_carry", "term_level")

#: A perp forecaster: basis path ``b`` (fraction) and horizon ``H`` (bars) -> the forecast of the
#: mean over the next ``H`` bars at every index ``t``, from ``b[:t+1]`` only (NaN: none).
PathForecaster = Callable[[np.ndarray, int], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Error metrics
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Errors:
    """Errors of ``n`` forecasts (forecast - realised, same unit as the inputs): mean absolute
    ``mae``, root mean square ``rmse`` and mean ``bias``; NaN when ``n = 0``."""

    n: int
    mae: float
    rmse: float
    bias: float


def error_stats(err: np.ndarray) -> Errors:
    """``mae = mean |e|``, ``rmse = sqrt(mean e^2)``, ``bias = mean e`` over the finite ``e``."""
    e = np.asarray(err, dtype=float)
    e = e[np.isfinite(e)]
    if e.size == 0:
        return Errors(0, math.nan, math.nan, math.nan)
    return Errors(int(e.size), float(np.mean(np.abs(e))), float(np.sqrt(np.mean(e**2))),
                  float(np.mean(e)))


# ---------------------------------------------------------------------------------------------
# Part A: perpetual basis
# ---------------------------------------------------------------------------------------------


def perp_basis(mark: pd.Series, spot: pd.Series) -> pd.Series:
    """``mark / spot - 1`` (fraction of spot) at the timestamps both have (inner join, sorted;
    rows with a missing or non-positive price dropped)."""
    joined = pd.concat([mark.astype(float).rename("mark"), spot.astype(float).rename("spot")],
                       axis=1, join="inner").sort_index()
    joined = joined[(joined["mark"] > 0) & (joined["spot"] > 0)].dropna()
    out = joined["mark"] / joined["spot"] - 1.0
    out.name = mark.name
    return out


def last_value(b: np.ndarray, horizon: int) -> np.ndarray:
    """``b_t`` at every index (the latest basis persists)."""
    return np.asarray(b, dtype=float).copy()


def zero(b: np.ndarray, horizon: int) -> np.ndarray:
    """0 at every index (no basis)."""
    return np.zeros(np.asarray(b).shape)


def ewma(half_life: float) -> PathForecaster:
    """The bias-free EWMA ``m_t = sum_i lam^i b_{t-i} / sum_i lam^i``, ``lam = 2^(-1/L)``, ``L``
    bars, for every horizon (``models.funding_forecast.ewma_path``)."""

    def forecast(b: np.ndarray, horizon: int) -> np.ndarray:
        return ewma_path(b, half_life)

    return forecast


def ewma_shrunk(half_life: float, reversion_half_life: float) -> PathForecaster:
    """``m_t w(H)`` with ``w(H) = (1 - phi^H) / (H ln(1/phi))``, ``phi = 2^(-1/T)``: the EWMA
    (half-life ``L`` bars) whose deviation from 0 decays with half-life ``T`` bars, averaged over
    the next ``H`` bars (``EwmaShrinkForecaster`` with long-run level 0)."""
    model = EwmaShrinkForecaster(half_life=half_life, reversion_half_life=reversion_half_life,
                                 long_run_rate=0.0)

    def forecast(b: np.ndarray, horizon: int) -> np.ndarray:
        return model.mean_rate_path(np.asarray(b, dtype=float), horizon)

    return forecast


def trailing_mean(window: int) -> PathForecaster:
    """The mean of the last ``window`` bars ``b_{t-window+1} .. b_t`` (fewer at the start of the
    history), for every horizon."""

    def forecast(b: np.ndarray, horizon: int) -> np.ndarray:
        c = np.concatenate([[0.0], np.cumsum(np.asarray(b, dtype=float))])
        t = np.arange(1, c.size)
        lo = np.maximum(t - window, 0)
        return np.asarray((c[t] - c[lo]) / (t - lo), dtype=float)

    return forecast


def perp_forecasters(half_lives: Sequence[float], shrink_half_life: float,
                     reversion_half_life: float) -> dict[str, PathForecaster]:
    """The Part A forecasters by table label."""
    out: dict[str, PathForecaster] = {"last": last_value, "zero": zero}
    for hl in half_lives:
        out[f"ewma_{hl:g}"] = ewma(hl)
    out["ewma_shrunk"] = ewma_shrunk(shrink_half_life, reversion_half_life)
    out["mean_30d"] = trailing_mean(MEAN_WINDOW_BARS)
    return out


def perp_errors(forecaster: PathForecaster, basis: pd.Series, horizon: int, start: pd.Timestamp | None,
                end: pd.Timestamp) -> np.ndarray:
    """Forecast minus realised mean basis over the next ``horizon`` bars (fraction) at every
    valid origin (``origin_mask``)."""
    b = basis.to_numpy(dtype=float)
    mask = origin_mask(pd.DatetimeIndex(basis.index), horizon, start, end)
    err = forecaster(b, horizon) - realised_mean_path(b, horizon)
    return np.asarray(err[mask], dtype=float)


def evaluate_perp(bases: dict[str, pd.Series], models: dict[str, PathForecaster], horizon: int,
                  start: pd.Timestamp, end: pd.Timestamp) -> dict[str, dict[str, Errors]]:
    """Per symbol (and ``all``, pooled) and per forecaster: the errors over the period."""
    out: dict[str, dict[str, Errors]] = {}
    pooled: dict[str, list[np.ndarray]] = {k: [] for k in models}
    for sym, s in bases.items():
        row: dict[str, Errors] = {}
        for label, f in models.items():
            err = perp_errors(f, s, horizon, start, end)
            pooled[label].append(err)
            row[label] = error_stats(err)
        if next(iter(row.values())).n > 0:
            out[sym] = row
    out["all"] = {k: error_stats(np.concatenate(v) if v else np.empty(0)) for k, v in pooled.items()}
    return out


# ---------------------------------------------------------------------------------------------
# Part B: dated (quarterly) basis change
# ---------------------------------------------------------------------------------------------


def dated_pairs(samples: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    """Each origin close joined to the same contract's close ``horizon_days`` later.

    ``samples``: columns underlying, delivery, time, days, basis (as
    ``scenarios.quarterly_basis.quarterly_basis_samples``). Returns one row per origin with a target:
    underlying, delivery, time, days (``tau_t``), basis (``c_t``), basis_h (``c_{t+h}``), change
    (``c_{t+h} - c_t``), sorted by time. Origins whose contract has no close at ``t + h`` are left out.
    """
    cols = ["underlying", "delivery", "time", "days", "basis"]
    s = samples[cols].copy()
    target = s[["underlying", "delivery", "time", "basis"]].rename(columns={"basis": "basis_h"})
    target["time"] = target["time"] - pd.Timedelta(days=horizon_days)
    out = s.merge(target, on=["underlying", "delivery", "time"], how="inner")
    out["change"] = out["basis_h"] - out["basis"]
    return out.sort_values(["time", "underlying", "delivery"]).reset_index(drop=True)


def linear_convergence(basis: np.ndarray, days: np.ndarray, horizon_days: float) -> np.ndarray:
    """Forecast of ``c_{t+h} - c_t`` if the basis falls linearly to 0 at expiry:
    ``-c_t h / max(tau_t, h)`` (fraction of spot; ``tau_t``, ``h`` in days)."""
    tau = np.maximum(np.asarray(days, dtype=float), float(horizon_days))
    return -np.asarray(basis, dtype=float) * float(horizon_days) / tau


def curve_basis(term: BasisTermStructure, days: np.ndarray) -> np.ndarray:
    """The term structure's basis ``C(tau) = (a + s tau) tau / 365`` (fraction of spot), ``tau =
    max(days, 0)``: ``term.price(S, tau) / S - 1``."""
    tau = np.maximum(np.asarray(days, dtype=float), 0.0)
    return term.annual(tau) * tau / DAYS_PER_YEAR


def walk_forward_terms(samples: pd.DataFrame, origins: Sequence[pd.Timestamp], *,
                       min_obs: int = TERM_MIN_OBS,
                       min_days: float = MIN_FIT_DAYS) -> dict[pd.Timestamp, BasisTermStructure | None]:
    """For each origin time: ``BasisTermStructure.fit`` on the ``samples`` rows (every underlying
    pooled) stamped at or before it with ``days >= min_days``; None with fewer than ``min_obs``."""
    times = pd.DatetimeIndex(samples["time"]).as_unit("ns").asi8
    order = np.argsort(times, kind="stable")
    t_sorted = times[order]
    days = samples["days"].to_numpy(dtype=float)[order]
    annual = samples["basis_annual"].to_numpy(dtype=float)[order]
    out: dict[pd.Timestamp, BasisTermStructure | None] = {}
    for origin in dict.fromkeys(origins):
        k = int(np.searchsorted(t_sorted, pd.Timestamp(origin).as_unit("ns").value, side="right"))
        d, b = days[:k], annual[:k]
        if int(np.sum(np.isfinite(b) & (d >= min_days))) < min_obs:
            out[origin] = None
            continue
        out[origin] = BasisTermStructure.fit(d, b, min_days=min_days)
    return out


def dated_forecasts(pairs: pd.DataFrame, terms: dict[pd.Timestamp, BasisTermStructure | None],
                    horizon_days: int) -> pd.DataFrame:
    """The four Part B forecasts of ``change`` (fraction of spot) for each row of ``pairs``
    (``dated_pairs``): stays (0), linear (``linear_convergence``), term_carry
    ``C(tau - h) - C(tau)`` and term_level ``C(tau - h) - c_t`` with the origin's walk-forward term
    structure (NaN where it has none)."""
    b = pairs["basis"].to_numpy(dtype=float)
    tau = pairs["days"].to_numpy(dtype=float)
    h = float(horizon_days)
    carry = np.full(len(pairs), np.nan)
    level = np.full(len(pairs), np.nan)
    for k, origin in enumerate(pairs["time"]):
        term = terms.get(pd.Timestamp(origin))
        if term is None:
            continue
        c_now, c_next = curve_basis(term, np.array([tau[k], tau[k] - h]))
        carry[k] = c_next - c_now
        level[k] = c_next - b[k]
    return pd.DataFrame({"stays": np.zeros(len(pairs)), "linear": linear_convergence(b, tau, h),
                         "term_carry": carry, "term_level": level}, index=pairs.index)


def evaluate_dated(samples: pd.DataFrame, horizon_days: int, start: pd.Timestamp, end: pd.Timestamp,
                   terms: dict[pd.Timestamp, BasisTermStructure | None] | None = None
                   ) -> tuple[dict[str, dict[str, Errors]], pd.DataFrame]:
    """Per underlying (and ``all``) and per forecaster: errors of the basis-change forecasts over
    ``horizon_days``, on the origins with ``start <= t``, ``t + h <= end`` where every forecaster
    has a value. Also returns the evaluated rows (pairs, forecasts)."""
    pairs = dated_pairs(samples, horizon_days)
    t = pd.DatetimeIndex(pairs["time"])
    pairs = pairs[np.asarray((t >= start) & (t + pd.Timedelta(days=horizon_days) <= end))]
    pairs = pairs.reset_index(drop=True)
    if terms is None:
        terms = walk_forward_terms(samples, list(pd.DatetimeIndex(pairs["time"])))
    fc = dated_forecasts(pairs, terms, horizon_days)
    keep = np.isfinite(fc.to_numpy(dtype=float)).all(axis=1)
    pairs, fc = pairs[keep].reset_index(drop=True), fc[keep].reset_index(drop=True)
    realised = pairs["change"].to_numpy(dtype=float)
    out: dict[str, dict[str, Errors]] = {}
    for u in sorted(pairs["underlying"].unique()):
        m = (pairs["underlying"] == u).to_numpy()
        out[str(u)] = {k: error_stats(fc[k].to_numpy()[m] - realised[m]) for k in DATED_LABELS}
    out["all"] = {k: error_stats(fc[k].to_numpy() - realised) for k in DATED_LABELS}
    return out, pd.concat([pairs, fc], axis=1)


# ---------------------------------------------------------------------------------------------
# Data, tables, CLI
# ---------------------------------------------------------------------------------------------


def _stems(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.name[: -len(sfx)] for p in folder.iterdir() for sfx in SUFFIXES if p.name.endswith(sfx)}


def _read_close(data_dir: Path, folder: str, sym: str) -> pd.Series:
    for sfx in SUFFIXES:
        path = data_dir / folder / f"{sym}{sfx}"
        if path.is_file():
            frame = (pd.read_parquet(path) if sfx == ".parquet"
                     else pd.read_csv(path, index_col="timestamp", parse_dates=True))
            if "timestamp" in frame.columns:
                frame = frame.set_index("timestamp")
            idx = pd.DatetimeIndex(frame.index)
            idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
            return pd.Series(frame["close"].to_numpy(dtype=float), index=idx, name=sym)
    raise FileNotFoundError(f"{data_dir / folder}/{sym}")


def load_perp_bases(data_dir: Path, symbols: list[str] | None) -> dict[str, pd.Series]:
    """``perp_basis`` of every symbol with both ``perp_mark_4h/<SYM>`` and ``spot_4h/<SYM>``
    (or of ``symbols``)."""
    both = sorted(_stems(data_dir / MARK_FOLDER) & _stems(data_dir / spot_folder("4h")))
    names = [s for s in symbols if s in both] if symbols else both
    return {s: perp_basis(_read_close(data_dir, MARK_FOLDER, s), _read_close(data_dir, spot_folder("4h"), s))
            for s in names}


def dated_spans(samples: pd.DataFrame) -> dict[str, list[Any]]:
    """Per contract (``<U>_<YYMMDD>``): first and last close time and the number of closes."""
    out: dict[str, list[Any]] = {}
    for (u, delivery), g in samples.groupby(["underlying", "delivery"]):
        t = pd.DatetimeIndex(g["time"])
        out[f"{u}_{pd.Timestamp(str(delivery)):%y%m%d}"] = [str(t.min()), str(t.max()), len(t)]
    return out


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * BP:.3f}"


def table(results: dict[str, dict[str, Errors]], horizon: int, labels: list[str], metric: str,
          unit: str) -> str:
    """A markdown table of one metric (``mae`` or ``rmse``, in bp) per forecaster, and the winner."""
    head = ["symbol", "n", "n/H", *labels, "best"]
    lines = [f"{metric.upper()} ({unit})", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sym, row in results.items():
        n = next(iter(row.values())).n
        value = {k: float(getattr(row[k], metric)) for k in labels}
        finite = [k for k in labels if not math.isnan(value[k])]
        best = min(finite, key=lambda k: value[k]) if finite else "-"
        cells = [sym, str(n), f"{n / horizon:.0f}", *(_fmt(value[k]) for k in labels), best]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _as_json(res: dict[str, dict[str, Errors]]) -> dict[str, Any]:
    return {sym: {k: {"n": e.n, "mae_bp": e.mae * BP, "rmse_bp": e.rmse * BP, "bias_bp": e.bias * BP}
                  for k, e in row.items()} for sym, row in res.items()}


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="data folder (default: FBR_DATA_DIR or "
                    "../shared/data)")
    ap.add_argument("--symbols", default=None, help="perp symbols, comma-separated (default: every "
                    "one with perp_mark_4h and spot_4h files)")
    ap.add_argument("--start", default="2023-01-01", help="first forecast origin (UTC date)")
    ap.add_argument("--end", default="2025-06-30T23:59:59", help="last realised value (UTC)")
    ap.add_argument("--horizons", default="6,42,180", help="perp horizons in 4 h bars")
    ap.add_argument("--dated-horizons", default="1,7,30", help="quarterly horizons in days")
    ap.add_argument("--half-lives", default="6,42", help="EWMA half-lives (bars), comma-separated")
    ap.add_argument("--shrink-half-life", type=float, default=42.0,
                    help="ewma_shrunk's EWMA half-life (bars)")
    ap.add_argument("--reversion-half-life", type=float, default=180.0,
                    help="ewma_shrunk's reversion half-life towards 0 (bars; inf: none)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown results file (JSON beside it)")
    ap.add_argument("--no-write", action="store_true", help="do not write the results files")
    return ap.parse_args(argv)


def _utc(value: str) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    """Run both evaluations, print them, write the markdown and JSON files. Returns the exit code."""
    a = _args(argv)
    data = a.data if a.data is not None else default_data_dir()
    if data is None:
        print("basis_forecast: skipped: no data folder (give --data, set FBR_DATA_DIR or provide "
              "../shared/data)")
        return 0
    data = Path(data)
    has_perp = bool(_stems(data / MARK_FOLDER) & _stems(data / spot_folder("4h")))
    dated_underlyings = quarterly_underlyings(data)
    if not has_perp and not dated_underlyings:
        print(f"basis_forecast: skipped: {data} has neither perp_mark_4h/ with spot_4h/ files nor "
              "quarterly_1d/ files with spot_1d/ beside them")
        return 0
    t0 = time.perf_counter()
    start, end = _utc(a.start), _utc(a.end)
    half_lives = [float(x) for x in a.half_lives.split(",") if x.strip()]
    report: dict[str, Any] = {"settings": {
        "start": str(start), "end": str(end), "half_lives_bars": half_lives,
        "shrink_half_life_bars": a.shrink_half_life, "reversion_half_life_bars": a.reversion_half_life,
        "mean_window_bars": MEAN_WINDOW_BARS, "term_min_obs": TERM_MIN_OBS, "units": "bp of spot"},
        "perp": {}, "dated": {}}
    md: list[str] = []
    notes: list[str] = []
    if has_perp:
        symbols = [s.strip() for s in a.symbols.split(",")] if a.symbols else None
        bases = load_perp_bases(data, symbols)
        models = perp_forecasters(half_lives, a.shrink_half_life, a.reversion_half_life)
        labels = list(models)
        report["perp_spans"] = {s: [str(v.index[0]), str(v.index[-1]), len(v)] for s, v in bases.items()}
        notes.append("Perp spans (mark and spot joined): " + "; ".join(
            f"{s} {v.index[0].date()}..{v.index[-1].date()} ({len(v)} bars)" for s, v in bases.items()))
        md += ["## A. Perpetual basis: mean of mark/spot - 1 over the next H bars of 4 h", ""]
        for h in _ints(a.horizons):
            res = evaluate_perp(bases, models, h, start, end)
            report["perp"][str(h)] = _as_json(res)
            md += [f"### H = {h} bars ({h * 4 / 24:g} days)", "",
                   table(res, h, labels, "mae", "bp of spot"), "",
                   table(res, h, labels, "rmse", "bp of spot"), ""]
    else:
        notes.append("Perp part skipped: no symbol with both perp_mark_4h and spot_4h files.")
    if dated_underlyings:
        samples = quarterly_basis_samples(data, dated_underlyings)
        report["dated_spans"] = dated_spans(samples)
        terms = walk_forward_terms(samples, sorted(set(pd.DatetimeIndex(samples["time"]))))
        first_fit = next((t for t, v in sorted(terms.items()) if v is not None), None)
        report["settings"]["term_first_fit"] = str(first_fit)
        span = pd.DatetimeIndex(samples["time"])
        notes.append(f"Quarterlies: {', '.join(dated_underlyings)}, {len(samples)} daily closes "
                     f"{span.min().date()}..{span.max().date()}; "
                     f"the walk-forward term structure first forecasts on {first_fit} "
                     f"(>= {TERM_MIN_OBS} pooled closes with tau >= {MIN_FIT_DAYS:g} days).")
        md += ["## B. Quarterly basis change c_{t+h} - c_t over h days (c = F/S - 1)", ""]
        for h in _ints(a.dated_horizons):
            res, _rows = evaluate_dated(samples, h, start, end, terms)
            report["dated"][str(h)] = _as_json(res)
            md += [f"### h = {h} days", "", table(res, h, list(DATED_LABELS), "mae", "bp of spot"), "",
                   table(res, h, list(DATED_LABELS), "rmse", "bp of spot"), ""]
    else:
        notes.append("Quarterly part skipped: no quarterly_1d file with a spot_1d file beside it.")
    elapsed = time.perf_counter() - t0
    command = "python benchmarks/basis_forecast.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report["notes"] = notes
    report["command"] = command.strip()
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        print("\n".join(md))
        print("\n".join(notes))
        print(f"({elapsed:.1f} s)")
    if not a.no_write:
        head = [
            "# Basis forecasts out of sample (Binance USD-M perpetual marks and quarterlies)", "",
            f"Command: `{command.strip()}`", "",
            f"Forecast origins from {start} to the last one whose target ends by {end}; the history "
            "before warms the perp EWMAs up (from Dec 2019 / Jan 2020). Walk-forward: a forecast reads "
            "data stamped at or before its origin only. MAE and RMSE of forecast minus realised, in bp "
            "of spot (1e-4). n/H: non-overlapping windows. Perp forecasters: last, zero, "
            f"ewma_L (half-life L bars), ewma_shrunk (L = {a.shrink_half_life:g}, reversion "
            f"T = {a.reversion_half_life:g} bars, towards 0), mean_30d ({MEAN_WINDOW_BARS} bars). "
            "Quarterly forecasters of the basis change: stays (0), linear (-c h / tau), term_carry "
            "(C(tau-h) - C(tau)), term_level (C(tau-h) - c), C the term structure refitted each origin "
            "on the closes before it (see the script's docstring).", "",
            *[n + "\n" for n in notes]]
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text("\n".join(head + md) + "\n")
        a.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {a.out} and {a.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
