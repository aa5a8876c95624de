"""Make the Binance emulator (``binance_emulator``) importable under pytest's importlib import
mode and offer fixtures: a running emulator per test and a ccxt client wired to it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import ccxt  # noqa: E402
from binance_emulator import BinanceEmulator  # noqa: E402


@pytest.fixture
def emulator() -> Iterator[BinanceEmulator]:
    """A started emulator (default markets, 100k USDT), stopped after the test."""
    emu = BinanceEmulator().start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def exchange(emulator: BinanceEmulator) -> ccxt.binanceusdm:
    """A real ccxt binanceusdm client wired to ``emulator`` with its keys (markets loaded)."""
    ex = emulator.exchange()
    ex.load_markets()
    return ex
