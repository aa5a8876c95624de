"""What a backtest run reports besides its numbers: labels, the span replayed, JSON-ready metrics.

``dated_mark_labels`` and ``risk_labels`` are lines for the CLI output, the JSON and the HTML
report's labels; ``actual_span``, ``span_notes`` and ``span_dict`` the steps actually replayed
(a ``data.end`` beyond the data runs over the span the data cover, and says so); ``metrics_dict``
one policy's ``scenarios.metrics.compute_metrics`` as JSON values, the reserve's opportunity cost at
the book's ``[costs] reserve_yield`` (``book_reserve_yield``). Times are UTC.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, NotRequired, TypedDict

import pandas as pd

from fbr.backtest_config import BacktestConfig
from fbr.backtest_risk import check_trailing_history, risk_lookahead, trailing_closes, utc
from models.data_layout import QUARTERLY_FOLDER
from models.instruments import ContractKind
from models.trailing_risk import RISK_REESTIMATE_DAYS

if TYPE_CHECKING:
    from scenarios.backtest_result import BacktestResult
    from scenarios.market_path import MarketPath

#: One JSON value of a metrics row.
MetricValue = float | int | str | bool | None


class SpanDict(TypedDict):
    """The steps actually replayed (ISO times, UTC) and the start/end asked for (None: not set)."""

    start: str
    end: str
    steps: int
    requested_start: str | None
    requested_end: str | None
    shorter_than_requested: bool


class BacktestSummary(TypedDict):
    """``fbr backtest --json``'s document (without ``status``): metrics per policy, the report
    written (None: none), the data labels, the span replayed, wall-clock timings per policy and
    the notes (both always there, empty when there are none: the README's keys); ``days`` for
    the demo's backtest."""

    policies: dict[str, dict[str, MetricValue]]
    report: str | None
    labels: list[str]
    span: SpanDict
    timings: dict[str, dict[str, MetricValue]]
    notes: list[str]
    days: NotRequired[int]


def dated_mark_labels(cfg: BacktestConfig, path: MarketPath) -> list[str]:
    """One label counting the dated contracts' marks by source on a data path (``build_path``,
    ``MarketPath.mark_source``), over the steps up to each contract's expiry: real Binance
    quarterly closes (some, at sub-daily steps, a close under a day old carried to the step's
    spot) vs modelled on the fitted basis term structure. None for synthetic paths and books
    without dated contracts."""
    source = path.mark_source
    if cfg.data.source != "data" or source is None:
        return []
    from scenarios.quarterly_basis import MODELLED, REAL, REAL_FFILL
    from scenarios.settlement import expiry_ns

    dated = [c for c in cfg.loaded.book.contracts
             if c.kind == ContractKind.DATED and c.symbol in source.columns]
    if not dated:
        return []
    index = pd.DatetimeIndex(source.index).tz_convert("UTC").as_unit("ns").asi8
    counts: dict[str, int] = {REAL: 0, REAL_FFILL: 0, MODELLED: 0}
    for c in dated:
        expiry = expiry_ns(c)
        live = index <= expiry if expiry is not None else slice(None)
        for label, n in source.loc[live, c.symbol].value_counts().items():
            counts[str(label)] = counts.get(str(label), 0) + int(n)
    real = counts[REAL] + counts[REAL_FFILL]
    carried = (f" ({counts[REAL_FFILL]} of them a close under a day old carried to the step's spot)"
               if counts[REAL_FFILL] else "")
    folder = (cfg.data.data_dir / QUARTERLY_FOLDER if cfg.data.data_dir is not None
              else QUARTERLY_FOLDER)
    return [f"dated contract marks ({', '.join(c.symbol for c in dated)}, steps up to expiry): "
            f"{real} real{carried} from the quarterly closes in {folder}, {counts[MODELLED]} "
            "modelled on the fitted basis term structure"]


#: The policy kinds that read a risk model (``fbr.backtest_risk.risk_input``).
RISK_KINDS = ("optimized", "te_band_futures")


def risk_labels(cfg: BacktestConfig, path: MarketPath) -> list[str]:
    """The risk-model label of the built path (shown in the CLI, the JSON and the report): when
    the book's risk model would look ahead, what the optimised policies' risk model is; none
    otherwise. Raises (before any run) when the trailing estimate lacks history before the
    path's start."""
    if not any(spec.kind in RISK_KINDS for spec in cfg.policies):
        return []
    t_book = risk_lookahead(cfg, path)
    if t_book is None:
        return []
    t0 = utc(path.spot.index[0])
    if cfg.risk_model == "trailing":
        check_trailing_history(trailing_closes(cfg, path), t0, t_book)
    where = f"estimated on data up to {t_book:%Y-%m-%d}, after the backtest's start {t0:%Y-%m-%d}"
    if cfg.risk_model == "book":
        return [f"LOOK-AHEAD: the policies with a risk model ({', '.join(RISK_KINDS)}) use the book's "
                f"full-sample risk model, {where} "
                '(backtest.risk_model = "book")']
    return [f"risk model of the policies with one ({', '.join(RISK_KINDS)}): re-estimated without "
            f"look-ahead every "
            f"{RISK_REESTIMATE_DAYS} days from daily returns up to each refresh (the book's model is "
            f"{where}, so it is not used)"]


def actual_span(path: MarketPath) -> tuple[pd.Timestamp, pd.Timestamp, int]:
    """(first step, last step, number of steps) of the path actually replayed (UTC)."""
    idx = pd.DatetimeIndex(path.spot.index)
    return utc(idx[0]), utc(idx[-1]), len(idx)


def span_notes(cfg: BacktestConfig, path: MarketPath) -> list[str]:
    """A note when the data end before ``data.end`` (or begin after ``data.start``) by more than one
    step: the backtest then runs over the shorter span, and says so."""
    if cfg.data.source != "data":
        return []
    first, last, n = actual_span(path)
    idx = pd.DatetimeIndex(path.spot.index)
    step = pd.Series(idx).diff().median() if n > 1 else pd.Timedelta(days=1)
    ran = f"the backtest ran {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC ({n} steps)"
    notes = []
    if cfg.data.end is not None and last + step < utc(cfg.data.end):
        notes.append(f"data.end is {cfg.data.end}, but the data end at {last:%Y-%m-%d %H:%M} UTC: "
                     f"{ran}, shorter than asked")
    if cfg.data.start is not None and first - step > utc(cfg.data.start):
        notes.append(f"data.start is {cfg.data.start}, but the data (common to every series) begin "
                     f"at {first:%Y-%m-%d %H:%M} UTC: {ran}")
    return notes


def span_dict(cfg: BacktestConfig, path: MarketPath) -> SpanDict:
    """JSON-ready span: the steps actually replayed and the start/end asked for (None: not set)."""
    first, last, n = actual_span(path)
    return {"start": first.isoformat(), "end": last.isoformat(), "steps": n,
            "requested_start": cfg.data.start,
            "requested_end": cfg.data.end if cfg.data.source == "data" else None,
            "shorter_than_requested": bool(span_notes(cfg, path))}


def unsolved_notes(results: Mapping[str, BacktestResult]) -> list[str]:
    """One note per policy with steps where it had no answer to trade (``BacktestResult.unsolved``:
    no solver answered, or the answer was infeasible): how many, the first one's time (ISO, UTC)
    and reason, and that the book was held there."""
    notes = []
    for name, r in results.items():
        if len(r.unsolved):
            first = pd.Timestamp(r.unsolved["time"].iloc[0]).isoformat()
            notes.append(f"{name}: no answer to trade at {len(r.unsolved)} of {len(r.steps)} "
                         f"steps (first {first}: {r.unsolved['reason'].iloc[0]}); the book was "
                         f"held as it stood there")
    return notes


def is_timing(key: str) -> bool:
    """Wall-clock measurements (e.g. solve_time_median_ms): they differ from run to run."""
    return "time" in key and key.endswith(("_ms", "_s"))


def book_reserve_yield(cfg: BacktestConfig) -> float:
    """The yearly yield the book's stablecoin reserve forgoes: its ``[costs] reserve_yield``
    (4% when the book does not set it), which prices ``reserve_opportunity_cost_bps``."""
    return float(cfg.loaded.settings.costs.reserve_yield)


def metrics_dict(result: BacktestResult, *, reserve_yield: float | None = None
                 ) -> dict[str, MetricValue]:
    """scenarios.metrics.compute_metrics as a JSON-ready dict (nan/inf become None), the wallet's
    opportunity cost at ``reserve_yield`` (a fraction a year: the book's, ``book_reserve_yield``;
    None: scenarios.metrics.STABLECOIN_YIELD)."""
    from scenarios.metrics import STABLECOIN_YIELD, compute_metrics

    m = compute_metrics(result, stablecoin_yield=STABLECOIN_YIELD if reserve_yield is None
                        else reserve_yield)
    out: dict[str, MetricValue] = {}
    for k, v in dataclasses.asdict(m).items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        elif isinstance(v, bool | int | float | str) or v is None:
            out[k] = v
        else:
            try:
                out[k] = float(v)
            except (TypeError, ValueError):
                out[k] = str(v)
    return out
