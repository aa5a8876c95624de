"""`fbr execute` and `fbr status` end to end: dry run (default), paper, Binance through the loopback
emulator, --resume after a crash, and user errors as one message with exit code 2."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

EXEC_TESTS = str(Path(__file__).resolve().parents[1] / "executor")
if EXEC_TESTS not in sys.path:
    sys.path.insert(0, EXEC_TESTS)

from binance_emulator import BinanceEmulator, Fault  # noqa: E402
from exec_helpers import cli_emulator  # noqa: E402

from executor.ccxt_gateway import CcxtGateway  # noqa: E402
from fbr.cli import app  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_example_1.toml"
runner = CliRunner()


class Crash(BaseException):
    """Stands for the process dying."""


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[BinanceEmulator]:
    """A loopback emulator that `fbr ... --exchange binanceusdm` talks to, keys in the environment."""
    with cli_emulator(monkeypatch, "cli-key", "cli-secret") as emu:
        yield emu


def _json(*args: str) -> dict[str, Any]:
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def test_dry_run_is_the_default_and_sends_nothing(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    out = _json("execute", str(SEED), "--journal", str(journal))
    assert out["mode"] == "dry-run" and not journal.exists()
    legs = out["plan"]["legs"]
    # the seed answer: short BTC 1000 USD, long ETH 500, long SOL 500 (lot 1e-8)
    assert {leg["symbol"]: leg["notional"] for leg in legs} == pytest.approx(
        {"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0}, abs=0.01)
    assert all(leg["status"] == "skipped" for leg in out["report"]["legs"])
    res = runner.invoke(app, ["execute", str(SEED)])
    assert res.exit_code == 0 and "dry run" in res.stdout and "fbr" in res.stdout


def test_paper_execute_then_status_shows_the_book_on_target(tmp_path: Path) -> None:
    journal = str(tmp_path / "j.sqlite")
    out = _json("execute", str(SEED), "--exchange", "paper", "--journal", journal)
    assert out["mode"] == "paper" and out["report"]["complete"]
    pvf = out["planned_vs_filled"]
    assert all(row["planned"] == pytest.approx(row["filled"]) for row in pvf.values())
    st = _json("status", str(SEED), "--exchange", "paper", "--journal", journal)
    for asset, want in {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}.items():
        assert st["targets"][asset] == want
        assert st["weights_before"][asset] == pytest.approx(want, abs=1e-6)
        assert st["drift_pp"][asset] == pytest.approx(0.0, abs=1e-4)
    assert st["tracking_error"] == pytest.approx(0.0, abs=1e-6)
    assert st["rebalance_due"] is False and st["plan"]["legs"] == []
    # margin by hand: IM = 2000 USD gross / 10x; MM = 0.5% x 2000; collateral = 3000 less fees
    m = st["margin"]
    assert m["initial"] == pytest.approx(200.0, rel=1e-3)
    assert m["maintenance"] == pytest.approx(10.0, rel=1e-3)
    assert m["margin_ratio"] == pytest.approx(m["maintenance"] / m["collateral"])
    # a second execute from the journal's paper account has nothing left to do
    again = _json("execute", str(SEED), "--exchange", "paper", "--journal", journal)
    assert again["plan"]["legs"] == []
    before = _json("status", str(SEED), "--exchange", "paper", "--journal", str(tmp_path / "new.sqlite"))
    assert before["rebalance_due"] is True and len(before["plan"]["legs"]) == 3
    assert before["funding"]["source"] == "no rebalance in the journal"


def test_live_execute_against_the_emulator_and_status(emu: BinanceEmulator, tmp_path: Path) -> None:
    journal = str(tmp_path / "j.sqlite")
    dry = _json("execute", str(SEED), "--exchange", "binanceusdm", "--journal", journal)
    assert dry["mode"] == "dry-run" and not emu.requests_to("/fapi/v1/order", "POST")
    out = _json("execute", str(SEED), "--exchange", "binanceusdm", "--live", "--journal", journal)
    assert out["mode"] == "live" and out["report"]["complete"]
    for leg in out["plan"]["legs"]:
        assert len(emu.orders_for(leg["client_id"])) == 1
    st = _json("status", str(SEED), "--exchange", "binanceusdm", "--journal", journal)
    assert st["positions"] == pytest.approx(out["plan"]["target"])
    assert st["open_orders"] == [] and st["venue"] == "binanceusdm"
    assert datetime.fromisoformat(st["funding"]["since"]).tzinfo is not None  # ISO 8601 UTC


def test_a_run_inside_a_silence_the_exchange_asked_for_is_refused_before_any_request(
        emu: BinanceEmulator, tmp_path: Path) -> None:
    """A journal holding this account's silence until an hour from now (an earlier run met a
    ban): `fbr execute --live` exits 6 (refused) naming the time, and the exchange sees no
    request at all; once the silence has passed the same command runs."""
    import time

    from executor.journal import Journal

    journal = tmp_path / "j.sqlite"
    key = CcxtGateway(emu.exchange(api_key="cli-key", secret="cli-secret")).account_key()
    with Journal(journal) as j:
        j.set_silence(key, int(time.time() * 1000) + 3_600_000)
    res = runner.invoke(app, ["execute", str(SEED), "--exchange", "binanceusdm", "--live",
                              "--journal", str(journal)])
    assert res.exit_code == 6, res.output
    assert "asked this account's runs for silence until" in res.stderr and emu.requests == []
    with Journal(journal) as j:
        j.set_silence(key, int(time.time() * 1000) - 1)
    out = _json("execute", str(SEED), "--exchange", "binanceusdm", "--live", "--journal", str(journal))
    assert out["report"]["complete"]


def test_a_ban_met_by_status_is_journalled_and_the_next_run_sends_nothing(
        emu: BinanceEmulator, tmp_path: Path) -> None:
    """`fbr status` meets an IP ban of an hour (another client on this IP called inside a 429's
    wait): it fails naming the ban, and the journal keeps the silence, so `fbr execute --live`,
    `fbr status` and `fbr solve --exchange` right after are refused (exit 6) without a request:
    a request inside a ban lengthens it."""
    import hashlib
    import hmac
    from urllib.parse import urlencode

    import requests

    from executor.journal import Journal

    def balance() -> int:
        query = urlencode({"timestamp": emu.now_ms()})
        sig = hmac.new(b"cli-secret", query.encode(), hashlib.sha256).hexdigest()
        return requests.get(f"{emu.base_url}/fapi/v2/balance?{query}&signature={sig}",
                            headers={"X-MBX-APIKEY": "cli-key"}, timeout=5).status_code

    journal = tmp_path / "j.sqlite"
    Journal(journal).close()  # the account's journal (its earlier runs)
    emu.retry_after_s, emu.ban_s = 30, 3_600
    emu.inject(Fault.HTTP_429, path="/fapi/v2/balance", method="GET")
    assert (balance(), balance()) == (429, 418)
    res = runner.invoke(app, ["status", str(SEED), "--exchange", "binanceusdm", "--journal",
                              str(journal)])
    assert res.exit_code != 0 and "without requests" in res.stderr, res.output
    key = CcxtGateway(emu.exchange(api_key="cli-key", secret="cli-secret")).account_key()
    with Journal(journal) as j:
        until = j.silence_until(key)
    assert until is not None and until > emu.now_ms() + 3_500_000
    seen = len(emu.requests)
    for args in (["execute", str(SEED), "--exchange", "binanceusdm", "--live"],
                 ["status", str(SEED), "--exchange", "binanceusdm"],
                 ["solve", str(SEED), "--exchange", "binanceusdm"]):
        res = runner.invoke(app, [*args, "--journal", str(journal)])
        assert res.exit_code == 6 and "asked this account's runs for silence" in res.stderr
    assert len(emu.requests) == seen


def test_crash_then_resume_through_the_cli(emu: BinanceEmulator, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    journal = tmp_path / "j.sqlite"
    real = CcxtGateway.create_order
    calls = {"n": 0}

    def crashing(self: CcxtGateway, leg: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            real(self, leg)
            raise Crash()
        return real(self, leg)

    monkeypatch.setattr(CcxtGateway, "create_order", crashing)
    with pytest.raises(Crash):
        runner.invoke(app, ["execute", str(SEED), "--exchange", "binanceusdm", "--live",
                            "--journal", str(journal)], catch_exceptions=False)
    monkeypatch.setattr(CcxtGateway, "create_order", real)
    con = sqlite3.connect(journal)
    (pid,) = con.execute("SELECT plan_id FROM plans").fetchone()
    con.close()
    res = runner.invoke(app, ["execute", "--resume", pid, "--journal", str(journal)])
    assert res.exit_code == 2 and "--live" in res.stderr  # a live plan resumes only with --live
    out = _json("execute", "--resume", pid, "--live", "--journal", str(journal))
    assert out["report"]["complete"] and out["exit_code"] == 0
    for sym in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):  # one accepted order per contract
        assert sum(1 for o in emu.accepted_orders() if o.symbol == sym) == 1, sym
    assert len(emu.requests_to("/fapi/v1/order", "POST")) == 3
    target = out["plan"]["target"]
    assert emu.positions == pytest.approx({"BTCUSDT": target["BTC-PERP"],
                                           "ETHUSDT": target["ETH-PERP"],
                                           "SOLUSDT": target["SOL-PERP"]})


def test_paper_resume_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from executor.paper import PaperGateway

    journal = tmp_path / "j.sqlite"
    real = PaperGateway.create_order
    calls = {"n": 0}

    def crashing(self: PaperGateway, leg: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash()
        return real(self, leg)

    monkeypatch.setattr(PaperGateway, "create_order", crashing)
    with pytest.raises(Crash):
        runner.invoke(app, ["execute", str(SEED), "--exchange", "paper", "--journal", str(journal)],
                      catch_exceptions=False)
    monkeypatch.setattr(PaperGateway, "create_order", real)
    con = sqlite3.connect(journal)
    (pid,) = con.execute("SELECT plan_id FROM plans").fetchone()
    con.close()
    out = _json("execute", "--resume", pid, "--journal", str(journal))
    assert out["report"]["complete"]
    st = _json("status", str(SEED), "--exchange", "paper", "--journal", str(journal))
    assert st["tracking_error"] == pytest.approx(0.0, abs=1e-6)
    con = sqlite3.connect(journal)
    rows = con.execute("SELECT o.symbol, o.side, f.contracts FROM fills f JOIN orders o ON "
                       "o.plan_id = f.plan_id AND o.leg = f.leg WHERE f.plan_id = ?", (pid,)).fetchall()
    con.close()
    traded: dict[str, float] = {}
    for sym, side, q in rows:
        traded[sym] = traded.get(sym, 0.0) + (q if side == "buy" else -q)
    plan = out["plan"]
    assert traded == pytest.approx({s: plan["target"][s] - plan["start"][s] for s in plan["target"]})
    # resuming the finished paper plan sends nothing and charges nothing
    again = _json("execute", "--resume", pid, "--journal", str(journal))
    assert again["report"]["complete"]
    st2 = _json("status", str(SEED), "--exchange", "paper", "--journal", str(journal))
    assert st2["nav"] == pytest.approx(st["nav"], abs=1e-9)


@pytest.mark.parametrize(("args", "text"), [
    (["execute", "missing.toml"], "does not exist"),
    (["execute", str(SEED), "--exchange", "binanceusdm", "--live"], "FBR_BINANCEUSDM_API_KEY"),
    (["execute", str(SEED), "--max-order-usd", "600"], "per-order limit"),
    (["execute", str(SEED), "--max-plan-usd", "1500"], "per-plan limit"),
    (["execute", str(SEED), "--order-type", "stop"], "--order-type"),
    (["execute", "--resume", "nope"], "does not exist"),
    (["execute", str(SEED), "--exchange", "paper", "--live"], "--live"),
    (["status", "missing.toml"], "does not exist"),
])
def test_user_errors_are_one_message_exit_2(args: list[str], text: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FBR_BINANCEUSDM_API_KEY", raising=False)
    monkeypatch.delenv("FBR_BINANCEUSDM_SECRET", raising=False)
    res = runner.invoke(app, [*args, "--journal", str(tmp_path / "j.sqlite")])
    assert res.exit_code == 2, res.output
    assert text in res.stderr and "Traceback" not in res.output
    res = runner.invoke(app, [*args, "--journal", str(tmp_path / "j.sqlite"), "--json"])
    assert res.exit_code == 2 and json.loads(res.stdout)["status"] == "error"


def test_a_timeout_after_accept_through_the_cli(emu: BinanceEmulator, tmp_path: Path) -> None:
    emu.inject(Fault.TIMEOUT_AFTER_ACCEPT, path="/fapi/v1/order", method="POST", delay_s=1.0)
    out = _json("execute", str(SEED), "--exchange", "binanceusdm", "--live", "--journal",
                str(tmp_path / "j.sqlite"))
    assert out["report"]["complete"]
    for leg in out["plan"]["legs"]:
        assert len(emu.orders_for(leg["client_id"])) == 1
