"""Out-of-sample error of funding forecasts on real Binance perpetual funding.

What is measured
----------------
For each symbol with a file ``<data>/funding/<SYM>.csv.gz`` and each horizon ``H`` (settlements), at
every settlement ``t`` (the forecast origin) inside the evaluation period whose next ``H``
settlements also fall inside it, the target is the realised mean rate over the next ``H``
settlements, ``mean(r_{t+1} .. r_{t+H})``, and each forecaster predicts it from ``r_1 .. r_t`` only
(the history before the period warms the EWMA up; nothing after ``t`` is read). Settlements are
counted as they are: SOL's 2 h settlements of Nov 2022 count one each.

Forecasters (``models/funding_forecast.py``):
- ``ewma_shrunk``: EWMA (half-life ``--half-life``) shrunk towards the long-run level ``mu`` with
  reversion half-life ``--reversion-half-life``:
  ``mu + (m_t - mu) (1 - phi^H) / (H ln(1/phi))``, ``phi = 2^(-1/T)``. Its defaults (L = 21, T = 90
  settlements, i.e. 7 and 30 days) were fixed before any evaluation was run. ``mu`` is per
  settlement at the series' own spacing, built as the tool builds it: ``--long-run`` (default
  1e-4 = 0.01 %/8 h) is per 8 h settlement and ``mu = long_run x h / 8`` with ``h`` the spacing at
  the origin (``models.funding_forecast.long_run_rate_per_settlement``; ``h`` measured as a replay
  measures it, the median of the last five gaps, ``scenarios.funding_run.settlement_hours``), so a
  4 h series shrinks to 5e-5 per settlement, the same 3e-4 a day;
- ``ewma_tuned`` (with ``--tune``): the same form with (L, T) picked per horizon from a small grid by
  the pooled MAE over every symbol's settlements *before* the evaluation period (walk-forward);
- ``ewma``: the EWMA alone (no shrinkage, T = inf);
- ``last_rate``: the latest settlement; ``zero``: 0; ``const_mu``: the long-run level ``mu`` alone
  (per settlement at the series' spacing, as above).

Figures: MAE and RMSE of forecast - realised, in bp per settlement (1 bp/settlement = 1e-4 per
settlement, about 11 %/yr at three settlements a day); ``n`` origins and ``n/H``, the number of
non-overlapping windows (the origins overlap, so the errors are autocorrelated: read small
differences at H = 90 with care). ``all`` pools every symbol's origins.

Run: ``python benchmarks/funding_forecast.py [--data DIR] [--start 2023-01-01] [--end 2025-06-30]
[--horizons 3,21,90] [--half-life 21] [--reversion-half-life 90] [--long-run 1e-4] [--tune]
[--symbols BTC,ETH] [--json] [--out benchmarks/results/funding_forecast.md]``. Without the data
folder (``--data``, ``FBR_DATA_DIR`` or ``../shared/data``) it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.data_layout import FUNDING_FOLDER  # noqa: E402
from models.funding_forecast import (  # noqa: E402
    DEFAULT_LONG_RUN_RATE,
    LONG_RUN_RATE_HOURS,
    EwmaShrinkForecaster,
    FundingForecaster,
    LastRateForecaster,
    ZeroForecaster,
    long_run_rate_per_settlement,
    realised_mean_path,
)
from models.io import default_data_dir, load_funding  # noqa: E402
from scenarios.funding_run import settlement_hours  # noqa: E402

BP = 1e4
TUNE_HALF_LIVES = (1.0, 2.0, 3.0, 6.0, 9.0, 21.0, 63.0)
TUNE_REVERSION = (3.0, 7.0, 21.0, 45.0, 90.0, 270.0, math.inf)
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "funding_forecast.md"


@dataclass(frozen=True)
class ConstantForecaster:
    """Baseline: the long-run level ``mu`` at every horizon."""

    rate: float = DEFAULT_LONG_RUN_RATE
    name: ClassVar[str] = "const_mu"

    def level_path(self, rates: np.ndarray) -> np.ndarray:
        """``mu`` everywhere."""
        return np.full(np.asarray(rates).shape, self.rate)

    def mean_rate_path(self, rates: np.ndarray, horizon: float) -> np.ndarray:
        """``mu`` everywhere."""
        return self.level_path(rates)


@dataclass(frozen=True)
class Named:
    """A forecaster under a table label: ``make(mu)`` builds it for the long-run level ``mu``
    (fraction per settlement of the series it reads, :func:`forecast_path`)."""

    label: str
    make: Callable[[float], FundingForecaster]


def shrunk(half_life: float, reversion_half_life: float) -> Callable[[float], FundingForecaster]:
    """``mu -> EwmaShrinkForecaster(L, T, mu)`` (half-lives in settlements)."""
    def make(mu: float) -> FundingForecaster:
        return EwmaShrinkForecaster(half_life=half_life, reversion_half_life=reversion_half_life,
                                    long_run_rate=mu)
    return make


def series_hours(rates: pd.Series) -> np.ndarray:
    """The series' own spacing at each settlement (hours, to the minute): the median of its last
    five gaps up to there, as a replay measures it (``scenarios.funding_run.settlement_hours``);
    ``LONG_RUN_RATE_HOURS`` (8 h) before its second settlement."""
    times = pd.DatetimeIndex(rates.index).as_unit("ns").asi8
    hours = settlement_hours(times, np.ones((times.size, 1), dtype=bool))[:, 0]
    return np.where(np.isfinite(hours), np.round(hours * 60.0) / 60.0, LONG_RUN_RATE_HOURS)


def forecast_path(model: Named, rates: pd.Series, horizon: int, long_run_8h: float) -> np.ndarray:
    """The forecast mean rate over the next ``horizon`` settlements at every origin (fraction per
    settlement), each from ``model`` built with the long-run level per settlement at the origin's
    spacing h (:func:`series_hours`): ``long_run_8h`` x h / 8, as the tool scales a book's 8 h
    level (``models.funding_forecast.long_run_rate_per_settlement``). Causal: the spacing and the
    forecast at origin t read settlements up to t only."""
    r = rates.to_numpy(dtype=float)
    hours = series_hours(rates)
    out = np.empty(r.size)
    for h in np.unique(hours):
        at = hours == h
        mu = long_run_rate_per_settlement(long_run_8h, float(h))
        out[at] = model.make(mu).mean_rate_path(r, horizon)[at]
    return out


@dataclass(frozen=True)
class Errors:
    """MAE and RMSE (fraction per settlement) over ``n`` origins."""

    n: int
    mae: float
    rmse: float


def _errors(err: np.ndarray) -> Errors:
    if err.size == 0:
        return Errors(0, float("nan"), float("nan"))
    return Errors(int(err.size), float(np.mean(np.abs(err))), float(np.sqrt(np.mean(err**2))))


def load_symbol_rates(data_dir: Path, symbols: list[str] | None) -> dict[str, pd.Series]:
    """Each symbol's settlements (fraction per settlement), sorted, missing ones dropped."""
    folder = data_dir / FUNDING_FOLDER
    names = symbols or sorted(p.name.split(".")[0] for p in folder.iterdir() if p.name.endswith(".csv.gz"))
    frame = load_funding(data_dir, names)
    return {s: frame[s].dropna().astype(float) for s in names}


