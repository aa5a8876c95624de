"""One self-contained HTML report of backtests (plotly, JS inlined: opens offline), plus PNGs.

Sections: a headline table of :func:`scenarios.metrics.compute_metrics` per policy, then one chart
each for NAV, effective weights vs targets (a dropdown picks the policy; the optimised one is
shown first), rolling realised tracking error, cumulative costs by kind, margin utilisation with
liquidations marked and the tracking-error vs total-cost frontier. A "SYNTHETIC DATA" banner is
shown when a label says synthetic (or a result is marked synthetic).

Every chart is first described as a :class:`Chart` (plain series), then drawn with plotly for the
HTML and, when asked, with matplotlib (Agg) as one PNG per chart, so both show the same numbers.
Output is deterministic: fixed div ids, no time stamps but the labels passed in, and series in the
mapping's order, so the same results give byte-identical HTML.

Defensive about the inputs: a chart's series are skipped when a column is missing (the backtest's
frames may grow or shrink), and the table lists the metrics that exist (known ones first, in a
fixed order, then any other numeric field of ``BacktestMetrics``).
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from scenarios.backtest_result import BacktestResult
from scenarios.metrics import BacktestMetrics, book_returns, compute_metrics, ideal_returns, steps_per_year

#: Rolling window (steps) of the realised tracking-error chart.
TE_WINDOW = 30
#: Colour per policy, in the results' order (cycled).
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")
#: Colour per asset in the weights chart (cycled).
ASSET_PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6",
                 "#9d755d", "#bab0ac", "#eeca3b")
#: Cost kinds of the cumulative-cost chart: the step columns summed for each (missing ones skipped).
COST_KINDS: dict[str, tuple[str, ...]] = {
    "fees": ("fee_spot", "fee_futures", "sweep_fees"),
    "slippage": ("slippage_spot", "slippage_futures"),
    "funding": ("funding",),
    "penalties": ("liquidation_penalty",),
}

Dash = Literal["solid", "dash", "dot", "dashdot"]
Mode = Literal["lines", "markers", "markers+text"]
COST_DASH: dict[str, Dash] = {"fees": "solid", "slippage": "dash", "funding": "dot", "penalties": "dashdot"}

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


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`render_report` wrote: the HTML file and the PNGs (one per chart, chart order)."""

    html: Path
    pngs: tuple[Path, ...] = field(default=())


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


def _is_synthetic(labels: Sequence[str]) -> bool:
    """True when a label says the data are synthetic (the loaders label their source)."""
    return any("synthetic" in str(label).lower() for label in labels)


def _default_policy(names: Sequence[str]) -> str:
    """The optimised policy when there is one, else the first."""
    for n in names:
        if "optim" in n.lower():
            return n
    return names[0]


def _metrics(results: Mapping[str, BacktestResult]) -> dict[str, BacktestMetrics | None]:
    out: dict[str, BacktestMetrics | None] = {}
    for name, res in results.items():
        try:
            out[name] = compute_metrics(res)
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
    """Annual total cost in bps of mean NAV: fees (with slippage) + funding + penalties (a
    ``total_cost_bps`` field of the metrics, when it has one, wins)."""
    own = _metric(m, "total_cost_bps")
    if math.isfinite(own):
        return own
    parts = [_metric(m, k) for k in ("fees_bps", "funding_bps", "penalty_bps")]
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
            total = res.steps[present].astype(float).sum(axis=1).cumsum()
            if kind == "penalties" and not np.any(total.to_numpy() != 0):
                continue  # no liquidation: no line
            series.append(Trace(f"{name}: {kind}", _times(total.index), _finite(total), _color(i),
                                 dash=COST_DASH.get(kind, "solid")))
    return Chart("costs", "Cumulative costs by kind", "time (UTC)", "USD (cumulative, > 0 is a cost)",
                 tuple(series), note="solid: fees, dashed: slippage, dotted: funding (negative: received)")


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
                 note="one point per policy; cost = fees + slippage + funding + liquidation penalties")


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


# ---------------------------------------------------------------------------------------------
# Metrics table

Fmt = Callable[[float], str]


def _no_minus_zero(text: str) -> str:
    """'-0.0' and the like (a tiny negative rounded to zero) read as '0.0'."""
    return text[1:] if text.startswith("-") and not any(ch in "123456789" for ch in text) else text


def _pct(v: float) -> str:
    return _no_minus_zero(f"{100 * v:.2f}%")


def _bps(v: float) -> str:
    return _no_minus_zero(f"{v:.1f}")


def _num(v: float) -> str:
    return _no_minus_zero(f"{v:.3g}")


def _int(v: float) -> str:
    return f"{int(v)}"


