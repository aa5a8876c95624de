"""Drawing :class:`~scenarios.report_charts.Chart` descriptions: plotly figures and HTML sections
(with the page's CSS and the inlined plotly.js) and matplotlib (Agg) PNGs, one per chart.

Both renderers draw the same series, so the HTML and the PNGs show the same numbers. Output is
deterministic: fixed div ids (``fbr-chart-<key>``), PNGs without time stamps. Percent charts take
fractions and show them as %. plotly and matplotlib are imported only when drawing.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scenarios.report_charts import Chart

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