def origin_mask(index: pd.DatetimeIndex, horizon: int, start: pd.Timestamp | None,
                 end: pd.Timestamp) -> np.ndarray:
    """Origins ``t`` with start <= time_t and time_{t+H} <= end (and ``t + H`` inside the data)."""
    n = len(index)
    ok = np.zeros(n, dtype=bool)
    if n <= horizon:
        return ok
    ok[: n - horizon] = np.asarray(index[horizon:] <= end)
    if start is not None:
        ok &= np.asarray(index >= start)
    return ok


def errors_for(model: Named, rates: pd.Series, horizon: int, start: pd.Timestamp | None,
               end: pd.Timestamp, long_run: float) -> np.ndarray:
    """Forecast (:func:`forecast_path`, ``long_run`` per 8 h settlement) minus realised mean over
    the next ``horizon`` settlements at every valid origin."""
    r = rates.to_numpy(dtype=float)
    mask = origin_mask(pd.DatetimeIndex(rates.index), horizon, start, end)
    target = realised_mean_path(r, horizon)
    fc = forecast_path(model, rates, horizon, long_run)
    return np.asarray((fc - target)[mask], dtype=float)


def tune(rates: dict[str, pd.Series], horizon: int, before: pd.Timestamp,
         long_run: float) -> tuple[tuple[float, float], float, int]:
    """((L, T), pooled MAE, origins) minimising the pooled MAE over origins whose whole window
    ends before ``before`` (``long_run`` per 8 h settlement, :func:`forecast_path`)."""
    end = before - pd.Timedelta(seconds=1)
    best: tuple[float, tuple[float, float], int] | None = None
    for hl, rev in itertools.product(TUNE_HALF_LIVES, TUNE_REVERSION):
        model = Named("ewma_tuned", shrunk(hl, rev))
        err = np.concatenate([errors_for(model, s, horizon, None, end, long_run)
                              for s in rates.values()])
        if err.size == 0:
            continue
        mae = float(np.mean(np.abs(err)))
        if best is None or mae < best[0]:
            best = (mae, (hl, rev), int(err.size))
    if best is None:
        raise SystemExit(f"funding_forecast: --tune: no settlements before {before.date()} to tune on")
    return best[1], best[0], best[2]