#: Known metrics: (field, header, formatter), in table order.
KNOWN_METRICS: tuple[tuple[str, str, Fmt], ...] = (
    ("tracking_error", "tracking error", _pct),
    ("exposure_tracking_error", "exposure TE", _pct),
    ("total_return", "total return", _pct),
    ("annual_return", "annual return", _pct),
    ("volatility", "volatility", _pct),
    ("max_drawdown", "max drawdown", _pct),
    ("fees_bps", "fees + slippage bps/yr", _bps),
    ("slippage_bps", "of which slippage bps/yr", _bps),
    ("funding_bps", "funding bps/yr", _bps),
    ("penalty_bps", "liq. penalty bps/yr", _bps),
    ("turnover", "turnover /yr", _num),
    ("peak_margin_ratio", "peak margin use", _pct),
    ("liquidations", "liquidations", _int),
    ("years", "years", _num),
)


def _metric_columns(metrics: Mapping[str, BacktestMetrics | None]) -> list[tuple[str, str, Fmt]]:
    present: list[str] = []
    for m in metrics.values():
        if m is not None and dataclasses.is_dataclass(m):
            present = [f.name for f in dataclasses.fields(m)]
            break
    if not present:
        return []
    known = {k for k, _, _ in KNOWN_METRICS}
    cols = [c for c in KNOWN_METRICS if c[0] in present]
    cols.append(("total_cost_bps", "total cost bps/yr", _bps))
    for name in present:
        if name in known or name == "total_cost_bps":
            continue
        sample = next((getattr(m, name) for m in metrics.values() if m is not None), None)
        if isinstance(sample, bool | int | float | np.floating | np.integer):
            cols.append((name, name.replace("_", " "), _num))
    return cols


def _table_html(metrics: Mapping[str, BacktestMetrics | None]) -> str:
    cols = _metric_columns(metrics)
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in cols)
    rows = []
    for name, m in metrics.items():
        cells = []
        for key, _, fmt in cols:
            v = total_cost_bps(m) if key == "total_cost_bps" else _metric(m, key)
            cells.append(f"<td>{html.escape(fmt(v)) if math.isfinite(v) else '&ndash;'}</td>")
        rows.append(f"<tr><th class='policy'>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return (f"<table class='metrics'><thead><tr><th>policy</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


# ---------------------------------------------------------------------------------------------
# plotly


def _plotly_figure(chart: Chart) -> Any:
    import plotly.graph_objects as go  # type: ignore[import-untyped]

    fig = go.Figure()
    groups = list(chart.groups)
    for s in chart.series:
        visible = s.group is None or s.group == chart.default_group
        kw: dict[str, Any] = {"x": list(s.x), "y": list(s.y), "name": s.name, "mode": s.mode,
                              "visible": visible, "legendgroup": s.name}
        if s.mode == "lines":
            kw["line"] = {"color": s.color, "dash": s.dash}
        else:
            kw["marker"] = {"color": s.color, "symbol": s.symbol, "size": 10 if s.mode == "markers" else 12}
        if s.text is not None:
            kw["text"] = list(s.text)
            kw["textposition"] = "top center"
        fig.add_trace(go.Scatter(**kw))
    for y, label in chart.hlines:
        fig.add_hline(y=y, line={"color": "#888", "dash": "dot"}, annotation_text=label,
                      annotation_position="top left")
    layout: dict[str, Any] = {
        "title": {"text": chart.title + (f" — {chart.default_group}" if chart.default_group else "")},
        "xaxis": {"title": {"text": chart.xlabel}},
        "yaxis": {"title": {"text": chart.ylabel}, "tickformat": ".1%" if chart.percent else None},
        "template": "plotly_white",
        "height": 380,
        "margin": {"l": 70, "r": 30, "t": 60, "b": 50},
        "legend": {"orientation": "v"},
    }
    if len(groups) > 1:
        buttons = []
        for g in groups:
            vis = [s.group is None or s.group == g for s in chart.series]
            buttons.append({"label": g, "method": "update",
                            "args": [{"visible": vis}, {"title.text": f"{chart.title} — {g}"}]})
        layout["updatemenus"] = [{"buttons": buttons, "direction": "down", "x": 0.6, "xanchor": "left",
                                  "y": 1.2, "yanchor": "top", "showactive": True,
                                  "active": groups.index(chart.default_group)
                                  if chart.default_group in groups else 0}]
    fig.update_layout(**layout)
    return fig


def _chart_html(chart: Chart) -> str:
    fig = _plotly_figure(chart)
    div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=chart.div_id,
                      config={"displaylogo": False, "responsive": True})
    note = f"<p class='note'>{html.escape(chart.note)}</p>" if chart.note else ""
    empty = ("<p class='note'>no data for this chart</p>" if not chart.series else "")
    return f"<section class='chart' data-chart='{chart.key}'>{div}{note}{empty}</section>"


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    return str(get_plotlyjs())


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222}
h1{margin:0 0 8px 0}
.banner{background:#b00020;color:#fff;font-weight:bold;font-size:20px;padding:10px 16px;
  margin:8px 0 16px 0;border-radius:4px;letter-spacing:1px}
.labels span{display:inline-block;background:#eef;border:1px solid #ccd;border-radius:3px;
  padding:2px 8px;margin:0 6px 6px 0;font-size:13px}
