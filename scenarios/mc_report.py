"""Monte Carlo report: one self-contained HTML file (plotly.js inlined once).

- a summary table per policy (``MonteCarloResult.summary``: mean and 5/50/95 % quantiles of
  tracking error, total cost, max drawdown, worst margin use; P(liquidation) with its standard
  error);
- a fan chart per policy (one panel each, shared y axis): the cross-path median of NAV / initial
  NAV per step, with the 25-75 % and 5-95 % bands shaded;
- histograms (one overlaid trace per policy, shared equal-width bins) of tracking error, total
  cost (bps of NAV per year), max drawdown and worst margin use over the K paths.

An unbounded figure (+inf: worst margin use of a path whose collateral was gone with positions
open) reads ``unbounded`` in the table (:func:`figure_text`, also used by the CLI table; ``-`` is a
missing value); a histogram cannot place it, so its title counts the unbounded paths per policy.

Generated paths are synthetic by construction: the page carries the SYNTHETIC banner.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scenarios.montecarlo import SUMMARY_METRICS, MonteCarloResult
from scenarios.report_charts import PALETTE
from scenarios.report_render import CSS, _plotly_js

#: Fan chart panels per row.
FAN_COLUMNS = 3
#: Most bins of a histogram: 2 sqrt(K) equal-width bins over all policies' values, in [10, 40].
HIST_BINS = 40
#: Histogram panels: (metrics column, title, x-axis label, shown as a percentage).
HISTOGRAMS = (("tracking_error", "Tracking error (annualised)", "tracking error", True),
              ("total_cost_bps", "Total cost", "bps of mean NAV per year", False),
              ("max_drawdown", "Max drawdown", "fall from peak NAV", True),
              ("peak_margin_ratio", "Worst margin use", "peak maintenance / collateral", True))
#: A +inf summary figure (a path whose collateral was gone), in the report and the CLI table.
UNBOUNDED = "unbounded"


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[k:k + 2], 16) for k in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def fan_figure(result: MonteCarloResult) -> Any:
    """One panel per policy (shared y axis, up to ``FAN_COLUMNS`` per row): the median of NAV /
    initial NAV across paths per step with shaded 25-75 % and 5-95 % bands (x: days)."""
    import plotly.graph_objects as go  # type: ignore[import-untyped]
    from plotly.subplots import make_subplots  # type: ignore[import-untyped]

    names = result.policies
    cols = min(len(names), FAN_COLUMNS)
    rows = -(-len(names) // cols)
    fig = make_subplots(rows=rows, cols=cols, shared_yaxes=True, subplot_titles=names,
                        horizontal_spacing=0.04, vertical_spacing=0.12)
    step_days = float(result.step / pd.Timedelta(days=1))
    days = (result.fan.index.to_numpy(dtype=float) * step_days).tolist()
    for i, name in enumerate(names):
        color = PALETTE[i % len(PALETTE)]
        q = result.fan[name]
        at = {"row": i // cols + 1, "col": i % cols + 1}
        for lo, hi, alpha in ((0.05, 0.95, 0.15), (0.25, 0.75, 0.3)):
            fig.add_trace(go.Scatter(x=days + days[::-1], y=list(q[lo]) + list(q[hi])[::-1],
                                     fill="toself", fillcolor=_rgba(color, alpha), line={"width": 0},
                                     hoverinfo="skip", showlegend=i == 0,
                                     legendgroup=f"band{lo}", name=f"{round(100 * lo)}-{round(100 * hi)} %"),
                          **at)
        fig.add_trace(go.Scatter(x=days, y=list(q[0.5]), mode="lines", line={"color": color},
                                 name="median", legendgroup="median", showlegend=i == 0), **at)
        fig.add_hline(y=1.0, line={"color": "#888", "dash": "dot", "width": 1}, **at)
    fig.update_xaxes(title_text="days")
    fig.update_yaxes(title_text="NAV / initial NAV", col=1)
    fig.update_layout(title={"text": "NAV fan per policy: median, 25-75 % and 5-95 % of paths"},
                      template="plotly_white", height=300 * rows + 120,
                      margin={"l": 70, "r": 30, "t": 90, "b": 50})
    return fig


def unbounded_note(result: MonteCarloResult, column: str) -> str:
    """The histogram's note on the paths it cannot draw: per policy, how many of its paths have an
    unbounded (+/-inf) ``column`` ("" when none)."""
    parts = []
    for name in result.policies:
        v = result.metrics.loc[result.metrics["policy"] == name, column].to_numpy(dtype=float)
        n = int(np.isinf(v).sum())
        if n:
            parts.append(f"{html.escape(name)}: {n} of {len(v)} paths")
    return f"unbounded, not drawn: {'; '.join(parts)}" if parts else ""


def histogram_figure(result: MonteCarloResult, column: str, title: str, xlabel: str,
                     percent: bool) -> Any:
    """Overlaid histograms of one metric across paths, one trace per policy; the unbounded
    paths (no place on the axis) are counted in the title (:func:`unbounded_note`)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    note = unbounded_note(result, column)
    allv = result.metrics[column].to_numpy(dtype=float)
    allv = allv[np.isfinite(allv)]
    lo, hi = (float(allv.min()), float(allv.max())) if len(allv) else (0.0, 1.0)
    per_policy = len(allv) / max(len(result.policies), 1)
    n_bins = int(np.clip(round(2 * np.sqrt(per_policy)), 10, HIST_BINS))
    size = (hi - lo) / n_bins if hi > lo else 1.0
    bins = {"start": lo, "end": hi + size / 2, "size": size}
    for i, name in enumerate(result.policies):
        v = result.metrics.loc[result.metrics["policy"] == name, column].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        fig.add_trace(go.Histogram(x=v.tolist(), name=name, opacity=0.6, xbins=bins,
                                   autobinx=False, marker={"color": PALETTE[i % len(PALETTE)]}))
    fig.update_layout(barmode="overlay",
                      title={"text": f"{title}<br><sup>{note}</sup>" if note else title},
                      xaxis={"title": {"text": xlabel}, "tickformat": ".1%" if percent else None},
                      yaxis={"title": {"text": "paths"}}, template="plotly_white", height=340,
                      margin={"l": 70, "r": 30, "t": 80 if note else 60, "b": 50})
    return fig