def evaluate(rates: dict[str, pd.Series], models: list[Named], horizon: int, start: pd.Timestamp,
             end: pd.Timestamp, long_run: float) -> dict[str, dict[str, Errors]]:
    """Per symbol (and ``all``, pooled) and per forecaster: the errors over the period
    (``long_run`` per 8 h settlement, :func:`forecast_path`)."""
    out: dict[str, dict[str, Errors]] = {}
    pooled: dict[str, list[np.ndarray]] = {m.label: [] for m in models}
    for sym, s in rates.items():
        row: dict[str, Errors] = {}
        for m in models:
            err = errors_for(m, s, horizon, start, end, long_run)
            pooled[m.label].append(err)
            row[m.label] = _errors(err)
        if next(iter(row.values())).n > 0:
            out[sym] = row
    out["all"] = {k: _errors(np.concatenate(v)) for k, v in pooled.items()}
    return out


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * BP:.3f}"


def table(results: dict[str, dict[str, Errors]], horizon: int, labels: list[str], metric: str) -> str:
    """A markdown table of one metric (``mae`` or ``rmse``, bp/settlement) per forecaster, and the winner."""
    head = ["symbol", "n", "n/H", *labels, "best"]
    lines = [f"{metric.upper()} (bp per settlement)", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for sym, row in results.items():
        n = next(iter(row.values())).n
        value = {k: float(getattr(row[k], metric)) for k in labels}
        best = min(labels, key=lambda k: value[k])
        cells = [sym, str(n), f"{n / horizon:.0f}", *(_fmt(value[k]) for k in labels), best]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="data folder (default: FBR_DATA_DIR or "
                    "../shared/data)")
    ap.add_argument("--symbols", default=None, help="comma-separated (default: every funding file)")
    ap.add_argument("--start", default="2023-01-01", help="first forecast origin (UTC date)")
    ap.add_argument("--end", default="2025-06-30T23:59:59", help="last realised settlement (UTC)")
    ap.add_argument("--horizons", default="3,21,90", help="settlements, comma-separated")
    ap.add_argument("--half-life", type=float, default=21.0, help="EWMA half-life (settlements)")
    ap.add_argument("--reversion-half-life", type=float, default=90.0,
                    help="half-life of a deviation from the long-run level (settlements; inf: none)")
    ap.add_argument("--long-run", type=float, default=DEFAULT_LONG_RUN_RATE,
                    help="long-run level (fraction per 8 h settlement; x h / 8 per settlement "
                    "of a series h hours apart)")
    ap.add_argument("--tune", action="store_true", help="also pick (L, T) per horizon on the data "
                    "before --start (walk-forward)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown results file")
    ap.add_argument("--no-write", action="store_true", help="do not write the results file")
    return ap.parse_args(argv)


