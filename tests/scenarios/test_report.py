"""The HTML report: self-contained, one div per chart, synthetic banner, PNGs, determinism, and a
real render in headless Chromium when /usr/bin/chromium exists.

No network; two short runs of the embedded seeded synthetic generator.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from models.book import Book
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.synthetic import generate_history
from optimizer.policies import NaiveFutures, NoRebalance, Policy, TargetHoldings, current_holdings
from scenarios.backtest_result import BacktestResult
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest
from scenarios.report import render_report, write_report
from scenarios.report_charts import build_charts

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "screenshot_report.py"
CHROMIUM = Path("/usr/bin/chromium")
CHART_KEYS = ("equity", "weights", "tracking_error", "costs", "margin", "frontier")


@pytest.fixture(scope="module")
def results() -> dict[str, BacktestResult]:
    hist = generate_history(("BTC", "ETH", "SOL"), days=90, seed=11)
    cons = tuple(FuturesContract(f"{s}-PERP", s) for s in hist.symbols)
    p0 = hist.spot.iloc[0]
    book = Book(tuple(SpotAsset(s) for s in hist.symbols), cons,
                spot={"BTC": 50_000 / p0["BTC"], "ETH": 30_000 / p0["ETH"], "SOL": 20_000 / p0["SOL"]},
                targets={"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}, cash=20_000.0)
    path = MarketPath.from_synthetic(hist, cons)
    out = {}
    for policy in (NoRebalance(), NaiveFutures("7D")):
        res = run_backtest(book, path, policy)
        out[res.policy] = res
    return out


def chart_div_ids(text: str) -> list[str]:
    return re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', text)


def test_report_is_self_contained_with_one_div_per_chart(results: dict[str, BacktestResult],
                                                         tmp_path: Path) -> None:
    path = write_report(results, tmp_path / "r.html", title="unit report",
                        labels=("synthetic data, seed 11", "90 days"))
    assert path == tmp_path / "r.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script[^>]*src=[\"']https?://", text)  # no CDN: plotly.js inlined
    assert "https://cdn" not in re.sub(r"<script type='text/javascript'>.*?</script>", "", text,
                                       count=1, flags=re.S)
    assert "Plotly.newPlot" in text
    ids = chart_div_ids(text)
    assert ids == [f"fbr-chart-{k}" for k in CHART_KEYS]
    for name in results:
        assert name in text
    assert "no_rebalance" in text and "naive_futures_7D" in text
    assert "SYNTHETIC DATA" in text
    assert "unit report" in text and "90 days" in text
    # the headline table: one row per policy
    assert text.count("<th class='policy'>") == len(results)


def test_no_banner_without_a_synthetic_label(results: dict[str, BacktestResult], tmp_path: Path) -> None:
    text = write_report(results, tmp_path / "r.html", labels=("replay",)).read_text(encoding="utf-8")
    assert "SYNTHETIC DATA" not in text


def test_pngs_written_one_per_chart(results: dict[str, BacktestResult], tmp_path: Path) -> None:
    files = render_report(results, tmp_path / "r.html", png_dir=tmp_path / "png")
    assert [p.name for p in files.pngs] == [f"{k}.png" for k in CHART_KEYS]
    for p in files.pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, p
    assert files.html.is_file()


def test_output_is_deterministic(results: dict[str, BacktestResult], tmp_path: Path) -> None:
    a = render_report(results, tmp_path / "a.html", labels=("synthetic",), png_dir=tmp_path / "pa")
    b = render_report(results, tmp_path / "b.html", labels=("synthetic",), png_dir=tmp_path / "pb")
    assert a.html.read_bytes() == b.html.read_bytes()
    for pa, pb in zip(a.pngs, b.pngs, strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa.name


def test_charts_skip_missing_columns(results: dict[str, BacktestResult], tmp_path: Path) -> None:
    res = results["naive_futures_7D"]
    slim = replace(res, steps=res.steps.drop(columns=["funding", "margin_ratio", "margin_ratio_end"]))
    charts = {c.key: c for c in build_charts({"slim": slim}, metrics={})}
    assert charts["margin"].series == ()
    assert not any("funding" in s.name for s in charts["costs"].series)
    assert any("fees" in s.name for s in charts["costs"].series)
    text = write_report({"slim": slim}, tmp_path / "s.html").read_text(encoding="utf-8")
    assert len(chart_div_ids(text)) == len(CHART_KEYS)


class OpenLong(Policy):
    """Opens a 10,000 USD long perp at the first step, then holds (no reopening)."""

    name = "open_long"
    opened = False

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        held = current_holdings(book, market)
        if self.opened:
            return held
        self.opened = True
        return TargetHoldings(spot=held.spot, futures={"BTC-PERP": 10_000.0})


def test_liquidations_are_marked(tmp_path: Path) -> None:
    idx = pd.date_range("2025-01-01", periods=4, freq="D", tz="UTC")
    spot = pd.DataFrame({"BTC": [100.0, 90.4, 90.4, 91.0]}, index=idx)
    path = MarketPath(spot=spot, half_spread=pd.Series({"BTC-PERP": 0.0001}))
    book = Book((SpotAsset("BTC"),), (FuturesContract("BTC-PERP", "BTC", taker_fee=0.0005),),
                spot={"BTC": 1.0}, targets={"BTC": 1.0}, cash=1_000.0)
    res = run_backtest(book, path, OpenLong(), collateral=NO_SWEEPS)
    assert bool(res.steps["liquidated"].any())
    margin = {c.key: c for c in build_charts({"levered": res})}["margin"]
    marks = [s for s in margin.series if s.mode == "markers"]
    assert len(marks) == 1 and list(marks[0].x) == [idx[1].tz_localize(None)]
    assert margin.hlines  # the liquidation line is on scale
    files = render_report({"levered": res}, tmp_path / "l.html", png_dir=tmp_path / "png")
    assert "levered: liquidation" in files.html.read_text(encoding="utf-8")


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("screenshot_report", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_screenshot_dom_checks_offline() -> None:
    shot = _load_script()
    src = ('<div id="fbr-chart-a" class="plotly-graph-div" style="x"></div>'
           '<div id="fbr-chart-b" class="plotly-graph-div"></div>')
    assert shot.expected_chart_ids(src) == ["fbr-chart-a", "fbr-chart-b"]
    dom = ('<div id="fbr-chart-a" class="plotly-graph-div js-plotly-plot"><div><svg class="main-svg">'
           '</svg></div></div><div id="fbr-chart-b" class="plotly-graph-div"><br></div>')
    assert shot.rendered_charts(dom) == {"fbr-chart-a": True, "fbr-chart-b": False}


def test_screenshot_reports_missing_chromium(tmp_path: Path) -> None:
    report = tmp_path / "r.html"
    report.write_text("<html></html>")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(report), "--chromium",
                           str(tmp_path / "no-such-browser")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "apt-get install -y chromium" in proc.stderr


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(results: dict[str, BacktestResult], tmp_path: Path) -> None:
    report = write_report(results, tmp_path / "r.html", labels=("synthetic data",))
    out = tmp_path / "r.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(report), "-o", str(out)],
                          capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(CHART_KEYS)}/{len(CHART_KEYS)} charts rendered" in proc.stdout
    assert out.is_file() and out.stat().st_size > 10_000
