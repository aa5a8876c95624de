"""``fbr run --simulate`` reads no returns after a cycle's time through the loop's risk model.

The loop's cost gate and the tracking error it records read a risk model. The book's estimated
[risk] ends at its market time T_book; when T_book is after the simulated span, that model holds
returns the simulated loop has not seen yet. The loop now reads risk(t) at each cycle time t
(fbr.run_sim.loop_risk): the policy's own trailing model, else the trailing estimate
``fbr backtest`` uses (fbr.backtest_risk.risk_input), refused without enough history before the
path's start; the book's model as it is only when it does not look ahead.

Planted event (the reviewer's): the book's synthetic risk history (365 days from 2024-01-01, the
market time 2024-12-30, [risk] estimated from it over 365 days) gets ETH's daily log returns x 6
from day 200 on.
The simulated path is the first 60 days of a separate history, all before day 200: every cycle
(action, reason, recorded TE) must be the same with and without the plant.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fbr.backtest_risk as br
import models.synthetic as syn
from executor.alerts import AlertHub
from fbr.backtest_config import BacktestConfig, build_path
from fbr.run_config import RunConfig, load_run_file
from fbr.run_sim import simulate
from models.errors import ValidationError
from models.trailing_risk import TrailingRisk
from scenarios.market_path import MarketPath

ROOT = Path(__file__).resolve().parents[2]
PLANT_DAY = 200
DAYS = 60


def _book(tmp: Path) -> Path:
    """The demo book at 2024-12-30, its [risk] estimated on 365 synthetic days up to then (the
    basis vols given: a synthetic basis is estimated from the same history, whose spot the plant
    moves and whose marks it does not; a real path re-estimates it, fbr.backtest_risk). The
    market is a 366-day history, so the plant (365-day histories only) leaves the book's prices
    and coins alone: spot_usd is converted at the market's prices, and the reviewer's version
    planted there too (ETH 5.75 coins became 4.29, a difference that is no look-ahead)."""
    text = (ROOT / "examples" / "backtest_book.toml").read_text()
    text = text.replace("time = 2024-01-01T00:00:00Z", "time = 2024-12-30T00:00:00Z")
    assert "days = 365\nstart" in text
    text = text.replace("days = 365\nstart", "days = 366\nstart")
    start, end = text.index("[risk]"), text.index("[costs]")
    basis = "".join(f'{c}-PERP = "2%"\n' for c in ("BTC", "ETH", "SOL", "BNB", "XRP"))
    text = text[:start] + ('[risk]\nsource = "synthetic"\ndays = 365\nlookback_days = 365\n\n'
                           f"[risk.basis_vols]\n{basis}\n") + text[end:]
    p = tmp / "book.toml"
    p.write_text(text)
    return p


def _config(tmp: Path, policy: str = 'kind = "naive_futures"\nname = "p"\nband = "0.3%"') -> RunConfig:
    """A paper run over ``DAYS`` synthetic days from 2024-01-01 with the cost gate on."""
    p = tmp / "run.toml"
    p.write_text(f"""book = "{_book(tmp).as_posix()}"
