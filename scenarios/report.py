"""One self-contained HTML report of backtests (plotly, JS inlined: opens offline), plus PNGs.

Sections: a headline table of :func:`scenarios.metrics.compute_metrics` per policy, then one chart
each for NAV, effective weights vs targets (a dropdown picks the policy; the optimised one is
shown first), rolling realised tracking error, cumulative costs by kind, margin utilisation with
liquidations marked and the tracking-error vs total-cost frontier. A "SYNTHETIC DATA" banner is
shown when a label says synthetic (or a result is marked synthetic).

Every chart is first described as a :class:`~scenarios.report_charts.Chart` (plain series,
:mod:`scenarios.report_charts`), then drawn with plotly for the HTML and, when asked, with
matplotlib (Agg) as one PNG per chart (:mod:`scenarios.report_render`), so both show the same
numbers. This module writes the page: the metrics table (costs in bps of mean NAV per year, rates
as %), the banner and labels, and the files.
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

import numpy as np

from scenarios.backtest_result import BacktestResult
from scenarios.metrics import STABLECOIN_YIELD, BacktestMetrics
from scenarios.report_charts import TE_WINDOW, Chart, _metric, _metrics, build_charts, total_cost_bps
from scenarios.report_render import CSS, _chart_html, _plotly_js, write_pngs


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`render_report` wrote: the HTML file and the PNGs (one per chart, chart order)."""

    html: Path
    pngs: tuple[Path, ...] = field(default=())


def _is_synthetic(labels: Sequence[str]) -> bool:
    """True when a label says the data are synthetic (the loaders label their source)."""
    return any("synthetic" in str(label).lower() for label in labels)


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
# Entry points


def render_report(results: Mapping[str, BacktestResult], path: Path, *, title: str = "fbr backtest",
                  labels: Sequence[str] = (), png_dir: Path | None = None,
                  te_window: int = TE_WINDOW, reserve_yield: float = STABLECOIN_YIELD) -> ReportFiles:
    """Write the HTML report to ``path`` (and the PNGs to ``png_dir`` when given); say what was
    written. ``results``: policy label -> result, in display order; ``reserve_yield``: the book's
    ``[costs] reserve_yield`` (a fraction a year), pricing the reserve's opportunity cost."""
    if not results:
        raise ValueError("write_report needs at least one backtest result")
    path = Path(path)
    metrics = _metrics(results, reserve_yield)
    charts = build_charts(results, te_window=te_window, metrics=metrics)
    text = report_html(results, title=title, labels=labels, charts=charts, metrics=metrics)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    pngs = write_pngs(charts, Path(png_dir), title=title) if png_dir is not None else ()
    return ReportFiles(html=path, pngs=pngs)


def write_report(results: Mapping[str, BacktestResult], path: Path, *, title: str = "fbr backtest",
                 labels: Sequence[str] = (), png_dir: Path | None = None,
                 reserve_yield: float = STABLECOIN_YIELD) -> Path:
    """Write one self-contained HTML report (and, with ``png_dir``, one PNG per chart, named
    ``<chart key>.png``; :func:`render_report` returns their paths too). Returns ``path``."""
    return render_report(results, path, title=title, labels=labels, png_dir=png_dir,
                         reserve_yield=reserve_yield).html

