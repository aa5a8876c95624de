"""``fbr run``: the simulated clock gives the trades of ``fbr backtest`` with the same policy object;
bad input gets one clear message each before any work; one loop per account; SIGTERM stops it
gracefully and the kill file stops it before any order; ``fbr status --exit-code``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cli_helpers import ROOT, run_fbr
from typer.testing import CliRunner

EXEC_TESTS = str(Path(__file__).resolve().parents[1] / "executor")
if EXEC_TESTS not in sys.path:
    sys.path.insert(0, EXEC_TESTS)

from exec_helpers import cli_emulator  # noqa: E402

from executor.alerts import AlertHub  # noqa: E402
from executor.paper import PaperStore  # noqa: E402
from fbr.backtest_config import build_path  # noqa: E402
from fbr.backtest_run import backtest_options, build_policy  # noqa: E402
from fbr.cli import app  # noqa: E402
from fbr.run_config import load_run_file  # noqa: E402
from fbr.run_sim import simulate  # noqa: E402
from models.errors import ExitCode  # noqa: E402
from scenarios.replay import run_backtest  # noqa: E402

DEMO_BOOK = ROOT / "examples" / "backtest_book.toml"
SEED = ROOT / "examples" / "seed_example_1.toml"

EQUIVALENT = f"""
book = "{DEMO_BOOK}"
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
interval = "1d"
[triggers]
margin_ratio = false
margin_warn = false
funding_alert = false
"""


def _write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _rows(series: pd.Series) -> list[tuple[pd.Timestamp, str, float]]:
    """(time, contract, value) of a series indexed by (time, contract)."""
    return [(pd.Timestamp(k[0]), str(k[1]), float(v))
            for k, v in zip(series.index, series.to_numpy(), strict=True)]


def _lots_book(tmp_path: Path, lot: str) -> Path:
    """The demo book with every contract's lot step set to ``lot`` (coins)."""
    text = DEMO_BOOK.read_text().replace("lot_step = 1e-6", f"lot_step = {lot}")
    assert f"lot_step = {lot}" in text
    path = tmp_path / "book.toml"
    path.write_text(text)
    return path


def _simulated_vs_backtest(tmp_path: Path, kind: str, params: str, lot: str
                           ) -> tuple[pd.Series, pd.Series, pd.DataFrame, float]:
    """(paper contracts by (time, contract), backtest notional by (time, contract), the
    backtest's futures trades, NAV at the start) of the same policy over the same 45 days."""
    book_path = _lots_book(tmp_path, lot)
    text = EQUIVALENT.format(days=45, kind=kind, params=params).replace(str(DEMO_BOOK),
                                                                        str(book_path))
    cfg = load_run_file(_write(tmp_path, text))
    path = build_path(cfg.backtest)
    book = cfg.backtest.loaded.book
    summary = simulate(cfg, path, tmp_path / "j.sqlite", tmp_path / "state", AlertHub()).summary
    assert summary.status == "finished" and summary.cycles == 45 and summary.failures == 0
    bt = run_backtest(book, path, build_policy(cfg.policy, cfg.backtest, path),
                      **backtest_options(cfg.backtest))
    fut = bt.trades[bt.trades["kind"] == "futures"]
    expected = fut.groupby(["time", "symbol"])["notional"].sum()
    store = PaperStore(tmp_path / "j.sqlite", book.name)
    rows = [(pd.Timestamp(t.time_ms, unit="ms", tz="UTC"), s, t.contracts) for s, t in store.trades()]
    store.close()
    got = pd.DataFrame(rows, columns=["time", "symbol", "q"]).groupby(["time", "symbol"])["q"].sum()
    return got[got != 0], expected, fut, float(bt.steps["nav"].iloc[0])


@pytest.mark.parametrize(("kind", "params", "lot"), [("optimized", "", "0"),
                                                     ("naive_futures", 'band = "3%"', "0"),
                                                     ("optimized", "", "0.01")])
