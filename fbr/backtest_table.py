"""The backtest comparison table of the CLI: one row per policy, its columns and their formats, split
across tables on a narrow console so that no number is folded or cut (80-column terminals).

Figures: TE, return, vol and max drawdown in %, fees, funding, tax and total cost in bp of the mean
NAV a year, turnover (a multiple of the mean NAV), peak margin ratio in %, liquidations a count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from rich.markup import escape

if TYPE_CHECKING:
    from rich.table import Table

    from fbr.backtest_summary import MetricValue


def _pct_cell(x: MetricValue, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * float(x):.{digits}f}"


def _num_cell(x: MetricValue, digits: int = 1) -> str:
    return "-" if x is None else f"{float(x):,.{digits}f}"


#: Comparison table: header, metrics key, formatter.
BACKTEST_COLUMNS: tuple[tuple[str, str, Callable[[MetricValue], str]], ...] = (
    ("TE %", "tracking_error", _pct_cell),
    ("return %", "total_return", _pct_cell),
    ("vol %", "volatility", _pct_cell),
    ("max DD %", "max_drawdown", _pct_cell),
    ("fees bp/yr", "fees_bps", _num_cell),
    ("funding bp/yr", "funding_bps", _num_cell),
    ("turnover", "turnover", lambda x: _num_cell(x, 2)),
    ("peak margin %", "peak_margin_ratio", _pct_cell),
    ("liquidations", "liquidations", lambda x: "-" if x is None else str(int(x))),
)


#: The tax columns, shown when a policy paid tax (``tax_bps`` non-zero): spot and futures tax and
#: the total cost (fees + funding + penalties + sweep costs + tax), bp of the mean NAV per year.
BACKTEST_TAX_COLUMNS: tuple[tuple[str, str, Callable[[MetricValue], str]], ...] = (
    ("tax bp/yr", "tax_bps", _num_cell),
    ("total cost bp/yr", "total_cost_bps", _num_cell),
)


#: The comparison table's columns split in two tables (three with the tax columns) below this
#: console width (80-column terminals): no number is folded or cut.
BACKTEST_NARROW_WIDTH = 110

#: With the tax columns, the table splits in two (performance and costs; turnover and margin)
#: below this console width.
BACKTEST_TAX_WIDTH = 150


def backtest_columns(metrics: Mapping[str, Mapping[str, MetricValue]]
                     ) -> tuple[tuple[str, str, Callable[[MetricValue], str]], ...]:
    """``BACKTEST_COLUMNS``, with ``BACKTEST_TAX_COLUMNS`` after the funding column when some
    policy's ``tax_bps`` is a non-zero number (the replay charged tax)."""
    taxed = any(m.get("tax_bps") not in (None, 0, 0.0) for m in metrics.values())
    if not taxed:
        return BACKTEST_COLUMNS
    at = 1 + next(i for i, c in enumerate(BACKTEST_COLUMNS) if c[1] == "funding_bps")
    return (*BACKTEST_COLUMNS[:at], *BACKTEST_TAX_COLUMNS, *BACKTEST_COLUMNS[at:])


def backtest_table(metrics: Mapping[str, Mapping[str, MetricValue]], title: str,
                   columns: tuple[tuple[str, str, Callable[[MetricValue], str]], ...] = BACKTEST_COLUMNS
                   ) -> Table:
    """One row per policy, the given ``columns`` (default ``BACKTEST_COLUMNS``)."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    t.add_column("policy", overflow="fold")
    for head, _, _ in columns:
        t.add_column(head, justify="right", overflow="fold", no_wrap=True)  # numbers kept whole
    for name, m in metrics.items():
        t.add_row(escape(name), *(fmt(m.get(key)) for _, key, fmt in columns))
    return t


def backtest_tables(metrics: Mapping[str, Mapping[str, MetricValue]], title: str, width: int
                    ) -> list[Table]:
    """:func:`backtest_table` with :func:`backtest_columns`, split on a console narrower than
    ``BACKTEST_NARROW_WIDTH`` in two (performance; costs and margin). With the tax columns: one
    table from ``BACKTEST_TAX_WIDTH``, two (performance and costs; turnover and margin) from
    ``BACKTEST_NARROW_WIDTH``, three below (performance; fees, funding, tax, total cost;
    turnover and margin)."""
    columns = backtest_columns(metrics)
    taxed = columns is not BACKTEST_COLUMNS
    if width >= (BACKTEST_TAX_WIDTH if taxed else BACKTEST_NARROW_WIDTH):
        return [backtest_table(metrics, title, columns)]
    if not taxed:
        half = 5  # TE, return, vol, max DD, fees | funding, turnover, peak margin, liquidations
        return [backtest_table(metrics, title, columns[:half]),
                backtest_table(metrics, f"{title} (continued)", columns[half:])]
    # TE .. max DD | fees .. total cost | turnover .. liquidations (the first two joined when wide)
    cuts = (0, 8, len(columns)) if width >= BACKTEST_NARROW_WIDTH else (0, 4, 8, len(columns))
    return [backtest_table(metrics, title if k == 0 else f"{title} (continued)",
                           columns[cuts[k]:cuts[k + 1]]) for k in range(len(cuts) - 1)]
