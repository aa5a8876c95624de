"""``fbr run --simulate`` is the loop the run file configures (a review against ``fbr backtest``):
its order limits (``[run] max_order_usd`` / ``max_plan_usd``), its schedule (``interval`` /
``cron``), cycles only at the path's own steps (a missing bar gives no cycle on stale prices), and
the paper exchange's liquidation rule, reported and alerted."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import warnings
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import run_fbr

from executor.alerts import AlertHub, AlertKind, Severity
from executor.paper import PaperStore
from fbr.backtest_config import build_path
from fbr.backtest_run import backtest_options, build_policy
from fbr.run_config import load_run_file
from fbr.run_sim import Simulation, simulate
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "backtest_book.toml"

SYNTHETIC = f"""
book = "{DEMO}"
[data]
source = "synthetic"
seed = 12
days = {{days}}
start = "2024-01-01"
[[policies]]
kind = "{{kind}}"
name = "p"
{{params}}
[backtest]
collateral = false
risk_model = "book"
[run]
exchange = "paper"
gate = false
{{run}}
[triggers]
margin_ratio = false
margin_warn = false
funding_alert = false
"""


def _sim(tmp_path: Path, text: str, path: MarketPath | None = None,
         hub: AlertHub | None = None) -> tuple[Simulation, MarketPath, list[str], pd.DataFrame]:
    """(simulation, path, cycle times ISO, paper fills: t, symbol, contracts, price, fee)."""
    warnings.simplefilter("ignore")
    f = tmp_path / "run.toml"
    f.write_text(text)
    cfg = load_run_file(f)
    path = path if path is not None else build_path(cfg.backtest)
    sim = simulate(cfg, path, tmp_path / "j.sqlite", tmp_path / "state", hub or AlertHub())
    con = sqlite3.connect(tmp_path / "j.sqlite")
    cycles = [str(r[0]) for r in con.execute("SELECT time FROM run_cycles ORDER BY id")]
    con.close()
    store = PaperStore(tmp_path / "j.sqlite", cfg.backtest.loaded.book.name)
    fills = pd.DataFrame([(pd.Timestamp(t.time_ms, unit="ms", tz="UTC"), s, t.contracts, t.price,
                           t.fee) for s, t in store.trades()],
                         columns=["t", "symbol", "contracts", "price", "fee"])
    store.close()
    return sim, path, cycles, fills


def test_simulate_honours_max_order_usd(tmp_path: Path) -> None:
    """max_order_usd = 200: a plan with an order above it is refused (no plan), so no fill's
    |contracts| x price exceeds 200 USD; the optimiser's first plan does (it would trade
    thousands of USD), so some cycle fails."""
    text = SYNTHETIC.format(days=5, kind="optimized", params="",
                            run='interval = "1d"\nmax_order_usd = 200\nmax_plan_usd = 1e12')
    sim, _, _, fills = _sim(tmp_path, text)
    assert sim.summary.failures >= 1
    notional = (fills["contracts"].abs() * fills["price"]).tolist()
    assert all(n <= 200.0 * (1 + 1e-9) for n in notional), max(notional)


def test_simulate_honours_max_plan_usd(tmp_path: Path) -> None:
    """max_plan_usd = 1,000: the fills of one cycle (one plan per cycle time) add up to at most
    1,000 USD of |contracts| x price."""
    text = SYNTHETIC.format(days=5, kind="optimized", params="",
                            run='interval = "1d"\nmax_order_usd = 1e12\nmax_plan_usd = 1000')
    sim, _, _, fills = _sim(tmp_path, text)
    assert sim.summary.failures >= 1
    per_cycle = (fills["contracts"].abs() * fills["price"]).groupby(fills["t"]).sum()
    assert (per_cycle <= 1000.0 * (1 + 1e-9)).all(), per_cycle.max()


def test_the_json_reports_the_liquidations(tmp_path: Path) -> None:
    """``fbr run --simulate --json`` carries ``liquidations``: none on this calm 5-day path."""
    f = tmp_path / "run.toml"
    f.write_text(SYNTHETIC.format(days=5, kind="optimized", params="", run='interval = "1d"'))
    out = run_fbr("run", str(f), "--simulate", "--json", timeout=600)
    doc = json.loads(out.stdout)
    assert doc["status"] == "ok"
    assert doc["liquidations"] == {"count": 0, "penalty": 0, "insurance_fund": 0, "events": []}


@pytest.mark.parametrize(("schedule", "expected"), [
    # Mondays 00:00 UTC over 2024-01-01 (a Monday) .. 2024-01-14: the first wake-up, then 01-08
    ('cron = "0 0 * * 1"', ["2024-01-01", "2024-01-08"]),
    # every 2 days on the epoch grid: 2024-01-01 is day 19,723 (odd), so the grid is on the even
    # days 01-02, 01-04, ..., 01-14 (the last step); plus the first wake-up 01-01
    ('interval = "2d"', ["2024-01-01", *[f"2024-01-{d:02d}" for d in range(2, 15, 2)]]),
])
def test_simulate_follows_the_run_files_schedule(tmp_path: Path, schedule: str,
                                                 expected: list[str]) -> None:
    text = SYNTHETIC.format(days=14, kind="naive_futures", params='band = "1%"', run=schedule)
    sim, path, cycles, _ = _sim(tmp_path, text)
    assert str(path.spot.index[-1].date()) == "2024-01-14"
    assert [c[:10] for c in cycles] == expected
    assert sim.summary.cycles == len(expected)


def _drop(path: MarketPath, t: pd.Timestamp) -> MarketPath:
    """``path`` without its step ``t`` (a bar missing in the data)."""
    keep = path.spot.index != t

    def cut(frame: pd.DataFrame | None) -> pd.DataFrame | None:
        return frame.loc[keep] if frame is not None else None

    adv = cut(path.adv) if isinstance(path.adv, pd.DataFrame) else path.adv
    return dataclasses.replace(path, spot=path.spot.loc[keep], mark=cut(path.mark),
                               mark_source=cut(path.mark_source), adv=adv)


def test_a_missing_bar_gives_no_cycle_and_the_backtests_trades(tmp_path: Path) -> None:
    """A daily path of 10 steps without 2024-01-05 (9 steps), interval "1d": the wake-up due at
    01-05 lands on the next step, 01-06, so the cycles are the 9 path steps, none at 01-05 (on
    01-04's prices), and the fills (gate off, lots off) are the backtest's: the same (time,
    contract) pairs and the same fee total (5 bp of the notional at mark in both)."""
    book = DEMO.read_text().replace("lot_step = 1e-6", "lot_step = 0")  # the backtest has none
    assert "lot_step = 0" in book
    (tmp_path / "book.toml").write_text(book)
    text = SYNTHETIC.format(days=10, kind="naive_futures", params='band = "1%"',
                            run='interval = "1d"\nmax_order_usd = 1e12\nmax_plan_usd = 1e12'
                            ).replace(str(DEMO), str(tmp_path / "book.toml"))
    cfg_path = tmp_path / "probe.toml"
    cfg_path.write_text(text)
    cfg = load_run_file(cfg_path)
    full = build_path(cfg.backtest)
    gap = pd.Timestamp("2024-01-05", tz="UTC")
    assert len(full.spot.index) == 10 and gap in full.spot.index
    path = _drop(full, gap)
    sim, _, cycles, fills = _sim(tmp_path, text, path)
    steps = [t.isoformat() for t in path.spot.index]
    assert cycles == steps and len(cycles) == 9
    assert sim.summary.failures == 0
    bt = run_backtest(cfg.backtest.loaded.book, path, build_policy(cfg.policy, cfg.backtest, path),
                      **backtest_options(cfg.backtest))
    fut = bt.trades[bt.trades["kind"] == "futures"]
    assert sorted(set(zip(fills["t"], fills["symbol"], strict=True))) == sorted(
        set(zip(pd.to_datetime(fut["time"], utc=True), fut["symbol"], strict=True)))
    assert fills["fee"].sum() == pytest.approx(float(bt.steps["fee_futures"].sum()), rel=1e-9)


REAL = """
book = "{book}"
[data]
source = "data"
data_dir = "{data}"
start = "{start}"
end = "{end}"
step = "{step}"
[[policies]]
kind = "naive_futures"
period = "{period}"
name = "p"
[backtest]
collateral = false
risk_model = "book"
[run]
exchange = "paper"
gate = false
interval = "{step}"
max_order_usd = 1e12
max_plan_usd = 1e12
[triggers]
margin_ratio = false
margin_warn = false
funding_alert = false
"""

LIQ_BOOK = """
[book]
name = "liq"
cash = 30000.0
[targets]
BTC = "50%"
ETH = "30%"
SOL = "20%"
[spot_usd]
BTC = 600000.0
ETH = 400000.0
SOL = 1.0
[contract_defaults]
lot_step = 0
min_notional = 0.0
leverage = 20
[market]
source = "data"
data_dir = "{data}"
time = 2022-11-01T00:00:00Z
[risk]
basis_risk = false
correlation = 0.75
[risk.vols]
BTC = 0.6
ETH = 0.75
SOL = 1.0
[costs]
trading = true
carry = true
horizon_days = 1.0
"""


def _mark(path: MarketPath, t: pd.Timestamp, symbol: str) -> float:
    """Contract ``symbol``'s mark at ``t``: its mark column, else its underlying's spot."""
    if path.mark is not None and symbol in path.mark.columns:
        return float(path.mark[symbol].loc[t])
    return float(path.spot[symbol.split("-")[0]].loc[t])


@pytest.mark.shared_data
def test_the_paper_account_is_liquidated_where_the_backtest_is(tmp_path: Path,
                                                                shared_data_dir: Path) -> None:
    """$1M of BTC/ETH spot vs 50/30/20, a $30k wallet at 20x, the naive overlay daily on 8 h
    steps through the FTX week (Nov 2022): long ~$120k SOL-PERP. By hand, from the fills: at each
    step t the wallet is 30,000 - fees + funding + sum of q (mark_t - fill price) and
    maintenance 0.5% x sum |q| mark_t; the first t with wallet <= maintenance is a liquidation
    of the backtest, and of the loop: every position closed at t's marks, penalty 1% x
    sum |q| mark_t, a CRITICAL margin alert."""
    (tmp_path / "book.toml").write_text(LIQ_BOOK.format(data=shared_data_dir))
    text = REAL.format(book=tmp_path / "book.toml", data=shared_data_dir, start="2022-11-01",
                       end="2022-11-12", step="8h", period="1D")
    hub = AlertHub()
    sim, path, _, fills = _sim(tmp_path, text, hub=hub)
    con = sqlite3.connect(tmp_path / "j.sqlite")
    funding = pd.read_sql("SELECT amount, time_ms FROM funding", con)
    con.close()
    funding["t"] = pd.to_datetime(funding["time_ms"], unit="ms", utc=True)
    breach = None
    for t in path.spot.index[1:]:
        before = fills[fills["t"] < t]
        q = before.groupby("symbol")["contracts"].sum()
        q = q[q.abs() > 1e-12]
        if q.empty:
            continue
        mark = {s: _mark(path, t, s) for s in before["symbol"].unique()}
        pnl = sum(r.contracts * (mark[r.symbol] - r.price) for r in before.itertuples())
        wallet = 30_000.0 - before["fee"].sum() + funding[funding["t"] <= t]["amount"].sum() + pnl
        mm = 0.005 * sum(abs(float(q[s])) * mark[s] for s in q.index)
        if wallet <= mm:
            breach = (t, wallet, mm, 0.01 * sum(abs(float(q[s])) * mark[s] for s in q.index))
            break
    assert breach is not None, "the book never breaches maintenance on this path"
    t, wallet, mm, penalty = breach
    f = tmp_path / "run.toml"
    cfg = load_run_file(f)
    bt = run_backtest(cfg.backtest.loaded.book, path, build_policy(cfg.policy, cfg.backtest, path),
                      **backtest_options(cfg.backtest))
    assert bool(bt.steps.loc[t, "liquidated"])
    assert len(sim.liquidations) >= 1
    first = sim.liquidations[0]
    assert pd.Timestamp(first.time) == t
    assert first.collateral == pytest.approx(wallet, rel=1e-9, abs=1e-6)
    assert first.maintenance == pytest.approx(mm, rel=1e-9)
    assert first.penalty == pytest.approx(penalty, rel=1e-9)
    assert first.insurance == pytest.approx(max(penalty - wallet, 0.0), rel=1e-9, abs=1e-6)
    closing = fills[fills["t"] == t]
    assert (closing["price"] == closing["symbol"].map(lambda s: _mark(path, t, s))).all()
    after = fills[fills["t"] <= t].groupby("symbol")["contracts"].sum()
    assert (after.abs() <= 1e-9).all(), after.to_dict()
    doc = sim.liquidation_doc()
    assert doc["count"] == len(sim.liquidations)
    assert doc["penalty"] == pytest.approx(sum(e.penalty for e in sim.liquidations), rel=1e-12)
    assert any(a.kind == AlertKind.MARGIN and a.severity == Severity.CRITICAL
               and a.time == first.time for a in hub.sent)
