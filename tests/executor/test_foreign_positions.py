"""A position on a contract the book does not list (opened by hand, by another bot, or left on a
contract removed from the book) on the same USD-M cross-margin account is refused by the exchange
venue, as the paper venue refuses it (``executor.paper_book.check_listed``, exit code 2): its
unrealised PnL and maintenance margin move the margin balance fbr computes, and no plan hedges it.

Figures by hand (the review's account): wallet 5,000 USDT; BTCUSDT -0.05 at 60,000 (the book's
hedge); ETHUSDT -10 entry 3,000, mark 3,450. Binance's cross-margin view: margin balance
5,000 + (-10)(3,450 - 3,000) = 500 USD, maintenance 0.4% x 3,000 + 0.5% x 34,500 = 184.5 USD,
margin ratio 36.9%; fbr read 5,000 USD and 0.24% before this refusal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import cli_emulator
from typer.testing import CliRunner

from executor.ccxt_gateway import CcxtGateway, ForeignPositionError, foreign_positions
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import PlanOptions
from executor.workflow import prepare_plan
from fbr.cli import app
from fbr.config import load_book_file

runner = CliRunner()
FIX = ("add the contract to the book (it is then hedged and counted) or close it on the exchange; "
       "fbr needs the account, or a sub-account, to itself")

# ETH-PERP is not in this book (removed, or never listed); BTC and SOL are hedged.
BOOK = """
[book]
name = "btc sol book"
cash = 5000.0
[targets]
BTC = 0.5
SOL = 0.5
[spot]
BTC = 0.2
SOL = 40.0
[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
lot_step = 0.001
min_notional = 0.0
leverage = 10
[[contracts]]
symbol = "SOL-PERP"
underlying = "SOL"
lot_step = 1
min_notional = 0.0
leverage = 10
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
SOL = 150.0
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
SOL = 0.95
[costs]
trading = false
carry = false
impact = false
[constraints]
margin = false
"""


@pytest.fixture
def emu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BinanceEmulator]:
    """An emulator `fbr ... --exchange binanceusdm` reaches; data and locks under ``tmp_path``."""
    monkeypatch.setenv("FBR_DATA_HOME", str(tmp_path / "fbr-data"))
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("FBR_JOURNAL", raising=False)
    with cli_emulator(monkeypatch, "foreign-key", "foreign-secret") as e:
        yield e


def _cli(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run ``fbr <args> BOOK --exchange binanceusdm --journal J --json`` -> (exit code, JSON)."""
    res = runner.invoke(app, [args[0], str(_book_file(tmp_path)), *args[1:], "--exchange", "binanceusdm",
                              "--journal", str(tmp_path / "j.sqlite"), "--json"])
    return res.exit_code, json.loads(res.stdout)


def _sent(emu: BinanceEmulator) -> list[str]:
    """Every state-changing request the emulator received (orders, leverage, margin type)."""
    return [f"{r.method} {r.path}" for r in list(emu.requests) if r.method in ("POST", "DELETE", "PUT")]


def test_status_refuses_a_position_on_a_contract_the_book_does_not_list(
        emu: BinanceEmulator, tmp_path: Path) -> None:
    """The review's account: status exits 2 naming ETHUSDT, its -10 contracts and the fix, instead
    of reporting collateral 5,000 USD and margin ratio 0.24% (the account's: 500 USD, 36.9%)."""
    emu.balance = 5000.0
    emu.set_position("BTCUSDT", -0.05, 60_000.0)
    emu.set_mark("ETHUSDT", 3_450.0)
    emu.set_position("ETHUSDT", -10.0, 3_000.0)
    code, out = _cli(tmp_path, "status")
    assert code == 2 and out["status"] == "error", out
    msg = out["error"]
    assert "ETHUSDT (ETH/USDT:USDT) -10 contracts" in msg and "book does not list" in msg
    assert FIX in msg
    assert "BTCUSDT" not in msg  # the book's own contract is not named
    assert _sent(emu) == []
    assert emu.positions["ETHUSDT"] == -10.0 and emu.positions["BTCUSDT"] == -0.05


def test_execute_live_refuses_an_open_position_on_a_removed_contract_and_sends_nothing(
        emu: BinanceEmulator, tmp_path: Path) -> None:
    """ETH-PERP removed from the book with ETHUSDT +4 open: the ETH exposure (spot + 4 ETH) would
    be read as spot alone, and the plan would proxy-hedge an under-weight that does not exist.
    `fbr execute --live` refuses before any request that changes the account (no order, no
    leverage or margin-type setting); nothing is journalled as sent."""
    emu.set_position("ETHUSDT", 4.0, 3_000.0)
    code, out = _cli(tmp_path, "execute", "--live")
    assert code == 2, out
    assert "ETHUSDT (ETH/USDT:USDT) +4 contracts" in out["error"] and FIX in out["error"]
    assert _sent(emu) == [] and emu.requests_to("/fapi/v1/order") == []
    assert emu.positions == {"BTCUSDT": 0.0, "ETHUSDT": 4.0, "SOLUSDT": 0.0}


def test_hedge_mode_rows_of_a_foreign_symbol_are_named_each(
        emu: BinanceEmulator, tmp_path: Path) -> None:
    """Hedge mode, ETHUSDT LONG 3 and SHORT 3: net zero, but both legs hold margin: refused, each
    row's signed size named."""
    emu.set_hedge_mode(True)
    emu.set_hedge_position("ETHUSDT", 3.0, 3.0, 3_000.0)
    code, out = _cli(tmp_path, "status")
    assert code == 2, out
    assert "ETHUSDT (ETH/USDT:USDT) +0 contracts net (+3 and -3: LONG and SHORT rows)" in out["error"]


def test_book_positions_and_zero_rows_elsewhere_pass_in_one_positions_request(
        emulator: BinanceEmulator, tmp_path: Path) -> None:
    """Control: positions only on the book's contracts (BTCUSDT, SOLUSDT) and a zero-size row on
    ETHUSDT (given here with an entry price, which ccxt would otherwise drop) pass; the account is
    read with one positionRisk request for every symbol (no ``symbol`` parameter)."""
    emulator.set_position("BTCUSDT", -0.05, 60_000.0)
    emulator.set_position("SOLUSDT", 3.0, 150.0)
    loaded = load_book_file(_book_file(tmp_path))
    gw = CcxtGateway(emulator.exchange(), base_delay_s=0.0)
    real = gw.ex.fetch_positions

    def with_zero_row(symbols: Any = None, params: Any = None) -> list[dict[str, Any]]:
        zero = {"symbol": "ETH/USDT:USDT", "contracts": 0.0, "side": None, "entryPrice": 3_000.0,
                "unrealizedPnl": 0.0, "info": {"symbol": "ETHUSDT", "positionAmt": "0"}}
        return [*real(symbols), zero]

    gw.ex.fetch_positions = with_zero_row
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                        PlanOptions(), plan_id="P1")
    assert {s: p.contracts for s, p in prep.book.futures.items()} == {"BTC-PERP": -0.05,
                                                                      "SOL-PERP": 3.0}
    reads = emulator.requests_to("/fapi/v3/positionRisk")
    assert len(reads) == 1 and "symbol" not in reads[0].params


