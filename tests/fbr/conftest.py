"""Fixtures for the CLI tests: fbr's per-user data directory (the default journal) lives in a
temporary folder, never in the real user's one."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # cli_helpers (run_fbr) for the test modules
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True)
def _data_home(tmp_path_factory: pytest.TempPathFactory,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """FBR_DATA_HOME -> a temporary folder shared by the session; FBR_JOURNAL unset."""
    monkeypatch.setenv("FBR_DATA_HOME", str(tmp_path_factory.getbasetemp() / "fbr-data"))
    monkeypatch.delenv("FBR_JOURNAL", raising=False)
    yield


@pytest.fixture
def fetch_emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A running Binance emulator wired into ``fbr data fetch`` (keyless futures client; the
    retry backoff does not sleep)."""
    import fbr.data_cli

    executor_tests = str(Path(__file__).resolve().parents[1] / "executor")
    if executor_tests not in sys.path:
        sys.path.insert(0, executor_tests)
    from binance_emulator import BinanceEmulator

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
