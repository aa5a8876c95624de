"""``fbr data fetch`` refuses a request that cannot give a usable data folder: an empty or repeated
--interval list (no spot_<interval> file: every backtest step would fail on the missing folder),
and a --since in the future (no closed bar; it used to exit 0 after loading the markets). Against
the loopback Binance emulator, which records every request."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "executor"))
from binance_emulator import BinanceEmulator

from executor.fetch_history import FetchRequest
from fbr.cli import app
from models.errors import ValidationError


def refused(out: Path, *args: str) -> str:
    """``fbr data fetch --symbols BTC --out OUT --json ARGS``: exit 2 and one JSON error; the
    message."""
    res = CliRunner().invoke(app, ["data", "fetch", "--symbols", "BTC", "--out", str(out),
                                   "--json", *args])
    assert res.exit_code == 2, res.output
    doc = json.loads(res.stdout.splitlines()[0])
    assert doc["status"] == "error"
    return str(doc["error"])


@pytest.mark.parametrize("interval", ["", ",", " , ", "1d,1d", "4h,1d,4h"])
def test_an_empty_or_repeated_interval_list_is_refused_before_any_request(
        fetch_emu: BinanceEmulator, tmp_path: Path, interval: str) -> None:
    """--interval '' (or ',', or only blanks) lists no spot interval, '1d,1d' one twice: exit 2,
    the message names interval and --interval, no request sent, nothing written (before the fix
    '' and ',' fetched no spot klines and exited 0)."""
    error = refused(tmp_path, "--since", "2024-01-01", "--until", "2024-01-03",
                    "--interval", interval)
    assert error.startswith("interval") and "--interval" in error, error
    assert fetch_emu.requests == [] and not list(tmp_path.iterdir())


def test_fetch_request_refuses_no_interval() -> None:
    """The library check behind it: FetchRequest with intervals () or ('1d', '1d')."""
    since = pd.Timestamp("2024-01-01", tz="UTC")
    for intervals in ((), ("1d", "1d")):
        with pytest.raises(ValidationError, match="--interval") as err:
            FetchRequest("binanceusdm", ("BTC",), since, None, intervals)
        assert err.value.field == "interval"


@pytest.mark.parametrize("until", [None, "2100-01-01"])
def test_a_since_in_the_future_is_refused_before_any_data_request(
        fetch_emu: BinanceEmulator, tmp_path: Path, until: str | None) -> None:
    """--since 2099-01-01 (without --until: up to now; or with --until 2100-01-01) is after the
    emulator's time (the wall clock): exit 2, the message starts with since and names --since;
    the only request is the exchange's time (/fapi/v1/time), nothing is written."""
    extra = ("--until", until) if until is not None else ()
    error = refused(tmp_path, "--since", "2099-01-01", *extra)
    assert error.startswith("since") and "--since" in error, error
    assert [r.path for r in fetch_emu.requests] == ["/fapi/v1/time"]
    assert not list(tmp_path.iterdir())