def figure_text(v: float, percent: bool, *, sign: bool = True) -> str:
    """A summary figure as text, the same in the report and the CLI table: ``-`` when missing
    (NaN), ``unbounded`` (``-unbounded``) for +inf (-inf), else a percentage (``%`` unless
    ``sign`` is False) or a number."""
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return UNBOUNDED if v > 0 else f"-{UNBOUNDED}"
    if percent:
        return f"{100 * v:.2f}%" if sign else f"{100 * v:.2f}"
    return f"{v:,.1f}"


def summary_table_html(result: MonteCarloResult) -> str:
    """The per-policy summary as an HTML table (median [5 %, 95 %] per metric, P(liquidation))."""
    summ = result.summary()
    pct = {"tracking_error": True, "total_cost_bps": False, "max_drawdown": True,
           "peak_margin_ratio": True}
    head = "".join(f"<th>{html.escape(label)}<br>median [5%, 95%]</th>" for _c, label in SUMMARY_METRICS)
    rows = []
    for name, r in summ.iterrows():
        cells = "".join(
            f"<td>{figure_text(r[f'{c}_p50'], pct[c])} [{figure_text(r[f'{c}_p5'], pct[c])}, "
            f"{figure_text(r[f'{c}_p95'], pct[c])}]</td>" for c, _label in SUMMARY_METRICS)
        p, se = float(r["p_liquidation"]), float(r["p_liquidation_se"])
        rows.append(f"<tr><th class='policy'>{html.escape(str(name))}</th><td>{int(r['paths'])}</td>"
                    f"{cells}<td>{100 * p:.1f}% ± {100 * se:.1f}%</td></tr>")
    return ("<table class='metrics'><thead><tr><th class='policy'>policy</th><th>paths</th>"
            f"{head}<th>P(liquidation) ± s.e.</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def report_html(result: MonteCarloResult, *, title: str = "fbr Monte Carlo") -> str:
    """The report as one HTML string."""
    figs = [("fan", fan_figure(result))]
    figs += [(col, histogram_figure(result, col, t, x, p)) for col, t, x, p in HISTOGRAMS]
    charts = []
    for key, fig in figs:
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"mc-{key}",
                          config={"displaylogo": False, "responsive": True})
        charts.append(f"<section class='chart' data-chart='{key}'>{div}</section>")
    chips = "".join(f"<span>{html.escape(label)}</span>" for label in
                    (*result.labels, result.generator, result.engine, *result.held_notes()) if label)
    manifest = json.dumps([f"mc-{k}" for k, _ in figs])
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        f"<meta name='fbr-charts' content='{html.escape(manifest)}'>",
        f"<style>{CSS}</style>", f"<script type='text/javascript'>{_plotly_js()}</script>",
        "</head><body>", f"<h1>{html.escape(title)}</h1>",
        "<div class='banner' id='fbr-synthetic-banner'>SYNTHETIC PATHS — generated (resampled or "
        "simulated) prices and funding; not market history</div>",
        f"<div class='labels'>{chips}</div>",
        "<h2>Distributions over paths</h2>", summary_table_html(result),
        "<p class='note' style='margin-left:0'>tracking error annualised; costs in bps of mean NAV "
        "per year; worst margin use: peak maintenance / collateral on the path (unbounded: the "
        "collateral was gone with positions open); P(liquidation): share of paths with at least "
        "one liquidation</p>",
        *charts, "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_mc_report(result: MonteCarloResult, path: Path, *, title: str = "fbr Monte Carlo") -> Path:
    """Write :func:`report_html` to ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(result, title=title), encoding="utf-8")
    return path


__all__ = ["UNBOUNDED", "fan_figure", "figure_text", "histogram_figure", "report_html",
           "summary_table_html", "unbounded_note", "write_mc_report"]
