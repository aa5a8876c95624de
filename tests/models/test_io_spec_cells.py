"""models.io.load_contract_spec reads each present cell as a finite number: an empty, NaN or
non-numeric cell is refused naming the file, the column and the row, where it used to be left out
(the caller then silently used fbr's default: 5 USD for Binance's 100 USD minNotional). A column
the file lacks is still left out. Inputs are written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.errors import ValidationError
from models.io import load_contract_spec

HEADER = "symbol,baseAsset,quoteAsset,marginAsset,lot_stepSize,minNotional,maintMarginPercent\n"


def _specs(tmp_path: Path, min_notional: str, maint: str, header: str = HEADER) -> Path:
    path = tmp_path / "specs.csv"
    cells = {"lot_stepSize": "0.001", "minNotional": min_notional, "maintMarginPercent": maint}
    row = ["BTCUSDT", "BTC", "USDT", "USDT"] + [cells[c] for c in header.strip().split(",")[4:]]
    path.write_text(header + ",".join(row) + "\n", encoding="utf-8")
    return path


def test_present_cells_are_read(tmp_path: Path) -> None:
    """minNotional 100 USD and maintMarginPercent 0.4 (percent: 0.004 as a fraction)."""
    spec = load_contract_spec(_specs(tmp_path, "100", "0.4"), "BTC/USDT:USDT")
    assert spec == {"lot_step": 0.001, "min_notional": 100.0, "maint_margin_rate": 0.004,
                    "contract_size": 1.0}


@pytest.mark.parametrize(("min_notional", "maint", "column"), [
    ("", "0.4", "minNotional"), ("nan", "0.4", "minNotional"), ("n/a", "0.4", "minNotional"),
    ("100", "", "maintMarginPercent")])
def test_an_empty_nan_or_text_cell_is_refused(tmp_path: Path, min_notional: str, maint: str,
                                              column: str) -> None:
    """An empty, NaN or non-numeric cell: refused naming the file, column and row."""
    path = _specs(tmp_path, min_notional, maint)
    with pytest.raises(ValidationError) as info:
        load_contract_spec(path, "BTC/USDT:USDT")
    msg = str(info.value)
    assert str(path) in msg and repr(column) in msg and "BTCUSDT" in msg, msg


def test_an_absent_column_is_left_out(tmp_path: Path) -> None:
    """No minNotional column at all: min_notional is left out (the caller's default applies)."""
    header = "symbol,baseAsset,quoteAsset,marginAsset,lot_stepSize,maintMarginPercent\n"
    spec = load_contract_spec(_specs(tmp_path, "100", "0.4", header), "BTC/USDT:USDT")
    assert "min_notional" not in spec and spec["lot_step"] == 0.001
