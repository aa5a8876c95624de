"""The backtest report's charts as plain series (renderer-neutral :class:`Chart` descriptions).

One chart each for NAV (USD), effective weights vs targets (fractions of NAV; a dropdown picks the
policy, the optimised one shown first), rolling realised tracking error (annualised fraction over
:data:`TE_WINDOW` steps), cumulative costs by kind (USD), margin utilisation (maintenance /
collateral, a fraction) with liquidations marked and the tracking-error vs total-cost frontier
(cost in bps of mean NAV per year). :func:`build_charts` gives them in page order;
:mod:`scenarios.report_render` draws them with plotly and matplotlib.

Defensive about the inputs: a chart's series are skipped when a column is missing (the backtest's
frames may grow or shrink). Series keep the mapping's order, so the same results give the same
charts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from scenarios.backtest_result import BacktestResult
from scenarios.metrics import (
    STABLECOIN_YIELD,
    BacktestMetrics,
    book_returns,
    compute_metrics,
    ideal_returns,
    penalty_paid,
    steps_per_year,
)

#: Rolling window (steps) of the realised tracking-error chart.
TE_WINDOW = 30
#: Colour per policy, in the results' order (cycled).
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")
#: Colour per asset in the weights chart (cycled).
ASSET_PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6",
                 "#9d755d", "#bab0ac", "#eeca3b")
#: Cost kinds of the cumulative-cost chart: the step columns summed for each (missing ones skipped:
#: ``tax`` exists only when the replay charged taxes). Together they are what total_cost_bps counts.
COST_KINDS: dict[str, tuple[str, ...]] = {
    "fees": ("fee_spot", "fee_futures", "sweep_fees"),
    "slippage": ("slippage_spot", "slippage_futures"),
    "funding": ("funding",),
    "penalties": ("liquidation_penalty",),
    "tax": ("tax",),
}

Dash = Literal["solid", "dash", "dot", "dashdot"]
Mode = Literal["lines", "markers", "markers+text"]
COST_DASH: dict[str, Dash] = {"fees": "solid", "slippage": "dash", "funding": "dot", "penalties": "dashdot",
                              "tax": "dashdot"}

# ---------------------------------------------------------------------------------------------
# Chart descriptions (renderer-neutral)


@dataclass(frozen=True)
class Trace:
    """One line or set of markers. ``x``: timestamps (tz-naive UTC) or numbers. ``group``: the
    policy a selectable series belongs to (None: always shown)."""

    name: str
    x: Sequence[Any]
    y: Sequence[float]
    color: str
    mode: Mode = "lines"
    dash: Dash = "solid"
    symbol: str = "circle"
    text: Sequence[str] | None = None
    group: str | None = None


@dataclass(frozen=True)
class Chart:
    """A chart: ``key`` names its div (``fbr-chart-<key>``) and its PNG (``<key>.png``).
    ``groups``: selectable policies (a dropdown), ``default_group`` the one shown first.
    ``hlines``: (y, label) reference lines. ``percent``: y is a fraction shown as %."""

    key: str
    title: str
    xlabel: str
    ylabel: str
    series: tuple[Trace, ...]
    hlines: tuple[tuple[float, str], ...] = ()
    groups: tuple[str, ...] = ()
    default_group: str | None = None
    percent: bool = False
    note: str = ""

    @property
    def div_id(self) -> str:
        return f"fbr-chart-{self.key}"


# ---------------------------------------------------------------------------------------------
# Helpers


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _times(index: pd.Index) -> list[pd.Timestamp]:
    """Timestamps as tz-naive UTC (plotly and matplotlib both take them as they are)."""
    idx = pd.DatetimeIndex(index)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return list(idx)


def _finite(values: pd.Series | np.ndarray) -> list[float]:
    """Floats with inf turned into nan (a gap in the line)."""
    arr = np.asarray(values, dtype=float)
    return [float(v) if math.isfinite(v) else math.nan for v in arr]


def _column(result: BacktestResult, name: str) -> pd.Series | None:
    steps = result.steps
    return steps[name] if name in steps.columns else None


def _default_policy(names: Sequence[str]) -> str:
    """The optimised policy when there is one, else the first."""
    for n in names:
        if "optim" in n.lower():
            return n
    return names[0]


def _metrics(results: Mapping[str, BacktestResult], reserve_yield: float = STABLECOIN_YIELD
             ) -> dict[str, BacktestMetrics | None]:
    """compute_metrics per policy (None where it fails), the wallet's opportunity cost at
    ``reserve_yield`` (a fraction a year: the book's ``[costs] reserve_yield``)."""
    out: dict[str, BacktestMetrics | None] = {}
    for name, res in results.items():
        try:
            out[name] = compute_metrics(res, stablecoin_yield=reserve_yield)
        except (KeyError, ValueError, ZeroDivisionError, IndexError):
            out[name] = None
    return out


def _metric(m: BacktestMetrics | None, name: str) -> float:
    if m is None:
        return math.nan
    value = getattr(m, name, math.nan)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def total_cost_bps(m: BacktestMetrics | None) -> float:
    """Annual total cost in bps of mean NAV: fees (with slippage) + funding + penalties + sweep
    fees + tax (a ``total_cost_bps`` field of the metrics, when it has one, wins)."""
    own = _metric(m, "total_cost_bps")
    if math.isfinite(own):
        return own
    parts = [_metric(m, k) for k in ("fees_bps", "funding_bps", "penalty_bps", "sweep_cost_bps",
                                     "tax_bps")]
    parts = [p for p in parts if math.isfinite(p)]
    return float(sum(parts)) if parts else math.nan


# ---------------------------------------------------------------------------------------------
# Charts


def _equity_chart(results: Mapping[str, BacktestResult]) -> Chart:
    series = []
    for i, (name, res) in enumerate(results.items()):
        nav = _column(res, "nav")
        if nav is not None:
            series.append(Trace(name, _times(nav.index), _finite(nav), _color(i)))
    return Chart("equity", "Equity curve (NAV)", "time (UTC)", "NAV (USD)", tuple(series))


def _weights_chart(results: Mapping[str, BacktestResult]) -> Chart:
    names = list(results)
    default = _default_policy(names) if names else None
    series: list[Trace] = []
    for name, res in results.items():
        w = res.weights
        targets = res.targets
        x = _times(w.index)
        for j, asset in enumerate(w.columns):
            color = ASSET_PALETTE[j % len(ASSET_PALETTE)]
            series.append(Trace(f"{asset}", x, _finite(w[asset]), color, group=name))
            if asset in targets.index and len(x) > 0:
                t = float(targets[asset])
                series.append(Trace(f"{asset} target", [x[0], x[-1]], [t, t], color, dash="dash",
                                     group=name))
    return Chart("weights", "Effective weights vs targets", "time (UTC)", "weight", tuple(series),
                 groups=tuple(names), default_group=default, percent=True,
                 note="effective weight = (spot + futures exposure) / target base; dashed: target")


def _rolling_te_chart(results: Mapping[str, BacktestResult], window: int) -> Chart:
    series = []
    for i, (name, res) in enumerate(results.items()):
        try:
            diff = book_returns(res) - ideal_returns(res)
            per_year = steps_per_year(pd.DatetimeIndex(res.steps.index))
        except (KeyError, ValueError, IndexError):
            continue
        if len(diff) < 2 or not math.isfinite(per_year):
            continue
        w = max(2, min(window, len(diff)))
        te = diff.rolling(w, min_periods=w).std(ddof=1) * math.sqrt(per_year)
        series.append(Trace(name, _times(te.index), _finite(te), _color(i)))
    return Chart("tracking_error", f"Realised tracking error (rolling {window} steps, annualised)",
                 "time (UTC)", "tracking error", tuple(series), percent=True,
                 note="std of book return minus the ideal continuously rebalanced target return")


def _costs_chart(results: Mapping[str, BacktestResult]) -> Chart:
    series = []
    for i, (name, res) in enumerate(results.items()):
        for kind, cols in COST_KINDS.items():
            present = [c for c in cols if c in res.steps.columns]
            if not present:
                continue
            total = (penalty_paid(res.steps) if kind == "penalties"  # paid by the holder
                     else res.steps[present].astype(float).sum(axis=1)).cumsum()
            if kind == "penalties" and not np.any(total.to_numpy() != 0):
                continue  # no liquidation: no line
            series.append(Trace(f"{name}: {kind}", _times(total.index), _finite(total), _color(i),
                                 dash=COST_DASH.get(kind, "solid")))
    return Chart("costs", "Cumulative costs by kind", "time (UTC)", "USD (cumulative, > 0 is a cost)",
                 tuple(series), note="solid: fees (with collateral sweeps), dashed: slippage, dotted: "
                 "funding (negative: received), dash-dot: liquidation penalties paid and tax "
                 "(negative: a credit), when there are any")


def _margin_chart(results: Mapping[str, BacktestResult]) -> Chart:
    series = []
    for i, (name, res) in enumerate(results.items()):
        ratio = _column(res, "margin_ratio")
        if ratio is None:
            ratio = _column(res, "margin_ratio_end")
        if ratio is None:
            continue
        x = _times(ratio.index)
        y = _finite(ratio)
        series.append(Trace(name, x, y, _color(i)))
        liq = _column(res, "liquidated")
        if liq is not None:
            hit = np.asarray(liq, dtype=bool)
            if hit.any():
                series.append(Trace(f"{name}: liquidation", [t for t, h in zip(x, hit, strict=True) if h],
                                     [v for v, h in zip(y, hit, strict=True) if h], _color(i),
                                     mode="markers", symbol="x"))
    peak = max((v for s in series for v in s.y if math.isfinite(v)), default=0.0)
    note = "at the margin check, before the policy trades; x: liquidation"
    if peak >= 0.25:  # the liquidation line only when it does not flatten the curves
        hlines: tuple[tuple[float, str], ...] = ((1.0, "liquidation (maintenance = collateral)"),)
    else:
        hlines = ()
        note += f"; liquidation at 100% is off scale (peak {100 * peak:.2f}%)"
    return Chart("margin", "Margin utilisation (maintenance / collateral)", "time (UTC)",
                 "maintenance / collateral", tuple(series), hlines=hlines, percent=True, note=note)


def _frontier_chart(results: Mapping[str, BacktestResult],
                    metrics: Mapping[str, BacktestMetrics | None]) -> Chart:
    series = []
    for i, name in enumerate(results):
        m = metrics.get(name)
        x, y = total_cost_bps(m), _metric(m, "tracking_error")
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        series.append(Trace(name, [x], [y], _color(i), mode="markers+text", text=[name]))
    return Chart("frontier", "Tracking error vs total cost", "total cost (bps of NAV per year)",
                 "tracking error (annualised)", tuple(series), percent=True,
                 note="one point per policy; cost = exchange fees + slippage + collateral sweep fees "
                 "+ funding + liquidation penalties paid + tax")


def build_charts(results: Mapping[str, BacktestResult], *, te_window: int = TE_WINDOW,
                 metrics: Mapping[str, BacktestMetrics | None] | None = None) -> list[Chart]:
    """Every chart of the report, in page order."""
    m = metrics if metrics is not None else _metrics(results)
    return [
        _equity_chart(results),
        _weights_chart(results),
        _rolling_te_chart(results, te_window),
        _costs_chart(results),
        _margin_chart(results),
        _frontier_chart(results, m),
    ]

