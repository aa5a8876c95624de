"""``fbr run --simulate`` over a path with a dated contract's expiry inside it: the paper venue
settles the position at the backtest's price (the spot at the expiry, interpolated between the
steps around it) and fee, records it as a fill of the paper account, and the loop's trades stay
the backtest's to 1e-9 of NAV (the module's promise, fbr/run_sim.py) before and after the expiry."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from executor.alerts import AlertHub
from executor.base import Trade
from executor.paper import PaperStore, apply_fill
from fbr.backtest_config import build_path
from fbr.backtest_run import backtest_options, build_policy
from fbr.run_config import load_run_file
from fbr.run_sim import simulate
from models.book import Book, FuturesPosition
from scenarios.replay import run_backtest

# BTC-Q expires at 08:00 UTC between the daily steps of 2024-01-10 and 2024-01-11; no lot steps
BOOK = """
[book]
name = "dated equivalence"
cash = 20000.0
[targets]
BTC = "60%"
ETH = "40%"
[spot]
BTC = 1.0
ETH = 12.0
[contract_defaults]
lot_step = 0.0
min_notional = 0.0
taker_fee = "5bp"
[[contracts]]
symbol = "BTC-Q"
underlying = "BTC"
kind = "dated"
expiry = "2024-01-10T08:00:00Z"
[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
[[contracts]]
symbol = "ETH-PERP"
underlying = "ETH"
[market]
source = "synthetic"
seed = 3
start = "2024-01-01"
days = 20
time = "2024-01-01"
[risk]
correlation = 0.8
[risk.vols]
BTC = 0.6
ETH = 0.7
"""

RUN = """
book = "{book}"
[data]
source = "synthetic"
seed = 3
days = 20
start = "2024-01-01"
[[policies]]
kind = "{kind}"
name = "p"
{params}
[backtest]
collateral = false
risk_model = "book"
[run]
exchange = "paper"
interval = "1d"
gate = false
[triggers]
margin_ratio = false
margin_warn = false
funding_alert = false
"""

EXPIRY_STEP = pd.Timestamp("2024-01-11", tz="UTC")


PERP = """[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
"""


@pytest.mark.parametrize(("kind", "params", "perp"), [("optimized", "", True),
                                                      ("naive_futures", 'period = "1D"', False)])
def test_simulated_loop_settles_at_expiry_as_the_backtest(tmp_path: Path, kind: str,
                                                           params: str, perp: bool) -> None:
    """The optimiser with BTC-PERP beside BTC-Q (it keeps a reduced BTC-Q to the expiry, then
    hedges with the perpetual), and the naive hedge with BTC-Q the only BTC contract (held into
    the expiry, BTC unhedged after it)."""
    assert PERP in BOOK
    (tmp_path / "book.toml").write_text(BOOK if perp else BOOK.replace(PERP, ""))
    run = tmp_path / "run.toml"
    run.write_text(RUN.format(book=tmp_path / "book.toml", kind=kind, params=params))
    cfg = load_run_file(run)
    path = build_path(cfg.backtest)
    book = cfg.backtest.loaded.book
    journal = tmp_path / "j.sqlite"
    summary = simulate(cfg, path, journal, tmp_path / "state", AlertHub()).summary
    assert summary.status == "finished" and summary.cycles == 20 and summary.failures == 0
    bt = run_backtest(book, path, build_policy(cfg.policy, cfg.backtest, path),
                      **backtest_options(cfg.backtest))
    nav = float(bt.steps["nav"].iloc[0])
    fut = bt.trades[bt.trades["kind"].isin(["futures", "settle"])]
    store = PaperStore(journal, book.name)
    try:
        trades, (held, cash) = store.trades(), store.load() or ({}, 0.0)
    finally:
        store.close()
    # the settlement: BTC-Q closed at step 2024-01-11 at S = S(01-10) + (S(01-11) - S(01-10)) / 3
    # (08:00 is a third of the way), fee 5 bp of |q| x S, as the backtest's "settle" trade
    s0, s1 = (float(path.spot["BTC"].loc[t]) for t in (EXPIRY_STEP - pd.Timedelta(days=1),
                                                        EXPIRY_STEP))
    settle = [(s, t) for s, t in trades if t.order_id.startswith("settle-")]
    assert [s for s, _ in settle] == ["BTC-Q"] and "BTC-Q" not in held
    (_, st), = settle
    bt_settle = fut[fut["kind"] == "settle"].iloc[0]
    assert pd.Timestamp(st.time_ms, unit="ms", tz="UTC") == EXPIRY_STEP == bt_settle["time"]
    assert st.price == pytest.approx(s0 + (s1 - s0) / 3.0, rel=1e-12)
    assert st.price == pytest.approx(float(bt_settle["price"]), rel=1e-12)
    assert st.fee == pytest.approx(0.0005 * abs(st.contracts) * st.price, rel=1e-12)
    assert st.fee == pytest.approx(float(bt_settle["fee"]), rel=1e-9)
    assert st.contracts == pytest.approx(float(bt_settle["quantity"]), rel=1e-9)
    # every trade (settlement included) the backtest's, to 1e-9 of NAV, after the expiry too
    rows = [(pd.Timestamp(t.time_ms, unit="ms", tz="UTC"), s, t.contracts) for s, t in trades]
    got = pd.DataFrame(rows, columns=["time", "symbol", "q"]).groupby(["time", "symbol"])["q"].sum()
    want = fut.groupby(["time", "symbol"])["quantity"].sum()
    price = fut.groupby(["time", "symbol"])["price"].first()
    assert list(got.index) == list(want.index)
    assert any(t > EXPIRY_STEP for t, _ in got.index)
    for key in got.index:
        assert abs(float(got[key]) - float(want[key])) * float(price[key]) <= 1e-9 * nav, key
    # the paper fees are the backtest's futures fees; the fills and funding explain the cash
    assert sum(t.fee for _, t in trades) == pytest.approx(float(bt.steps["fee_futures"].sum()),
                                                          rel=1e-9)
    assert cash == pytest.approx(_cash_from_fills(journal, book.cash, trades, book), rel=1e-12)


def _cash_from_fills(journal: Path, cash0: float, trades: list[tuple[str, Trade]],
                     book: Book) -> float:
    """Initial cash + the PnL the fills realise - their fees + the funding received (USD)."""
    cons = {c.symbol: c for c in book.contracts}
    pos: dict[str, FuturesPosition | None] = {}
    cash = cash0
    for s, t in trades:
        pos[s], realised = apply_fill(pos.get(s), t.contracts, t.price, cons[s])
        cash += realised - t.fee
    with sqlite3.connect(journal) as db:
        funding = db.execute("select coalesce(sum(amount), 0) from funding").fetchone()[0]
    return cash + float(funding)