table.metrics{border-collapse:collapse;font-size:13px;margin:12px 0 24px 0}
table.metrics th,table.metrics td{border:1px solid #ddd;padding:4px 8px;text-align:right}
table.metrics thead th{background:#f4f4f4}
table.metrics th.policy{text-align:left}
.note{color:#666;font-size:12px;margin:0 0 24px 70px}
"""


def report_html(results: Mapping[str, BacktestResult], *, title: str = "fbr backtest",
                labels: Sequence[str] = (), charts: Sequence[Chart] | None = None,
                metrics: Mapping[str, BacktestMetrics | None] | None = None) -> str:
    """The report as one HTML string (plotly.js inlined once)."""
    m = metrics if metrics is not None else _metrics(results)
    chs = list(charts) if charts is not None else build_charts(results, metrics=m)
    banner = ("<div class='banner' id='fbr-synthetic-banner'>SYNTHETIC DATA — generated prices, "
              "funding and spreads; not market history</div>" if _is_synthetic(labels) else "")
    chips = "".join(f"<span>{html.escape(str(label))}</span>" for label in labels)
    manifest = json.dumps([c.div_id for c in chs])
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        f"<meta name='fbr-charts' content='{html.escape(manifest)}'>",
        f"<style>{CSS}</style>",
        f"<script type='text/javascript'>{_plotly_js()}</script>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        banner,
        f"<div class='labels'>{chips}</div>" if chips else "",
        "<h2>Headline metrics</h2>",
        _table_html(m),
        "<p class='note' style='margin-left:0'>costs in bps of mean NAV per year; turnover: gross "
        "traded notional / mean NAV per year; peak margin use: max maintenance / collateral</p>",
        *(_chart_html(c) for c in chs),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


# ---------------------------------------------------------------------------------------------
# matplotlib


def write_pngs(charts: Sequence[Chart], png_dir: Path, *, title: str = "") -> tuple[Path, ...]:
    """One PNG per chart (``<key>.png`` in ``png_dir``); selectable charts show their default group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    png_dir.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    dash = {"solid": "-", "dash": "--", "dot": ":", "dashdot": "-."}
    marker = {"circle": "o", "x": "x"}
    for chart in charts:
        fig, ax = plt.subplots(figsize=(11, 4.6), dpi=100)
        try:
            for s in chart.series:
                if s.group is not None and s.group != chart.default_group:
                    continue
                if s.mode == "lines":
                    ax.plot(list(s.x), list(s.y), color=s.color, linestyle=dash[s.dash], label=s.name,
                            linewidth=1.4)
                else:
                    ax.scatter(list(s.x), list(s.y), color=s.color, marker=marker.get(s.symbol, "o"),
                               s=60, label=s.name, zorder=3)
                    for x, y, t in zip(s.x, s.y, s.text or (), strict=False):
                        ax.annotate(t, (x, y), textcoords="offset points", xytext=(0, 8), ha="center",
                                    fontsize=8)
            for y, label in chart.hlines:
                ax.axhline(y, color="#888", linestyle=":", linewidth=1)
                ax.annotate(label, (0.0, y), xycoords=("axes fraction", "data"), fontsize=8,
                            color="#666", xytext=(4, 3), textcoords="offset points")
            sub = f" — {chart.default_group}" if chart.default_group else ""
            ax.set_title(f"{title}: {chart.title}{sub}" if title else chart.title + sub, fontsize=11)
            ax.set_xlabel(chart.xlabel)
            ax.set_ylabel(chart.ylabel)
            if chart.percent:
                ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8, loc="best")
            if not chart.series:
                ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
            if chart.xlabel.startswith("time"):
                fig.autofmt_xdate()
            fig.tight_layout()
            path = png_dir / f"{chart.key}.png"
            fig.savefig(path, format="png", metadata={"Software": None})
            out.append(path)
        finally:
            plt.close(fig)
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Entry points


def render_report(results: Mapping[str, BacktestResult], path: Path, *, title: str = "fbr backtest",
                  labels: Sequence[str] = (), png_dir: Path | None = None,
                  te_window: int = TE_WINDOW) -> ReportFiles:
    """Write the HTML report to ``path`` (and the PNGs to ``png_dir`` when given); say what was
    written. ``results``: policy label -> result, in display order."""
    if not results:
        raise ValueError("write_report needs at least one backtest result")
    path = Path(path)
    metrics = _metrics(results)
    charts = build_charts(results, te_window=te_window, metrics=metrics)
    text = report_html(results, title=title, labels=labels, charts=charts, metrics=metrics)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    pngs = write_pngs(charts, Path(png_dir), title=title) if png_dir is not None else ()
    return ReportFiles(html=path, pngs=pngs)


def write_report(results: Mapping[str, BacktestResult], path: Path, *, title: str = "fbr backtest",
                 labels: Sequence[str] = (), png_dir: Path | None = None) -> Path:
    """Write one self-contained HTML report (and, with ``png_dir``, one PNG per chart, named
    ``<chart key>.png``; :func:`render_report` returns their paths too). Returns ``path``."""
    return render_report(results, path, title=title, labels=labels, png_dir=png_dir).html