def test_simulated_clock_gives_the_backtest_trades(tmp_path: Path, kind: str, params: str,
                                                   lot: str) -> None:
    """The loop over the path on the paper venue trades what the backtest trades, step by step:
    the same (time, contract) pairs and the same signed notional to 1e-9 of NAV (a flip, sent as
    two legs, summed). Without lot steps (the backtest has none), and with lots of 0.01 coin for
    the optimiser, which rounds its own positions to the lots."""
    got, expected, fut, nav = _simulated_vs_backtest(tmp_path, kind, params, lot)
    assert list(got.index) == list(expected.index)
    assert len(expected) >= 8
    for t, sym, q in _rows(got):
        mark = float(fut[(fut["time"] == t) & (fut["symbol"] == sym)]["price"].iloc[0])
        assert abs(q * mark - float(expected[(t, sym)])) <= 1e-9 * nav, (t, sym)


def test_simulated_clock_with_tiny_lots_differs_by_one_lot_at_most(tmp_path: Path) -> None:
    """With lots of 1e-6 coin (6e-7 USD of XRP) the two books' floating-point noise (1e-13 of a
    position: the backtest re-strikes positions at mark, the paper venue averages entries) can put
    the optimiser's lot rounding on the other side of a half lot: such a trade differs by one lot
    and the next one makes up for it. Every other trade agrees to 1e-9 of NAV."""
    got, expected, fut, nav = _simulated_vs_backtest(tmp_path, "optimized", "", "1e-6")
    assert list(got.index) == list(expected.index)
    off_by_a_lot = 0
    for t, sym, q in _rows(got):
        mark = float(fut[(fut["time"] == t) & (fut["symbol"] == sym)]["price"].iloc[0])
        gap = abs(q * mark - float(expected[(t, sym)]))
        if gap > 1e-9 * nav:
            off_by_a_lot += 1
            assert gap <= 3e-6 * mark * (1 + 1e-6), (t, sym, gap)
    assert off_by_a_lot <= 0.1 * len(got)


