"""Unbounded figures in the Monte Carlo summary outputs. A path whose collateral was gone with
positions open has an infinite worst margin use (scenarios.metrics); the HTML report showed such a
quantile as "-" (the mark of a missing value) and its histograms dropped those paths with no note.

Hand-built per-path metrics (4 paths per policy), quantiles by linear interpolation at rank
q (n - 1) (scenarios.metrics.percentile):

- policy "a", worst margin use [0.1, 0.2, inf, inf] (paths 2 and 3 liquidated):
  p5 at rank 0.15: 0.1 + 0.15 x 0.1 = 0.115 -> 11.50 %; p50 at rank 1.5 (between 0.2 and inf) and
  p95 at rank 2.85 (between inf and inf) are unbounded;
- policy "b", worst margin use [0.1, 0.2, 0.3, 0.4]: p5 11.50 %, p50 25.00 %, p95 at rank 2.85:
  0.3 + 0.85 x 0.1 = 0.385 -> 38.50 %; its max drawdown is missing (NaN) on every path: "-".
"""

from __future__ import annotations

import math
import re

import pandas as pd

from scenarios.mc_report import histogram_figure, summary_table_html
from scenarios.montecarlo import MonteCarloResult

INF = math.inf


def _result() -> MonteCarloResult:
    rows = []
    margin = {"a": [0.1, 0.2, INF, INF], "b": [0.1, 0.2, 0.3, 0.4]}
    for name in ("a", "b"):
        for k in range(4):
            rows.append({"path": k, "policy": name, "tracking_error": 0.01, "total_cost_bps": 10.0,
                         "max_drawdown": 0.05 if name == "a" else math.nan,
                         "peak_margin_ratio": margin[name][k],
                         "liquidated": name == "a" and k >= 2})
    return MonteCarloResult(metrics=pd.DataFrame(rows), fan=pd.DataFrame())


def _cells(table: str, policy: str) -> list[str]:
    row = re.search(rf"<th class='policy'>{policy}</th>(.*?)</tr>", table)
    assert row is not None
    return re.findall(r"<td>([^<]*)</td>", row.group(1))


def test_report_table_shows_unbounded_not_missing() -> None:
    table = summary_table_html(_result())
    a, b = _cells(table, "a"), _cells(table, "b")
    # paths, tracking error, total cost, max drawdown, worst margin use, P(liquidation)
    assert a[0] == "4" and a[1] == "1.00% [1.00%, 1.00%]" and a[2] == "10.0 [10.0, 10.0]"
    assert a[3] == "5.00% [5.00%, 5.00%]"
    assert a[4] == "unbounded [11.50%, unbounded]"
    assert a[5].startswith("50.0% ±")  # 2 of 4 paths liquidated
    assert b[4] == "25.00% [11.50%, 38.50%]"
    assert b[3] == "- [-, -]"  # a missing figure keeps the missing mark


def test_margin_use_histogram_notes_the_unbounded_paths() -> None:
    res = _result()
    fig = histogram_figure(res, "peak_margin_ratio", "Worst margin use", "x", True)
    drawn = {tr.name: len(tr.x) for tr in fig.data}
    assert drawn == {"a": 2, "b": 4}  # the two unbounded paths of "a" have no place on the axis
    title = fig.layout.title.text
    assert title.startswith("Worst margin use")
    assert "unbounded, not drawn: a: 2 of 4 paths" in title
    assert "b:" not in title  # "b" has no unbounded path
    # 2 drawn + 2 counted in the title: all 4 paths of "a"
    assert drawn["a"] + 2 == 4


def test_histogram_without_unbounded_paths_has_the_plain_title() -> None:
    fig = histogram_figure(_result(), "tracking_error", "Tracking error", "x", True)
    assert fig.layout.title.text == "Tracking error"
    assert sum(len(tr.x) for tr in fig.data) == 8
