"""``fbr data fetch`` meeting a long rate limit (HTTP 429 with Retry-After over the 300 s fbr waits):
the message names the seconds asked and the UTC time the wait ends, and the silence is kept in the
per-user journal, so a rerun inside it is refused (exit code 6) before any request: Binance bans
an IP that calls inside the wait. Against the loopback Binance emulator (it counts the bans)."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "executor"))
from binance_emulator import BinanceEmulator, Fault

import fbr.data_cli
from fbr.cli import app

_END = re.compile(r"until (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[BinanceEmulator]:
    """A running emulator wired into ``fbr data fetch`` (keyless futures client), and a per-user
    data folder (the journal keeping the silence) of this test alone."""
    monkeypatch.setenv("FBR_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FBR_JOURNAL", raising=False)
    emulator = BinanceEmulator().start()

    def factory(exchange_id: str) -> Any:
        if exchange_id == "binanceusdm":
            return emulator.exchange(api_key="", secret="")
        return emulator.spot_exchange()

    monkeypatch.setattr(fbr.data_cli, "exchange_factory", factory)
    monkeypatch.setattr("executor.ccxt_wiring.time.sleep", lambda _s: None)
    try:
        yield emulator
    finally:
        emulator.stop()


def fetch(out: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """``fbr data fetch --symbols BTC`` over two days into ``out`` (--json): exit code, document."""
    res = CliRunner().invoke(app, ["data", "fetch", "--symbols", "BTC", "--since", "2024-01-01",
                                   "--until", "2024-01-03", "--out", str(out), "--json", *args])
    return res.exit_code, json.loads(res.stdout.splitlines()[0])


def end_of(message: str) -> float:
    """The UTC end time a message names, epoch seconds."""
    m = _END.search(message)
    assert m is not None, message
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def test_a_long_rate_limit_message_names_the_wait_and_its_end(emu: BinanceEmulator,
                                                              tmp_path: Path) -> None:
    """The funding history answers 429 with Retry-After: 3600 (the emulator's header). Exit 2,
    and the message names "3,600 s" and an end 3,600 s after the answer (UTC, to the second)."""
    emu.retry_after_s = 3_600
    emu.inject(Fault.HTTP_429, path="/fapi/v1/fundingRate")
    before = time.time()
    code, doc = fetch(tmp_path / "data")
    after = time.time()
    assert code == 2, doc
    error = doc["error"]
    assert "is rate-limiting this IP" in error and "3,600 s without requests" in error, error
    assert before + 3_600 - 1 <= end_of(error) <= after + 3_600 + 1
    assert emu.bans == 0 and len(emu.requests_to("/fapi/v1/fundingRate")) == 1


def test_a_rerun_inside_the_silence_sends_nothing_and_is_refused(emu: BinanceEmulator,
                                                                 tmp_path: Path) -> None:
    """Right after the fetch above stopped on the 429 (Retry-After 3,600 s), the same fetch is run
    again, and once more with --spot-source index (the futures exchange still): each is refused
    with exit code 6 (refused, as every fbr command inside a silence) and no request at all (the
    emulator: 0 bans, no request after the 429), naming the same end and the seconds left
    (3,600 less the seconds since)."""
    emu.retry_after_s = 3_600
    emu.inject(Fault.HTTP_429, path="/fapi/v1/fundingRate")
    _code, first = fetch(tmp_path / "data")
    sent = len(emu.requests)
    for extra in ((), ("--spot-source", "index")):
        code, doc = fetch(tmp_path / "data", *extra)
        assert code == 6, doc
        assert emu.bans == 0 and len(emu.requests) == sent
        error = doc["error"]
        assert end_of(error) == end_of(first["error"]), error
        assert "is rate-limiting this IP" in error and "nothing was sent" in error
        left = int(error.split("it asked for ")[1].split(" s more")[0].replace(",", ""))
        assert 3_590 <= left <= 3_600


def test_a_fetch_after_the_silence_runs(emu: BinanceEmulator, tmp_path: Path) -> None:
    """The journal holds the IP's silence on binanceusdm until one second ago: the fetch runs
    (exit 0, 2 daily spot bars of BTC)."""
    from executor.journal import Journal
    from executor.silence import ip_scope
    from fbr.console import default_journal

    with Journal(default_journal()) as j:
        j.set_silence(ip_scope("binanceusdm"), int(time.time() * 1000) - 1_000)
    code, doc = fetch(tmp_path / "data")
    assert code == 0, doc
    assert {(f["kind"], f["rows"]) for f in doc["files"]} >= {("spot_1d", 2)}


def test_a_silence_of_the_spot_exchange_is_kept_too(emu: BinanceEmulator, tmp_path: Path) -> None:
    """A 429 (Retry-After 3,600) on the spot klines (ccxt ``binance``, the spot exchange of
    binanceusdm) stops the fetch naming binance (exit 2) and is kept for it: the same fetch, and
    one with --spot-source index (binanceusdm only: the same operator's limits on this IP), are
    then refused naming binance (exit 6), with no request."""
    emu.retry_after_s = 3_600
    emu.inject(Fault.HTTP_429, path="/api/v3/klines")
    code, doc = fetch(tmp_path / "data")
    assert code == 2 and doc["error"].startswith("binance is rate-limiting this IP"), doc
    sent = len(emu.requests)
    for extra in ((), ("--spot-source", "index")):
        code, doc = fetch(tmp_path / "data", *extra)
        assert code == 6 and doc["error"].startswith("binance is rate-limiting this IP"), doc
    assert len(emu.requests) == sent and emu.bans == 0


def test_an_unreadable_journal_is_said_and_the_fetch_goes_ahead(emu: BinanceEmulator,
                                                                tmp_path: Path) -> None:
    """A per-user journal that is not a journal (a text file) cannot say whether an earlier
    fetch met a silence: the fetch goes ahead and says so in one warning (it was silent)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "journal.sqlite").write_text("not a journal")
    res = CliRunner().invoke(app, ["data", "fetch", "--symbols", "BTC", "--since", "2024-01-01",
                                   "--until", "2024-01-03", "--out", str(tmp_path / "data")])
    assert res.exit_code == 0, res.output
    assert "could not be read for a rate-limit silence" in res.stderr
