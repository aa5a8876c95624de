"""The HTML report's "Cumulative costs by kind" chart adds up to the total cost the metrics count
(tax included), and the frontier chart's note names every part of total_cost_bps."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from models.book import Book
from models.instruments import SpotAsset
from models.market import MarketSnapshot
from models.tax import LotMethod, TaxLot, TaxRates
from optimizer.policies import Policy, TargetHoldings, current_holdings
from optimizer.settings import SpotLegSettings
from scenarios.backtest_result import BacktestResult
from scenarios.market_path import MarketPath
from scenarios.metrics import compute_metrics
from scenarios.replay import run_backtest
from scenarios.report_charts import build_charts


class _SellOneOnDay2(Policy):
    """Holds, except on the second step: sells down to 1 BTC."""

    name = "sell one"

    def __init__(self) -> None:
        self.k = 0

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        held = current_holdings(book, market)
        self.k += 1
        return TargetHoldings(spot={"BTC": 1.0}, futures={}) if self.k == 2 else held


def _taxed_sale() -> BacktestResult:
    """BTC 2 units at a flat 100 (lots: 1 @ 50 bought 2023-01-01, 1 @ 150 bought 2024-12-01), FIFO,
    20% long-term / 30% short-term; 1 unit is sold on 2025-01-02."""
    idx = pd.date_range("2025-01-01", periods=3, freq="D", tz="UTC")
    path = MarketPath(spot=pd.DataFrame({"BTC": [100.0] * 3}, index=idx))
    book = Book((SpotAsset("BTC", fee=0.0),), (), spot={"BTC": 2.0}, targets={"BTC": 1.0}, cash=0.0)
    lots = {"BTC": (TaxLot(1.0, 50.0, datetime(2023, 1, 1, tzinfo=UTC)),
                    TaxLot(1.0, 150.0, datetime(2024, 12, 1, tzinfo=UTC)))}
    tax = SpotLegSettings(rates=TaxRates(short_term=0.3, long_term=0.2), lots=lots,
                          lot_method=LotMethod.FIFO)
    return run_backtest(book, path, _SellOneOnDay2(), tax=tax, spot_fee=0.0)


def test_cost_chart_adds_up_to_the_total_cost_with_the_tax() -> None:
    """FIFO sells the 2023 lot, held over a year: tax 0.2 x (100 - 50) = 10 USD; spot fee 0, half
    spread 1 bp x 100 = 0.01 USD. Total cost paid 10.01 USD (compute_metrics agrees), and the
    chart's lines end at 10 (tax) and 0.01 (slippage), summing to it."""
    res = _taxed_sale()
    m = compute_metrics(res)
    usd = m.total_cost_bps * float(res.steps["nav"].mean()) * m.years / 1e4
    assert usd == pytest.approx(10.01)
    costs = next(c for c in build_charts({"p": res}) if c.key == "costs")
    last = {s.name: s.y[-1] for s in costs.series}
    assert last["p: tax"] == pytest.approx(10.0)
    assert last["p: slippage"] == pytest.approx(0.01)
    assert sum(last.values()) == pytest.approx(10.01)
    assert "tax" in costs.note


def test_cost_chart_has_no_tax_line_without_taxes() -> None:
    """The tax column exists only when the replay charges taxes: no tax line otherwise."""
    idx = pd.date_range("2025-01-01", periods=3, freq="D", tz="UTC")
    path = MarketPath(spot=pd.DataFrame({"BTC": [100.0] * 3}, index=idx))
    book = Book((SpotAsset("BTC", fee=0.0),), (), spot={"BTC": 2.0}, targets={"BTC": 1.0}, cash=0.0)
    res = run_backtest(book, path, _SellOneOnDay2(), spot_fee=0.0)
    costs = next(c for c in build_charts({"p": res}) if c.key == "costs")
    assert not any(s.name.endswith(": tax") for s in costs.series)


def test_frontier_note_names_every_part_of_total_cost() -> None:
    """total_cost_bps = exchange fees + slippage + sweep fees + funding + penalties paid + tax."""
    frontier = next(c for c in build_charts({"p": _taxed_sale()}) if c.key == "frontier")
    for part in ("exchange fees", "slippage", "sweep fees", "funding", "liquidation penalties paid",
                 "tax"):
        assert part in frontier.note, part
