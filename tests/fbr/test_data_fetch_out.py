"""``fbr data fetch``: --out and --quote are checked before any request goes to the exchange (the
loopback Binance emulator records every request; none may be made). --out used to be checked
only when the first file was written, after the download (a raw "[Errno 20] Not a directory")."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "executor"))
from binance_emulator import BinanceEmulator

from fbr.cli import app


def refused(fetch_emu: BinanceEmulator, out: Path, *args: str) -> str:
    """``fbr data fetch --symbols BTC ... --out OUT --json ARGS``: exit 2, one JSON error, and no
    request sent to the exchange. Returns the message."""
    res = CliRunner().invoke(app, ["data", "fetch", "--symbols", "BTC", "--since", "2024-01-01",
                                   "--until", "2024-03-01", "--out", str(out), "--json", *args])
    assert res.exit_code == 2, res.output
    doc = json.loads(res.stdout.splitlines()[0])
    assert doc["status"] == "error"
    assert fetch_emu.requests == [], f"{len(fetch_emu.requests)} requests sent before the refusal"
    return str(doc["error"])


def test_out_that_is_a_file_is_refused_before_any_request(fetch_emu: BinanceEmulator,
                                                          tmp_path: Path) -> None:
    """--out names an existing file: exit 2 naming --out and the file, no request sent."""
    target = tmp_path / "data"
    target.write_text("not a folder")
    error = refused(fetch_emu, target)
    assert error.startswith("--out") and str(target) in error and "file" in error


def test_out_below_a_file_is_refused_before_any_request(fetch_emu: BinanceEmulator,
                                                        tmp_path: Path) -> None:
    """--out data/new where data is a file: the folder can never be created; refused first,
    quoting --out as given (not a file inside it)."""
    (tmp_path / "data").write_text("not a folder")
    error = refused(fetch_emu, tmp_path / "data" / "new")
    assert error.startswith(f"--out: is '{tmp_path / 'data' / 'new'}', but ")
    assert f"{tmp_path / 'data'} is a file" in error


@pytest.mark.parametrize(("folder", "interval"), [
    ("funding", "1d"), ("markets", "1d"), ("perp_mark_4h", "1d"), ("spot_4h", "1d,4h")])
def test_a_layout_folder_that_is_a_file_is_refused_before_any_request(
        fetch_emu: BinanceEmulator, tmp_path: Path, folder: str, interval: str) -> None:
    """A file where the fetch writes a layout folder (funding/, markets/, perp_mark_4h/,
    spot_<interval>/) would fail after the download: refused first, naming it."""
    (tmp_path / folder).write_text("not a folder")
    error = refused(fetch_emu, tmp_path, "--interval", interval)
    assert error.startswith("--out") and str(tmp_path / folder) in error
    assert [p.name for p in tmp_path.iterdir()] == [folder]  # nothing written


@pytest.mark.parametrize("quote", ["", "  ", "US/DT"])
def test_an_empty_or_malformed_quote_is_refused_before_any_request(
        fetch_emu: BinanceEmulator, tmp_path: Path, quote: str) -> None:
    """--quote "" used to build the symbol "BTC/:" and ask the exchange; refused naming --quote."""
    error = refused(fetch_emu, tmp_path, "--quote", quote)
    assert error.startswith("--quote")
    assert not list(tmp_path.iterdir())
