"""The dashboard's charts: plotly figures as HTML fragments (plotly.js itself is served once, from
the installed plotly package, at ``/static/plotly.js``). Weights and TE in percent, money in USD.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go  # type: ignore[import-untyped]
import plotly.io as pio  # type: ignore[import-untyped]

from fbr.web.journal_rows import FundingRow

LAYOUT: dict[str, Any] = {"margin": {"l": 50, "r": 20, "t": 40, "b": 40}, "height": 320,
                          "template": "plotly_white", "legend": {"orientation": "h"}}


def fragment(fig: go.Figure, name: str) -> str:
    """The figure as a ``<div>`` plus its drawing script; ``name`` becomes the div's id."""
    fig.update_layout(**LAYOUT)
    html: str = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"chart-{name}",
                            config={"displayModeBar": False, "responsive": True})
    return html


def weights_chart(weights: Mapping[str, float], targets: Mapping[str, float]) -> str:
    """Effective weights against targets (percent of the base), one bar pair per asset."""
    assets = list(targets)
    fig = go.Figure([go.Bar(name="effective", x=assets, y=[100 * weights[a] for a in assets]),
                     go.Bar(name="target", x=assets, y=[100 * targets[a] for a in assets])])
    fig.update_layout(title="Effective weights vs targets (%)", barmode="group")
    return fragment(fig, "weights")


def bars_chart(name: str, title: str, values: Mapping[str, float]) -> str:
    """One bar per key (e.g. the plan's trades in USD by contract)."""
    fig = go.Figure([go.Bar(x=list(values), y=list(values.values()))])
    fig.update_layout(title=title)
    return fragment(fig, name)


def lines_chart(name: str, title: str, x: Sequence[str],
                series: Mapping[str, Sequence[float | None]]) -> str:
    """One line per series over ``x`` (times)."""
    fig = go.Figure([go.Scatter(x=list(x), y=list(y), mode="lines+markers", name=label)
                     for label, y in series.items()])
    fig.update_layout(title=title)
    return fragment(fig, name)


def pct(x: float | None) -> float | None:
    """A fraction in percent (None stays None: a gap in the line)."""
    return None if x is None else 100.0 * float(x)


def cumulative(rows: Sequence[FundingRow]) -> list[float]:
    """Running sum of ``amount`` (USD)."""
    out, total = [], 0.0
    for r in rows:
        total += float(r["amount"])
        out.append(total)
    return out
