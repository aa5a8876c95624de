"""`fbr montecarlo`'s summary table renders an unbounded figure as the HTML report does:
"unbounded" (not "inf"), and a missing one as "-". Hand-built per-path metrics: policy "a" has
worst margin use [0.1, 0.2, inf, inf] over 4 paths, so p5 = 0.1 + 0.15 x 0.1 = 0.115 (11.50, the
column is in %), p50 (rank 1.5, next to inf) and p95 (rank 2.85) are unbounded; its max drawdown is
missing on every path. Policy "b" is unbounded on every path: "unbounded [unbounded, unbounded]",
which rich would read as a markup tag "[unbounded, unbounded]" and drop unless escaped."""

from __future__ import annotations

import math

import pandas as pd
from rich.console import Console

from fbr.montecarlo_cli import _summary_table
from scenarios.montecarlo import MonteCarloResult


def test_cli_table_shows_unbounded_like_the_report() -> None:
    margin = {"a": [0.1, 0.2, math.inf, math.inf], "b": [math.inf] * 4}
    rows = [{"path": k, "policy": name, "tracking_error": 0.01, "total_cost_bps": 10.0,
             "max_drawdown": math.nan, "peak_margin_ratio": margin[name][k],
             "liquidated": name == "b" or k >= 2} for name in ("a", "b") for k in range(4)]
    res = MonteCarloResult(metrics=pd.DataFrame(rows), fan=pd.DataFrame())
    console = Console(width=400, record=True, color_system=None)
    console.print(_summary_table(res, "t"))
    text = console.export_text()
    assert "unbounded [11.50, unbounded]" in text
    assert "unbounded [unbounded, unbounded]" in text
    assert "inf" not in text.replace("unbounded", "")
    assert "- [-, -]" in text  # the missing max drawdown
    assert "1.00 [1.00, 1.00]" in text and "10.0 [10.0, 10.0]" in text
