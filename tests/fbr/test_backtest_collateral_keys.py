"""[backtest.collateral]: ``band`` (relative) *or* ``width`` (absolute), as the README says. Given
both, band_edges() used width and dropped band without a word; now the pair is refused naming
backtest.collateral.width. Inputs are written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbr.backtest_config import load_backtest_file
from models.errors import ValidationError

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, collateral: str) -> Path:
    (tmp_path / "book.toml").write_text((ROOT / "examples" / "backtest_book.toml").read_text(
        encoding="utf-8"), encoding="utf-8")
    cfg = tmp_path / "bt.toml"
    cfg.write_text('book = "book.toml"\n[data]\nsource = "synthetic"\ndays = 30\n'
                   '[[policies]]\nkind = "no_rebalance"\n'
                   f'[backtest.collateral]\ntarget_fraction = 0.2\n{collateral}\n',
                   encoding="utf-8")
    return cfg


def test_band_and_width_together_are_refused(tmp_path: Path) -> None:
    """band = 0.5 with width = 0.01: refused naming backtest.collateral.width, fix "give one of
    them" (band used to be dropped silently)."""
    with pytest.raises(ValidationError) as info:
        load_backtest_file(_config(tmp_path, "band = 0.5\nwidth = 0.01"))
    err = info.value
    assert err.field == "backtest.collateral.width", str(err)
    assert "band" in err.problem and err.fix.startswith("give one of them")


@pytest.mark.parametrize(("line", "key", "value"), [("band = 0.5", "band", 0.5),
                                                    ("width = 0.01", "width", 0.01)])
def test_band_or_width_alone_loads(tmp_path: Path, line: str, key: str, value: float) -> None:
    """Either one alone still loads and reaches the collateral arguments."""
    collateral = load_backtest_file(_config(tmp_path, line)).collateral
    assert collateral is not None
    assert dict(collateral) == {"target_fraction": 0.2, key: value}