[data]
source = "synthetic"
seed = 12
days = {DAYS}
start = "2024-01-01"
[[policies]]
{policy}
[backtest]
collateral = false
[run]
exchange = "paper"
gate = true
interval = "1d"
[triggers]
margin_ratio = false
margin_warn = false
funding_alert = false
""")
    return load_run_file(p)


def _plant(monkeypatch: pytest.MonkeyPatch) -> None:
    """ETH's log returns x 6 from ``PLANT_DAY`` on in the book's 365-day risk history."""
    original = syn.generate_history

    def planted(symbols, *, days=730, start="2023-01-01", seed=7):  # type: ignore[no-untyped-def]
        h = original(symbols, days=days, start=start, seed=seed)
        if days != 365:
            return h
        spot = h.spot.copy()
        lr = np.log(spot["ETH"]).diff().fillna(0.0).to_numpy().copy()
        lr[PLANT_DAY:] *= 6.0
        spot["ETH"] = float(spot["ETH"].iloc[0]) * np.exp(np.cumsum(lr))
        return syn.SyntheticHistory(spot=spot, mark=h.mark, funding=h.funding, adv_usd=h.adv_usd,
                                    half_spread=h.half_spread, seed=h.seed)

    monkeypatch.setattr(syn, "generate_history", planted)


def _history_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """Daily closes (USD) for the trailing estimate (a data folder's role; a synthetic path has no
    history before its start): 90 days of another synthetic history (seed 5), joined to the path's
    own closes, which follow up to its last step."""
    def closes(cfg: BacktestConfig, path: MarketPath) -> pd.DataFrame:
        del cfg
        spot = pd.DataFrame(path.spot)
        t0 = spot.index[0]
        start = (t0 - pd.Timedelta(days=90)).strftime("%Y-%m-%d")
        pre = syn.generate_history(list(spot.columns), days=90, start=start, seed=5).spot
        pre = pre.loc[pre.index < t0] * (spot.iloc[0] / pre.iloc[-1])
        return pd.DataFrame(pd.concat([pre, spot]))

    monkeypatch.setattr(br, "trailing_closes", closes)


def _cycles(tmp: Path, planted: bool, monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:
    """The run_cycles rows of the simulation (with or without the plant)."""
    tmp.mkdir()
    with monkeypatch.context() as m:
        if planted:
            _plant(m)
        cfg = _config(tmp)
        path = build_path(cfg.backtest)
        assert path.spot.index[-1] < pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=PLANT_DAY)
        simulate(cfg, path, tmp / "j.sqlite", tmp / "state", AlertHub())
    with sqlite3.connect(tmp / "j.sqlite") as con:
        return pd.read_sql_query("SELECT * FROM run_cycles ORDER BY 1", con)


def test_simulated_loop_does_not_read_returns_after_its_span(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Same actions, reasons and recorded TE (fractions) with and without returns planted in the
    book's risk history after the simulated span (before the fix the gate read the book's model:
    the planted ETH vol changed which cycles were held)."""
    _history_before(monkeypatch)
    a = _cycles(tmp_path / "a", False, monkeypatch)
    b = _cycles(tmp_path / "b", True, monkeypatch)
    assert len(a) == len(b) >= DAYS
    assert {"held", "traded"} <= set(a["action"]), a["action"].value_counts().to_dict()
    cols = [c for c in a.columns if "te" in c.lower() or c in ("action", "reason")]
    assert {"te_before", "te_after", "action"} <= set(cols), list(a.columns)
    diff = {c: int((a[c].astype(str) != b[c].astype(str)).sum()) for c in cols}
    assert all(v == 0 for v in diff.values()), (
        f"cycles before the planted day differ: {diff}; actions "
        f"{a['action'].value_counts().to_dict()} vs {b['action'].value_counts().to_dict()}")


def test_simulate_refuses_a_lookahead_model_without_history(tmp_path: Path) -> None:
    """The book's model ends after the path's start and no returns precede the start (a synthetic
    path): no look-ahead-free model for the gate, so the simulation is refused before any cycle
    (before the fix it ran on the book's model), naming backtest.risk_model and the gate."""
    cfg = _config(tmp_path)
    path = build_path(cfg.backtest)
    with pytest.raises(ValidationError) as exc:
        simulate(cfg, path, tmp_path / "j.sqlite", tmp_path / "state", AlertHub())
    assert exc.value.field == "backtest.risk_model"
    assert "cost gate" in exc.value.problem and "look-ahead" in exc.value.problem
    assert not (tmp_path / "j.sqlite").exists()


def test_loop_risk_is_the_policy_own_trailing_model(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An optimiser's trailing model is the loop's too (gate and policy read one model at t); a
    policy without one gets the trailing estimate; risk_model = "book" keeps the book's model."""
    from fbr.run_sim import loop_risk
    from fbr.run_wiring import loop_policy

    _history_before(monkeypatch)
    cfg = _config(tmp_path, 'kind = "optimized"\nname = "o"')
    path = build_path(cfg.backtest)
    policy = loop_policy(cfg, cfg.backtest, path)
    own = policy.risk  # type: ignore[attr-defined]
    assert isinstance(own, TrailingRisk) and loop_risk(cfg.backtest, policy, path) is own
    naive = loop_policy(_config(tmp_path), cfg.backtest, path)
    assert isinstance(loop_risk(cfg.backtest, naive, path), TrailingRisk)
    book = dataclasses.replace(cfg.backtest, risk_model="book")
    assert loop_risk(book, naive, path) is cfg.backtest.loaded.risk


def test_simulate_labels_the_book_model_as_look_ahead(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """risk_model = "book" on a book estimated after the path's start: the simulation's labels say
    LOOK-AHEAD and name the model's end (2024-12-30) and the start (2024-01-01), as fbr backtest's
    do; the default trailing estimate carries no such label (before the fix neither had one)."""
    _history_before(monkeypatch)
    cfg = _config(tmp_path)
    path = build_path(cfg.backtest)
    trailing = simulate(cfg, path, tmp_path / "a.sqlite", tmp_path / "sa", AlertHub())
    assert not any("LOOK-AHEAD" in x for x in trailing.labels)
    book = dataclasses.replace(cfg, backtest=dataclasses.replace(cfg.backtest, risk_model="book"))
    sim = simulate(book, path, tmp_path / "b.sqlite", tmp_path / "sb", AlertHub())
    assert sim.summary.cycles == trailing.summary.cycles == DAYS
    assert [x for x in sim.labels if x.startswith("LOOK-AHEAD")] == sim.labels and len(sim.labels) == 1
    assert "2024-12-30" in sim.labels[0] and "2024-01-01" in sim.labels[0]