BASE_RUN = f"""
book = "{SEED}"
[[policies]]
kind = "naive_futures"
band = "1%"
name = "naive"
[run]
exchange = "paper"
interval = "1d"
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("extra", "words"), [
    ('[alerts]\nwebhook = "http://127.0.0.1:{port}/hook/SECRETPATH"\nretries = 1\n',
     ["alerts.webhook", "http://127.0.0.1:{port}", "did not take the start alert", "Fix:"]),
    ('', ["run.cron", "never fires", "Fix:"]),
    ('[triggers]\nmargin_ratio = "150%"\n', ["triggers.margin_ratio", "Fix:"]),
    ('[runn]\nx = 1\n', ["runn", "is not a known key", "valid keys"]),
])
def test_bad_input_one_message(tmp_path: Path, extra: str, words: list[str]) -> None:
    port = _closed_port()
    text = BASE_RUN + extra.format(port=port)
    if not extra:
        text = text.replace('interval = "1d"', 'cron = "0 0 30 2 *"')
    res = run_fbr("run", str(_write(tmp_path, text)), "--journal", str(tmp_path / "j.sqlite"),
                  timeout=120)
    assert res.returncode == ExitCode.BAD_INPUT, res.stderr
    message = res.stderr.strip()
    assert message.startswith("error:") and len(message.splitlines()) == 1, message
    for w in words:
        assert w.format(port=port) in message, message
    assert "SECRETPATH" not in res.stderr + res.stdout
    assert not (tmp_path / "j.sqlite").exists() or "webhook" in extra  # nothing traded


@pytest.mark.parametrize(("alerts", "field"), [
    ('webhook = "hooks.example.com/SECRETPATH"', "alerts.webhook:"),
    ('webhook_env = "FBR_TEST_HOOK"', "alerts.webhook_env (FBR_TEST_HOOK):"),
    # a ':' typed for the '/' after the host: the token became the "port" and was echoed
    ('webhook = "https://api.telegram.org:botSECRETPATH:AAH/sendMessage"', "alerts.webhook:"),
])
def test_bad_webhook_names_where_it_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              alerts: str, field: str) -> None:
    """A webhook that is not an http(s) URL is named by the key the user wrote: the URL itself
    (``alerts.webhook``), or the environment variable that held it (the message named
    ``alerts.webhook``, a key the file does not have); the URL is never printed."""
    from fbr.run_config import load_run_file
    from models.errors import ValidationError

    monkeypatch.setenv("FBR_TEST_HOOK", "hooks.example.com/SECRETPATH")
    path = _write(tmp_path, BASE_RUN + f"[alerts]\n{alerts}\n")
    with pytest.raises(ValidationError) as info:
        load_run_file(path)
    assert str(info.value).startswith(field) and "http(s) URL" in str(info.value)
    assert "SECRETPATH" not in str(info.value)


def test_live_without_keys_one_message(tmp_path: Path) -> None:
    text = BASE_RUN.replace('exchange = "paper"', 'exchange = "binanceusdm"')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FBR_BINANCEUSDM_")}
    res = subprocess.run([sys.executable, "-m", "fbr.cli", "run", str(_write(tmp_path, text)),
                          "--live", "--journal", str(tmp_path / "j.sqlite")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert res.returncode == ExitCode.BAD_INPUT, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert "FBR_BINANCEUSDM_API_KEY" in res.stderr and "FBR_BINANCEUSDM_SECRET" in res.stderr


def test_live_needs_the_exchange(tmp_path: Path) -> None:
    res = run_fbr("run", str(_write(tmp_path, BASE_RUN)), "--live", "--journal",
                  str(tmp_path / "j.sqlite"))
    assert res.returncode == ExitCode.BAD_INPUT and "--live" in res.stderr
    assert "run.exchange" in res.stderr


def test_spot_policy_refused(tmp_path: Path) -> None:
    text = BASE_RUN.replace('kind = "naive_futures"\nband = "1%"', 'kind = "band_spot"\nband = "5%"')
    res = run_fbr("run", str(_write(tmp_path, text)))
    assert res.returncode == ExitCode.BAD_INPUT and "trades spot" in res.stderr


def test_an_optimiser_that_trades_spot_is_refused_before_the_loop(tmp_path: Path) -> None:
    """An ``optimized`` policy on a book with ``[solver] spot_leg = true`` trades spot too: refused
    as a spot policy is, before the loop (it had started, failed every cycle that traded spot
    and ended with status ok, exit 0)."""
    book = _write(tmp_path, SEED.read_text() + "\n[solver]\nspot_leg = true\n", "hybrid.toml")
    text = BASE_RUN.replace(f'book = "{SEED}"', f'book = "{book}"').replace(
        'kind = "naive_futures"\nband = "1%"', 'kind = "optimized"')
    res = run_fbr("run", str(_write(tmp_path, text)), "--once", "--journal",
                  str(tmp_path / "j.sqlite"))
    assert res.returncode == ExitCode.BAD_INPUT, res.stdout + res.stderr
    assert "solver.spot_leg" in res.stderr and "futures orders only" in res.stderr
    assert not (tmp_path / "j.sqlite").exists()


def _health(path: Path) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc


def _start(tmp_path: Path, cfg: Path, journal: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "fbr.cli", "run", str(cfg), "--journal",
                             str(journal)], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env={**os.environ, "FBR_LOCK_DIR": str(tmp_path / "locks")})


def test_one_loop_per_account_and_graceful_stop(tmp_path: Path) -> None:
    """A second loop on the account is refused (exit 6); SIGTERM stops the first after its
    wake-up (exit 0, health ``stopped``); the first cycle traded on the paper account."""
    log = tmp_path / "run.log"
    cfg = _write(tmp_path, BASE_RUN.replace(
        "[run]", f'[run]\nstate_dir = "{tmp_path / "st"}"\nlog_file = "{log}"'))
    journal = tmp_path / "j.sqlite"
    first = _start(tmp_path, cfg, journal)
    health = tmp_path / "st" / "health.json"
    deadline = time.monotonic() + 90
    while (_health(health) or {}).get("cycles", 0) < 1:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    second = run_fbr("run", str(cfg), "--journal", str(journal),
                     env={"FBR_LOCK_DIR": str(tmp_path / "locks")})
    assert second.returncode == ExitCode.REFUSED, second.stderr
    assert "another fbr run is running on account paper:" in second.stderr
    assert f"(pid {first.pid})" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert "stopped after 1 cycles" in out
    doc = _health(health)
    assert doc is not None and doc["status"] == "stopped" and doc["trades"] == 1
    store = PaperStore(journal, "seed example 1")
    assert store.load() is not None and len(store.trades()) == 3  # BTC, ETH and SOL legs
    store.close()
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # structured: JSON lines
    assert all(set(r) == {"time", "level", "logger", "message"} for r in lines)
    assert any(r["logger"] == "executor.alerts" and r["message"].startswith("trade:")
               for r in lines)


def test_kill_file_stops_before_any_order(tmp_path: Path) -> None:
    cfg = _write(tmp_path, BASE_RUN.replace("[run]", f'[run]\nstate_dir = "{tmp_path / "st"}"'))
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "KILL").touch()
    res = run_fbr("run", str(cfg), "--journal", str(tmp_path / "j.sqlite"), "--json",
                  env={"FBR_LOCK_DIR": str(tmp_path / "locks")})
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["run"] == "killed" and doc["cycles"] == 0
    store = PaperStore(tmp_path / "j.sqlite", "seed example 1")
    assert store.trades() == []
    store.close()


def test_status_exit_code_says_rebalance_due(tmp_path: Path) -> None:
    book = tmp_path / "seed.toml"
    shutil.copy(SEED, book)
    journal = str(tmp_path / "j.sqlite")
    due = run_fbr("status", str(book), "--exchange", "paper", "--journal", journal, "--exit-code")
    assert due.returncode == int(ExitCode.REBALANCE_DUE), due.stderr
    plain = run_fbr("status", str(book), "--exchange", "paper", "--journal", journal)
    assert plain.returncode == 0
    done = run_fbr("execute", str(book), "--exchange", "paper", "--journal", journal)
    assert done.returncode == 0, done.stderr
    after = run_fbr("status", str(book), "--exchange", "paper", "--journal", journal, "--exit-code")
    assert after.returncode == 0, after.stderr


def test_paper_on_the_exchange_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``prices = "binanceusdm"``: the paper venue fills at the exchange's marks (public endpoints
    only: no signed request reaches the exchange)."""
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))
    with cli_emulator(monkeypatch, "paper-key", "paper-secret") as emu:
        marks = {"BTCUSDT": 64_000.0, "ETHUSDT": 2_900.0, "SOLUSDT": 160.0}
        for sym, px in marks.items():
            emu.set_mark(sym, px)
        cfg = _write(tmp_path, BASE_RUN.replace(
            "[run]", f'[run]\nprices = "binanceusdm"\nstate_dir = "{tmp_path / "st"}"'))
        res = CliRunner().invoke(app, ["run", str(cfg), "--journal", str(tmp_path / "j.sqlite"),
                                       "--once", "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["cycles"] == 1
        store = PaperStore(tmp_path / "j.sqlite", "seed example 1")
        fills = store.trades()
        store.close()
        assert {s for s, _ in fills} == {"BTC-PERP", "ETH-PERP", "SOL-PERP"}
        for sym, trade in fills:
            mark = marks[sym.split("-")[0] + "USDT"]
            assert abs(trade.price / mark - 1) < 1e-3, (sym, trade.price, mark)
        signed = {"/fapi/v3/account", "/fapi/v2/account", "/fapi/v2/balance", "/fapi/v1/order",
                  "/fapi/v3/positionRisk", "/fapi/v2/positionRisk", "/fapi/v1/leverageBracket"}
        assert not [r.path for r in emu.requests if r.path in signed]


def test_dry_run_loop_shows_plans_and_sends_nothing(tmp_path: Path) -> None:
    """``exchange = "dry-run"``: one wake-up plans from the book file's holdings and sends
    nothing; its cycles are the dry-run account's, not the paper account's."""
    from executor.run_store import RunStore

    cfg = _write(tmp_path, BASE_RUN.replace('exchange = "paper"', 'exchange = "dry-run"'))
    journal = tmp_path / "j.sqlite"
    res = run_fbr("run", str(cfg), "--journal", str(journal), "--once", "--json",
                  env={"FBR_LOCK_DIR": str(tmp_path / "locks")})
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["mode"], doc["run"], doc["cycles"], doc["trades"]) == ("dry-run", "finished", 1, 0)
    dry = RunStore(journal, "dry-run:seed example 1")
    paper = RunStore(journal, "paper:seed example 1")
    assert [(c.reason, c.action) for c in dry.cycles()] == [("start", "dry_run")]
    assert paper.cycles() == []
    dry.close()
    paper.close()
    store = PaperStore(journal, "seed example 1")
    assert store.trades() == [] and store.load() is None
    store.close()
