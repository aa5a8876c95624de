"""`fbr backtest` with pledged collateral switched on from the backtest file (``[backtest] pledged``):
end to end through the real entry point (subprocess), bad values as one clear message, and the
default (no key) unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_fbr

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "examples" / "backtest_book.toml"
PLEDGED = """
[pledged]
BTC = 0.95
ETH = { tiers = [[0, 20000, 0.95], [20000, 1e9, 0.9]] }
"""




def write_files(tmp_path: Path, backtest_extra: str, *, pledged_book: bool = True,
                collateral: str = "target_fraction = 0.3\nband = 0.2\n") -> Path:
    """A 60-day synthetic backtest of one naive weekly hedge, the demo book (+ [pledged])."""
    book = tmp_path / "book.toml"
    book.write_text(BOOK.read_text() + (PLEDGED if pledged_book else ""))
    cfg = tmp_path / "bt.toml"
    cfg.write_text(f"""book = "book.toml"
[data]
source = "synthetic"
seed = 12
days = 60
start = "2024-01-01"
[[policies]]
kind = "naive_futures"
period = "7D"
name = "naive"
[backtest]
{backtest_extra}
[backtest.collateral]
{collateral}""")
    return cfg


def backtest_json(cfg: Path) -> dict[str, Any]:
    proc = run_fbr("backtest", str(cfg), "--json", "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_pledged_true_reaches_the_replay(tmp_path: Path) -> None:
    """With a 30% reserve target the wallet alone is below the band and the replay sells spot into
    it; with pledged = true the pledged BTC and ETH cover the target, so nothing is swept in."""
    on = backtest_json(write_files(tmp_path, "pledged = true"))
    off_dir = tmp_path / "off"
    off_dir.mkdir()
    off = backtest_json(write_files(off_dir, "pledged = false"))
    m_on, m_off = on["policies"]["naive"], off["policies"]["naive"]
    assert m_off["sweep_cost_bps"] > 0 and m_off["spot_turnover"] > 0
    assert m_on["sweep_cost_bps"] == 0 and m_on["spot_turnover"] == 0
    label = [lab for lab in on["labels"] if lab.startswith("pledged collateral ON")]
    assert label == ["pledged collateral ON: BTC (ratio 0.95), ETH (2 tiers) count as margin; "
                     "top-up sweeps test wallet + pledged value, pledged spot is sold after a "
                     "liquidation"]
    assert not any("pledged" in lab for lab in off["labels"])


def test_no_key_is_the_replay_as_before(tmp_path: Path) -> None:
    from fbr.backtest_config import load_backtest_file
    from fbr.backtest_run import backtest_options

    cfg = load_backtest_file(write_files(tmp_path, ""))
    assert cfg.pledged is False and "pledged" not in backtest_options(cfg)
    on = load_backtest_file(write_files(tmp_path, "pledged = true"))
    assert backtest_options(on)["pledged"] is True


@pytest.mark.parametrize(("extra", "book_pledges", "collateral", "needles"), [
    ('pledged = "yes"', True, "band = 0.2\n",
     ["backtest.pledged", "'yes'", "pledged = true", "without quotes"]),
    ("pledged = 1", True, "band = 0.2\n", ["backtest.pledged", "is 1", "without quotes"]),
    ("pledged = true", False, "band = 0.2\n",
     ["backtest.pledged", "no [pledged]", "add a [pledged] section", "remove backtest.pledged"]),
    ("pledged = true", True, "target_fraction = 1.5\n",
     ["backtest.collateral.target_fraction", "1.5"]),
    ("pledged = true", True, "band = -1\n", ["backtest.collateral.band", "-1"]),
])
def test_bad_values_are_one_clear_message(tmp_path: Path, extra: str, book_pledges: bool,
                                          collateral: str, needles: list[str]) -> None:
    cfg = write_files(tmp_path, extra, pledged_book=book_pledges, collateral=collateral)
    proc = run_fbr("backtest", str(cfg), "--json", "--no-report")
    assert proc.returncode == 2, proc.stdout
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert json.loads(proc.stdout)["status"] == "error"
