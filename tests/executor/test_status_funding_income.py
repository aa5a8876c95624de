"""Funding paid and received since the last rebalance, from the exchange's real income history.

The emulator's clock is pinned and moved over 8 h settlements with known marks and rates; every
expected figure is worked by hand here: a position of q base units at mark P with rate r receives
-r x q x P USDT (a long pays a positive rate, a short receives it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import ccxt
import pytest
from binance_emulator import BinanceEmulator, Fault
from exec_helpers import SEED_BOOK, cli_emulator, market, solution_with, three_asset_book
from typer.testing import CliRunner

import executor.ccxt_funding as gw_mod
from executor.base import ReadFailedError
from executor.ccxt_errors import ExchangeSetupError
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal, now_ms
from executor.plan import PlanOptions, book_instruments, plan_orders
from executor.status import FundingSource, funding_view
from fbr.cli import app

H = 3_600_000
# 2025-03-01 05:00 UTC: settlements follow at 08:00, 16:00 and 00:00 (multiples of 8 h since 1970)
T0 = 1_740_805_200_000
S1, S2, S3 = T0 + 3 * H, T0 + 11 * H, T0 + 19 * H
CANARY_KEY = "canaryKEYfund8Hq2Wv5Zp1Lr7Tx3"
CANARY_SECRET = "canarySECRETfund4Nb9Jc6Ye2Ks0Ua"
runner = CliRunner()


def _three_settlements(emu: BinanceEmulator) -> list[float]:
    """Long 0.5 BTC and short 2 ETH over S1..S3 with a new mark and rate before each settlement;
    returns the hand-worked account income of each settlement (BTC + ETH, USDT)."""
    emu.set_time(T0)
    emu.set_position("BTCUSDT", 0.5, 60_000.0)
    emu.set_position("ETHUSDT", -2.0, 3_000.0)
    steps = [  # (BTC mark, BTC rate, ETH mark, ETH rate) in force at S1, S2, S3
        (60_000.0, 0.0001, 3_000.0, 0.0002),
        (62_000.0, -0.0003, 3_100.0, 0.0001),
        (58_000.0, 0.0005, 2_900.0, -0.0004),
    ]
    income: list[float] = []
    for when, (btc_px, btc_r, eth_px, eth_r) in zip((S1, S2, S3), steps, strict=True):
        emu.set_mark("BTCUSDT", btc_px)
        emu.set_mark("ETHUSDT", eth_px)
        emu.set_funding("BTCUSDT", btc_r)
        emu.set_funding("ETHUSDT", eth_r)
        emu.advance_to(when + H)  # passes exactly one settlement
        income.append(-btc_r * 0.5 * btc_px - eth_r * (-2.0) * eth_px)
    # S1: long 30,000 USD pays 0.01% = -3.00; short 6,000 USD receives 0.02% = +1.20
    # S2: long 31,000 receives 0.03% = +9.30; short 6,200 receives 0.01% = +0.62
    # S3: long 29,000 pays 0.05% = -14.50; short 5,800 pays 0.04% = -2.32
    assert income == pytest.approx([-1.80, 9.92, -16.82])
    return income


def test_emulator_settles_funding_on_the_clock() -> None:
    with BinanceEmulator() as emu:
        before = emu.balance
        income = _three_settlements(emu)
        assert emu.balance - before == pytest.approx(sum(income), abs=1e-8)
        rows = [r for r in emu.income if r.income_type == "FUNDING_FEE"]
        assert [(r.symbol, r.time_ms) for r in rows] == [
            ("BTCUSDT", S1), ("ETHUSDT", S1), ("BTCUSDT", S2), ("ETHUSDT", S2),
            ("BTCUSDT", S3), ("ETHUSDT", S3)]
        assert [r.amount for r in rows] == pytest.approx([-3.0, 1.2, 9.3, 0.62, -14.5, -2.32])
        # no settlement inside a period, none on a jump of the clock, the clock never goes back
        assert emu.advance(hours=6) == [] and emu.now_ms() == S3 + 7 * H
        emu.set_time(S3 + 100 * H)
        assert len(emu.income) == 6
        with pytest.raises(ValueError):
            emu.advance_to(S3)
        # a flat book pays nothing
        emu.set_position("BTCUSDT", 0.0)
        emu.set_position("ETHUSDT", 0.0)
        assert emu.advance(hours=24) == []


def test_ccxt_parses_the_income_history(emulator: BinanceEmulator,
                                        exchange: ccxt.binanceusdm) -> None:
    _three_settlements(emulator)
    exchange.load_time_difference()  # the exchange's clock moved on: signed requests must follow it
    # a fill adds COMMISSION income, which funding history must leave out
    exchange.create_order("BTC/USDT:USDT", "market", "sell", 0.1)
    assert any(r.income_type == "COMMISSION" for r in emulator.income)
    got = exchange.fetch_funding_history(None, T0)
    assert [(r["symbol"], r["timestamp"]) for r in got] == [
        ("BTC/USDT:USDT", S1), ("ETH/USDT:USDT", S1), ("BTC/USDT:USDT", S2),
        ("ETH/USDT:USDT", S2), ("BTC/USDT:USDT", S3), ("ETH/USDT:USDT", S3)]
    assert [r["amount"] for r in got] == pytest.approx([-3.0, 1.2, 9.3, 0.62, -14.5, -2.32])
    assert {r["code"] for r in got} == {"USDT"} and len({r["id"] for r in got}) == 6
    req = emulator.requests_to("/fapi/v1/income")[-1]
    assert req.params["incomeType"] == "FUNDING_FEE" and req.params["startTime"] == str(T0)
    # one symbol, a window and a limit
    btc = exchange.fetch_funding_history("BTC/USDT:USDT", S2, 1)
    assert [(r["timestamp"], r["amount"]) for r in btc] == [(S2, pytest.approx(9.3))]
    assert emulator.requests_to("/fapi/v1/income")[-1].params["symbol"] == "BTCUSDT"
    # signed: a wrong secret is refused
    bad = emulator.exchange(secret="not-the-secret")
    bad.load_markets()
    with pytest.raises(ccxt.AuthenticationError):
        bad.fetch_funding_history(None, T0)


def test_gateway_pages_retries_and_names_contracts(emulator: BinanceEmulator,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _three_settlements(emulator)
    sleeps: list[float] = []
    gw = CcxtGateway(emulator.exchange(), base_delay_s=0.25, sleep=sleeps.append)
    book = three_asset_book()
    instruments = gw.instruments(book)
    # two rows share each settlement time: pages of 2 must neither loop nor lose rows
    monkeypatch.setattr(gw_mod, "FUNDING_PAGE", 2)
    emulator.inject(Fault.HTTP_503, path="/fapi/v1/income")
    n0 = len(emulator.requests_to("/fapi/v1/income"))
    pays = gw.funding_history(T0, instruments)
    assert [(p.contract, p.exchange_symbol, p.time_ms) for p in pays] == [
        ("BTC-PERP", "BTC/USDT:USDT", S1), ("ETH-PERP", "ETH/USDT:USDT", S1),
        ("BTC-PERP", "BTC/USDT:USDT", S2), ("ETH-PERP", "ETH/USDT:USDT", S2),
        ("BTC-PERP", "BTC/USDT:USDT", S3), ("ETH-PERP", "ETH/USDT:USDT", S3)]
    assert [p.amount for p in pays] == pytest.approx([-3.0, 1.2, 9.3, 0.62, -14.5, -2.32])
    assert sleeps == [0.25]  # one 503, one backoff, then the read went through
    starts = [r.params["startTime"] for r in emulator.requests_to("/fapi/v1/income")[n0:]]
    assert starts[:2] == [str(T0), str(T0)]  # the 503 and its retry
    assert len(starts) >= 4 and starts == sorted(starts, key=int)
    # since S2: the last two settlements only, mapped to the book (ETH-PERP + BTC-PERP)
    rows = gw.funding_since(S2, instruments)
    assert rows is not None
    assert sum(r.amount for r in rows) == pytest.approx(9.3 + 0.62 - 14.5 - 2.32)


def test_gateway_funding_history_rides_out_a_status_unknown_answer(emulator: BinanceEmulator) -> None:
    """Binance's -1000 ("an unknown error occurred") maps to ccxt OperationFailed, not a
    NetworkError: the income read retries it like every other read of the gateway."""
    _three_settlements(emulator)
    sleeps: list[float] = []
    gw = CcxtGateway(emulator.exchange(), base_delay_s=0.25, sleep=sleeps.append)
    gw.ex.load_time_difference()  # the emulator's clock is pinned in the past: signed requests follow it
    emulator.inject_unknown_status(-1000, path="/fapi/v1/income", method="GET", after_accept=False)
    n0 = len(emulator.requests_to("/fapi/v1/income"))
    pays = gw.funding_history(T0)
    assert [p.amount for p in pays] == pytest.approx([-3.0, 1.2, 9.3, 0.62, -14.5, -2.32])
    assert sleeps == [0.25] and len(emulator.requests_to("/fapi/v1/income")) - n0 == 2


def test_gateway_read_failures_are_clear_and_keep_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    with BinanceEmulator(api_key=CANARY_KEY, secret=CANARY_SECRET) as emu:
        gw = CcxtGateway(emu.exchange(secret=CANARY_SECRET + "x"), sleep=lambda s: None)
        caplog.set_level(logging.DEBUG, logger="executor")
        with pytest.raises(ExchangeSetupError) as bad_key:  # refused for good, as every read
            gw.funding_history(T0)
        for _ in range(4):
            emu.inject(Fault.HTTP_503, path="/fapi/v1/income")
        ok = CcxtGateway(emu.exchange(), sleep=lambda s: None)
        with pytest.raises(ReadFailedError) as down:
            ok.funding_history(T0)
    assert "AuthenticationError" in str(bad_key.value)
    assert "failed 4 times" in str(down.value)
    for text in (str(bad_key.value), str(down.value), caplog.text):
        assert CANARY_SECRET not in text and CANARY_KEY not in text


def _journal_with_plan(path: Path) -> Journal:
    """A journal whose last plan for binanceusdm / 'test book' is made now (wall clock)."""
    book = three_asset_book()
    plan = plan_orders(solution_with({"BTC-PERP": -1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0}), book,
                       market(), book_instruments(book), PlanOptions(venue="binanceusdm"),
                       plan_id="F1")
    j = Journal(path)
    j.record_plan(plan)
    return j


def test_status_funding_uses_the_exchange_then_the_journal(emulator: BinanceEmulator,
                                                           tmp_path: Path) -> None:
    book = three_asset_book()
    gw = CcxtGateway(emulator.exchange(), sleep=lambda s: None)
    instruments = gw.instruments(book)
    with _journal_with_plan(tmp_path / "j.sqlite") as j:
        since = j.last_rebalance("binanceusdm", book.name)
        assert since is not None and not since.completed
        emulator.set_time(now_ms())
        emulator.set_position("BTCUSDT", -0.02, 60_000.0)  # a 1,200 USD short
        emulator.set_funding("BTCUSDT", 0.0001)
        emulator.advance(hours=24)  # three settlements: +0.12 USD each
        fv = funding_view(book, market(), gw, j, instruments)
        assert fv.source == FundingSource.EXCHANGE and fv.payments == 3 and fv.plan_id == "F1"
        assert fv.total == pytest.approx(3 * 0.0001 * 0.02 * 60_000) and fv.note == ""
        assert fv.by_symbol == pytest.approx({"BTC-PERP": 0.36})
        funding_view(book, market(), gw, j, instruments)  # read again: the journal stays as it was
        assert j.funding_since("binanceusdm", book.name, 0) == pytest.approx({"BTC-PERP": 0.36})
        # the exchange down: the journal's rows, and why
        for _ in range(4):
            emulator.inject(Fault.HTTP_503, path="/fapi/v1/income")
        fv2 = funding_view(book, market(), gw, j, instruments)
        assert fv2.source == FundingSource.JOURNAL and fv2.total == pytest.approx(0.36)
        assert "exchange income history failed" in fv2.note


@pytest.fixture
def canary_emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[BinanceEmulator]:
    """An emulator `fbr ... --exchange binanceusdm` reaches, canary keys in the environment."""
    with cli_emulator(monkeypatch, CANARY_KEY, CANARY_SECRET) as emu:
        yield emu


def test_fbr_status_shows_the_exchange_funding(canary_emu: BinanceEmulator, tmp_path: Path) -> None:
    journal = str(tmp_path / "j.sqlite")
    res = runner.invoke(app, ["execute", str(SEED_BOOK), "--exchange", "binanceusdm", "--live",
                              "--journal", journal, "--json"])
    assert res.exit_code == 0, res.output
    held = {s: q for s, q in canary_emu.positions.items() if q}
    assert set(held) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    canary_emu.set_time(now_ms())
    wallet_start = canary_emu.balance
    marks = {"BTCUSDT": (61_000.0, 60_500.0, 59_000.0), "ETHUSDT": (2_600.0, 2_550.0, 2_500.0),
             "SOLUSDT": (140.0, 150.0, 160.0)}
    rates = {"BTCUSDT": (0.0001, 0.0002, -0.0001), "ETHUSDT": (0.0003, -0.0002, 0.0001),
             "SOLUSDT": (-0.0005, 0.0004, 0.0002)}
    want = {"BTCUSDT": 0.0, "ETHUSDT": 0.0, "SOLUSDT": 0.0}
    for k in range(3):
        for s in held:
            canary_emu.set_mark(s, marks[s][k])
            canary_emu.set_funding(s, rates[s][k])
            want[s] += -rates[s][k] * held[s] * marks[s][k]
        canary_emu.advance_to(canary_emu.next_funding_ms() + 60_000)
    wallet_before = canary_emu.balance
    assert wallet_before - wallet_start == pytest.approx(sum(want.values()), abs=1e-7)
    res = runner.invoke(app, ["status", str(SEED_BOOK), "--exchange", "binanceusdm", "--journal",
                              journal, "--json"])
    assert res.exit_code == 0, res.output
    assert canary_emu.balance == wallet_before  # status only reads
    st = json.loads(res.stdout)
    f = st["funding"]
    assert f["source"] == "exchange income history" and f["payments"] == 9
    assert f["total"] == pytest.approx(sum(want.values()), abs=1e-7)
    assert f["by_symbol"] == pytest.approx({"BTC-PERP": want["BTCUSDT"], "ETH-PERP": want["ETHUSDT"],
                                            "SOL-PERP": want["SOLUSDT"]}, abs=1e-7)
    text = runner.invoke(app, ["status", str(SEED_BOOK), "--exchange", "binanceusdm", "--journal",
                               journal])
    assert text.exit_code == 0, text.output
    assert "exchange income history" in text.stdout and f"{sum(want.values()):+,.4f}" in text.stdout
    for out in (res.stdout, res.stderr, text.stdout, text.stderr):
        assert CANARY_KEY not in out and CANARY_SECRET not in out