def test_foreign_positions_keeps_usd_m_rows_only() -> None:
    """Unit: a USD-M perpetual or dated row off the book is kept (signed by side); zero rows, the
    book's symbols, coin-margined and non-USD-settled contracts are another matter."""
    markets: dict[str, dict[str, Any]] = {
        "ETH/USDT:USDT": {"id": "ETHUSDT", "type": "swap", "linear": True, "settle": "USDT"},
        "BTC/USDC:USDC": {"id": "BTCUSDC", "type": "swap", "linear": True, "settle": "USDC"},
        "BTC/USDT:USDT-250627": {"id": "BTCUSDT_250627", "type": "future", "linear": True,
                                 "settle": "USDT"},
        "BTC/USD:BTC": {"id": "BTCUSD_PERP", "type": "swap", "inverse": True, "linear": False,
                        "settle": "BTC"},
    }
    rows = [{"symbol": "ETH/USDT:USDT", "contracts": 10.0, "side": "short"},
            {"symbol": "BTC/USDC:USDC", "contracts": 0.0, "side": "long"},
            {"symbol": "BTC/USDT:USDT-250627", "contracts": 0.2, "side": "long"},
            {"symbol": "BTC/USD:BTC", "contracts": 5.0, "side": "long"},
            {"symbol": "BTC/USDT:USDT", "contracts": 1.0, "side": "long"}]
    got = foreign_positions(rows, {"BTC/USDT:USDT": "BTC-PERP"}, markets, "USDT")
    assert {s: (f.exchange_id, f.sizes) for s, f in got.items()} == {
        "ETH/USDT:USDT": ("ETHUSDT", [-10.0]), "BTC/USDT:USDT-250627": ("BTCUSDT_250627", [0.2])}
    usdc = foreign_positions([{"symbol": "BTC/USDC:USDC", "contracts": 0.1, "side": "long"}], {},
                             markets, "USDT")
    assert usdc["BTC/USDC:USDC"].settle == "USDC"  # kept; refused only in Multi-Assets mode