def _utc(value: str) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation, print it, write the markdown file. Returns the exit code."""
    a = _args(argv)
    data = a.data if a.data is not None else default_data_dir()
    if data is None or not (Path(data) / FUNDING_FOLDER).is_dir():
        print("funding_forecast: skipped: no funding data folder (give --data, set FBR_DATA_DIR or "
              "provide ../shared/data/funding)")
        return 0
    t0 = time.perf_counter()
    symbols = [s.strip() for s in a.symbols.split(",")] if a.symbols else None
    rates = load_symbol_rates(Path(data), symbols)
    start, end = _utc(a.start), _utc(a.end)
    horizons = [int(h) for h in a.horizons.split(",")]
    report: dict[str, Any] = {"settings": {"start": str(start), "end": str(end), "half_life": a.half_life,
                                           "reversion_half_life": a.reversion_half_life,
                                           "long_run": a.long_run, "tune": a.tune},
                              "spans": {s: [str(v.index[0]), str(v.index[-1]), len(v)]
                                        for s, v in rates.items()},
                              "horizons": {}}
    md: list[str] = []
    for h in horizons:
        models = [Named("ewma_shrunk", shrunk(a.half_life, a.reversion_half_life))]
        tuned_note = ""
        if a.tune:
            (t_hl, t_rev), tmae, tn = tune(rates, h, start, a.long_run)
            models.append(Named("ewma_tuned", shrunk(t_hl, t_rev)))
            tuned_note = (f"ewma_tuned: L = {t_hl:g}, T = {t_rev:g} "
                          f"(pooled MAE {tmae * BP:.3f} bp on {tn} origins before {start.date()})")
        models += [Named("ewma", shrunk(a.half_life, math.inf)),
                   Named("last_rate", lambda _mu: LastRateForecaster()),
                   Named("zero", lambda _mu: ZeroForecaster()),
                   Named("const_mu", ConstantForecaster)]
        labels = [m.label for m in models]
        res = evaluate(rates, models, h, start, end, a.long_run)
        report["horizons"][str(h)] = {"tuned": tuned_note, "results": {
            sym: {k: {"n": e.n, "mae": e.mae, "rmse": e.rmse} for k, e in row.items()}
            for sym, row in res.items()}}
        md += [f"### H = {h} settlements", ""] + ([tuned_note, ""] if tuned_note else [])
        md += [table(res, h, labels, "mae"), "", table(res, h, labels, "rmse"), ""]
    elapsed = time.perf_counter() - t0
    command = "python benchmarks/funding_forecast.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        print("\n".join(md))
        print(f"({elapsed:.1f} s)")
    if not a.no_write:
        head = [
            "# Funding forecasts out of sample (Binance USD-M perpetuals)", "",
            f"Command: `{command.strip()}`", "",
            f"Forecast origins from {start} to the last one whose H settlements end by {end}; the "
            f"history before warms the EWMA up. MAE and RMSE of forecast minus the realised mean "
            f"rate over the next H settlements, in bp per settlement (1e-4). ewma_shrunk: L = "
            f"{a.half_life:g}, T = {a.reversion_half_life:g} settlements, mu = {a.long_run:g} per "
            f"8 h settlement (x h / 8 per settlement of a series h hours apart). "
            "n/H: non-overlapping windows.", "",
            "Spans: " + "; ".join(f"{s} {v.index[0].date()}..{v.index[-1].date()} ({len(v)})"
                                  for s, v in rates.items()), ""]
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text("\n".join(head + md) + "\n")
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