def test_a_position_opened_during_an_execution_is_warned_in_its_report_then_refused(
        emulator: BinanceEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """ETHUSDT opened by hand while a plan's orders go out: the execution's own report (the
    orders are out) completes with a warning naming it; the next read of the account refuses."""
    loaded = load_book_file(_book_file(tmp_path))
    gw = CcxtGateway(emulator.exchange(), base_delay_s=0.0)
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                        PlanOptions(), plan_id="P1")
    assert prep.plan.legs
    with Journal(tmp_path / "j.sqlite") as j, caplog.at_level(logging.WARNING, "executor.ccxt"):
        report = JournaledExecutor(
            gw, j, PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk),
            retry=RetryPolicy(base_delay_s=0.0), lock_dir=tmp_path / "locks",
            on_leg=lambda leg: emulator.set_position("ETHUSDT", 2.0, 3_000.0)).execute(prep.plan)
    assert report.positions and not report.gaps
    assert any("ETHUSDT (ETH/USDT:USDT) +2 contracts" in r.getMessage() for r in caplog.records)
    with pytest.raises(ForeignPositionError) as exc:
        gw.account(prep.book, prep.market)
    assert exc.value.exit_code == 2 and FIX in str(exc.value)


def test_a_reader_that_only_lists_it_gets_a_warning(
        emulator: BinanceEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``refuse_foreign = False`` (a reader that lists positions outside the book itself, as
    ``fbr account import``'s notes do): the account reads, the book's positions only, and the
    position is logged as a warning."""
    emulator.set_position("BTCUSDT", -0.05, 60_000.0)
    emulator.set_position("ETHUSDT", -10.0, 3_000.0)
    loaded = load_book_file(_book_file(tmp_path))
    gw = CcxtGateway(emulator.exchange(), base_delay_s=0.0)
    gw.refuse_foreign = False
    with caplog.at_level(logging.WARNING, "executor.ccxt"):
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                            PlanOptions(), plan_id="P1")
    assert {s: p.contracts for s, p in prep.book.futures.items()} == {"BTC-PERP": -0.05}
    assert any("ETHUSDT (ETH/USDT:USDT) -10 contracts" in r.getMessage() for r in caplog.records)


def _book_file(tmp_path: Path) -> Path:
    """The book without ETH-PERP, written under ``tmp_path``."""
    path = tmp_path / "book.toml"
    path.write_text(BOOK)
    return path
